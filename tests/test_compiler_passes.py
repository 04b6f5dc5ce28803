"""The compiler in passes: each a module with one job, and later passes read what lowering recorded rather than
parsing node ids or locations back out of strings."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import types
import typing
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


# Each pass's public entry: what it takes and the record it gives (None: it adds to the graph or reports only).
ENTRIES = {
    "evaluate": ("evaluate_suite", "SuiteValues"),
    "services": ("lower_services", "SuiteServices"),
    "lower": ("lower_test", "LoweredTest"),
    "ordering": ("order", "list[TestEntry]"),
    "analysis": ("contradictions", "None"),
    "text": ("expect_text", "str"),
}


def _module(name: str) -> types.ModuleType:
    return importlib.import_module(f"crc.compiler.{name}")


def _frozen(cls: type) -> bool:
    return bool(cls.__dict__["__dataclass_params__"].frozen)


def test_no_pass_inherits_another() -> None:
    """Passes share no state through a class chain: no class of the compiler derives from another compiler
    class (records are frozen dataclasses, the evaluator a plain value)."""
    for name in [*PASSES, "compile"]:
        mod = _module(name)
        for cls in vars(mod).values():
            if isinstance(cls, type) and cls.__module__ == mod.__name__:
                inherited = [b for b in cls.__mro__[1:] if b.__module__.startswith("crc.compiler")]
                assert not inherited, f"{name}.{cls.__name__} derives from {inherited}"


def test_each_pass_entry_is_typed_and_returns_a_frozen_record() -> None:
    assert set(ENTRIES) == set(PASSES)
    for name, (entry, result) in ENTRIES.items():
        fn = getattr(_module(name), entry)
        sig = inspect.signature(fn)
        assert sig.return_annotation == result, (name, sig.return_annotation)
        for p in sig.parameters.values():
            assert p.annotation is not inspect.Parameter.empty, f"{name}.{entry}({p.name}) is untyped"
        hints = typing.get_type_hints(fn)  # the annotations name real types
        ret = hints["return"]
        if isinstance(ret, type) and dataclasses.is_dataclass(ret):
            assert _frozen(ret), f"{name}.{entry} returns a mutable {ret.__name__}"


def test_no_pass_reads_another_pass_private_attributes() -> None:
    """Outside `self`, no compiler module reads an underscored attribute of an object it was given (the graph's
    node table, `g._node`, is networkx's: read to take the nodes a test added without a full scan)."""
    for path in COMPILER.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                    continue
                assert node.attr == "_node", f"{path.name}:{node.lineno} reads .{node.attr} of another object"


def test_compile_runs_the_passes_in_one_visible_sequence() -> None:
    """The suite's passes are called from one function, in order, each given what the earlier ones gave."""
    from crc.compiler import compile as compile_mod

    src = inspect.getsource(compile_mod._suite)
    calls = ["evaluate_suite(", "lower_services(", "suite_tests(", "lower_test(", "contradictions(", "order("]
    at = [src.find(c) for c in calls]
    assert all(i >= 0 for i in at) and at == sorted(at), dict(zip(calls, at, strict=True))


def test_the_evaluator_holds_no_graph_and_no_suite_state() -> None:
    from crc.compiler.evaluate import Evaluator

    assert [f.name for f in dataclasses.fields(Evaluator)] == ["diags", "trace", "where"]
    assert _frozen(Evaluator)


def test_passes_compose_by_hand_like_compile_does(tmp_path: Path) -> None:
    """The passes run one by one from their typed entries give the records compile_file's Plan is built from."""
    import networkx as nx
    from crc.compiler import lints
    from crc.compiler.analysis import contradictions
    from crc.compiler.diagnostics import Diagnostics
    from crc.compiler.evaluate import Evaluator, evaluate_suite
    from crc.compiler.loader import load
    from crc.compiler.lower import lower_test, suite_tests
    from crc.compiler.ordering import order
    from crc.compiler.services import Declarations, lower_services

    f = tmp_path / "t.cr"
    f.write_text('suite "s" {\n  let greeting = "hi"\n  service api { image "crc/busybox:dev" }\n'
                 '  service db { image "crc/busybox:dev" }\n'
                 '  test "a" {\n    step one = exec api ["echo", "{{ greeting }}"]\n'
                 '    span p = "parent"\n    expect p.duration < 1s\n  }\n'
                 '  test "b" {\n    step two = exec db ["true"]\n  }\n}\n', encoding="utf-8")
    diags = Diagnostics()
    prog = load(str(f), diags)
    assert prog.root is not None
    suite = prog.root.suites[0]
    ev = Evaluator(diags).at('suite "s"')
    g = nx.MultiDiGraph()
    decls = Declarations({}, (), prog.files, prog.root.path)
    values = evaluate_suite(ev, suite, decls.module_lets, {})
    assert values.scope.values == {"greeting": "hi"}
    services = lower_services(ev, g, lints.Lints(diags), decls, suite, values)
    assert sorted(services.lowered) == ["api", "db"] and services.otel_names == {"api": "api", "db": "db"}
    tests = [lower_test(ev, g, lints.Lints(diags), decls, "s", t, services, values)
             for t in suite_tests(ev, suite, values)]
    assert [t.name for t in tests] == ["a", "b"]
    assert tests[0].spans == ["s::a::span:p"] and tests[1].spans == []
    assert tests[0].step_services == frozenset({"api"})
    assert g.nodes["s::a::step:one"]["argv"] == ["echo", "hi"]
    for t in tests:
        contradictions(g, diags, t.spans)
    assert g.nodes["s::a::span:p"]["duration"]["max"] == {"value": 1.0, "inclusive": False}
    entries = order(g, tests, services.lowered)
    # "a" checks a span by time, so it holds every service; "b" then waits for it
    assert tests[0].spans_alone and [e["uses"] for e in entries] == [["s::service:api", "s::service:db"],
                                                                     ["s::service:db"]]
    assert g.has_edge("s::a::span:p", "s::b::step:two", "then")
    assert not diags.has_errors, diags.items
