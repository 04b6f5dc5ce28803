"""The DAG scheduler on its own: ordering, concurrency, skip propagation, fail-fast, cancellation."""

from __future__ import annotations

import random
import time

import anyio
import networkx as nx
import pytest
from crc.compiler.plan import Plan
from crc.runtime import verdicts
from crc.runtime.results import ERROR, FAILED, PASSED, SKIPPED, Cause, NodeResult, Verdict
from crc.runtime.runner import needs_layers
from crc.runtime.scheduler import Scheduler


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def graph(edges: list[tuple[str, str, str]], nodes: list[str] = ()) -> Plan:  # type: ignore[assignment]
    """A Plan of step nodes joined by edges of the given kinds."""
    names = [*nodes, *(n for u, v, _ in edges for n in (u, v))]
    return Plan.of({n: {"kind": "step", "label": n} for n in names}, [(u, v, {"kind": k}) for u, v, k in edges])


def recorder(outcomes: dict[str, str] | None = None, delay: float = 0.05):
    log: list[tuple[str, str, float]] = []

    async def execute(n: str) -> NodeResult:
        log.append(("start", n, time.monotonic()))
        await anyio.sleep(delay)
        log.append(("end", n, time.monotonic()))
        now = time.time_ns()
        return NodeResult(n, "step", (outcomes or {}).get(n, PASSED), "", now, now)

    return execute, log


@pytest.mark.anyio
async def test_dependents_wait_and_independent_nodes_overlap() -> None:
    g = graph([("a", "c", "after"), ("b", "c", "after")])
    execute, log = recorder()
    res = await Scheduler(g, execute).run(g.nodes)
    assert all(r.status == PASSED for r in res.values())
    start = {n: t for e, n, t in log if e == "start"}
    end = {n: t for e, n, t in log if e == "end"}
    assert start["c"] >= max(end["a"], end["b"])
    # a and b ran at the same time: each started before the other ended
    assert start["a"] < end["b"] and start["b"] < end["a"]


@pytest.mark.anyio
async def test_failure_skips_dependents_with_reason_but_then_only_waits() -> None:
    g = graph([("a", "b", "after"), ("b", "c", "checks"), ("a", "d", "then")])
    execute, _ = recorder({"a": FAILED})
    res = await Scheduler(g, execute).run(g.nodes)
    assert res["a"].status == FAILED
    assert res["b"].status == SKIPPED and "`a` failed" in res["b"].message
    assert res["c"].status == SKIPPED and "`b` skipped" in res["c"].message
    assert res["d"].status == PASSED  # `then` orders tests without propagating failure


@pytest.mark.anyio
async def test_span_relation_edges_do_not_order_execution() -> None:
    g = graph([("x", "y", "precedes")])
    execute, log = recorder()
    await Scheduler(g, execute).run(g.nodes)
    starts = [n for e, n, _ in log if e == "start"]
    ends = [n for e, n, _ in log if e == "end"]
    assert set(starts[:2]) == {"x", "y"} and set(ends) == {"x", "y"}


@pytest.mark.anyio
async def test_fail_fast_cancels_the_rest() -> None:
    g = graph([("slow", "after_slow", "after")], nodes=["bad"])

    async def execute(n: str) -> NodeResult:
        now = time.time_ns()
        if n == "bad":
            return NodeResult(n, "step", FAILED, "boom", now, now)
        await anyio.sleep(600)
        return NodeResult(n, "step", PASSED, "", now, now)

    with anyio.fail_after(300):  # never reached: fail-fast cancels the 600 s sleep at once
        res = await Scheduler(g, execute, fail_fast=True).run(g.nodes)
    assert res["bad"].status == FAILED
    assert res["slow"].status == SKIPPED and res["slow"].message == "skipped: --fail-fast after bad failed"
    assert res["slow"].cause is Cause.FAIL_FAST
    assert res["after_slow"].status == SKIPPED and res["after_slow"].cause is Cause.FAIL_FAST


@pytest.mark.anyio
async def test_outside_cancellation_records_every_node() -> None:
    g = graph([("a", "b", "after")])

    async def execute(n: str) -> NodeResult:
        await anyio.sleep(10)
        raise AssertionError("unreachable")

    sched = Scheduler(g, execute)
    with anyio.move_on_after(0.1):
        await sched.run(g.nodes, unfinished=verdicts.suite_timeout(0.1))
    assert {r.status for r in sched.results.values()} == {ERROR}
    assert all(r.message == "suite timeout (0.1s) reached" and r.cause is Cause.SUITE_TIMEOUT
               for r in sched.results.values())


@pytest.mark.anyio
async def test_shuffle_seed_gives_a_reproducible_start_order() -> None:
    nodes = [f"n{i}" for i in range(12)]

    async def order(seed: int) -> list[str]:
        g = graph([], nodes=nodes)
        execute, log = recorder(delay=0)
        await Scheduler(g, execute, shuffle_seed=seed).run(g.nodes)
        return [n for e, n, _ in log if e == "start"]

    a, b, c = await order(1), await order(1), await order(2)
    assert a == b
    assert a != c
    assert sorted(a) == sorted(nodes)


@pytest.mark.anyio
async def test_a_node_that_raises_errs_and_its_dependents_are_skipped() -> None:
    g = graph([("a", "b", "after")], nodes=["c"])

    async def execute(n: str) -> NodeResult:
        if n == "a":
            raise KeyError("boom")
        now = time.time_ns()
        return NodeResult(n, "step", PASSED, "", now, now)

    results = await Scheduler(g, execute).run(g.nodes)
    assert results["a"].status == ERROR and "internal error: KeyError" in results["a"].message
    assert results["a"].cause is Cause.INTERNAL
    assert results["b"].status == SKIPPED and results["b"].message == "skipped: step `a` error"
    assert results["b"].cause is Cause.DEPENDENCY
    assert results["c"].status == PASSED


@pytest.mark.anyio
async def test_unfinished_reason_is_asked_when_the_run_ends() -> None:
    g = graph([("a", "b", "after")])
    execute, _ = recorder(delay=5)
    asked: list[str] = []

    def reason() -> Verdict:
        asked.append("x")
        return verdicts.INTERRUPTED

    sched = Scheduler(g, execute)
    with anyio.move_on_after(0.1):
        await sched.run(g.nodes, unfinished=reason)
    results = sched.results
    assert asked and results["a"].message == "cancelled: the run was interrupted" and results["b"].status == ERROR
    assert results["b"].cause is Cause.INTERRUPTED


@pytest.mark.anyio
async def test_stopped_before_it_began_skips_everything() -> None:
    g = graph([], nodes=["a", "b"])
    execute, log = recorder()
    sched = Scheduler(g, execute)
    sched.stop(verdicts.fail_fast("x", FAILED))
    results = await sched.run(g.nodes)
    assert not log
    assert {r.status for r in results.values()} == {SKIPPED}


@pytest.mark.parametrize("seed", range(20))
def test_teardown_layers_are_the_topological_generations_of_needs(seed: int) -> None:
    """Services are removed dependents first: the layers of `needs` among the started services, as
    networkx's topological generations give them (other edge kinds and other services do not count)."""
    rng = random.Random(seed)
    names = [f"s{i}" for i in range(rng.randint(1, 9))]
    edges = [(u, v, "needs") for i, u in enumerate(names) for v in names[i + 1:] if rng.random() < 0.3]
    edges += [(u, v, "then") for i, u in enumerate(names) for v in names[i + 1:] if rng.random() < 0.2]
    started = {n for n in names if rng.random() < 0.8}
    g = nx.DiGraph()
    g.add_nodes_from(started)
    g.add_edges_from((u, v) for u, v, k in edges if k == "needs" and u in started and v in started)
    expected = [sorted(layer) for layer in nx.topological_generations(g)]
    assert needs_layers(graph(edges, nodes=names), started) == expected
