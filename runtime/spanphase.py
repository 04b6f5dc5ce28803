"""A test's span phase: wait until every selector the test needs has its spans, settle, check once.

Completeness comes from the plan, not from guessing: the phase ends as soon as each selector with a minimum
count has that many spans (then a short settle for upper bounds and `no span`), or at a deadline; the verdicts
themselves (and the message naming the selectors still missing) come from `verdicts.span_nodes`, which replay
calls too. All span nodes of a test share one phase and one evaluation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio

from . import verdicts
from .results import Verdict
from .spans import Span
from .verdicts import in_window, window_time

if TYPE_CHECKING:
    from crc.compiler.plan import Plan

    from . import spancheck as sc

__all__ = ["SpanPhase", "build", "in_window", "window_time"]


def build(plan: Plan, suite: str, test: str, traces: Mapping[str, str] | None = None,
          render: verdicts.Render | None = None) -> tuple[list[sc.Selector], list[Any], dict[str, list[str]]]:
    """Selectors and constraints of one test, and which constraint ids belong to which node (for reports;
    `verdicts.span_checks` builds them)."""
    c = verdicts.span_checks(plan, suite, test, traces, render)
    return c.selectors, c.constraints, c.owner


class SpanPhase:
    """Evaluated once per test, on first request; every span node awaits the same result.

    `spans()` returns the test's spans so far; `window(complete, waited_s)` the `SpanWindow` they came from,
    which each span node's result records so replay judges exactly the same spans. `traces` maps the test's
    steps to the trace ids crc started for them (`in STEP` selectors).
    """

    def __init__(self, plan: Plan, *, suite: str, test: str, receiver: Any, spans: Callable[[], Sequence[Span]],
                 settle: float, deadline: float, window: Callable[[bool, float], verdicts.SpanWindow] | None = None,
                 clock_skew: float, traces: Mapping[str, str] | None = None,
                 render: verdicts.Render | None = None, early: Callable[[], Awaitable[None]] | None = None):
        """`early`, when given, returns once the spans still missing are taken not to come (`crc dev`'s rule, in
        `dev_session.SpanQuiet`): the phase then ends without waiting for its deadline (`ended_early`), and
        `judge` can be called again should a span come after all."""
        self.checks = verdicts.span_checks(plan, suite, test, traces, render)
        self.plan = plan
        self.receiver = receiver
        self.spans = spans
        self.window = window
        self.settle = settle
        self.deadline = deadline
        self.clock_skew = clock_skew
        self._done = anyio.Event()
        self._started = False
        self._verdicts: dict[str, Verdict] = {}
        self.seen: verdicts.SpanWindow | None = None
        self.early = early
        self.ended_early = False
        self.started_at = 0.0  # when the phase began waiting, on anyio's clock

    async def results(self) -> dict[str, Verdict]:
        if not self._started:
            self._started = True
            try:
                await self._run()
            finally:
                self._done.set()
        else:
            await self._done.wait()
        return self._verdicts

    async def _run(self) -> None:
        self.started_at = anyio.current_time()
        complete = await self._wait()
        if complete:
            await anyio.sleep(self.settle)
        self.judge(complete)

    def judge(self, complete: bool) -> dict[str, Verdict]:
        """The verdicts on the spans there are now (`complete`: every awaited span came), kept as the phase's;
        the phase's own end calls it, and `crc dev` again when a span comes after an early end."""
        spans = list(self.spans())
        waited = anyio.current_time() - self.started_at
        w = self.window(complete, waited) if self.window else verdicts.SpanWindow("", 0, 0, waited, complete)
        dropped = getattr(self.receiver, "dropped", 0)  # past its span limit: no span verdict can be trusted
        self.seen = replace(w, dropped=dropped, max_spans=getattr(self.receiver, "max_spans", 0) if dropped else 0)
        self._verdicts = verdicts.span_nodes(self.plan, self.checks, spans, self.seen, self.clock_skew)
        return self._verdicts

    def complete(self) -> bool:
        """Whether every selector with a minimum count has its spans now."""
        return not self.checks.missing(self.spans(), self.clock_skew)

    async def _wait(self) -> bool:
        """Wait for every awaited span (True), or the deadline, or `early` (False)."""
        def arrived(_: Any) -> bool:
            return self.complete()

        if self.early is None:
            return bool(await self.receiver.wait_for(arrived, timeout=self.deadline))
        complete = False
        early = self.early
        async with anyio.create_task_group() as tg:
            async def all_or_deadline() -> None:
                nonlocal complete
                complete = await self.receiver.wait_for(arrived, timeout=self.deadline)
                tg.cancel_scope.cancel()

            async def quiet() -> None:
                await early()
                self.ended_early = not arrived(None)
                tg.cancel_scope.cancel()

            tg.start_soon(all_or_deadline)
            tg.start_soon(quiet)
        return complete or (not self.ended_early and arrived(None))
