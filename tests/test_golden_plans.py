"""Golden Plans: each fixture and example compiles to exactly the Plan in tests/fixtures/plans/ (regenerate
with `python tests/fixtures/regenerate_plans.py` after an intended change, and review the diff)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from crc.compiler.plan import Plan

SCRIPT = Path(__file__).parent / "fixtures" / "regenerate_plans.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("regenerate_plans", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REGEN = _script()
CASES = list(REGEN.sources())


@pytest.mark.parametrize(("source", "golden"), CASES, ids=[s for s, _ in CASES])
def test_plan_equals_its_golden_file(source: str, golden: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REGEN.ROOT)
    assert golden.exists(), f"no golden Plan for {source}: run python {SCRIPT.relative_to(REGEN.ROOT)}"
    assert REGEN.golden_json(source) == golden.read_text(encoding="utf-8")


def test_every_golden_file_is_a_readable_plan() -> None:
    files = sorted(REGEN.FIXTURES.glob("*.plan.json"))
    assert {g for _, g in CASES} == set(files), "a golden file without its source, or the reverse"
    for f in files:
        Plan.from_data(json.loads(f.read_text(encoding="utf-8")))
