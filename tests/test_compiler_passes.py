"""The compiler in passes: each a module with one job, and later passes read what lowering recorded rather than
parsing node ids or locations back out of strings."""

from __future__ import annotations

import re
from pathlib import Path

from crc.compiler import ir
from crc.compiler.ordering import LoweredService, LoweredTest, mentions, uses

COMPILER = Path(__file__).resolve().parent.parent / "compiler"
PASSES = ("evaluate", "services", "lower", "ordering", "analysis", "text")


def test_each_pass_is_a_module_and_none_parses_ids_back() -> None:
    for name in PASSES:
        assert (COMPILER / f"{name}.py").is_file(), name
    for path in COMPILER.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        # node ids (`SUITE::service:NAME`) and locations are never split to recover what they were built from
        assert not re.search(r"""\.r?split\(\s*["']::?["']""", text), path.name
        assert "_parse_loc" not in text, path.name


def _test(**over: object) -> LoweredTest:
    fields: dict[str, object] = dict(id="s::t", suite="s", name="t", timeout=None, loc=ir.Loc("f.cr", 1, 1, 1, 2),
                                     nodes=[], roots=[], ends=[], step_services=frozenset(), texts=(),
                                     uses_clause=frozenset(), spans_alone=False, by_trace=False, spans=[])
    fields.update(over)
    return LoweredTest(**fields)  # type: ignore[arg-type]


def test_ordering_reads_the_records_lowering_made() -> None:
    services = {"api": LoweredService("api", "s::service:api", frozenset({"db"}), ("--cache=redis://cache",)),
                "db": LoweredService("db", "s::service:db", frozenset(), ()),
                "cache": LoweredService("cache", "s::service:cache", frozenset(), ()),
                "mail": LoweredService("mail", "s::service:mail", frozenset(), ())}
    mention = mentions(services)
    # the step's own service, what it needs and names, transitively; a host named in argv (any case)
    assert uses(_test(step_services=frozenset({"api"})), services, mention) == ["api", "cache", "db"]
    assert uses(_test(texts=("wget http://MAIL:25/",)), services, mention) == ["mail"]
    assert uses(_test(spans_alone=True), services, mention) == ["api", "cache", "db", "mail"]
