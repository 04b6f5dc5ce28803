"""The README's quick start runs every example that is meant to pass."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_start_runs_every_passing_example() -> None:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^bash \.ci/setup && \.venv/bin/crc run (?P<args>.+)$", text, re.M)
    assert m, "the README's first quick-start command is gone"
    args = m["args"].split()
    covered: set[Path] = set()
    for a in args:
        covered |= {p.resolve() for p in ROOT.glob(a)} if "*" in a else {(ROOT / a).resolve()}
    examples = ROOT / "examples"
    wanted = {p.resolve() for p in examples.glob("*.cr")}
    wanted |= {d.resolve() for d in examples.iterdir() if d.is_dir() and d.name != "failing" and any(d.glob("*.cr"))}
    assert wanted - covered == set(), "examples the quick start does not run"
    assert not any(str(p).startswith(str((examples / "failing").resolve())) for p in covered)
