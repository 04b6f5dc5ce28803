"""Span kinds, statuses and booleans are the language's constants (grammar/keywords.py): no other module
keeps a list of them, and the OTLP decoder's wire tables name exactly those."""

from __future__ import annotations

import ast
from pathlib import Path

from crc.grammar.keywords import CONSTANTS
from crc.runtime import otlpdecode

ROOT = Path(__file__).resolve().parents[1]
# The compiler's checks of kind and status names still keep their own copy while compile.py is being split
# into passes; they are to read CONSTANTS too, and then leave this set.
NOT_YET = {"compiler/compile.py", "compiler/lower.py"}


def _literal_collections(tree: ast.AST) -> list[tuple[int, set[str]]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            words = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            out.append((node.lineno, words))
    return out


def test_no_module_lists_the_constants_again() -> None:
    found = []
    for d in ("compiler", "runtime", "crc"):
        for p in (ROOT / d).rglob("*.py"):
            if str(p.relative_to(ROOT)) in NOT_YET:
                continue
            for line, words in _literal_collections(ast.parse(p.read_text(encoding="utf-8"))):
                for role, names in CONSTANTS.items():
                    if role != "boolean" and words >= set(names):  # the whole list, spelt again
                        found.append(f"{p.relative_to(ROOT)}:{line}: {sorted(words)} lists {role} names")
    assert found == []


def test_otlp_wire_names_are_the_language_constants() -> None:
    assert set(otlpdecode._KINDS.values()) - {"unspecified"} == set(CONSTANTS["kind"])
    assert set(otlpdecode._STATUSES.values()) == set(CONSTANTS["status"])
