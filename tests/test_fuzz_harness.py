"""The fuzz harness (tests/fuzz.py) runs briefly in CI: a few thousand inputs, no finding; and it does find
what it is meant to find (a crash planted in the compiler is reported with its input)."""

from __future__ import annotations

from pathlib import Path

import fuzz


def test_a_brief_run_finds_nothing(tmp_path: Path) -> None:
    h = fuzz.run(2000, None, seed=12345, out=tmp_path / "findings", slow=60.0, report=lambda s: None)
    assert h.inputs == 2000
    assert h.findings == {}, sorted((tmp_path / "findings").glob("*.txt"))


def test_a_crash_is_a_finding_with_its_input(tmp_path: Path) -> None:
    h = fuzz.Harness(tmp_path / "out", slow=60.0)

    def broken(path: str, *, text: str | None = None, environ: object = None) -> object:
        raise KeyError("planted")

    h.compile_file = broken
    h.source('suite "s" {}\n')
    assert list(h.findings) == ["compile: KeyError at test_fuzz_harness.py:21"]
    assert (tmp_path / "out" / "compile-1-0.input").read_text() == 'suite "s" {}\n'
    assert "KeyError: 'planted'" in (tmp_path / "out" / "compile-1-0.txt").read_text()


def test_seeds_include_examples_and_docs_snippets() -> None:
    seeds = fuzz.sources()
    assert len(seeds) > 20 and any("suite" in s for s in seeds)
