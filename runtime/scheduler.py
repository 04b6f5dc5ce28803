"""Runs DAG nodes as soon as their inputs are done, concurrently, each task owned by one task group.

Only scheduling edges order work: `needs`, `after`, `checks`, `observes` (a failure upstream skips the node,
with the reason) and `then` (waits, but a failed test does not skip the next one). Span relation edges
(`precedes`, `contains`, `parent`) are constraints checked on spans, not orders of execution. The skip rule
and every message come from `verdicts`, which replay uses too.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from . import verdicts
from .matching import RegexTimeout
from .results import ERROR, FAILED, Cause, NodeResult, Verdict
from .verdicts import PROPAGATES, WAITS

if TYPE_CHECKING:
    from crc.compiler.plan import Plan

Execute = Callable[[str], Awaitable[NodeResult]]

__all__ = ["PROPAGATES", "WAITS", "Execute", "Scheduler"]


class Scheduler:
    """Executes a set of nodes of a Plan.

    `shuffle_seed`, when given, decides the start order among nodes that become ready together, so an
    order-dependent failure can be reproduced exactly.
    """

    def __init__(self, plan: Plan, execute: Execute, *, fail_fast: bool = False,
                 on_result: Callable[[NodeResult], None] | None = None, shuffle_seed: int | None = None):
        self.plan = plan
        self.execute = execute
        self.fail_fast = fail_fast
        self.on_result = on_result
        self.results: dict[str, NodeResult] = {}
        self._rng = random.Random(shuffle_seed) if shuffle_seed is not None else None
        self._stopped: Verdict | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    def deps(self, node: str, nodes: set[str]) -> list[tuple[str, str]]:
        """What `node` waits for among `nodes`: (source, edge kind), in the Plan's order."""
        return [(u, k) for u, k in self.plan.in_edges(node) if k in WAITS and u in nodes]

    async def run(self, nodes: Iterable[str], *,
                  unfinished: Verdict | Callable[[], Verdict] = verdicts.CANCELLED) -> dict[str, NodeResult]:
        """Run `nodes`; returns a result for every one of them, also when cancelled from outside (then the
        unfinished ones get `unfinished`, or what it returns when asked at that moment)."""
        todo = set(nodes)
        done = {n: anyio.Event() for n in todo}
        order = sorted(todo)
        if self._rng is not None:
            self._rng.shuffle(order)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if self._stopped is not None:
                    tg.cancel_scope.cancel()  # stopped before it began: everything is skipped below
                for n in order:
                    tg.start_soon(self._node, n, todo, done, name=f"node {n}")
        finally:
            now = time.time_ns()
            why = self._stopped or (unfinished if isinstance(unfinished, Verdict) else unfinished())
            for n in todo:
                if n not in self.results:
                    self._record(NodeResult.of(n, self.plan.node(n)["kind"], why, now, now))
        return self.results

    async def _node(self, n: str, todo: set[str], done: dict[str, anyio.Event]) -> None:
        try:
            # What finished in an earlier `run` (a suite's services, kept between tests) counts as done.
            deps = self.deps(n, todo | self.results.keys())
            for u, _ in deps:
                if u in done:
                    await done[u].wait()
            if self._rng is not None:
                await anyio.sleep(0)  # let the seeded order, not the wake-up order, decide who starts first
            if self._stopped is not None:
                return  # stopped (fail-fast): never start; `run` records it as skipped
            kind = self.plan.node(n)["kind"]
            skip = verdicts.blocker(self.plan, deps, self.results)
            if skip is not None:
                now = time.time_ns()
                self._record(NodeResult.of(n, kind, skip, now, now))
            else:
                started = time.time_ns()
                try:
                    result = await self.execute(n)
                except RegexTimeout as e:  # a pattern from the file that backtracks without end
                    result = NodeResult.of(n, kind, Verdict(ERROR, str(e), Cause.INTERNAL), started, time.time_ns())
                except Exception as e:  # a bug or an unexpected failure: this node errs, the run goes on
                    result = NodeResult.of(n, kind, verdicts.internal_error(e), started, time.time_ns())
                self._record(result)
        finally:
            done[n].set()

    def _record(self, r: NodeResult) -> None:
        self.results[r.node] = r
        if self.on_result is not None:
            self.on_result(r)
        if self.fail_fast and r.status in (FAILED, ERROR) and self._stopped is None:
            self.stop(verdicts.fail_fast(self.plan.node(r.node).get("label", r.node), r.status))

    def stop(self, why: Verdict) -> None:
        """Cancel what runs and skip what has not started, with `why` (fail-fast, here or in another suite)."""
        if self._stopped is None:
            self._stopped = why
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
