"""A test's span phase: wait until every selector the test needs has its spans, settle, check once.

Completeness comes from the plan, not from guessing: the phase ends as soon as each selector with a minimum
count has that many spans (then a short settle for upper bounds and `no span`), or at a deadline whose
message names the selectors still missing. All span nodes of a test share one phase and one evaluation.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from . import spancheck as sc
from .spans import Span

if TYPE_CHECKING:
    from crc.compiler.plan import Plan


@dataclass(frozen=True, slots=True)
class NodeVerdict:
    passed: bool
    message: str
    spans: list[dict[str, Any]]


def window_time(span: Span) -> int:
    """When a span counts as having begun, for test windows: by its own clock, else its arrival."""
    return span.start_ns if span.start_ns else span.received_ns


def in_window(span: Span, test_started_ns: int, skew_s: float) -> bool:
    """Spans that began after the test's first step started (by the span's clock, else arrival)."""
    if not test_started_ns:
        return False
    return window_time(span) >= test_started_ns - int(skew_s * 1e9)


Render = Callable[[str, Mapping[str, Any]], str]


def _value(v: Any, d: Mapping[str, Any], render: Render | None) -> Any:
    """An attribute value of the Plan: a literal, or `{"template": TEXT}` (it uses captures), rendered now."""
    if not isinstance(v, dict) or "template" not in v:
        return v
    if render is None:
        raise ValueError(f"{d.get('label')}: a value that uses captures cannot be checked without them")
    text = render(v["template"], d)
    return re.escape(text) if v.get("escape") else text


def _selector(sid: str, d: Mapping[str, Any], traces: Mapping[str, str], render: Render | None = None,
              **over: Any) -> sc.Selector:
    m = d["match"]
    step = m.get("trace_of")
    fields: dict[str, Any] = dict(
        id=sid, label=d["label"], name=m["name"], name_is_glob=bool(m["glob"]), name_regex=m["regex"],
        service=m["service"], kind=m["kind"], status=m["status"],
        attrs=tuple(sc.AttrMatch(key=k, op=op, value=_value(v, d, render)) for k, op, v in m["attrs"]),
        parent=m["parent"], ancestor=m["ancestor"],
        # A step that did not run started no trace: its selector matches nothing.
        traces=frozenset([traces[step]] if step in traces else []) if step else None,
        trace_label=step.rsplit(":", 1)[-1] if step else "")
    fields.update(over)
    return sc.Selector(**fields)


def build(plan: Plan, suite: str, test: str, traces: Mapping[str, str] | None = None, render: Render | None = None
          ) -> tuple[list[sc.Selector], list[Any], dict[str, list[str]]]:
    """Selectors and constraints of one test, and which constraint ids belong to which node.

    `traces` maps the test's step nodes to the trace id crc started for each (for `in STEP` selectors);
    `render(text, node)` renders attribute values that use captures."""
    traces = traces or {}
    selectors: list[sc.Selector] = []
    constraints: list[Any] = []
    owner: dict[str, list[str]] = {}
    nodes = [(n, d) for n, d in plan.nodes.items() if d["suite"] == suite and d.get("test") == test]
    for n, d in nodes:
        if d["kind"] == "assert" and d.get("check") == "hermetic":
            constraints.append(sc.Hermetic(id=n, where=d["loc"], allowed_hosts=frozenset(d["allow"])))
            owner.setdefault(n, []).append(n)
            continue
        if d["kind"] != "span":
            continue
        selectors.append(_selector(n, d, traces, render))
        for c in d["constraints"]:
            cid, where, op, v = c["id"], c["loc"], c["op"], c.get("value")
            if c["check"] == "count":
                lo = {"==": v, ">=": v, ">": v + 1}.get(op)
                hi = {"==": v, "<=": v, "<": v - 1}.get(op)
                constraints.append(sc.Count(id=cid, where=where, selector=n, min=lo, max=hi))
            elif c["check"] == "duration":
                if op in ("<", "<="):
                    constraints.append(sc.Duration(id=cid, where=where, selector=n, min_s=None, max_s=v,
                                                   max_inclusive=op == "<="))
                else:
                    constraints.append(sc.Duration(id=cid, where=where, selector=n, min_s=v, max_s=None,
                                                   min_inclusive=op == ">="))
            elif c["check"] == "status":
                if op == "==":
                    constraints.append(sc.Status(id=cid, where=where, selector=n, status=v))
                else:
                    # "status != X" for every matched span: no span of this selector has status X.
                    derived = f"{n}!status={v}"
                    selectors.append(_selector(derived, d, traces, render, status=v,
                                               label=f"{d['label']} {{ status {v} }}"))
                    constraints.append(sc.Count(id=cid, where=where, selector=derived, min=None, max=0))
            elif c["check"] == "attr":
                constraints.append(sc.Attr(id=cid, where=where, selector=n,
                                           match=sc.AttrMatch(key=c["key"], op=op, value=_value(v, d, render))))
            owner.setdefault(n, []).append(cid)
    for u, v, e in plan.edges:
        k = e["kind"]
        if k not in ("precedes", "contains", "parent") or not e.get("expected", True):
            continue
        dv = plan.node(v)
        if dv.get("test") != test or dv["suite"] != suite:
            continue
        cid = f"{u}->{k}->{v}"
        if k == "precedes":
            constraints.append(sc.Precedes(id=cid, where=e["loc"], before=u, after=v,
                                           min_gap_s=e.get("min_gap"), max_gap_s=e.get("max_gap")))
        elif k == "contains":
            constraints.append(sc.Contains(id=cid, where=e["loc"], outer=u, inner=v))
        else:
            constraints.append(sc.Parent(id=cid, where=e["loc"], parent=u, child=v))
        owner.setdefault(v, []).append(cid)
    return selectors, constraints, owner


class SpanPhase:
    """Evaluated once per test, on first request; every span node awaits the same result."""

    def __init__(self, plan: Plan, *, suite: str, test: str, receiver: Any,
                 spans: Callable[[], Sequence[Span]], settle: float, deadline: float, clock_skew: float,
                 traces: Mapping[str, str] | None = None, render: Render | None = None):
        self.selectors, self.constraints, self.owner = build(plan, suite, test, traces, render)
        self.where = {c.id: c.where for c in self.constraints}
        self.receiver = receiver
        self.spans = spans
        self.settle = settle
        self.deadline = deadline
        self.clock_skew = clock_skew
        self.plan = plan
        self._done = anyio.Event()
        self._started = False
        self._verdicts: dict[str, NodeVerdict] = {}
        self.waited_s = 0.0
        self.missing: list[str] = []

    def _needed(self) -> list[sc.Count]:
        return [c for c in self.constraints if isinstance(c, sc.Count) and (c.min or 0) >= 1]

    def _unsatisfied(self, spans: Sequence[Span]) -> list[str]:
        needed = self._needed()
        if not needed:
            return []
        results = sc.evaluate(spans, self.selectors, needed, clock_skew_s=self.clock_skew)
        return [c.selector for c, r in zip(needed, results, strict=True) if not r.passed]

    async def results(self) -> dict[str, NodeVerdict]:
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
        t0 = time.monotonic()
        ok = await self.receiver.wait_for(lambda _: not self._unsatisfied(self.spans()), timeout=self.deadline)
        if ok:
            await anyio.sleep(self.settle)
        self.waited_s = time.monotonic() - t0
        spans = list(self.spans())
        self.missing = [] if ok else self._unsatisfied(spans)
        results = {r.constraint_id: r for r in sc.evaluate(spans, self.selectors, self.constraints,
                                                           clock_skew_s=self.clock_skew)}
        for node, cids in self.owner.items():
            rs = [results[c] for c in cids]
            failed = [r for r in rs if not r.passed]
            msgs = []
            node_loc = self.plan.node(node).get("loc")
            for r in failed:
                where = self.where.get(r.constraint_id)
                # Failures are reported at the span node; when an `expect` line stated the check, name it.
                msgs.append(f"{r.message}\n  (expect at {where})" if where and where != node_loc else r.message)
            if failed and node in self.missing:
                msgs.append(f"(waited {self.waited_s:.1f}s for spans; {len(spans)} span(s) arrived for this test)")
            if getattr(self.receiver, "dropped", 0):
                # Past its span limit the receiver refused batches: no verdict on spans can be trusted.
                failed = failed or rs
                msgs.append(f"crc's OTLP receiver dropped {self.receiver.dropped} span(s) past its limit of "
                            f"{self.receiver.max_spans} per run: span checks cannot be trusted")
            involved = {id(s): s for r in rs for s in r.spans}
            self._verdicts[node] = NodeVerdict(not failed, "\n".join(msgs),
                                               [s.to_dict() for s in list(involved.values())[:20]])
