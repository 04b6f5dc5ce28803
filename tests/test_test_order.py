"""Which services a test uses, and the order of tests that follows from it (compiler only, no engine).

A test waits for (and holds) the services its steps run in, the services its commands name as hostnames,
those in its `uses` clause, and what these need; a test that checks spans uses every service. Tests sharing a
service run in source order (`then` edges); tests with disjoint services have no order between them.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import pytest
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import CompileError
from crc.compiler.plan import Plan

SERVICES = """
  service db { image "img" }
  service api { image "img" needs db }
  service cache { image "img" }
  service box { image "img" }
  service box2 { image "img" }
  service client { image "img" env { TARGET: "http://cache:6379" } }
"""


SERVICE_NAMES = ("db", "api", "cache", "box", "box2", "client")


def plan_of(tests: str, services: str = SERVICES) -> Plan:
    return compile_file("t.cr", text=f'suite "s" {{\n{services}\n{tests}\n}}\n', environ={})


def uses(p: Plan) -> dict[str, list[str]]:
    return {t["name"]: [p.node(u)["name"] for u in t["uses"]] for t in p.tests}


def order_of(p: Plan) -> nx.DiGraph:
    """test -> test, for each `then` edge between their nodes."""
    g = nx.DiGraph()
    g.add_nodes_from(t["name"] for t in p.tests)
    for u, v, k in p.graph.edges(keys=True):
        if k == "then":
            g.add_edge(p.graph.nodes[u]["test"], p.graph.nodes[v]["test"])
    return g


def waits_for(p: Plan, test: str) -> set[str]:
    """The services whose readiness the test's first steps wait for."""
    out = set()
    for u, v, k in p.graph.edges(keys=True):
        if k == "needs" and p.graph.nodes[v].get("test") == test:
            out.add(p.graph.nodes[u]["name"])
    return out


@pytest.mark.parametrize(("body", "expected"), [
    # the service a step runs in
    ('step a = exec box ["true"]', ["box"]),
    # and what it needs, transitively
    ('step a = exec api ["true"]', ["api", "db"]),
    # a service named as a hostname in argv (list, split and sh forms) or in a step's env
    ('step a = exec box ["wget", "http://cache:6379/"]', ["box", "cache"]),
    ('step a = exec box "redis-cli -h cache ping"', ["box", "cache"]),
    ('step a = exec box sh "nc -z api 8080 && echo ok"', ["api", "box", "db"]),
    ('step a = exec box ["env"] env { TARGET: "http://cache:1/" }', ["box", "cache"]),
    # a `run` step's new container reaches what it names
    ('step a = run "img" ["ping", "-c1", "db"]', ["db"]),
    # a service reaches what its own env or command names (client -> cache), as it reaches what it needs
    ('step a = exec client ["sh", "-c", "wget $TARGET"]', ["cache", "client"]),
    # hostnames are case-insensitive
    ('step a = exec box ["wget", "http://CACHE:6379/"]', ["box", "cache"]),
    # a `let` value in a string rendered at run time (it uses a capture)
    ('let host = "cache"\n  step a = exec box ["echo", "x=1"]\n  capture x = a.stdout ~ /x=(\\d+)/\n'
     '  step b = exec box ["wget", "http://{{ host }}:1/{{ x }}"]', ["box", "cache"]),
    # a name inside a longer word is not a mention
    ('step a = exec box ["echo", "box2x", "my-cache", "cache_1", "/dbx/"]', ["box"]),
])
def test_what_a_test_uses(body: str, expected: list[str]) -> None:
    p = plan_of(f'test "t" {{\n  {body}\n}}')
    assert uses(p) == {"t": expected}
    # The only test: the services it does not use are used by no test, so it waits for them too.
    assert waits_for(p, "t") == {p.node(n)["name"] for n in p.tests[0]["waits"]} == set(SERVICE_NAMES)


def test_uses_clause() -> None:
    p = plan_of('test "t" timeout 5s uses cache, api {\n step a = exec box ["true"]\n}')
    assert uses(p) == {"t": ["api", "box", "cache", "db"]}
    assert p.tests[0]["timeout"] == 5


def test_uses_an_unknown_service_is_a_located_error() -> None:
    with pytest.raises(CompileError) as exc:
        plan_of('test "t" uses cahce {\n step a = exec box ["true"]\n}')
    (d,) = [x for x in exc.value.diagnostics if x.severity == "error"]
    assert d.message == "unknown service `cahce`"
    assert d.loc is not None and d.loc.line == 10
    assert d.help is not None and "cache" in d.help


@pytest.mark.parametrize("check", [
    'span s = "GET /"',
    'expect count("GET /") == 1',
    'expect no span { status error }',
    'expect hermetic',
])
def test_a_test_that_checks_spans_uses_every_service(check: str) -> None:
    p = plan_of(f'test "t" {{\n  step a = exec box ["true"]\n  {check}\n}}')
    assert uses(p) == {"t": ["api", "box", "box2", "cache", "client", "db"]}


def test_disjoint_tests_have_no_order_and_shared_ones_keep_source_order() -> None:
    p = plan_of("""
  test "one" { step a = exec box ["true"] }
  test "two" { step a = exec box2 ["true"] }
  test "three" { step a = exec box ["true"] }
  test "four" { step a = exec cache ["true"] }
  test "five" { step a = exec box2 ["wget", "http://cache/"] }
""")
    order = order_of(p)
    assert set(order.edges) == {("one", "three"), ("two", "five"), ("four", "five")}


def test_a_span_test_runs_alone_between_its_neighbours() -> None:
    p = plan_of("""
  test "one" { step a = exec box ["true"] }
  test "two" { step a = exec box2 ["true"] }
  test "spans" { step a = exec cache ["true"]  expect count("x") == 0 }
  test "after" { step a = exec box ["true"] }
""")
    order = order_of(p)
    assert set(order.edges) == {("one", "spans"), ("two", "spans"), ("spans", "after")}


def test_a_test_waits_for_the_latest_user_of_each_service_only() -> None:
    p = plan_of("""
  test "a1" { step a = exec box ["true"] }
  test "a2" { step a = exec box ["true"] }
  test "a3" { step a = exec box ["true"] }
""")
    assert set(order_of(p).edges) == {("a1", "a2"), ("a2", "a3")}


def test_then_edges_come_from_every_end_of_the_earlier_test() -> None:
    p = plan_of("""
  test "fan" {
    step a = exec box ["true"]
    step b after a = exec box ["true"]
    step c after a = exec box ["true"]
    expect b.exit == 0
  }
  test "next" { step a = exec box ["true"] }
""")
    sources: set[Any] = {p.graph.nodes[u]["label"] for u, v, k in p.graph.edges(keys=True) if k == "then"}
    # the ends of "fan": the assert on b, and step c (step b ends in its assert)
    assert len(sources) == 2 and "c" in sources


def test_services_no_test_uses_are_waited_for_by_every_test_but_order_none() -> None:
    p = plan_of("""
  test "on box" { step a = exec box ["true"] }
  test "on box2" { step a = exec box2 ["true"] }
""", services='  service box { image "img" }\n  service box2 { image "img" }\n  service sidecar { image "img" }')
    assert uses(p) == {"on box": ["box"], "on box2": ["box2"]}
    assert {t["name"]: t["waits"] for t in p.tests} == {"on box": ["s::service:box", "s::service:sidecar"],
                                                       "on box2": ["s::service:box2", "s::service:sidecar"]}
    assert waits_for(p, "on box") == {"box", "sidecar"}
    assert not order_of(p).edges
    # the runtime's view: a test's failure accounting covers what it waits for
    assert p.services_of(p.tests[0]) == ["s::service:box", "s::service:sidecar"]


def test_a_span_test_does_not_overlap_a_test_that_uses_no_service() -> None:
    p = plan_of("""
  test "nothing" { step a = run "img" ["true"] }
  test "spans" { step a = exec box ["true"]  expect count("x") == 0 }
  test "nothing again" { step a = run "img" ["true"] }
""")
    assert set(order_of(p).edges) == {("nothing", "spans"), ("spans", "nothing again")}


def test_exec_into_an_unknown_service_is_a_located_error_not_a_crash() -> None:
    with pytest.raises(CompileError) as exc:
        plan_of('test "t" {\n step a = exec apx ["true"]\n}')
    (d,) = [x for x in exc.value.diagnostics if x.severity == "error"]
    assert d.message == "unknown service `apx`" and d.loc is not None and d.loc.line == 11
