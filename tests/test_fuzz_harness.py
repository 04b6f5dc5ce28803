"""The fuzz harness (tests/fuzz.py) runs briefly in CI: a few thousand inputs, no finding; and it does find
what it is meant to find (a crash planted in the compiler is reported with its input)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import fuzz
import pytest


def test_a_brief_run_finds_nothing(tmp_path: Path) -> None:
    h = fuzz.run(2000, None, seed=12345, out=tmp_path / "findings", slow=60.0, report=lambda s: None)
    assert h.inputs == 2000 and not h.dir.exists()
    assert h.findings == {}, sorted((tmp_path / "findings").glob("*.txt"))


def test_a_crash_is_a_finding_with_its_input(tmp_path: Path) -> None:
    h = fuzz.Harness(tmp_path / "out", slow=60.0)

    def broken(path: str, *, text: str | None = None, environ: object = None) -> object:
        raise KeyError("planted")

    h.compile_file = broken
    h.source('suite "s" {}\n')
    h.close()
    assert not h.dir.exists()
    [sig] = h.findings
    assert sig == f"compile: KeyError at test_fuzz_harness.py:{broken.__code__.co_firstlineno + 1}"
    assert (tmp_path / "out" / "compile-1-0.input").read_text() == 'suite "s" {}\n'
    assert "KeyError: 'planted'" in (tmp_path / "out" / "compile-1-0.txt").read_text()


def test_seeds_include_examples_and_docs_snippets() -> None:
    seeds = fuzz.sources()
    assert len(seeds) > 20 and any("suite" in s for s in seeds)


def test_a_brief_run_of_every_file_kind_finds_nothing(tmp_path: Path) -> None:
    """Recordings, JSON reports, Plans and OTLP payloads through every command that reads them."""
    h = fuzz.run(600, None, seed=4321, out=tmp_path / "findings", slow=60.0, report=lambda s: None, files=0.88)
    assert h.findings == {}, sorted((tmp_path / "findings").glob("*.txt"))
    targets = set(h.counts)
    assert {"otlp-pb", "otlp-json", "recording:replay", "recording:digest", "recording:spans", "report:spans",
            "plan:graph"} <= targets, targets
    assert any(t.startswith("recording:diff") for t in targets) and "recording:report --html" in targets


def test_a_crash_in_a_command_is_a_finding_with_its_file(tmp_path: Path) -> None:
    import random

    import fuzz_files

    found: list[tuple[str, bytes, str]] = []
    t = fuzz_files.FileTargets(tmp_path / "w", lambda kind, data, exc, what, detail: found.append(
        (kind, data, type(exc).__name__ if exc else what)))

    def main(argv: list[str]) -> None:
        if argv[0] == "digest":
            raise KeyError("planted")
        raise SystemExit(2)  # and says nothing: not naming the file is a finding too

    t.main = main
    blob = t.seeds["recording"][0]
    t.command("recording", blob, ["digest", "FILE"])
    t.command("recording", blob, ["spans", "FILE"])
    assert found == [("recording", blob, "KeyError"),
                     ("recording", blob, "crc spans FILE: exit 2 without naming the file")]
    t.otlp("otlp-pb", b"\x0a\x05garbage")  # a malformed payload is refused: not a finding
    assert len(found) == 2
    assert fuzz_files.mutate_file(random.Random(1), "recording", blob) != blob


def _fifo_read(tmp: Path) -> object:
    import os

    os.mkfifo(tmp / "fifo")
    return (tmp / "fifo").read_bytes()  # no writer: open() waits for one


def _lock(tmp: Path) -> object:
    import threading

    lock = threading.Lock()
    lock.acquire()
    return lock.acquire()


def _sleep(tmp: Path) -> object:
    import time

    time.sleep(3600)
    return None


@pytest.mark.parametrize("block", [_fifo_read, _lock, _sleep])
def test_an_input_that_blocks_is_interrupted_and_is_a_finding_with_its_stack(
        tmp_path: Path, block: Callable[[Path], object]) -> None:
    """The watchdog measures blocked time (not CPU, not waiting for a CPU), so a loaded machine does not
    make this fire sooner or later than one blocked second."""
    h = fuzz.Harness(tmp_path / "out", slow=60.0)
    h.compile_file = lambda path, *, text=None, environ=None: block(tmp_path)
    dog = fuzz.Watchdog(stall=1.0, cpu=600.0)
    try:
        with pytest.raises(fuzz.Stalled) as e, dog:
            h.source('suite "s" {}\n')
        h.stalled(e.value, dog.report)
    finally:
        dog.close()
        h.close()
    assert dog.stalls == 1
    assert [sig.split(" at ")[0] for sig in h.findings] == ["source: stall"]
    assert (tmp_path / "out" / "source-1-0.input").read_text() == 'suite "s" {}\n'
    text = (tmp_path / "out" / "source-1-0.txt").read_text()
    assert "blocked: " in text and f"in {block.__name__}" in text, text


def test_the_watchdog_lets_a_quick_input_be(tmp_path: Path) -> None:
    h = fuzz.Harness(tmp_path / "out", slow=60.0)
    dog = fuzz.Watchdog(stall=1.0, cpu=600.0)
    try:
        for _ in range(3):
            with dog:
                h.source('suite "s" {}\n')
    finally:
        dog.close()
        h.close()
    assert dog.stalls == 0 and h.findings == {} and h.inputs == 3


def test_an_input_computing_is_not_a_stall_but_is_noted_and_past_its_cpu_bound_is_interrupted() -> None:
    notes: list[str] = []
    dog = fuzz.Watchdog(stall=0.5, cpu=600.0, note=notes.append)
    try:
        with dog:
            while not notes:  # computing, not blocked: the watchdog only says how the time went
                pass
        assert dog.stalls == 0 and notes[0].startswith("one input running: ")
        dog.cpu = 0.5
        with pytest.raises(fuzz.Stalled, match=r"^CPU-bound: "), dog:
            while True:
                pass
    finally:
        dog.close()
    assert dog.stalls == 1 and dog.report.startswith("CPU-bound: ")


def test_a_command_that_blocks_is_a_finding_naming_it_and_leaves_the_harness_as_it_was(tmp_path: Path) -> None:
    import gc
    import os
    import random
    import time

    import fuzz_files

    h = fuzz.Harness(tmp_path / "out", slow=60.0)
    h.files = fuzz_files.FileTargets(tmp_path / "w", h._finding)

    def main(argv: list[str]) -> None:
        time.sleep(3600)

    h.files.main = main
    h.files.kinds = lambda: ["recording"]  # type: ignore[method-assign]
    cwd = os.getcwd()
    dog = fuzz.Watchdog(stall=1.0, cpu=600.0)
    try:
        with pytest.raises(fuzz.Stalled) as e, dog:
            h.file(random.Random(3))
        h.stalled(e.value, dog.report)
    finally:
        dog.close()
        h.close()
    assert os.getcwd() == cwd and gc.isenabled()
    [sig] = h.findings
    assert sig.startswith("recording: stall in crc ") and " at " in sig, sig
    [txt] = (tmp_path / "out").glob("recording-*.txt")
    assert "time.sleep(3600)" in txt.read_text()


def test_protobuf_mutations_too_deep_or_large_for_protobufs_json_parser_are_made_on_bytes() -> None:
    """protobuf's ParseDict spends tens of CPU seconds refusing a deep or huge document (no crc code runs):
    such an edit is made on the payload's bytes instead."""
    from fuzz_files import _small_for_protobuf

    deep: list[object] = []
    for _ in range(40):
        deep = [deep]
    assert _small_for_protobuf({"resourceSpans": [{"scopeSpans": []}]})
    assert not _small_for_protobuf({"a": deep})
    assert not _small_for_protobuf({"name": "x" * 70_000})
    assert not _small_for_protobuf({"n": 10**60})
    assert _small_for_protobuf({"n": 10**30, "s": "x" * 1000})


def test_mutations_never_change_the_shared_hostile_values() -> None:
    """Edits work in place on what they insert: a shared hostile list or map edited once would be changed for
    every later input (it grew until one mutation took minutes of CPU)."""
    import copy
    import random

    import fuzz_files

    small = [copy.deepcopy(v) for v in fuzz_files.HOSTILE_VALUES
             if isinstance(v, list | dict) and v is not fuzz_files._DEEP_LIST and v is not fuzz_files._DEEP_MAP]
    rng = random.Random(3)
    for _ in range(3000):
        fuzz_files.mutate_data(rng, {"nodes": [{"a": 1}, [2, 3]], "spans": {}}, n=6)
    assert [v for v in fuzz_files.HOSTILE_VALUES if isinstance(v, list | dict)][:len(small)] == small
    d, depth = fuzz_files._DEEP_LIST, 0
    while d:
        assert len(d) == 1
        d, depth = d[0], depth + 1
    assert depth == 3000
