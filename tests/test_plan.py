"""The Plan: a lossless msgpack round trip, a stable digest, the node and edge kinds the design names (and
which node kinds each edge kind joins), and files that are not Plans rejected with PlanFormatError."""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import networkx as nx
import pytest
from conftest import example_files
from crc.compiler.compile import compile_file, plan_path_for
from crc.compiler.plan import EDGE_KINDS, FORMAT, FORMAT_VERSION, NODE_KINDS, Plan, PlanFormatError, canonical_bytes
from crc.compiler.schema import regex_source

# Every node and edge kind in one file: two tests (so `then`), needs between services, after, checks,
# observes, precedes with gaps, contains, parent (selector and expectation), ancestor, counts, no span,
# hermetic.
ALL_KINDS = '''suite "kinds" {
  seed 3
  service db { image "db" }
  service api {
    image "api"
    needs db
    port 8080 -> 18080
    ready http 8080 "/healthz" status 200 within 5s
  }
  test "first" timeout 30s {
    step a = exec api ["true"]
    step b = run "tool" ["x"]
    step c after a = exec db "echo hi" timeout 2s
    expect a.exit == 0
    expect b.stdout contains "x"
    capture v = b.json("$.v")
    span root = "GET /" { service "api" kind server }
    span child = /db .*/i { parent root }
    span deep = "leaf" { ancestor root }
    expect root.duration < 1s
    expect root.status == ok
    expect root.attr["http.status_code"] == 200
    expect child before deep gap 1ms..5ms
    expect root contains deep
    expect root parent of child
    expect count(child) <= 3
    expect count("retry *") == 0
    expect no span { status error }
    expect hermetic allow "example.internal"
  }
  test "second" {
    step d = exec api ["true"]
  }
}
'''

# Which node kinds each edge kind joins (source kinds, target kinds).
ENDPOINTS = {
    "needs": ({"service"}, {"service", "step"}),
    "after": ({"step"}, {"step"}),
    "then": ({"step", "assert", "span"}, {"step"}),
    "checks": ({"step", "assert"}, {"assert"}),
    "observes": ({"step"}, {"span", "assert"}),
    "precedes": ({"span"}, {"span"}),
    "contains": ({"span"}, {"span"}),
    "parent": ({"span"}, {"span"}),
    "ancestor": ({"span"}, {"span"}),
}


@pytest.fixture(scope="module")
def plan() -> Plan:
    return compile_file("kinds.cr", text=ALL_KINDS, environ={})


def every_plan() -> list[Plan]:
    plans = [compile_file("kinds.cr", text=ALL_KINDS, environ={})]
    plans += [compile_file(str(p), environ={}) for p in example_files()]
    return plans


def edges(g: nx.MultiDiGraph) -> list[tuple[Any, ...]]:
    return sorted((u, v, k, sorted(d.items(), key=lambda kv: kv[0])) for u, v, k, d in g.edges(keys=True, data=True))


# ---------------------------------------------------------------- round trip and digest


@pytest.mark.parametrize("p", every_plan(), ids=lambda p: Path(p.meta["source"]).name)
def test_round_trip_is_lossless(p: Plan) -> None:
    q = Plan.from_bytes(p.to_bytes())
    assert dict(q.graph.nodes(data=True)) == dict(p.graph.nodes(data=True))
    assert edges(q.graph) == edges(p.graph)
    assert (q.meta, q.suites, q.tests) == (p.meta, p.suites, p.tests)
    assert q.to_bytes() == p.to_bytes()
    assert q.digest == p.digest
    assert isinstance(q.graph, nx.MultiDiGraph)


@pytest.mark.parametrize("p", every_plan(), ids=lambda p: Path(p.meta["source"]).name)
def test_compiled_and_loaded_plans_encode_as_the_graph_did(p: Plan) -> None:
    """The plain-data encoding is the one the networkx graph gave: nodes by id, edges by (source, target, key)."""
    g = p.graph
    old = canonical_bytes({"format": FORMAT, "version": FORMAT_VERSION, "meta": p.meta,
                           "suites": list(p.suites), "tests": list(p.tests), "nodes": [[n, g.nodes[n]] for n in sorted(g.nodes)],
                           "edges": [[u, v, g.edges[u, v, k]] for u, v, k in sorted(g.edges(keys=True))]})
    loaded = Plan.from_bytes(p.to_bytes())
    assert p.to_bytes() == old == loaded.to_bytes()
    assert loaded.digest == p.digest == hashlib.sha256(old).hexdigest()


def test_read_api_agrees_with_the_graph(plan: Plan) -> None:
    loaded = Plan.from_bytes(plan.to_bytes())
    for p in (plan, loaded):
        g = p.graph
        assert dict(p.nodes) == dict(g.nodes(data=True))
        assert all(p.node(n) == g.nodes[n] for n in g.nodes)
        assert sorted((u, v, d["kind"]) for u, v, d in p.edges) == sorted(g.edges(keys=True))
        for n in g.nodes:
            assert list(p.in_edges(n)) == sorted((u, k) for u, _, k in g.in_edges(n, keys=True))
    assert plan.in_edges("no such node") == ()


def test_compiler_hands_its_graph_over_and_a_loaded_plan_builds_one_once(plan: Plan) -> None:
    assert plan._body._graph is not None  # the compiler's own graph: nothing to rebuild
    loaded = Plan.from_bytes(plan.to_bytes())
    assert loaded._body._graph is None
    assert loaded.graph is loaded.graph
    assert isinstance(loaded.graph, nx.MultiDiGraph)


def test_loading_a_plan_and_the_runtime_import_no_graph_library(plan: Plan, tmp_path: Path) -> None:
    """`crc run` reads a Plan's plain data: loading one and setting up the runner, scheduler and a span phase
    imports neither networkx nor the compiler (lark, its IR) nor jinja2."""
    blob = tmp_path / "kinds.plan"
    blob.write_bytes(plan.to_bytes())
    code = f"""
import sys
from pathlib import Path
import crc.cli
from crc.compiler.plan import Plan
from crc.runtime import probes, recording, spanphase
from crc.runtime.runner import RunOptions, Runner, needs_layers, selected
from crc.runtime.scheduler import Scheduler
p = Plan.from_bytes(Path({str(blob)!r}).read_bytes())
runner = Runner(object(), RunOptions())  # type: ignore[arg-type]
sched = Scheduler(p, None)
for t in p.tests:
    spanphase.SpanPhase(p, suite=t["suite"], test=t["name"], receiver=None, spans=list, window=None,
                        settle=0, deadline=0, clock_skew=0)
    [sched.deps(n, set(p.nodes)) for n in p.nodes]
assert selected(p, ("first",)) and needs_layers(p, set(p.nodes_of("service")))
print(" ".join(m for m in ("networkx", "lark", "jinja2", "crc.compiler.compile", "crc.compiler.ir")
               if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == []


def test_plan_is_plain_data(plan: Plan) -> None:
    """msgpack-able with no extension types, and json-able too (no bytes, no custom classes)."""
    json.dumps(plan.to_data())
    for _, d in plan.graph.nodes(data=True):
        for v in d.values():
            assert type(v) in (str, int, float, bool, list, dict, type(None)), (type(v), v)


def test_digest_is_sha256_of_the_canonical_bytes(plan: Plan) -> None:
    assert plan.digest == hashlib.sha256(plan.to_bytes()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", plan.digest)


def test_digest_is_stable_and_follows_the_source() -> None:
    a = compile_file("kinds.cr", text=ALL_KINDS, environ={})
    b = compile_file("kinds.cr", text=ALL_KINDS, environ={})
    assert a.digest == b.digest
    c = compile_file("kinds.cr", text=ALL_KINDS.replace("seed 3", "seed 4"), environ={})
    assert c.digest != a.digest
    d = compile_file("kinds.cr", text=ALL_KINDS + "# a comment changes the source digest\n", environ={})
    assert d.digest != a.digest and d.meta["source_digest"] != a.meta["source_digest"]


def test_encoding_ignores_insertion_order(plan: Plan) -> None:
    g = nx.MultiDiGraph()
    for n in reversed(list(plan.graph.nodes)):
        g.add_node(n, **dict(reversed(list(plan.graph.nodes[n].items()))))
    for u, v, k, d in reversed(list(plan.graph.edges(keys=True, data=True))):
        g.add_edge(u, v, key=k, **d)
    meta: Any = dict(reversed(list(plan.meta.items())))
    suites = [dict(reversed(list(s.items()))) for s in plan.suites]
    tests = [dict(reversed(list(t.items()))) for t in plan.tests]
    assert Plan(g, meta, suites, tests).to_bytes() == plan.to_bytes()


def test_canonical_bytes_sorts_keys_at_every_level() -> None:
    assert canonical_bytes({"b": {"y": 1, "x": 2}, "a": [{"d": 1, "c": 2}]}) == \
        canonical_bytes({"a": [{"c": 2, "d": 1}], "b": {"x": 2, "y": 1}})


def test_to_data_header(plan: Plan) -> None:
    data = plan.to_data()
    assert (data["format"], data["version"]) == (FORMAT, FORMAT_VERSION)
    assert [n for n, _ in data["nodes"]] == sorted(plan.graph.nodes)


def test_meta(plan: Plan) -> None:
    m = plan.meta
    assert m["source"] == "kinds.cr"
    assert m["source_digest"] == hashlib.sha256(ALL_KINDS.encode()).hexdigest()
    (s,) = plan.suites
    assert (s["name"], s["seed"], s["services"]) == ("kinds", 3, ["kinds::service:api", "kinds::service:db"])
    assert [(t["name"], t["timeout"]) for t in plan.tests] == [("first", 30.0), ("second", None)]
    assert s["tests"] == [t["id"] for t in plan.tests] == ["kinds::first", "kinds::second"]
    first = plan.tests[0]
    assert set(first["nodes"]) == {n for n, d in plan.nodes.items() if d["test"] == "first"}
    assert first["uses"] == first["waits"] == ["kinds::service:api", "kinds::service:db"]
    assert first["loc"] == {"file": "kinds.cr", "line": 10, "col": 3, "end_line": 30, "end_col": 4}


# ---------------------------------------------------------------- node and edge kinds


def test_node_kinds(plan: Plan) -> None:
    kinds = {d["kind"] for _, d in plan.graph.nodes(data=True)}
    assert kinds == set(NODE_KINDS)
    for n, d in plan.graph.nodes(data=True):
        for key in ("kind", "suite", "test", "name", "label", "loc"):
            assert key in d, (n, key)
        loc = d["loc"]
        assert set(loc) == {"file", "line", "col", "end_line", "end_col"}, loc
        assert (loc["line"], loc["col"]) <= (loc["end_line"], loc["end_col"]), loc


def test_node_ids(plan: Plan) -> None:
    assert set(plan.nodes_of("service")) == {"kinds::service:db", "kinds::service:api"}
    assert set(plan.nodes_of("step")) == {f"kinds::first::step:{s}" for s in "abc"} | {"kinds::second::step:d"}
    spans = set(plan.nodes_of("span"))
    assert {"kinds::first::span:root", "kinds::first::span:child", "kinds::first::span:deep"} <= spans
    assert {s for s in spans if "#" in s} == {"kinds::first::span:#1", "kinds::first::span:#2"}


def test_every_edge_kind_appears(plan: Plan) -> None:
    kinds = {k for _, _, k in plan.graph.edges(keys=True)}
    assert kinds == set(ENDPOINTS)


@pytest.mark.parametrize("p", every_plan(), ids=lambda p: Path(p.meta["source"]).name)
def test_edges_join_the_documented_node_kinds(p: Plan) -> None:
    g = p.graph
    for u, v, k, d in g.edges(keys=True, data=True):
        assert d["kind"] == k
        src, dst = ENDPOINTS[k]
        assert g.nodes[u]["kind"] in src and g.nodes[v]["kind"] in dst, (u, v, k)


@pytest.mark.parametrize("p", every_plan(), ids=lambda p: Path(p.meta["source"]).name)
def test_plan_is_a_dag(p: Plan) -> None:
    assert nx.is_directed_acyclic_graph(p.graph)


def test_edge_kinds_constant_lists_every_emitted_kind(plan: Plan) -> None:
    assert {k for _, _, k in plan.graph.edges(keys=True)} <= set(EDGE_KINDS)


def test_edge_attributes(plan: Plan) -> None:
    g = plan.graph
    pre = g.edges["kinds::first::span:child", "kinds::first::span:deep", "precedes"]
    assert (pre["min_gap"], pre["max_gap"], pre["expected"], pre["written"]) == (
        {"value": 0.001, "inclusive": True}, {"value": 0.005, "inclusive": True}, True, "before")
    assert pre["loc"] == {"file": "kinds.cr", "line": 23, "col": 12, "end_line": 23, "end_col": 42}
    par = g.edges["kinds::first::span:root", "kinds::first::span:child", "parent"]
    assert par["expected"] is True and par["selector"] is True  # the clause and the expectation share the edge
    anc = g.edges["kinds::first::span:root", "kinds::first::span:deep", "ancestor"]
    assert anc["expected"] is False
    assert g.has_edge("kinds::first::span:root", "kinds::first::span:deep", "contains")
    assert g.has_edge("kinds::service:db", "kinds::service:api", "needs")


def test_services_are_needed_by_the_first_steps_of_each_test(plan: Plan) -> None:
    g = plan.graph
    for svc in ("kinds::service:db", "kinds::service:api"):
        for root in ("kinds::first::step:a", "kinds::second::step:d"):
            assert g.has_edge(svc, root, "needs")
    # every step depends on every service, directly or through earlier steps
    for step in plan.nodes_of("step"):
        for svc in plan.nodes_of("service"):
            assert nx.has_path(g, svc, step)


def test_default_step_order_and_explicit_after(plan: Plan) -> None:
    g = plan.graph
    assert g.has_edge("kinds::first::step:a", "kinds::first::step:b", "after")
    assert g.has_edge("kinds::first::step:a", "kinds::first::step:c", "after")
    assert not g.has_edge("kinds::first::step:b", "kinds::first::step:c", "after")


def test_tests_of_a_suite_run_one_after_another(plan: Plan) -> None:
    g = plan.graph
    first = [n for n in g.nodes if n.startswith("kinds::first::")]
    for n in first:
        assert nx.has_path(g, n, "kinds::second::step:d"), n


def test_step_node_attributes(plan: Plan) -> None:
    g = plan.graph
    a, b, c = (g.nodes[f"kinds::first::step:{s}"] for s in "abc")
    assert (a["action"], a["service"], a["argv"], a["implicit_exit"]) == ("exec", "kinds::service:api", ["true"],
                                                                         False)
    assert (b["action"], b["image"], b["service"], b["implicit_exit"]) == ("run", "tool", None, True)
    assert b["captures"] == [{"name": "v", "loc": {"file": "kinds.cr", "line": 16, "col": 5, "end_line": 16,
                                                   "end_col": 30}, "field": "json", "path": "$.v", "regex": None,
                             "key": None}]
    assert (c["argv"], c["timeout"]) == (["echo", "hi"], 2.0)


def test_assert_and_span_node_attributes(plan: Plan) -> None:
    g = plan.graph
    a1 = g.nodes["kinds::first::assert:1"]
    assert (a1["check"], a1["step"], a1["field"], a1["op"], a1["value"]) == ("step", "kinds::first::step:a",
                                                                             "exit", "==", 0)
    root = g.nodes["kinds::first::span:root"]
    assert root["match"]["service"] == "api" and root["match"]["kind"] == "server"
    checks = {c["check"] for c in root["constraints"]}
    assert checks == {"count", "duration", "status", "attr"}
    assert root["duration"] == {"min": None, "max": {"value": 1.0, "inclusive": False}}
    child = g.nodes["kinds::first::span:child"]
    count = next(c for c in child["constraints"] if c["check"] == "count")
    assert (count["min"], count["max"]) == (0, 3)
    assert not any(c.get("implicit") for c in child["constraints"]), "an explicit count replaces the implicit one"
    assert any(c.get("implicit") for c in g.nodes["kinds::first::span:deep"]["constraints"])
    no = [d for _, d in g.nodes(data=True) if d.get("no_span")]
    assert len(no) == 1 and (no[0]["constraints"][0]["min"], no[0]["constraints"][0]["max"]) == (0, 0)
    herm = [d for _, d in g.nodes(data=True) if d.get("check") == "hermetic"]
    assert herm[0]["allow"] == ["api", "db", "example.internal"]


def test_service_node_attributes(plan: Plan) -> None:
    api = plan.graph.nodes["kinds::service:api"]
    assert api["ports"] == [{"container": 8080, "host": 18080}]
    assert api["probes"] == [{"type": "http", "within": 5.0, "port": 8080, "path": "/healthz", "status": 200,
                              "loc": {"file": "kinds.cr", "line": 8, "col": 5, "end_line": 8, "end_col": 52}}]


def test_span_regex_flags_are_kept(plan: Plan) -> None:
    m = plan.graph.nodes["kinds::first::span:child"]["match"]
    assert m["regex"] == {"pattern": "db .*", "flags": "i"}
    assert re.search(regex_source(m["regex"]), "DB query")


def test_plan_path_for() -> None:
    assert plan_path_for("examples/hello.cr") == Path(".crc/examples/hello.plan")
    assert plan_path_for("/abs/x.cr", "out") == Path("out/abs/x.plan")


# ---------------------------------------------------------------- files that are not Plans


META = {"source": "x.cr", "source_digest": "0" * 64, "imports": [], "crc_version": "0"}
LOC = {"file": "x.cr", "line": 1, "col": 1, "end_line": 1, "end_col": 2}


def _header(**over: Any) -> dict[str, Any]:
    return {"format": FORMAT, "version": FORMAT_VERSION, "meta": META, "suites": [], "tests": [], "nodes": [],
            "edges": [], **over}


def _step(**over: Any) -> dict[str, Any]:
    """A well-formed step node, to which a case adds its one fault."""
    return {"kind": "step", "suite": "s", "test": "t", "name": "a", "label": "a", "loc": LOC, "action": "run",
            "service": None, "image": "img", "argv": ["true"], "env": {}, "workdir": None, "timeout": None,
            "implicit_exit": True, "captures": [], "deferred": False, "deferred_argv": [], "deferred_env": [],
            "template_values": {}, "eventually": None, **over}


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


NOT_PLANS: dict[str, bytes] = {
    "empty": b"",
    "text": b"suite \"s\" {}\n",
    "json": json.dumps(_header()).encode(),
    "garbage": bytes(range(256)),
    "msgpack-int": msgpack.packb(5),
    "msgpack-list": msgpack.packb([1, 2, 3]),
    "no-format": msgpack.packb({"version": 1, "meta": {}, "nodes": [], "edges": []}),
    "other-format": msgpack.packb(_header(format="crc-recording")),
    "future-version": msgpack.packb(_header(version=FORMAT_VERSION + 1)),
    "version-1": msgpack.packb(_header(version=1)),
    "no-meta": msgpack.packb({k: v for k, v in _header().items() if k != "meta"}),
    "no-nodes": msgpack.packb({k: v for k, v in _header().items() if k != "nodes"}),
    "nodes-not-list": msgpack.packb(_header(nodes=5)),
    "node-wrong-shape": msgpack.packb(_header(nodes=[["a"]])),
    "node-attrs-not-map": msgpack.packb(_header(nodes=[["a", 3]])),
    "node-unhashable": msgpack.packb(_header(nodes=[[["a"], {}]])),
    "node-int-attr-keys": msgpack.packb(_header(nodes=[["a", {1: 2}]])),
    "edge-without-kind": msgpack.packb(_header(edges=[["a", "b", {}]])),
    "edge-attrs-not-map": msgpack.packb(_header(edges=[["a", "b", "x"]])),
    "trailing-bytes": msgpack.packb(_header()) + b"\x00",
}


@pytest.mark.parametrize("blob", list(NOT_PLANS.values()), ids=list(NOT_PLANS))
def test_not_a_plan_is_rejected(blob: bytes) -> None:
    with pytest.raises(PlanFormatError):
        Plan.from_bytes(blob)


@pytest.mark.parametrize("name", ["future-version", "version-1"])
def test_another_version_is_named_and_says_to_compile_again(name: str) -> None:
    with pytest.raises(PlanFormatError) as exc:
        Plan.from_bytes(NOT_PLANS[name])
    version = msgpack.unpackb(NOT_PLANS[name])["version"]
    assert f"format version {version}" in str(exc.value) and "`crc compile`" in str(exc.value)


def test_truncated_and_corrupted_plans_are_rejected(plan: Plan) -> None:
    blob = plan.to_bytes()
    rng = random.Random(0)
    for cut in sorted({1, 2, 10, len(blob) // 2, len(blob) - 1, *rng.sample(range(1, len(blob)), 30)}):
        with pytest.raises(PlanFormatError):
            Plan.from_bytes(blob[:cut])
    # flipping bytes either still decodes to a Plan, or fails with PlanFormatError: never another exception
    for _ in range(300):
        b = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        try:
            Plan.from_bytes(bytes(b))
        except PlanFormatError:
            pass


TWO = [["a", _step()], ["b", _step(name="b", label="b")]]
TEST = {"id": "s::t", "suite": "s", "name": "t", "timeout": None, "loc": LOC, "nodes": ["a", "b"], "uses": [],
        "waits": [], "by_trace": False}
WRONG_SHAPES: dict[str, dict[str, Any]] = {
    "meta-int": _header(meta=5),
    "meta-int-keys": _header(meta={1: 2}),
    "meta-unknown-field": _header(meta={**META, "suites": []}),
    "meta-no-source": _header(meta=_without(META, "source")),
    "tests-not-list": _header(tests=5),
    "suites-hold-ints": _header(suites=[1]),
    "test-names-missing-node": _header(nodes=TWO, tests=[{**TEST, "nodes": ["a", "c"]}]),
    "edges-not-list": _header(edges={}),
    "node-no-kind": _header(nodes=[["a", _without(_step(), "kind")]]),
    "node-unknown-kind": _header(nodes=[["a", _step(kind="widget")]]),
    "node-no-suite": _header(nodes=[["a", _without(_step(), "suite")]]),
    "node-unknown-field": _header(nodes=[["a", _step(colour="red")]]),
    "node-field-of-wrong-type": _header(nodes=[["a", _step(timeout="soon")]]),
    "node-bool-for-int": _header(nodes=[["a", _step(deferred_argv=[True])]]),
    "node-loc-as-text": _header(nodes=[["a", _step(loc="x.cr:1:1")]]),
    "node-bool-for-line": _header(nodes=[["a", _step(loc={**LOC, "line": True})]]),
    "node-nan-timeout": _header(nodes=[["a", _step(timeout=float("nan"))]]),
    "node-kind-of-wrong-type": _header(nodes=[["a", _step(action=1)]]),
    "node-literal-misspelt": _header(nodes=[["a", _step(action="exe")]]),
    "node-text-for-optional-text": _header(nodes=[["a", _step(service=5)]]),
    "node-id-not-text": _header(nodes=[[5, _step()]]),
    "node-twice": _header(nodes=[["a", _step()], ["a", _step()]]),
    "edge-unknown-kind": _header(nodes=TWO, edges=[["a", "b", {"kind": "nonsense"}]]),
    "edge-missing-field": _header(nodes=TWO, edges=[["a", "b", {"kind": "after"}]]),
    "edge-to-nowhere": _header(nodes=TWO[:1], edges=[["a", "b", {"kind": "after", "capture": None}]]),
    "edge-wrong-length": _header(nodes=TWO[:1], edges=[["a", {"kind": "after", "capture": None}]]),
    "edge-twice": _header(nodes=TWO, edges=[["a", "b", {"kind": "after", "capture": None}],
                                            ["a", "b", {"kind": "after", "capture": "c"}]]),
    "edge-attr-key-not-text": _header(nodes=TWO, edges=[["a", "b", {"kind": "after", "capture": None, 1: 2}]]),
    "node-attr-key-not-text": _header(nodes=[["a", {**_step(), 1: 2}]]),
}


@pytest.mark.parametrize("data", list(WRONG_SHAPES.values()), ids=list(WRONG_SHAPES))
def test_structurally_wrong_plan_is_rejected(data: dict[str, Any]) -> None:
    with pytest.raises(PlanFormatError, match="damaged Plan file"):
        Plan.from_bytes(canonical_bytes(data))


def test_smallest_well_formed_plan_is_accepted() -> None:
    data = _header(nodes=TWO, edges=[["a", "b", {"kind": "after", "capture": None}]], tests=[TEST])
    plan = Plan.from_bytes(canonical_bytes(data))
    assert list(plan.graph.edges(keys=True)) == [("a", "b", "after")]
    assert plan.tests == (TEST,)


def test_warnings_travel_on_the_plan_but_not_in_its_data() -> None:
    src = 'suite "s" {\n  service a { image "x" }\n}\n'
    plan = compile_file("w.cr", text=src, environ={})
    assert [(w.severity, w.message, w.loc.line) for w in plan.warnings] == [("warning", 'suite "s" has no test', 1)]
    again = Plan.from_bytes(plan.to_bytes())
    assert again.warnings == () and again.digest == plan.digest


# ---------------------------------------------------------------- the schema and its documentation


def test_architecture_doc_shows_the_schema_as_declared() -> None:
    """docs/architecture.md's schema tables are `schema_markdown()` verbatim (regenerate them with
    `python -m crc.compiler.schema`)."""
    from crc.compiler.schema import schema_markdown

    doc = (Path(__file__).parent.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    shown = doc.split("<!-- schema:begin -->\n", 1)[1].split("<!-- schema:end -->", 1)[0]
    assert shown == schema_markdown()


@pytest.mark.parametrize("p", every_plan(), ids=lambda p: Path(p.meta["source"]).name)
def test_every_compiled_plan_fits_the_schema(p: Plan) -> None:
    """The compiler emits exactly the declared shapes (the check a Plan read from a file passes)."""
    from crc.compiler.plan import check_structure

    check_structure(p.to_data())
    # and the schema names every kind the compiler emits
    assert {d["kind"] for d in p.nodes.values()} <= set(NODE_KINDS)


def test_schema_check_names_where_a_plan_is_wrong() -> None:
    data = _header(nodes=[["a", _step(timeout="soon")]])
    with pytest.raises(PlanFormatError, match=r"node 'a'\.timeout is not"):
        Plan.from_bytes(canonical_bytes(data))
    data = _header(nodes=[["a", _step(captures=[{"name": "c"}])]])
    with pytest.raises(PlanFormatError, match=r"node 'a'\.captures\[0\] lacks field, key, loc, path, regex"):
        Plan.from_bytes(canonical_bytes(data))
