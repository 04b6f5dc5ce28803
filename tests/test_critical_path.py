"""The critical path (crc.runtime.critical_path) against its brute-force definition: of every chain of nodes
that ran, linked by scheduling edges, the one of largest total duration, ties to the chain whose ids come first."""

from __future__ import annotations

from crc.compiler.plan import Plan
from crc.runtime.critical_path import critical_path, longest_chain, scheduling_edges
from crc.runtime.results import PASSED, SKIPPED, NodeResult
from hypothesis import given, settings
from hypothesis import strategies as st


def all_chains(nodes: list[str], edges: set[tuple[str, str]]) -> list[tuple[str, ...]]:
    """Every path of the DAG, single nodes included, by plain enumeration."""
    succ = {n: sorted(v for u, v in edges if u == n) for n in nodes}
    out: list[tuple[str, ...]] = []

    def walk(path: tuple[str, ...]) -> None:
        out.append(path)
        for v in succ[path[-1]]:
            walk((*path, v))

    for n in nodes:
        walk((n,))
    return out


@st.composite
def dags(draw: st.DrawFn) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """Random DAGs: edges only from a lower to a higher index, so no cycle; durations with ties."""
    k = draw(st.integers(0, 7))
    names = [f"n{i}" for i in draw(st.permutations(range(k)))]
    durations = {n: draw(st.integers(0, 4)) for n in names}
    edges = {(names[i], names[j]) for i in range(k) for j in range(i + 1, k) if draw(st.booleans())}
    return durations, edges


@settings(max_examples=400, deadline=None)
@given(dags())
def test_longest_chain_matches_brute_force(dag: tuple[dict[str, int], set[tuple[str, str]]]) -> None:
    durations, edges = dag
    chains = all_chains(sorted(durations), edges)
    expected = min(chains, key=lambda c: (-sum(durations[n] for n in c), c)) if chains else ()
    assert longest_chain(durations, edges) == expected


def test_only_scheduling_edges_and_nodes_that_ran() -> None:
    """Span relation edges order spans, not work; a skipped node did not take any time of the run."""
    plan = Plan.of({n: {"kind": "step", "label": n, "suite": "s", "test": "t"} for n in "abcd"},
                   [("a", "b", {"kind": "after"}), ("b", "c", {"kind": "precedes"}), ("a", "d", {"kind": "checks"})])
    assert scheduling_edges(plan.edges) == {("a", "b"), ("a", "d")}
    s = 1_000_000_000
    results = {"a": NodeResult("a", "step", PASSED, "", 1 * s, 2 * s), "b": NodeResult("b", "step", PASSED, "", 2 * s, 3 * s),
               "c": NodeResult("c", "step", PASSED, "", 3 * s, 9 * s), "d": NodeResult("d", "step", SKIPPED, "", 3 * s, 3 * s)}
    cp = critical_path([plan], results, 10 * s)
    assert cp is not None
    assert cp.nodes == ("c",)  # 6 s alone beats a -> b (2 s): the `precedes` edge does not chain them
    assert cp.to_json({})["duration_s"] == 6.0 and cp.to_json({})["wall_s"] == 10.0
    results["c"] = NodeResult("c", "step", PASSED, "", 3 * s, 4 * s)
    cp = critical_path([plan], results, 10 * s)
    assert cp is not None and cp.nodes == ("a", "b")
    labels = {n: {"kind": "step", "label": n.upper(), "suite": "s", "test": "t"} for n in "abcd"}
    assert cp.describe(labels) == "critical path (2.00s of 10.00s, suite s): step A (t) 1.00s -> step B (t) 1.00s"
    assert critical_path([plan], {}, 0) is None
