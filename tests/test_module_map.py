"""docs/architecture.md's module map names every module of compiler/, runtime/ and crc/ once, and no module
that does not exist."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _listed() -> list[str]:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = doc.split("## Module map", 1)[1].split("\n## ", 1)[0]
    return [m for row in table.splitlines() if row.startswith("| `")
            for m in re.findall(r"`((?:compiler|runtime|crc)/[\w/]+\.py)`", row.split(" | ")[0])]


def test_every_module_is_in_the_map_once() -> None:
    modules = {str(p.relative_to(ROOT)) for d in ("compiler", "runtime", "crc") for p in (ROOT / d).rglob("*.py")
               if p.name != "__init__.py"}
    listed = _listed()
    assert sorted(modules - set(listed)) == [], "modules missing from docs/architecture.md's module map"
    assert sorted(set(listed) - modules) == [], "the module map names modules that do not exist"
    assert [m for m, n in Counter(listed).items() if n > 1] == [], "listed twice"
