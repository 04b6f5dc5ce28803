"""Re-evaluates every expectation of a recording, with no engine: the same checks the live run made.

Every verdict comes from `verdicts`, the functions the live runner calls: step verdicts and expectations on the
recorded outputs, span nodes on exactly the spans the live test's span phase judged (the recorded
`SpanWindow`), skips by the same rule. Outcomes decided outside a node's data (its `Cause`: the engine,
--fail-fast, a timeout, Ctrl-C, a dying service) are kept as recorded. Nodes are visited in dependency order.

Given other Plans (an edited `.cr` file), nodes are matched by id (suite/test/kind:name). A node with nothing
recorded for it (a new step, a step whose command changed, a test that never ran) is reported as having no
recorded data: never passed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx
from crc.compiler.plan import Plan

from . import verdicts
from .checks import output_from_dict
from .recording import Recording, mask_plan
from .results import SKIPPED, Cause, NodeResult, RunResult, TestResult, Verdict, labels_of
from .runner import selected
from .spans import in_suite
from .tracecontext import TraceContext
from .verdicts import WAITS, SpanWindow

NO_DATA = "no recorded data"
# What a step's recorded output depends on: when any differs, the output is not this step's.
_COMMAND = ("action", "service", "image", "argv", "env", "workdir", "method", "url", "headers", "body", "tls")


@dataclass(frozen=True)
class Replay:
    """The replayed run, shaped like a live one so the same reports render it."""

    result: RunResult
    labels: dict[str, dict[str, Any]]
    spans: list[dict[str, Any]]
    no_data: tuple[tuple[str, str], ...]  # (node, why)
    changed: tuple[tuple[str, str, str], ...]  # (node or "suite / test", recorded status, replayed status)
    stop_points: tuple[tuple[str, str], ...]  # (`eventually` step, how its stop point moved) in an edited file
    shuffle_seed: int | None
    edited: bool
    plans: tuple[Plan, ...]  # the Plans replayed (the recorded ones, or the edited sources')


def substitute(recorded: list[Plan], new: Plan) -> list[Plan]:
    """The recorded Plans with `new` in place of the one it edits (same source path, else same suites)."""
    src = new.meta.get("source")
    suites = {s["name"] for s in new.suites}
    for i, p in enumerate(recorded):
        if p.meta.get("source") == src:
            return [*recorded[:i], new, *recorded[i + 1:]]
    for i, p in enumerate(recorded):
        if suites & {s["name"] for s in p.suites}:
            return [*recorded[:i], new, *recorded[i + 1:]]
    if len(recorded) == 1:
        return [new]
    raise ValueError(f"{src} matches no recorded Plan (recorded: "
                     + ", ".join(str(p.meta.get("source")) for p in recorded) + ")")


def replay(rec: Recording, plans: list[Plan] | None = None) -> Replay:
    """Re-check `rec` against its own Plans, or against `plans` (edited sources; masked like the recording)."""
    recorded_plans = rec.plan_objects()
    edited = plans is not None
    use = [mask_plan(p)[0] for p in plans] if plans is not None else recorded_plans
    old_nodes = {n: d for p in recorded_plans for n, d in p.graph.nodes(data=True)}
    ctx = _Context(rec, old_nodes)
    results: dict[str, NodeResult] = {}
    work: list[tuple[Plan, str, set[str]]] = []
    for p in use:
        nodes = selected(p, rec.options.select)
        for s in p.suites:
            snodes = {n for n in nodes if p.graph.nodes[n]["suite"] == s["name"]}
            if snodes:
                work.append((p, s["name"], snodes))
                results.update(ctx.suite(p, s["name"], snodes))
    tests: list[TestResult] = []
    labels = labels_of(use)
    for p, suite, snodes in work:
        for t in p.tests:
            if t["suite"] == suite and (tr := verdicts.test_result(p, t, snodes, results, labels)) is not None:
                tests.append(tr)
    result = RunResult(rec.run_id, rec.started_ns, rec.ended_ns, tuple(tests), results,
                       tuple(p.meta["source"] for p in use), rec.interrupted)
    recorded = rec.results()
    changed = [(n, recorded[n].status, r.status) for n, r in sorted(results.items())
               if n in recorded and recorded[n].status != r.status]
    old_tests = {(t.suite, t.name): t.status for t in rec.tests}
    changed += [(f"{t.suite} / {t.name}", old_tests[(t.suite, t.name)], t.status) for t in tests
                if (t.suite, t.name) in old_tests and old_tests[(t.suite, t.name)] != t.status]
    return Replay(result, labels, [s.to_dict() for s in rec.spans], tuple(sorted(ctx.no_data.items())),
                  tuple(changed), tuple(sorted(ctx.stop_points.items())), rec.options.shuffle_seed, edited,
                  tuple(use))


def _verdict(r: NodeResult) -> Verdict:
    """A recorded node's verdict, as the live run gave it."""
    return Verdict(r.status, r.message, r.cause)


def _same(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether a node checks the same thing as when it was recorded (where it sits in the file aside)."""
    return old is not None and {k: v for k, v in old.items() if k != "loc"} == \
        {k: v for k, v in new.items() if k != "loc"}


class _Context:
    def __init__(self, rec: Recording, old_nodes: Mapping[str, Mapping[str, Any]]):
        self.rec = rec
        self.recorded = rec.results()
        self.old_nodes = old_nodes
        self.no_data: dict[str, str] = {}
        self.stop_points: dict[str, str] = {}
        self.skew = rec.options.clock_skew
        self._captures: dict[str, dict[str, str]] = {}  # the suite's, for span attribute values using captures

    # ---------------------------------------------------------------- a suite, in dependency order
    def suite(self, p: Plan, suite: str, snodes: set[str]) -> dict[str, NodeResult]:
        g = p.graph
        waits = nx.DiGraph()
        waits.add_nodes_from(snodes)
        waits.add_edges_from((u, v) for u, v, k in g.edges(keys=True) if k in WAITS and u in snodes and v in snodes)
        results: dict[str, NodeResult] = {}
        outputs: dict[str, Any] = {}
        captures: dict[str, dict[str, str]] = {}
        self._captures = captures
        phases: dict[str, tuple[SpanWindow, dict[str, Verdict]] | None] = {}
        for n in nx.lexicographical_topological_sort(waits):
            results[n] = self._node(p, suite, snodes, n, results, outputs, captures, phases)
        return results

    def _node(self, p: Plan, suite: str, snodes: set[str], n: str, results: dict[str, NodeResult],
              outputs: dict[str, Any], captures: dict[str, dict[str, str]],
              phases: dict[str, tuple[SpanWindow, dict[str, Verdict]] | None]) -> NodeResult:
        d = p.node(n)
        kind = d["kind"]
        rec = self.recorded.get(n)
        if rec is not None and not rec.cause.rechecked:
            return rec  # decided outside the node's data: the engine, a deadline, --fail-fast, Ctrl-C
        t0, t1 = (rec.started_ns, rec.ended_ns) if rec else (0, 0)
        deps = [(u, k) for u, k in p.in_edges(n) if k in WAITS and u in snodes]
        skip = verdicts.blocker(p, deps, results)
        if skip is not None:
            return NodeResult.of(n, kind, skip, t0, t1)
        if kind == "service":
            if rec is None:
                return self._none(n, kind, "it did not run in the recorded run" if n in self.old_nodes
                                  else "a new service: the recorded run had none")
            return rec
        if kind == "step":
            return self._step(p, n, d, rec, outputs, captures.setdefault(d["test"], {}))
        if kind == "assert" and d.get("check") != "hermetic":
            if d["step"] in self.no_data:
                return self._none(n, "assert", f"its step has no recorded data ({self.no_data[d['step']]})")
            out = outputs.get(d["step"])
            if out is None:
                return self._none(n, "assert", "its step has no recorded output")
            step = self.recorded.get(d["step"])
            live = _verdict(rec) if rec is not None and _same(self.old_nodes.get(n), d) else None
            v = verdicts.expectation(d, out, captures.get(d["test"], {}), step.detail if step else None, live)
            if v.cause is Cause.NO_DATA:
                self.no_data[n] = v.message
            return NodeResult.of(n, kind, v, t0, t1)
        phase = self._phase(p, suite, d["test"], snodes, phases)
        if phase is None:
            return self._none(n, kind, "no spans were recorded for this test")
        window, vs = phase
        v = vs[n]
        detail: dict[str, Any] = {"window": window.to_dict()}
        if kind == "span":
            detail = {"spans": [s.to_dict() for s in v.spans], **detail}
        return NodeResult.of(n, kind, v, t0, t1, detail)

    def _none(self, n: str, kind: str, why: str) -> NodeResult:
        self.no_data[n] = why
        return NodeResult(n, kind, SKIPPED, f"{NO_DATA}: {why}", 0, 0, {"no_data": True}, Cause.NO_DATA)

    # ---------------------------------------------------------------- steps
    def _step(self, p: Plan, n: str, d: Mapping[str, Any], rec: NodeResult | None, outputs: dict[str, Any],
              captures: dict[str, str]) -> NodeResult:
        if rec is None:
            why = ("it did not run in the recorded run" if n in self.old_nodes
                   else "a new step: the recorded run had none")
            return self._none(n, "step", why)
        raw = rec.detail.get("output")
        if raw is None:
            if rec.status == SKIPPED:
                return self._none(n, "step", f"it did not run in the recorded run ({rec.message})")
            return rec  # it failed before producing output (a template that did not render): as recorded
        old = self.old_nodes.get(n, {})
        changed = [k for k in _COMMAND if old.get(k) != d.get(k)]
        if changed:
            return self._none(n, "step", f"its {', '.join(changed)} changed since the recording")
        attempts = rec.detail.get("attempts")
        if d.get("eventually") and isinstance(attempts, list) and attempts:
            # Polled live: the attempt where the expectations first hold is where polling stopped.
            from .eventually import first_held, stop_point

            def holds(a: Mapping[str, Any]) -> bool:
                caps = dict(captures)
                sv, got = verdicts.step(d, output_from_dict(a["output"]))
                caps.update(got)
                return sv.passed and all(verdicts.expectation(p.node(aid), output_from_dict(a["output"]), caps).passed
                                         for aid in d["eventually"]["asserts"])

            ran = [a for a in attempts if a.get("output") is not None]
            if ran:
                at = first_held(ran, holds)
                ev = rec.detail.get("eventually")
                moved, unknown = stop_point(ran, at, holds, bool(ev.get("held")) if isinstance(ev, dict) else False)
                if unknown:
                    return self._none(n, "step", moved)
                if moved:
                    self.stop_points[n] = moved
                raw = ran[at]["output"]
        out = output_from_dict(raw)
        outputs[n] = out
        # Captures on a spilled stream cannot be re-read: unchanged, they keep the live verdict and values.
        live = ((_verdict(rec), rec.detail.get("captures") or {})
                if old.get("captures") == d.get("captures") and not d.get("eventually") else None)
        v, captured = verdicts.step(d, out, recorded=live)
        if v.cause is Cause.NO_DATA:
            self.no_data[n] = v.message
        captures.update(captured)
        ev = rec.detail.get("eventually")
        if d.get("eventually") and isinstance(ev, dict) and not v.passed:  # as the live poll reports it
            v = Verdict(v.status, f"{v.message}\n  (after {ev['attempts']} attempt(s) in {ev['waited_s']:g}s)",
                        v.cause)
        return NodeResult.of(n, "step", v, rec.started_ns, rec.ended_ns, rec.detail)

    # ---------------------------------------------------------------- span phases
    def _window(self, p: Plan, test: str, snodes: set[str]) -> SpanWindow | None:
        mine = [n for n in snodes if p.node(n).get("test") == test]
        for n in sorted(mine):
            r = self.recorded.get(n)
            if r is not None and isinstance(r.detail.get("window"), dict) and r.detail["window"].get("started_ns"):
                return SpanWindow.from_dict(r.detail["window"])
        # No span node of this test ran live: the test started with its first step; it sees every span.
        starts = [self.recorded[n].started_ns for n in mine if n in self.recorded
                  and self.recorded[n].kind == "step" and self.recorded[n].detail.get("output") is not None]
        keys = [self.recorded[n].detail.get("suite_key") for n in snodes if n in self.recorded
                and self.recorded[n].kind == "service"]
        key = next((k for k in keys if k), None)
        if not starts or key is None:
            return None
        return SpanWindow(key, min(starts), len(self.rec.spans))

    def _phase(self, p: Plan, suite: str, test: str, snodes: set[str],
               phases: dict[str, tuple[SpanWindow, dict[str, Verdict]] | None]
               ) -> tuple[SpanWindow, dict[str, Verdict]] | None:
        if test in phases:
            return phases[test]
        w = self._window(p, test, snodes)
        if w is None:
            phases[test] = None
            return None
        # The trace ids crc started for the test's steps (`in STEP` selectors, tests attributed by trace).
        traces = {n: tc.trace_id for n in snodes if p.node(n).get("test") == test and n in self.recorded
                  and (tc := TraceContext.from_dict(self.recorded[n].detail.get("trace"))) is not None}
        by_trace = any(t.get("by_trace") for t in p.tests if t["suite"] == suite and t["name"] == test)
        mine = set(traces.values())
        spans = [s for s in self.rec.spans[: w.seen]
                 if in_suite(s, self.rec.run_id, w.suite_key)
                 and verdicts.in_window(s, w.started_ns, self.skew) and (not by_trace or s.trace_id in mine)]
        caps = self._captures.get(test, {})
        checks = verdicts.span_checks(p, suite, test, traces, lambda text, d: verdicts.render(d, text, caps))
        phases[test] = out = (w, verdicts.span_nodes(p, checks, spans, w, self.skew))
        return out
