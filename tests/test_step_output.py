"""Step output is kept in memory up to a bound (runtime/backend.OUTPUT_KEEP, 8 MiB per stream); past it a run
spills the whole stream to a file of its own (runtime/spill.py) that expectations and captures read whole.
A recording keeps the first part, size and sha256: replay keeps the live verdict of an unchanged check and says
it cannot re-check an edited one. The Docker test runs a step printing 200 MB, end to end."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from crc.runtime import recording, spill
from crc.runtime.backend import OUTPUT_KEEP, OutputCapture
from crc.runtime.fake_backend import FakeBackend, FakeExec
from crc.runtime.replay import replay
from crc.runtime.results import FAILED, PASSED, SKIPPED, Cause
from crc.runtime.runner import RunOptions
from dockerutil import ROOT, crc, crc_resources, docker_engine  # noqa: F401
from fakerun import compile_source, run

BIG = """suite "s" {
  service box {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
  }
  test "t" {
    step big = exec box ["big"]
    expect big.exit == 0
    expect big.stdout contains "the end"
    expect big.stdout ~ /the (e\\w+) is near$/
    expect big.stdout not contains "missing"
    expect big.stdout contains "missing"
    expect big.stdout == "x"
    expect big.json("$.a") == 1
    expect big.stderr == ""
    step cap = exec box ["big"]
    capture word = cap.stdout ~ /the (e\\w+) is/
    step echo = exec box ["echo", "{{ word }}"]
  }
}
"""
PRINTED = "x" * (OUTPUT_KEEP + 1000) + "the end is near"


def _spill_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(f"{spill.PREFIX}{os.getpid()}-*")}


def _labels(r: object) -> dict[str, object]:
    return {n.split("::")[-1]: x for n, x in r.nodes.items()}  # type: ignore[attr-defined]


def test_a_capture_outside_a_run_keeps_the_first_bytes_and_counts_the_rest() -> None:
    c = OutputCapture(keep=10)
    for chunk in (b"abcd", b"efghij", b"klm", b"", b"nop"):
        c.add(chunk)
    assert (c.data, c.cut, c.close()) == (b"abcdefghij", 6, None)


def test_a_spilled_stream_keeps_every_byte_and_its_hash(tmp_path: Path) -> None:
    d = spill.SpillDir()
    with spill.active(d):
        c = OutputCapture(keep=10)
        for chunk in (b"abcd", b"efghij", b"klm", b"", b"nop"):
            c.add(chunk)
        s = c.close()
        assert s is not None and Path(s.path).read_bytes() == b"abcdefghijklmnop"
        assert (s.size, s.sha256) == (16, hashlib.sha256(b"abcdefghijklmnop").hexdigest())
        assert oct(Path(s.path).parent.stat().st_mode & 0o777) == "0o700"
        assert spill.contains(s, "stdout", "jklm") and not spill.contains(s, "stdout", "mo")
        assert spill.search(s, "stdout", {"pattern": "(k\\w)m", "flags": ""}) == ("kl",)
    assert not Path(s.path).exists() and d.path is None


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_secrets_are_masked_before_a_byte_reaches_the_spill_file(size: int) -> None:
    secret = "s3cret-value-0123456789"
    text = ("a" * 5 + secret + "b" * 7 + secret + secret[:5]) * 3 + secret
    f = spill.SecretFilter(("short-one-x", secret))
    pieces = [f.feed(text[i:i + size].encode()) for i in range(0, len(text), size)]
    whole = b"".join(pieces) + f.feed(b"", final=True)
    assert whole.decode() == text.replace(secret, "***")
    assert all(b"s3cret-value" not in p for p in pieces)


def test_checks_and_captures_read_the_whole_spilled_stream_live_and_replay_agrees(tmp_path: Path) -> None:
    plan = compile_source(tmp_path, BIG)
    before = _spill_dirs()
    r = run([plan], FakeBackend(on_exec=lambda call: FakeExec(stdout=PRINTED if call.argv == ("big",)
                                                              else " ".join(call.argv[1:]))))
    assert _spill_dirs() == before, "the run removes its spill directory"
    out = r.node("step:big").detail["output"]
    assert len(out["stdout"]) == OUTPUT_KEEP and out["stdout_cut"] == len(PRINTED) - OUTPUT_KEEP
    assert out["stdout_spill"] == {"size": len(PRINTED), "sha256": hashlib.sha256(PRINTED.encode()).hexdigest()}
    st = {k: (x.status, x.message) for k, x in _labels(r.result).items()}
    assert [st[f"assert:{i}"][0] for i in range(1, 9)] == [PASSED, PASSED, PASSED, PASSED, FAILED, FAILED,
                                                           FAILED, PASSED]
    assert st["assert:5"][1].startswith(f'big.stdout contains "missing": stdout ({len(PRINTED):,} bytes) does '
                                        "not contain 'missing'")
    assert "more than the 8,388,608 crc parses as JSON" in st["assert:7"][1]
    assert st["step:cap"][0] == PASSED and r.node("step:cap").detail["captures"] == {"word": "end"}
    assert r.node("step:echo").detail["output"]["stdout"] == "end", "the capture feeds the next step"
    rec = recording.Recording.from_bytes(recording.build(r.result, [plan], [], RunOptions(), "t").to_bytes())
    again = replay(rec)
    assert {n: (x.status, x.message) for n, x in again.result.nodes.items()} == \
        {n: (x.status, x.message) for n, x in r.result.nodes.items()}
    assert not again.no_data

    # An edited check on the spilled stream cannot be re-checked: said plainly, never a pass.
    edited = compile_source(tmp_path, BIG.replace('contains "the end"', 'contains "the start"'), "e.cr")
    edited.meta["source"] = plan.meta["source"]
    changed = replay(rec, [edited])
    v = _labels(changed.result)["assert:2"]
    assert (v.status, v.cause) == (SKIPPED, Cause.NO_DATA)
    assert v.message.startswith(f"no recorded data: stdout was {len(PRINTED):,} bytes; the recording keeps its "
                                "first part, its size and sha256, not the rest, and this check changed since "
                                "the recording, so it cannot be re-checked")
    assert [t.status for t in changed.result.tests] == [FAILED], "as live: its other checks failed"
    assert any(n.endswith("assert:2") for n, _ in changed.no_data)
    assert _labels(changed.result)["assert:3"].status == PASSED, "an unchanged check keeps its verdict"


def test_an_edited_check_on_a_spilled_stream_says_so_in_every_report(tmp_path: Path) -> None:
    text = BIG.split("    expect big.stdout not contains")[0] + "  }\n}\n"
    src = tmp_path / "big.cr"
    src.write_text(text, encoding="utf-8")
    plan = compile_source(tmp_path, text, "big.cr")
    r = run([plan], FakeBackend(on_exec=lambda call: FakeExec(stdout=PRINTED)))
    assert [t.status for t in r.result.tests] == [PASSED]
    rec = tmp_path / "r.crcrec"
    recording.write(rec, recording.build(r.result, [plan], [], RunOptions(), "t"))
    src.write_text(text.replace('contains "the end"', 'contains "the start"'), encoding="utf-8")
    junit, report = tmp_path / "j.xml", tmp_path / "r.json"
    proc = crc("replay", str(rec), str(src), "--junit", str(junit), "--json", str(report),
               env={"DOCKER_HOST": "unix:///nonexistent", "NO_COLOR": "1"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    why = "this check changed since the recording, so it cannot be re-checked"
    assert why in proc.stdout and "Traceback" not in proc.stderr
    doc = json.loads(report.read_text(encoding="utf-8"))
    node = next(n for n in doc["nodes"] if n["node"].endswith("assert:2"))
    assert (node["status"], node["cause"]) == ("skipped", "no-data") and why in node["message"]
    assert [t["status"] for t in doc["tests"]] == ["skipped"]
    assert why in junit.read_text(encoding="utf-8")
    proc = crc("replay", str(rec), env={"DOCKER_HOST": "unix:///nonexistent", "NO_COLOR": "1"})
    assert proc.returncode == 0, "unedited, the recorded verdicts hold: " + proc.stdout


def test_no_secret_reaches_the_spill_file_or_what_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRC_TEST_TOKEN", "s3cret-value-0123456789")
    src = BIG.replace('["sleep", "3600"]', '["sleep", "3600"]\n    env { API_TOKEN: "{{ secret(\'CRC_TEST_TOKEN\') }}" }')
    src = src.replace('exec box ["big"]\n    expect big.exit', 'exec box ["big", "{{ secret(\'CRC_TEST_TOKEN\') }}"]'
                      '\n    expect big.exit')
    plan = compile_source(tmp_path, src)
    printed = "x" * (OUTPUT_KEEP - 10) + "s3cret-value-0123456789" + "y" * 100 + "s3cret-value-0123456789"
    seen: list[bytes] = []
    real_close = spill.SpillWriter.close

    def close(self: spill.SpillWriter) -> spill.Spilled:
        s = real_close(self)
        seen.append(Path(self.path).read_bytes())
        return s

    monkeypatch.setattr(spill.SpillWriter, "close", close)
    r = run([plan], FakeBackend(on_exec=lambda call: FakeExec(stdout=printed)))
    assert seen and all(b"s3cret" not in b for b in seen)
    assert seen[0] == printed.replace("s3cret-value-0123456789", "***").encode()
    out = r.node("step:big").detail["output"]
    assert "s3cret" not in out["stdout"] and "x***y" in out["stdout"]
    assert out["stdout_spill"]["size"] == len(seen[0])


def test_a_check_on_a_spilled_stream_runs_off_the_loop_and_a_test_timeout_ends_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a real clock: the check blocks (in its worker thread) until released; the test's 1 s timeout ends
    the wait, whatever the machine's speed, and the run goes on."""
    import threading

    import anyio
    from crc.runtime.fake_backend import FakeReceiver
    from crc.runtime.runner import Runner

    release, threads = threading.Event(), []

    def blocked(s: spill.Spilled, stream: str, needle: str) -> bool:
        threads.append(threading.current_thread() is threading.main_thread())
        release.wait(60)
        return True

    monkeypatch.setattr(spill, "contains", blocked)
    plan = compile_source(tmp_path, BIG.replace('test "t" {', 'test "t" timeout 1s {'))
    backend = FakeBackend(on_exec=lambda call: FakeExec(stdout=PRINTED))

    async def main() -> object:
        runner = Runner(backend, RunOptions(), run_id="run-real", receiver=lambda on_spans: FakeReceiver(on_spans))
        try:
            return await runner.run([plan])
        finally:
            release.set()

    result = anyio.run(main, backend="asyncio")
    v = _labels(result)["assert:2"]
    assert threads and not any(threads), "the checks ran in worker threads"
    assert (v.status, v.cause) == ("error", Cause.TEST_TIMEOUT), v.message


def test_a_disk_that_refuses_the_spill_cuts_the_stream_and_the_checks_say_so(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: spill.SpillWriter, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spill.SpillWriter, "write", full)
    plan = compile_source(tmp_path, BIG)
    r = run([plan], FakeBackend(on_exec=lambda call: FakeExec(stdout=PRINTED)))
    out = r.node("step:big").detail["output"]
    assert "stdout_spill" not in out and len(out["stdout"]) + out["stdout_cut"] == len(PRINTED)
    v = _labels(r.result)["assert:2"]
    assert v.status == FAILED and f"stdout was {len(PRINTED):,} bytes, more than the 8,388,608 crc keeps" in v.message


def test_a_spill_directory_of_a_dead_crc_is_removed_by_the_next(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f"{spill.PREFIX}{dead.stdout.strip()}-abc"
    left.mkdir()
    (left / "stream-1").write_bytes(b"x")
    mine = tmp_path / f"{spill.PREFIX}{os.getpid()}-abc"
    mine.mkdir()
    assert spill.sweep(str(tmp_path)) == [left]
    assert not left.exists() and mine.exists()


@pytest.mark.docker
def test_crc_clean_removes_a_dead_runs_spill_directory(docker_engine: None, tmp_path: Path) -> None:  # noqa: F811
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f"{spill.PREFIX}{dead.stdout.strip()}-abc"
    left.mkdir()
    (left / "stream-1").write_bytes(b"x")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    crc = [sys.executable, "-m", "crc", "clean"]
    dry = subprocess.run([*crc, "--dry-run"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert dry.returncode == 0 and f"would remove 1 spill directory of crc runs that no longer run: {left}" \
        in dry.stdout, dry.stdout + dry.stderr
    assert left.exists()
    done = subprocess.run(crc, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and f"removed 1 spill directory of crc runs that no longer run: {left}" \
        in done.stdout, done.stdout + done.stderr
    assert not left.exists()


@pytest.mark.docker
def test_a_step_printing_200_mb_is_checked_whole_in_little_memory(docker_engine: None, tmp_path: Path) -> None:  # noqa: F811
    src = tmp_path / "big.cr"
    src.write_text('''suite "bigout" {
  service box {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
  }
  test "t" {
    step big = exec box ["sh", "-c", "yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx | head -c 200000000; echo; echo the end is near"]
    expect big.exit == 0
    expect big.stdout contains "the end is near"
    expect big.stdout ~ /the (e\\w+) is near$/m
    expect big.stdout not contains "y"
  }
}
''', encoding="utf-8")
    # A parent of its own reads crc's peak (RUSAGE_CHILDREN of this process would be the largest of every
    # child the test session ever ran).
    peak_of_child = ("import resource, subprocess, sys; r = subprocess.Popen(sys.argv[1:]); r.wait(); "
                     "print('peak-kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, 'pid', r.pid, "
                     "file=sys.stderr); sys.exit(r.returncode)")
    rec = tmp_path / "r.crcrec"
    proc = subprocess.run([sys.executable, "-c", peak_of_child, sys.executable, "-m", "crc", "run", str(src),
                           "--no-progress", "--pull", "never", "--record", str(rec)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    peak_mb = int(proc.stderr.rsplit("peak-kb ", 1)[1].split()[0]) / 1024
    assert peak_mb < 300, f"crc run took {peak_mb:.0f} MB for a step printing 200 MB"
    assert rec.stat().st_size < 20_000_000
    pid = proc.stderr.rsplit(" pid ", 1)[1].split()[0]
    assert not list(Path(tempfile.gettempdir()).glob(f"{spill.PREFIX}{pid}-*")), "the run removed its spill directory"
    assert not crc_resources("bigout")
    report = tmp_path / "replay.json"
    again = subprocess.run([sys.executable, "-m", "crc", "replay", str(rec), "--json", str(report)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    doc = json.loads(report.read_text(encoding="utf-8"))
    assert [t["status"] for t in doc["tests"]] == ["passed"], doc["tests"]

