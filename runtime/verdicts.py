"""Every verdict of a run, in one place: steps, expectations, span nodes, skips, tests, and the outcomes
decided outside a node (fail-fast, timeouts, interruption), each with its `Cause` and its message.

The live runner and `crc replay` both call these functions, so a replayed recording gives exactly the live
verdicts, causes and messages (tests/test_verdicts.py proves it node by node). Pure functions, no I/O;
spancheck and jinja2 are imported only by the functions that need them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crc.compiler.schema import TestEntry, loc_text, regex_source

from .backend import BackendError, EngineUnavailable, ImageUnavailable
from .checks import StepOutput, capture, evaluate, tail
from .results import ERROR, FAILED, PASSED, SKIPPED, Cause, NodeResult, TestResult, Verdict
from .spill import NotKept

if TYPE_CHECKING:
    from crc.compiler.plan import Plan

    from . import spancheck as sc
    from .spans import Span

# Edges a node waits for; a failure upstream skips it along the propagating ones. `then` orders tests only:
# a failed test does not skip the next one.
WAITS = frozenset({"needs", "after", "checks", "observes", "then"})
PROPAGATES = frozenset({"needs", "after", "checks", "observes"})

PASS = Verdict(PASSED)
INTERRUPTED = Verdict(ERROR, "cancelled: the run was interrupted", Cause.INTERRUPTED)
CANCELLED = Verdict(ERROR, "cancelled", Cause.CANCELLED)


# ---------------------------------------------------------------------------- decided outside the node


def fail_fast(label: str, status: str) -> Verdict:
    """What --fail-fast gives every node it stops, after node `label` ended `status`."""
    return Verdict(SKIPPED, f"skipped: --fail-fast after {label} {status}", Cause.FAIL_FAST)


def suite_timeout(seconds: float) -> Verdict:
    """An unfinished node of a suite whose `timeout` was reached."""
    return Verdict(ERROR, f"suite timeout ({seconds:g}s) reached", Cause.SUITE_TIMEOUT)


def test_timeout(seconds: float) -> Verdict:
    """A node of a test whose own `timeout` was reached while it ran."""
    return Verdict(ERROR, f"the test's timeout ({seconds:g}s) was reached", Cause.TEST_TIMEOUT)


def internal_error(e: BaseException) -> Verdict:
    """A node whose execution raised something unexpected: it errs, the run goes on."""
    return Verdict(ERROR, f"internal error: {type(e).__name__}: {e}", Cause.INTERNAL)


def backend_error(e: BackendError) -> Verdict:
    """The engine could not do a node's work; environment errors (no engine, no image) make exit 3."""
    if isinstance(e, EngineUnavailable | ImageUnavailable):
        return Verdict(ERROR, str(e), Cause.ENVIRONMENT)
    return Verdict(ERROR, f"{type(e).__name__}: {e}", Cause.BACKEND)


def no_network(e: BackendError) -> Verdict:
    """Every node of a suite whose network could not be created."""
    return Verdict(ERROR, f"could not create the suite network: {e}",
                   Cause.ENVIRONMENT if e.environment else Cause.BACKEND)


def environment(message: str) -> Verdict:
    """An error of the machine (no receiver, missing image): exit 3."""
    return Verdict(ERROR, message, Cause.ENVIRONMENT)


def service_died(why: str) -> Verdict:
    """A step whose test's services died before or while it ran (`why` names them, with log tails)."""
    return Verdict(FAILED, why, Cause.SERVICE_DIED)


def not_ready(name: str, why: str, state: str, tail: str) -> Verdict:
    """A service whose readiness probe did not pass."""
    return Verdict(FAILED, f"service `{name}` not ready: {why}; container {state}\n--- last log lines ---\n{tail}",
                   Cause.NOT_READY)


def cannot_render(what: str, problem: str) -> Verdict:
    """A run-time template (`what`: the command, the expected value) that cannot be rendered."""
    return Verdict(ERROR, f"cannot render {what}: {problem}", Cause.RENDER)


# ---------------------------------------------------------------------------- skips


def blocker(plan: Plan, deps: Iterable[tuple[str, str]], results: Mapping[str, NodeResult]) -> Verdict | None:
    """The skip of a node whose dependency (`deps`: (source, edge kind), in the Plan's order) did not pass,
    naming the first such one; None when it may run. A dependency with no recorded data (replay) does not
    block: its dependents are checked on their own data."""
    for u, k in deps:
        if k not in PROPAGATES:
            continue
        r = results.get(u)
        if r is None or (r.status != PASSED and r.cause is not Cause.NO_DATA):
            ud = plan.node(u)
            why = r.status if r is not None else "did not finish"
            return Verdict(SKIPPED, f"skipped: {ud['kind']} `{ud.get('label', u)}` {why}", Cause.DEPENDENCY)
    return None


# ---------------------------------------------------------------------------- steps and expectations


def render(d: Mapping[str, Any], text: str, captures: Mapping[str, str]) -> str:
    """`text` with its run-time template rendered from the node's values and the test's captures.

    Raises `TemplateProblem` when it cannot be rendered."""
    if "{{" not in text and "{%" not in text:
        return text
    # Imported here: jinja2 costs ~20 ms, and most runs render nothing at run time.
    from crc.compiler.templates import render_with, runtime_environment

    return render_with(runtime_environment(), text, {**d.get("template_values", {}), **captures})


def not_rechecked(why: str) -> Verdict:
    """A check on a spilled stream (runtime/spill.py) that replay cannot re-check: the recording keeps the
    stream's first part, size and sha256, and the check changed since the run (an unchanged one keeps its
    recorded verdict). Counted as having no recorded data: never a pass."""
    return Verdict(SKIPPED, f"no recorded data: {why}, and this check changed since the recording, so it cannot "
                   "be re-checked\n  help: run it again (`crc run`)", Cause.NO_DATA)


def step(d: Mapping[str, Any], out: Any, *, dead: str = "", died: str = "", oom: str = "",
         recorded: tuple[Verdict, Mapping[str, str]] | None = None) -> tuple[Verdict, dict[str, str]]:
    """A step's verdict from its output, and the values it captured (those before a failing capture too).

    What the runner saw beside the output fails it whatever it printed: `dead` names the test's services that
    died while it ran; `died`, its own service's death that SIGKILLed it; `oom`, why the kernel killed it for
    lack of memory. Replay keeps those outcomes as recorded (their causes say so). `recorded` (replay, captures
    unchanged) is the live verdict and captures, used when a capture reads a spilled stream it cannot re-read."""
    try:
        return _step(d, out, dead=dead, died=died, oom=oom)
    except NotKept as e:
        if recorded is not None:
            return recorded[0], dict(recorded[1])
        return not_rechecked(str(e)), {}


def _step(d: Mapping[str, Any], out: Any, *, dead: str, died: str, oom: str) -> tuple[Verdict, dict[str, str]]:
    if dead:
        return service_died(dead), {}
    if not isinstance(out, StepOutput):  # an http step's answer
        from .http_step import verdict

        answer_caps: dict[str, str] = {}
        status, message = verdict(d, out, answer_caps)
        return Verdict(status, message), answer_caps
    if out.timed_out:
        return Verdict(FAILED, f"step `{d['name']}` timed out after {d['timeout'] or 0:g}s and was killed"
                       + tail(out.stderr)), {}
    if died:
        return service_died(died), {}
    if oom:
        return Verdict(FAILED, f"step `{d['name']}` was killed by the kernel: out of memory ({oom})",
                       Cause.OOM_KILLED), {}
    if d["implicit_exit"] and out.exit_code != 0:
        # The real error first: a failed command's exit code and stderr, before a capture it could not feed.
        return Verdict(FAILED, f"step `{d['name']}` exited with code {out.exit_code}" + tail(out.stderr)
                       + f"\n  help: expect a non-zero exit explicitly with `expect {d['name']}.exit != 0`"), {}
    caps: dict[str, str] = {}
    for spec in d["captures"]:
        value, err = capture(spec, out)
        if value is None:
            if out.exit_code:  # its exit is checked by an expectation: still the likelier cause, so first
                err = f"step `{d['name']}` exited with code {out.exit_code}{tail(out.stderr)}\n{err}"
            return Verdict(FAILED, err), caps
        caps[spec["name"]] = value
    return PASS, caps


def expectation(d: Mapping[str, Any], out: Any, captures: Mapping[str, str],
                polled: Mapping[str, Any] | None = None, recorded: Verdict | None = None) -> Verdict:
    """An `expect` on a step's output; a value templated on captures is rendered first. `polled` is the
    result detail of an `eventually` step: a failure then says how long it was polled. `recorded` (replay,
    the expectation unchanged) is its live verdict, used when it reads a spilled stream replay cannot re-read."""
    try:
        return _expectation(d, out, captures, polled)
    except NotKept as e:
        return recorded if recorded is not None else not_rechecked(str(e))


def _expectation(d: Mapping[str, Any], out: Any, captures: Mapping[str, str],
                 polled: Mapping[str, Any] | None) -> Verdict:
    expected = None
    if d.get("deferred"):
        from crc.compiler.template_problem import TemplateProblem

        try:
            expected = render(d, d["value"], captures)
        except TemplateProblem as e:
            return cannot_render("the expected value", e.message)
    v = evaluate(d, out, expected)
    if d.get("eventually") and polled is not None and not v.passed:
        from .eventually import summary

        return Verdict(v.status, v.message + summary(polled), v.cause)
    return v


# ---------------------------------------------------------------------------- span nodes


@dataclass(frozen=True, slots=True)
class SpanWindow:
    """Which spans a test's span phase judged: those of suite `suite_key` among the run's first `seen`, that
    began after `started_ns` (the test's first step); the phase waited `waited_s`, and `complete` says
    whether every selector with a minimum count had its spans by then. Recordings keep it per span node."""

    suite_key: str
    started_ns: int
    seen: int
    waited_s: float = 0.0
    complete: bool = True
    dropped: int = 0  # spans the receiver refused past its limit of `max_spans` per run
    max_spans: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"suite_key": self.suite_key, "started_ns": self.started_ns, "seen": self.seen,
                "waited_s": self.waited_s, "complete": self.complete, "dropped": self.dropped,
                "max_spans": self.max_spans}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SpanWindow:
        return cls(str(d["suite_key"]), int(d["started_ns"]), int(d["seen"]), float(d.get("waited_s", 0.0)),
                   bool(d.get("complete", True)), int(d.get("dropped", 0)), int(d.get("max_spans", 0)))


def window_time(span: Span) -> int:
    """When a span counts as having begun, for test windows: by its own clock, else its arrival."""
    return span.start_ns if span.start_ns else span.received_ns


def in_window(span: Span, test_started_ns: int, skew_s: float) -> bool:
    """Spans that began after the test's first step started (by the span's clock, else arrival)."""
    if not test_started_ns:
        return False
    return window_time(span) >= test_started_ns - int(skew_s * 1e9)


Render = Callable[[str, Mapping[str, Any]], str]


def _value(op: str, v: Any, d: Mapping[str, Any], render: Render | None) -> Any:
    """An attribute value of the Plan as spancheck takes it: a literal, a regex as one pattern string, or
    `{"template": TEXT, "escape": ...}` (it uses captures) rendered now."""
    if isinstance(v, dict) and "template" in v:
        if render is None:
            raise ValueError(f"{d.get('label')}: a value that uses captures cannot be checked without them")
        text = render(v["template"], d)
        return re.escape(text) if v["escape"] else text
    return regex_source(v) if op in ("~", "!~") else v


def _selector(sid: str, d: Mapping[str, Any], traces: Mapping[str, str], step_names: Mapping[str, str],
              render: Render | None = None, **over: Any) -> sc.Selector:
    """The selector of span node `sid`; `step_names`: the step nodes' names, by id (for `in STEP`)."""
    from . import spancheck as sc

    m = d["match"]
    step = m.get("trace_of")
    fields: dict[str, Any] = dict(
        id=sid, label=d["label"], name=m["name"], name_is_glob=bool(m["glob"]),
        name_regex=regex_source(m["regex"]) if m["regex"] else None,
        service=m["service"], kind=m["kind"], status=m["status"],
        attrs=tuple(sc.AttrMatch(key=a["key"], op=a["op"], value=_value(a["op"], a["value"], d, render))
                    for a in m["attrs"]),
        parent=m["parent"], ancestor=m["ancestor"],
        # A step that did not run started no trace: its selector matches nothing.
        traces=frozenset([traces[step]] if step in traces else []) if step else None,
        trace_label=step_names.get(step, step) if step else "")
    fields.update(over)
    return sc.Selector(**fields)


@dataclass(frozen=True)
class SpanChecks:
    """One test's span selectors and constraints, and which constraint ids each node owns."""

    selectors: list[sc.Selector]
    constraints: list[Any]
    owner: dict[str, list[str]]

    def needed(self) -> list[sc.Count]:
        """The count constraints with a minimum: the spans a span phase waits for."""
        from . import spancheck as sc

        return [c for c in self.constraints if isinstance(c, sc.Count) and (c.min or 0) >= 1]

    def missing(self, spans: Sequence[Span], skew: float) -> list[str]:
        """Selectors that do not have their minimum count of spans yet."""
        from . import spancheck as sc

        needed = self.needed()
        if not needed:
            return []
        return [c.selector for c, r in zip(needed, sc.evaluate(spans, self.selectors, needed, clock_skew_s=skew),
                                           strict=True) if not r.passed]


def span_checks(plan: Plan, suite: str, test: str, traces: Mapping[str, str] | None = None,
                render: Render | None = None) -> SpanChecks:
    """Selectors and constraints of one test, and which constraint ids belong to which node.

    `traces` maps the test's step nodes to the trace id crc started for each (for `in STEP` selectors)."""
    from . import spancheck as sc

    traces = traces or {}
    selectors: list[sc.Selector] = []
    constraints: list[Any] = []
    owner: dict[str, list[str]] = {}
    nodes = [(n, d) for n, d in plan.nodes.items() if d["suite"] == suite and d.get("test") == test]
    step_names = {n: d["name"] for n, d in nodes}  # `in STEP` names a step of the test (exec, run or http)
    for n, d in nodes:
        if d["kind"] == "assert" and d.get("check") == "hermetic":
            constraints.append(sc.Hermetic(id=n, where=loc_text(d["loc"]), allowed_hosts=frozenset(d["allow"])))
            owner.setdefault(n, []).append(n)
            continue
        if d["kind"] != "span":
            continue
        selectors.append(_selector(n, d, traces, step_names, render))
        owner.setdefault(n, [])  # every span node gets a verdict, also one with no constraint of its own
        for c in d["constraints"]:
            cid, where = c["id"], loc_text(c["loc"])
            if c["check"] == "count":
                constraints.append(sc.Count(id=cid, where=where, selector=n, min=c["min"], max=c["max"]))
            elif c["check"] == "duration":
                lo, hi = c["min"], c["max"]
                constraints.append(sc.Duration(
                    id=cid, where=where, selector=n, min_s=lo["value"] if lo else None,
                    max_s=hi["value"] if hi else None, min_inclusive=lo["inclusive"] if lo else True,
                    max_inclusive=hi["inclusive"] if hi else True))
            elif c["check"] == "status":
                v = c["value"]
                if c["op"] == "==":
                    constraints.append(sc.Status(id=cid, where=where, selector=n, status=v))
                else:
                    # "status != X" for every matched span: no span of this selector has status X.
                    derived = f"{n}!status={v}"
                    selectors.append(_selector(derived, d, traces, step_names, render, status=v,
                                               label=f"{d['label']} {{ status {v} }}"))
                    constraints.append(sc.Count(id=cid, where=where, selector=derived, min=None, max=0))
            elif c["check"] == "attr":
                constraints.append(sc.Attr(id=cid, where=where, selector=n,
                                           match=sc.AttrMatch(key=c["key"], op=c["op"],
                                                              value=_value(c["op"], c["value"], d, render))))
            owner.setdefault(n, []).append(cid)
    for u, v, e in plan.edges:
        k = e["kind"]
        if k not in ("precedes", "contains", "parent") or not e.get("expected", True):
            continue
        dv = plan.node(v)
        if dv.get("test") != test or dv["suite"] != suite:
            continue
        cid, where = f"{u}->{k}->{v}", loc_text(e["loc"])
        if k == "precedes":
            lo, hi = e["min_gap"], e["max_gap"]
            constraints.append(sc.Precedes(id=cid, where=where, before=u, after=v,
                                           min_gap_s=lo["value"] or None, max_gap_s=hi["value"] if hi else None))
        elif k == "contains":
            constraints.append(sc.Contains(id=cid, where=where, outer=u, inner=v))
        else:
            constraints.append(sc.Parent(id=cid, where=where, parent=u, child=v))
        owner.setdefault(v, []).append(cid)
    return SpanChecks(selectors, constraints, owner)


def span_nodes(plan: Plan, checks: SpanChecks, spans: Sequence[Span], window: SpanWindow, skew: float
               ) -> dict[str, Verdict]:
    """The verdict of every span node (and `expect hermetic`) of one test, from the spans in its window.

    A failure is reported at the span node; when an `expect` line stated the check, the message names it.
    When the phase ended without every awaited span, the nodes still missing spans say how long it waited."""
    from . import spancheck as sc

    missing = set() if window.complete else set(checks.missing(spans, skew))
    results = {r.id: r for r in sc.evaluate(spans, checks.selectors, checks.constraints, clock_skew_s=skew)}
    where = {c.id: c.where for c in checks.constraints}
    out: dict[str, Verdict] = {}
    for node, cids in checks.owner.items():
        rs = [results[c] for c in cids]
        failed = [r for r in rs if not r.passed]
        node_loc = loc_text(plan.node(node)["loc"])
        msgs = []
        for r in failed:
            at = where.get(r.id)
            msgs.append(f"{r.message}\n  (expect at {at})" if at and at != node_loc else r.message)
        if failed and node in missing:
            msgs.append(f"(waited {window.waited_s:.1f}s for spans; {len(spans)} span(s) arrived for this test)")
        if window.dropped:
            # Past its span limit the receiver refused batches: no verdict on spans can be trusted.
            failed = failed or rs
            msgs.append(f"crc's OTLP receiver dropped {window.dropped} span(s) past its limit of "
                        f"{window.max_spans} per run: span checks cannot be trusted")
        involved = {id(s): s for r in rs for s in r.spans}
        out[node] = Verdict.of(not failed, "\n".join(msgs), spans=tuple(list(involved.values())[:20]))
    return out


# ---------------------------------------------------------------------------- tests


def test_result(plan: Plan, t: TestEntry, snodes: set[str], results: Mapping[str, NodeResult],
                labels: Mapping[str, Mapping[str, Any]]) -> TestResult | None:
    """A test's verdict from its nodes' and its services' results; None when none of its nodes was selected.

    Services count against a test when they fail. A test none of whose own nodes ran is skipped, and so is one
    with a node that could not be checked (no recorded data): that is not a pass."""
    nodes = [n for n in t["nodes"] if n in snodes]
    if not nodes:
        return None
    svc = [n for n in plan.services_of(t) if n in snodes]
    rs = [results[n] for n in nodes + svc if n in results]
    # The real error first: services, then steps, then what checks them, each in source order; what was skipped
    # because of a failure is one line under it.
    skipped = _skipped_because(plan, nodes, results)
    failures = tuple(f"{labels[r.node].get('loc')}: {r.message}{_skip_line(plan, skipped.get(r.node, []))}"
                     for r in sorted(rs, key=lambda r: _failure_order(plan.node(r.node)))
                     if r.status in (FAILED, ERROR))
    times = [r for r in (results.get(n) for n in nodes) if r and r.started_ns]
    dur = (max(r.ended_ns for r in times) - min(r.started_ns for r in times)) / 1e9 if times else 0.0
    own = [results[n] for n in nodes if n in results]
    statuses = [r.status for r in rs]
    if any(s in (FAILED, ERROR) for s in statuses):
        verdict = ERROR if ERROR in statuses and FAILED not in statuses else FAILED
    elif all(r.status == SKIPPED for r in own) or any(r.cause is Cause.NO_DATA for r in own):
        verdict = SKIPPED  # none of its own nodes ran (or none has a result: interrupted), or one is unchecked
    else:
        verdict = PASSED
    logs: tuple[tuple[str, str], ...] = ()
    if verdict in (FAILED, ERROR):  # what its services said is where a failure is read
        logs = tuple((plan.node(n)["name"], str(results[n].detail["log_tail"])) for n in svc
                     if n in results and results[n].detail.get("log_tail") is not None)
    return TestResult(t["suite"], t["name"], verdict, dur, failures, tuple(sorted(nodes)), loc_text(t["loc"]),
                      logs)


_KIND_ORDER = {"service": 0, "step": 1, "assert": 2, "span": 3}


def _failure_order(d: Mapping[str, Any]) -> tuple[int, int, int, str]:
    """Where a node's failure goes among its test's: by kind (what others depend on first), then source order."""
    loc = d["loc"]
    return _KIND_ORDER.get(d["kind"], 4), loc["line"], loc["col"], d["name"]


def _skipped_because(plan: Plan, nodes: Iterable[str], results: Mapping[str, NodeResult]) -> dict[str, list[str]]:
    """The nodes skipped because of each failed node: a skip's chain of blockers, followed up to its failure."""
    out: dict[str, list[str]] = {}
    for n in sorted(nodes):
        r = results.get(n)
        if r is None or r.cause is not Cause.DEPENDENCY:
            continue
        cur, seen = n, {n}
        while True:
            up = next((u for u, k in plan.in_edges(cur) if k in PROPAGATES and u in results
                       and results[u].status != PASSED), None)
            if up is None or up in seen:
                break
            if results[up].status in (FAILED, ERROR):
                out.setdefault(up, []).append(n)
                break
            seen.add(up)
            cur = up
    return out


def _skip_line(plan: Plan, skipped: list[str]) -> str:
    """`(skipped because of it: step `b`, 2 expectations)`, or "" when nothing was."""
    if not skipped:
        return ""
    kinds = [plan.node(n)["kind"] for n in skipped]
    parts = [f"step `{plan.node(n)['label']}`" for n in skipped if plan.node(n)["kind"] == "step"]
    for kind, one, many in (("assert", "expectation", "expectations"), ("span", "span check", "span checks")):
        k = kinds.count(kind)
        if k:
            parts.append(f"{k} {one if k == 1 else many}")
    return f"\n(skipped because of it: {', '.join(parts)})" if parts else ""
