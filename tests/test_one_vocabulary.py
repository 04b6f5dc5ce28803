"""One source for each name: span kinds and statuses are the language's constants (grammar/keywords.py), the
keys attributing spans to a run and suite live in runtime/spans.py, and nodes are named for display by
runtime/results.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from crc.grammar.keywords import CONSTANTS
from crc.runtime import otlpdecode
from crc.runtime.results import label_of, node_name

ROOT = Path(__file__).resolve().parents[1]
# The compiler's checks of kind and status names still keep their own copy while compile.py is being split
# into passes; they are to read CONSTANTS too, and then leave this set.
NOT_YET: set[str] = set()


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


def test_span_attribution_keys_are_spelt_once() -> None:
    """Spans are attributed to a run and suite by resource keys that only runtime/spans.py spells (crc's own
    exported trace, runtime/telemetry.py, names suites in attributes of its own)."""
    found = []
    for d in ("compiler", "runtime", "crc"):
        for p in (ROOT / d).rglob("*.py"):
            if p.name in ("spans.py", "telemetry.py"):
                continue
            for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and node.value in ("crc.run", "crc.suite"):
                    found.append(f"{p.relative_to(ROOT)}:{node.lineno}: {node.value}")
                if isinstance(node, ast.JoinedStr) and "crc.run=" in ast.unparse(node):
                    found.append(f"{p.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_node_display_names_come_from_one_helper() -> None:
    labels = {"s/t/step:a": {"kind": "step", "label": "a"}, "s/t/span:b": {"kind": "span", "label": ""}}
    assert node_name(labels, "s/t/step:a") == "step a"
    assert node_name(labels, "s/t/span:b") == "span s/t/span:b"  # no label: the id
    assert label_of(labels, "gone") == "gone" and node_name(labels, "gone") == "? gone"
    spelt = re.compile(r"""(\blabs?\b|labels\.get\([^()]*\))\.get\(["']label["']""")
    found = [f"{p.relative_to(ROOT)}:{i}" for d in ("runtime", "crc") for p in (ROOT / d).rglob("*.py")
             if p.name != "results.py"
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if spelt.search(line)]
    assert found == []
