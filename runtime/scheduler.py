"""Runs DAG nodes as soon as their inputs are done, concurrently, each task owned by one task group.

Only scheduling edges order work: `needs`, `after`, `checks`, `observes` (a failure upstream skips the node,
with the reason) and `then` (waits, but a failed test does not skip the next one). Span relation edges
(`precedes`, `contains`, `parent`) are constraints checked on spans, not orders of execution.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import anyio

from .matching import RegexTimeout
from .results import ERROR, FAILED, PASSED, SKIPPED, NodeResult

WAITS = frozenset({"needs", "after", "checks", "observes", "then"})
PROPAGATES = frozenset({"needs", "after", "checks", "observes"})

if TYPE_CHECKING:
    from crc.compiler.plan import Plan

Execute = Callable[[str], Awaitable[NodeResult]]


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
        self._stopped: str | None = None

    def _deps(self, node: str, nodes: set[str]) -> list[tuple[str, str]]:
        return [(u, k) for u, k in self.plan.in_edges(node) if k in WAITS and u in nodes]

    async def run(self, nodes: Iterable[str], *,
                  unfinished_reason: str | Callable[[], str] = "cancelled") -> dict[str, NodeResult]:
        """Run `nodes`; returns a result for every one of them, also when cancelled from outside."""
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
            reason = self._stopped or (unfinished_reason if isinstance(unfinished_reason, str) else unfinished_reason())
            for n in todo:
                if n not in self.results:
                    self._record(NodeResult(n, self.plan.node(n)["kind"], SKIPPED if self._stopped else ERROR,
                                            reason, now, now))
        return self.results

    async def _node(self, n: str, todo: set[str], done: dict[str, anyio.Event]) -> None:
        try:
            deps = self._deps(n, todo)
            for u, _ in deps:
                await done[u].wait()
            if self._rng is not None:
                await anyio.sleep(0)  # let the seeded order, not the wake-up order, decide who starts first
            if self._stopped is not None:
                return  # stopped (fail-fast): never start; `run` records it as skipped
            blocked = [(u, k) for u, k in deps if k in PROPAGATES
                       and (u not in self.results or self.results[u].status != PASSED)]
            now = time.time_ns()
            if blocked:
                u, _k = blocked[0]
                ud = self.plan.node(u)
                label = ud.get("label", u)
                why = self.results[u].status if u in self.results else "did not finish"
                self._record(NodeResult(n, self.plan.node(n)["kind"], SKIPPED,
                                        f"skipped: {ud['kind']} `{label}` {why}", now, now))
            else:
                started = time.time_ns()
                try:
                    result = await self.execute(n)
                except RegexTimeout as e:  # a pattern from the file that backtracks without end
                    result = NodeResult(n, self.plan.node(n)["kind"], ERROR, str(e), started, time.time_ns())
                except Exception as e:  # a bug or an unexpected failure: this node errs, the run goes on
                    result = NodeResult(n, self.plan.node(n)["kind"], ERROR,
                                        f"internal error: {type(e).__name__}: {e}", started, time.time_ns())
                self._record(result)
        finally:
            done[n].set()

    def _record(self, r: NodeResult) -> None:
        self.results[r.node] = r
        if self.on_result is not None:
            self.on_result(r)
        if self.fail_fast and r.status in (FAILED, ERROR) and self._stopped is None:
            self.stop(f"skipped: --fail-fast after {r.node} {r.status}")

    def stop(self, reason: str) -> None:
        """Cancel what runs and skip what has not started, with `reason` (fail-fast in another suite)."""
        if self._stopped is None:
            self._stopped = reason
            tg = getattr(self, "_tg", None)
            if tg is not None:
                tg.cancel_scope.cancel()

