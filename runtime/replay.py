"""Re-evaluates every expectation of a recording, with no engine: the same checks the live run made.

Step expectations go through `checks.evaluate`/`checks.capture` on the recorded outputs; span nodes through
`spanphase.build` + `spancheck.evaluate` on exactly the spans the live test's span phase saw (the recorded
window: the suite's spans among the first `seen` the run collected, that began after the test started).
Nodes are visited in dependency order and skipped the way the scheduler skips them.

Given other Plans (an edited `.cr` file), nodes are matched by id (suite/test/kind:name). A node with nothing
recorded for it (a new step, a step whose command changed, a test that never ran) is reported as having no
recorded data: never passed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx
from crc.compiler.plan import Plan
from crc.compiler.templates import TemplateProblem, render_with, runtime_environment

from . import spancheck as sc
from .checks import StepOutput, capture, evaluate, output_from_dict
from .recording import Recording, mask_plan
from .results import ERROR, FAILED, PASSED, SKIPPED, NodeResult, RunResult, TestResult, test_verdict
from .runner import selected
from .scheduler import PROPAGATES, WAITS
from .spanphase import build, in_window
from .spans import Span
from .tracecontext import TraceContext

NO_DATA = "no recorded data"
# What a step's recorded output depends on: when any differs, the output is not this step's.
_COMMAND = ("action", "service", "image", "argv", "env", "workdir", "method", "url", "headers", "body")
_WAITED = re.compile(r"\(waited [0-9.]+s for spans; [0-9]+ span\(s\) arrived for this test\)")
_AS_RECORDED = re.compile(r"\([0-9]+ span\(s\) arrived for this test in the recording\)")


@dataclass(frozen=True)
class Replay:
    """The replayed run, shaped like a live one so the same reports render it."""

    result: RunResult
    labels: dict[str, dict[str, Any]]
    spans: list[dict[str, Any]]
    no_data: tuple[tuple[str, str], ...]  # (node, why)
    changed: tuple[tuple[str, str, str], ...]  # (node or "suite / test", recorded status, replayed status)
    shuffle_seed: int | None
    edited: bool


def labels_of(plans: list[Plan]) -> dict[str, dict[str, Any]]:
    return {n: {k: d.get(k) for k in ("kind", "label", "suite", "test", "loc")}
            for p in plans for n, d in p.graph.nodes(data=True)}


def substitute(recorded: list[Plan], new: Plan) -> list[Plan]:
    """The recorded Plans with `new` in place of the one it edits (same source path, else same suites)."""
    src = new.meta.get("source")
    suites = {s["name"] for s in new.meta.get("suites", [])}
    for i, p in enumerate(recorded):
        if p.meta.get("source") == src:
            return [*recorded[:i], new, *recorded[i + 1:]]
    for i, p in enumerate(recorded):
        if suites & {s["name"] for s in p.meta.get("suites", [])}:
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
        for s in p.meta["suites"]:
            snodes = {n for n in nodes if p.graph.nodes[n]["suite"] == s["name"]}
            if snodes:
                work.append((p, s["name"], snodes))
                results.update(ctx.suite(p, s["name"], snodes))
    tests: list[TestResult] = []
    labels = labels_of(use)
    for p, suite, snodes in work:
        for t in p.meta["tests"]:
            if t["suite"] == suite:
                tr = _test_result(p, t, snodes, results, labels, ctx.no_data)
                if tr is not None:
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
                  tuple(changed), rec.options.shuffle_seed, edited)


def _test_result(p: Plan, t: Mapping[str, Any], snodes: set[str], results: Mapping[str, NodeResult],
                 labels: Mapping[str, Mapping[str, Any]], no_data: Mapping[str, str]) -> TestResult | None:
    """A test's verdict exactly as the runner computes it; a test with unchecked nodes does not pass."""
    g = p.graph
    nodes = [n for n in snodes if g.nodes[n].get("test") == t["name"] and g.nodes[n]["suite"] == t["suite"]]
    if not nodes:
        return None
    svc = [n for n in p.services_of(t) if n in snodes]
    rs = [results[n] for n in nodes + svc if n in results]
    failures = [f"{labels[r.node].get('loc')}: {r.message}" for r in rs if r.status in (FAILED, ERROR)]
    times = [r for r in (results.get(n) for n in nodes) if r and r.started_ns]
    dur = (max(r.ended_ns for r in times) - min(r.started_ns for r in times)) / 1e9 if times else 0.0
    own = [results[n].status for n in nodes if n in results]
    verdict = test_verdict([r.status for r in rs])
    if verdict == PASSED and all(s == SKIPPED for s in own):
        verdict = SKIPPED
    if verdict == PASSED and any(n in no_data for n in nodes):
        verdict = SKIPPED  # some expectation could not be checked: not a pass
    return TestResult(t["suite"], t["name"], verdict, dur, tuple(failures), tuple(sorted(nodes)), t.get("loc", ""))


class _Context:
    def __init__(self, rec: Recording, old_nodes: Mapping[str, Mapping[str, Any]]):
        self.rec = rec
        self.recorded = rec.results()
        self.old_nodes = old_nodes
        self.no_data: dict[str, str] = {}
        self._captures: dict[str, dict[str, str]] = {}
        self.skew = rec.options.clock_skew
        self._suite_keys = {r.detail["suite_key"]: None for r in rec.nodes if r.detail.get("suite_key")}

    # ---------------------------------------------------------------- a suite, in dependency order
    def suite(self, p: Plan, suite: str, snodes: set[str]) -> dict[str, NodeResult]:
        g = p.graph
        waits = nx.DiGraph()
        waits.add_nodes_from(snodes)
        waits.add_edges_from((u, v) for u, v, k in g.edges(keys=True) if k in WAITS and u in snodes and v in snodes)
        results: dict[str, NodeResult] = {}
        outputs: dict[str, Any] = {}  # StepOutput or HttpOutput
        captures: dict[str, dict[str, str]] = {}
        self._captures = captures  # this suite's, for span attribute values that use captures
        phases: dict[str, dict[str, Any] | None] = {}
        for n in nx.lexicographical_topological_sort(waits):
            d = g.nodes[n]
            results[n] = self._node(p, suite, snodes, n, d, results, outputs, captures, phases)
        return results

    def _node(self, p: Plan, suite: str, snodes: set[str], n: str, d: Mapping[str, Any],
              results: dict[str, NodeResult], outputs: dict[str, Any],
              captures: dict[str, dict[str, str]], phases: dict[str, dict[str, Any] | None]) -> NodeResult:
        kind = d["kind"]
        rec = self.recorded.get(n)
        t0, t1 = (rec.started_ns, rec.ended_ns) if rec else (0, 0)
        deps = [(u, k) for u, _, k in p.graph.in_edges(n, keys=True) if k in WAITS and u in snodes]
        blocked = [u for u, k in deps if k in PROPAGATES and results[u].status != PASSED and u not in self.no_data]
        if blocked:
            u = blocked[0]
            ud = p.graph.nodes[u]
            return NodeResult(n, kind, SKIPPED, f"skipped: {ud['kind']} `{ud.get('label', u)}` {results[u].status}",
                              t0, t1)
        if rec is not None and _external(rec):
            return rec
        if kind == "service":
            if rec is None:
                return self._none(n, kind, "it did not run in the recorded run" if n in self.old_nodes
                                  else "a new service: the recorded run had none")
            return rec
        if kind == "step":
            return self._step(n, d, rec, outputs, captures, p)
        if kind == "assert" and d.get("check") != "hermetic":
            return self._assert(n, d, rec, outputs, captures, t0, t1)
        verdicts = self._phase(p, suite, d["test"], snodes, phases)
        if verdicts is None:
            return self._none(n, kind, "no spans were recorded for this test")
        v = verdicts.get(n, {"passed": True, "message": "", "spans": []})
        message = v["message"]
        if rec is not None and v.get("missing"):
            m = _WAITED.search(rec.message)  # the live run's wait, as it reported it
            message = _AS_RECORDED.sub(lambda _: m.group(0), message) if m else message
        detail: dict[str, Any] = {"window": v["window"]}
        if kind == "span":
            detail = {"spans": v["spans"], **detail}
        return NodeResult(n, kind, PASSED if v["passed"] else FAILED, message, t0, t1, detail)

    def _none(self, n: str, kind: str, why: str) -> NodeResult:
        self.no_data[n] = why
        return NodeResult(n, kind, SKIPPED, f"{NO_DATA}: {why}", 0, 0, {"no_data": True})

    # ---------------------------------------------------------------- steps and their expectations
    def _step(self, n: str, d: Mapping[str, Any], rec: NodeResult | None, outputs: dict[str, Any],
              captures: dict[str, dict[str, str]], p: Plan) -> NodeResult:
        if rec is None:
            why = ("it did not run in the recorded run" if n in self.old_nodes
                   else "a new step: the recorded run had none")
            return self._none(n, "step", why)
        raw = rec.detail.get("output")
        if raw is None:
            if rec.status == SKIPPED:
                return self._none(n, "step", f"it did not run in the recorded run ({rec.message})")
            return rec  # it failed before producing output (render error, missing image...): as recorded
        old = self.old_nodes.get(n, {})
        changed = [k for k in _COMMAND if old.get(k) != d.get(k)]
        if changed:
            return self._none(n, "step", f"its {', '.join(changed)} changed since the recording")
        attempts = rec.detail.get("attempts")
        if d.get("eventually") and isinstance(attempts, list) and attempts:
            # Polled live: the attempt where the expectations first hold is where polling stopped.
            from .eventually import first_held

            def holds(a: Mapping[str, Any]) -> bool:
                out, caps = output_from_dict(a["output"]), dict(captures.get(d["test"], {}))
                if _verdict(d, out, caps)[0] != PASSED:
                    return False
                for aid in d["eventually"]["asserts"]:
                    ad = p.graph.nodes[aid]
                    expected = _render(ad, ad["value"], caps) if ad.get("deferred") else None
                    if not evaluate(ad, out, expected).passed:
                        return False
                return True

            ran = [a for a in attempts if a.get("output") is not None]
            if ran:
                raw = ran[first_held(ran, holds)]["output"]
        out = output_from_dict(raw)
        outputs[n] = out
        status, message = _verdict(d, out, captures.setdefault(d["test"], {}))
        if status == PASSED and rec.status != PASSED:
            # Failed for a reason outside the step's own output (a service died): that stays.
            status, message = rec.status, rec.message
        return NodeResult(n, "step", status, message, rec.started_ns, rec.ended_ns, rec.detail, rec.env_problem)

    def _assert(self, n: str, d: Mapping[str, Any], rec: NodeResult | None, outputs: Mapping[str, Any],
                captures: Mapping[str, Mapping[str, str]], t0: int, t1: int) -> NodeResult:
        if d["step"] in self.no_data:
            return self._none(n, "assert", f"its step has no recorded data ({self.no_data[d['step']]})")
        out = outputs.get(d["step"])
        if out is None:
            return self._none(n, "assert", "its step has no recorded output")
        expected = None
        if d.get("deferred"):
            try:
                expected = _render(d, d["value"], captures.get(d["test"], {}))
            except TemplateProblem as e:
                return NodeResult(n, "assert", ERROR, f"cannot render the expected value: {e.message}", t0, t1)
        v = evaluate(d, out, expected)
        message = v.message
        step = self.recorded.get(d["step"])
        if d.get("eventually") and not v.passed and step is not None:
            from .eventually import summary

            message += summary(step.detail)
        return NodeResult(n, "assert", PASSED if v.passed else FAILED, message, t0, t1)

    # ---------------------------------------------------------------- span phases
    def _window(self, p: Plan, suite: str, test: str, snodes: set[str]) -> dict[str, Any] | None:
        mine = [n for n in snodes if p.graph.nodes[n].get("test") == test]
        for n in sorted(mine):
            r = self.recorded.get(n)
            if r is not None and isinstance(r.detail.get("window"), dict) and r.detail["window"].get("started_ns"):
                return r.detail["window"]
        # No span node of this test ran live: the test started with its first step; it sees every span.
        starts = [self.recorded[n].started_ns for n in mine if n in self.recorded
                  and self.recorded[n].kind == "step" and self.recorded[n].detail.get("output") is not None]
        keys = [self.recorded[n].detail.get("suite_key") for n in snodes if n in self.recorded
                and self.recorded[n].kind == "service"]
        key = next((k for k in keys if k), None)
        if not starts or key is None:
            return None
        return {"suite_key": key, "started_ns": min(starts), "seen": len(self.rec.spans)}

    def _phase(self, p: Plan, suite: str, test: str, snodes: set[str],
               phases: dict[str, dict[str, Any] | None]) -> dict[str, Any] | None:
        if test in phases:
            return phases[test]
        w = self._window(p, suite, test, snodes)
        if w is None:
            phases[test] = None
            return None
        traces = {n: tc.trace_id for n in snodes if p.graph.nodes[n].get("test") == test and n in self.recorded
                  and (tc := TraceContext.from_dict(self.recorded[n].detail.get("trace"))) is not None}
        by_trace = any(t.get("by_trace") for t in p.meta["tests"] if t["suite"] == suite and t["name"] == test)
        mine = set(traces.values())
        spans = [s for s in self.rec.spans[: int(w["seen"])]
                 if s.resource.get("crc.suite") == w["suite_key"] and s.resource.get("crc.run") == self.rec.run_id
                 and in_window(s, int(w["started_ns"]), self.skew) and (not by_trace or s.trace_id in mine)]
        caps = self._captures.get(test, {})
        phases[test] = out = evaluate_phase(p, suite, test, spans, self.skew, traces,
                                            lambda text, d: _render(d, text, caps))
        for v in out.values():
            v["window"] = w
        return out


def evaluate_phase(plan: Plan, suite: str, test: str, spans: list[Span], skew: float,
                   traces: Mapping[str, str] | None = None, render: Any = None) -> dict[str, dict[str, Any]]:
    """One test's span verdicts, as `spanphase.SpanPhase` computes them once its spans are in."""
    selectors, constraints, owner = build(plan, suite, test, traces, render)
    needed = [c for c in constraints if isinstance(c, sc.Count) and (c.min or 0) >= 1]
    missing = set()
    if needed:
        missing = {c.selector for c, r in zip(needed, sc.evaluate(spans, selectors, needed, clock_skew_s=skew),
                                               strict=True) if not r.passed}
    results = {r.constraint_id: r for r in sc.evaluate(spans, selectors, constraints, clock_skew_s=skew)}
    out: dict[str, dict[str, Any]] = {}
    for node, cids in owner.items():
        rs = [results[c] for c in cids]
        failed = [r for r in rs if not r.passed]
        msgs = [r.message for r in failed]
        miss = bool(failed and node in missing)
        if miss:
            msgs.append(f"({len(spans)} span(s) arrived for this test in the recording)")
        involved = {id(s): s for r in rs for s in r.spans}
        out[node] = {"passed": not failed, "message": "\n".join(msgs), "missing": miss,
                     "spans": [s.to_dict() for s in list(involved.values())[:20]]}
    return out


def _verdict(d: Mapping[str, Any], out: Any, caps: dict[str, str]) -> tuple[str, str]:
    """A command's or an http step's own verdict from its output."""
    if isinstance(out, StepOutput):
        return _step_verdict(d, out, caps)
    from .http_step import verdict

    return verdict(d, out, caps)


def _step_verdict(d: Mapping[str, Any], out: StepOutput, caps: dict[str, str]) -> tuple[str, str]:
    """The runner's verdict on a step from its output: timeout, captures, implicit exit code."""
    if out.timed_out:
        return FAILED, f"step `{d['name']}` timed out after {d['timeout'] or 0:g}s and was killed"
    # The real error first: a failed command's exit code and stderr, before a capture it could not feed.
    if d["implicit_exit"] and out.exit_code != 0:
        tail = out.stderr.strip().splitlines()[-5:]
        return FAILED, (f"step `{d['name']}` exited with code {out.exit_code}"
                        + ("\n" + "\n".join(tail) if tail else "")
                        + "\n  help: expect a non-zero exit explicitly with `expect "
                        + f"{d['name']}.exit != 0`")
    for spec in d["captures"]:
        value, err = capture(spec, out)
        if value is None:
            return FAILED, err
        caps[spec["name"]] = value
    return PASSED, ""


def _render(d: Mapping[str, Any], text: str, caps: Mapping[str, str]) -> str:
    if "{{" not in text and "{%" not in text:
        return text
    return render_with(runtime_environment(), text, {**d.get("template_values", {}), **caps})


def _external(r: NodeResult) -> bool:
    """Outcomes decided outside the node's data: the engine, --fail-fast, the suite timeout, Ctrl-C."""
    return r.env_problem or r.message.startswith("skipped: --fail-fast") or r.message.startswith("suite timeout") \
        or r.message == "cancelled"
