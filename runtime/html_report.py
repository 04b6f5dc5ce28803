"""The HTML report: one self-contained file (data, script and style inline; nothing is fetched) that shows a run
as people read a trace: per test its verdict, its DAG, a span waterfall with every span expectation drawn where
it applies, step outputs and service logs.

Input is what a run leaves: a recording (`crc run --record`, or the run itself) or a JSON report. This module
turns it into a compact model (spans stored once, times relative to the run so JavaScript's doubles keep them
exact) and embeds that model as JSON in `html/report.html` with `html/report.js` and `html/report.css`. The page
builds its DOM from the model with text nodes only, and its Content-Security-Policy allows no other script.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crc.compiler.schema import gap_text
from crc.compiler.template_problem import TemplateProblem

from . import spancheck as sc
from . import verdicts
from .options import DEFAULTS
from .results import NodeResult, TestResult, labels_of
from .spanphase import build as build_phase
from .spanphase import window_time
from .spans import RUN_KEY, SUITE_KEY, Span

if TYPE_CHECKING:
    from crc.compiler.plan import Plan

    from .recording import Recording

MODEL_VERSION = 1


class ReportInputError(Exception):
    """A JSON report this crc cannot read (exit 2); the message names where in the file."""


@dataclass
class ReportInput:
    """What a report is drawn from: a run's results, its spans and (when known) its Plans."""

    run_id: str
    started_ns: int
    ended_ns: int
    exit_code: int
    interrupted: bool
    tests: list[dict[str, Any]]
    nodes: list[dict[str, Any]]  # NodeResult.to_dict() plus label, loc, suite, test
    spans: list[Span]
    plans: list[Plan] = field(default_factory=list)
    clock_skew: float = DEFAULTS.clock_skew
    source: str = ""


def from_recording(rec: Recording, source: str = "") -> ReportInput:
    """A report input from a recording (its secrets were masked when it was made)."""
    plans = rec.plan_objects()
    labels = labels_of(plans)
    nodes = []
    for r in rec.nodes:
        d = labels.get(r.node, {})
        nodes.append({**r.to_dict(), "label": d.get("label", r.node), "loc": d.get("loc"),
                      "suite": d.get("suite"), "test": d.get("test")})
    return ReportInput(rec.run_id, rec.started_ns, rec.ended_ns, rec.exit_code, rec.interrupted,
                       [t.to_dict() for t in rec.tests], nodes, list(rec.spans), plans,
                       rec.options.clock_skew, source)


def from_json(data: Any, plans: Sequence[Plan] = (), source: str = "") -> ReportInput:
    """A report input from a parsed JSON report; `ReportInputError` names the first field that is wrong."""
    if not isinstance(data, dict) or data.get("schema") != "crc-report":
        raise ReportInputError("not a crc JSON report (no \"schema\": \"crc-report\")")
    _want(data, "run_id", str, "")
    for key in ("started_ns", "ended_ns", "exit_code"):
        _want(data, key, int, "")
    tests = _want(data, "tests", list, "")
    nodes = _want(data, "nodes", list, "")
    raw_spans = _want(data, "spans", list, "")
    for i, t in enumerate(tests):
        where = f"tests[{i}]"
        if not isinstance(t, dict):
            raise ReportInputError(f"{where}: expected an object")
        try:
            TestResult.from_dict(t)
        except (TypeError, ValueError) as e:
            raise ReportInputError(f"{where}.{e}") from None
    for i, n in enumerate(nodes):
        where = f"nodes[{i}]"
        if not isinstance(n, dict):
            raise ReportInputError(f"{where}: expected an object")
        try:
            NodeResult.from_dict(n)  # the fields every node has, each of its type
        except (TypeError, ValueError) as e:
            raise ReportInputError(f"{where}.{e}") from None
        for key in ("suite", "test", "label", "loc"):
            if not isinstance(n.get(key), str | None):
                raise ReportInputError(f"{where}.{key}: expected a string")
        if not isinstance(n.get("detail", {}), dict):
            raise ReportInputError(f"{where}.detail: expected an object")
    spans: list[Span] = []
    for i, s in enumerate(raw_spans):
        try:
            spans.append(Span.from_dict(s))
        except (TypeError, ValueError) as e:
            raise ReportInputError(f"spans[{i}].{e}") from None
    known = {n["node"] for n in nodes}
    usable = [p for p in plans if known & set(p.nodes)]
    return ReportInput(data["run_id"], data["started_ns"], data["ended_ns"], data["exit_code"],
                       bool(data.get("interrupted", False)), tests, nodes, spans, usable, source=source)


def _want(d: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    path = f"{where}.{key}" if where else key
    if key not in d:
        raise ReportInputError(f"{path}: missing")
    v = d[key]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise ReportInputError(f"{path}: expected {'an' if kind is int else 'a'} "
                               f"{ {str: 'string', int: 'integer', list: 'array'}.get(kind, kind.__name__)}")
    return v


# ------------------------------------------------------------------------------------------------ the model


def build_model(inp: ReportInput) -> dict[str, Any]:
    """The page's data: run summary, spans (each once), nodes, and per test its DAG, spans and checks."""
    starts = [s.start_ns for s in inp.spans if s.start_ns] + [n["started_ns"] for n in inp.nodes
                                                              if n.get("started_ns")]
    origin = min([*starts, inp.started_ns] if inp.started_ns else starts or [0])

    def rel(ns: int) -> int | None:
        return ns - origin if ns else None

    ix = _Indexes(inp)
    res_ix: dict[Any, int] = {}
    resources_out: list[dict[str, Any]] = []
    spans_out = []
    for s in inp.spans:
        key = _resource_key(s.resource)
        if key not in res_ix:
            res_ix[key] = len(resources_out)
            resources_out.append(s.resource)
        # The span's own maps go into the page as they are (it is written at once): no copy of each span.
        spans_out.append({"n": s.name, "s": s.service, "k": s.kind, "st": s.status, "sm": s.status_message,
                          "t0": rel(s.start_ns), "t1": rel(s.end_ns), "tr": s.trace_id, "id": s.span_id,
                          "p": s.parent_span_id, "r": res_ix[key], "a": s.attributes,
                          "ev": [{"name": e.name, "time_ns": e.time_ns, "attributes": e.attributes}
                                 for e in s.events],
                          "ln": [{"trace_id": x.trace_id, "span_id": x.span_id, "attributes": x.attributes}
                                 for x in s.links], "sc": s.scope})
    from crc.compiler.render import span_windows

    windows = {n: w for p in inp.plans for n, w in span_windows(p).items()}  # shown in the DAG's node captions
    names = {n: str(d.get("name", n)) for n, d in ix.plan_nodes.items()}
    nodes_out = [_node_out(n, ix.plan_nodes.get(n["node"]), ix.span_ix, rel, windows, names) for n in inp.nodes]
    tests_out = [_test_out(ix, t) for t in inp.tests]
    order = {"failed": 0, "error": 0, "skipped": 1, "passed": 2}
    tests_out.sort(key=lambda t: order.get(t["st"], 1))  # failed tests first, otherwise in run order
    summary = {k: sum(t["status"] == k for t in inp.tests) for k in ("passed", "failed", "error", "skipped")}
    return {"version": MODEL_VERSION,
            "run": {"id": inp.run_id, "t0": rel(inp.started_ns), "t1": rel(inp.ended_ns),
                    "exit": inp.exit_code, "interrupted": inp.interrupted, "summary": summary,
                    "source": inp.source, "dag": bool(inp.plans)},
            "resources": resources_out, "spans": spans_out, "nodes": nodes_out, "tests": tests_out}


def _resource_key(resource: Mapping[str, Any]) -> Any:
    """Equal resources, equal keys (spans of one process share one resource, stored once)."""
    key = tuple(sorted(resource.items()))
    try:
        hash(key)
    except TypeError:  # a list or map value
        return json.dumps(resource, sort_keys=True, default=str)
    return key


@dataclass
class _Timeline:
    """A suite's spans: run indexes in arrival order, their window times, the running maximum of those times,
    and the positions sorted by time."""

    idxs: list[int]
    times: list[int]
    latest: list[int] = field(default_factory=list)
    order: list[int] = field(default_factory=list)
    sorted_times: list[int] = field(default_factory=list)

    def index(self) -> None:
        running = -(1 << 62)
        for t in self.times:
            running = max(running, t)
            self.latest.append(running)
        self.order = sorted(range(len(self.times)), key=self.times.__getitem__)
        self.sorted_times = [self.times[j] for j in self.order]


class _Indexes:
    """Lookups built once per report, so each test costs what it holds, not what the run holds."""

    def __init__(self, inp: ReportInput):
        self.inp = inp
        self.span_ix = {(s.trace_id, s.span_id): i for i, s in enumerate(inp.spans)}
        self.node_ix = {n["node"]: i for i, n in enumerate(inp.nodes)}
        self.by_test: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
        self.services: dict[Any, list[int]] = {}
        for i, n in enumerate(inp.nodes):
            self.by_test.setdefault((n.get("suite"), n.get("test")), []).append(n)
            if n["kind"] == "service":
                self.services.setdefault(n.get("suite"), []).append(i)
        # Spans by suite key (of this run), in arrival order, with the time windows are judged by.
        self.suite_spans: dict[Any, _Timeline] = {}
        for i, s in enumerate(inp.spans):
            key = s.resource.get(SUITE_KEY)
            if s.resource.get(RUN_KEY) == inp.run_id and isinstance(key, str | None):
                tl = self.suite_spans.setdefault(key, _Timeline([], []))
                tl.idxs.append(i)
                tl.times.append(window_time(s))
        for tl in self.suite_spans.values():
            tl.index()
        self.plan_of: dict[str, Plan] = {}
        self.plan_nodes: dict[str, Mapping[str, Any]] = {}
        self.texts: dict[str, str] = {}
        self.edges_at: dict[str, list[tuple[str, str, Mapping[str, Any]]]] = {}
        for p in inp.plans:
            for n, d in p.nodes.items():
                self.plan_of[n] = p
                self.plan_nodes[n] = d
                for c in d.get("constraints", ()):
                    self.texts[c["id"]] = c.get("text", "")
            for u, v, d in p.edges:
                self.edges_at.setdefault(v, []).append((u, v, d))


    def timeline(self, key: Any) -> _Timeline:
        return self.suite_spans.get(key) or _Timeline([], [])


def _node_out(n: Mapping[str, Any], plan_node: Mapping[str, Any] | None, span_ix: Mapping[tuple[str, str], int],
              rel: Any, windows: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    detail = dict(n.get("detail") or {})
    if isinstance(detail.get("spans"), list):  # span nodes: refer to the spans, stored once
        detail["spans"] = [span_ix[k] for s in detail["spans"] if isinstance(s, dict)
                           and (k := (s.get("trace_id", ""), s.get("span_id", ""))) in span_ix]
    out = {"id": n["node"], "k": n["kind"], "l": n.get("label") or n["node"], "loc": n.get("loc") or "",
           "st": n["status"], "m": n.get("message", ""), "t0": rel(n.get("started_ns", 0)),
           "t1": rel(n.get("ended_ns", 0)), "d": detail}
    if plan_node is not None:
        from crc.compiler.render import node_caption

        out["cap"] = node_caption(plan_node, windows.get(n["node"]), names)
        if plan_node.get("step"):
            out["step"] = plan_node["step"]
    return out


def _test_out(ix: _Indexes, t: Mapping[str, Any]) -> dict[str, Any]:
    suite, name = t["suite"], t["name"]
    mine = ix.by_test.get((suite, name)) or [ix.inp.nodes[ix.node_ix[n]] for n in t["nodes"] if n in ix.node_ix]
    window = _window_spans(ix, suite, mine)
    plan = next((ix.plan_of[n["node"]] for n in mine if n["node"] in ix.plan_of), None)
    services = ix.services.get(suite, [])
    dag: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = []
    if plan is not None:
        dag, used = _dag(ix, plan, {n["node"] for n in mine})
        services = [i for i in services if ix.inp.nodes[i]["node"] in used]
        checks = _checks(ix, plan, [n["node"] for n in mine], suite, name, window)
    return {"suite": suite, "name": name, "st": t["status"], "dur": t.get("duration_s", 0),
            "fail": list(t["failures"]), "loc": t.get("loc", ""),
            "nodes": sorted(ix.node_ix[n["node"]] for n in mine if n["node"] in ix.node_ix),
            "services": services, "spans": [ix.span_ix[(s.trace_id, s.span_id)] for s in window],
            "dag": dag, "checks": checks}


def _window_spans(ix: _Indexes, suite: str, mine: Sequence[Mapping[str, Any]]) -> list[Span]:
    """The spans a test's checks saw: its recorded span window (`spanphase.in_window` up to what the phase had
    seen), else its suite's spans from its first step to its end."""
    inp = ix.inp
    windows = [n["detail"]["window"] for n in mine if isinstance((n.get("detail") or {}).get("window"), dict)
               and n["detail"]["window"].get("started_ns")]
    until: int | None = None
    if windows:
        w = windows[0]
        key, start, seen = w.get("suite_key"), int(w["started_ns"]), int(w.get("seen", len(inp.spans)))
    else:
        steps = [n for n in mine if n["kind"] == "step" and n.get("started_ns")]
        keys = [(inp.nodes[i].get("detail") or {}).get("suite_key") for i in ix.services.get(suite, [])]
        key = next((k for k in keys if k), None)
        if not steps or not isinstance(key, str):
            return []
        start, seen = min(n["started_ns"] for n in steps), len(inp.spans)
        until = max(n.get("ended_ns", 0) for n in mine) + int(inp.clock_skew * 1e9)
    tl = ix.timeline(key)
    low = start - int(inp.clock_skew * 1e9)  # as spanphase.in_window
    end = bisect.bisect_left(tl.idxs, seen)  # the spans that had arrived
    if end == 0:
        return []
    # Only spans timed in [low, high] can be in the window; `high` is at most the latest time among the spans
    # that had arrived, so the search stays near the test instead of running over the whole run.
    high = min(until if until is not None else tl.latest[end - 1], tl.latest[end - 1])
    lo, hi = bisect.bisect_left(tl.sorted_times, low), bisect.bisect_right(tl.sorted_times, high)
    return [inp.spans[tl.idxs[j]] for j in sorted(j for j in tl.order[lo:hi] if j < end)]


def _dag(ix: _Indexes, plan: Plan, mine: set[str]) -> tuple[dict[str, Any], set[str]]:
    """The test's own nodes and the services they wait for (transitively), with the edges between them."""
    used = set(mine)
    frontier = list(mine)
    while frontier:
        v = frontier.pop()
        for u, kind in plan.in_edges(v):
            if kind == "needs" and u not in used and plan.node(u)["kind"] == "service":
                used.add(u)
                frontier.append(u)
    from crc.compiler.render import edge_caption

    node_ix = ix.node_ix
    edges = [[node_ix[u], node_ix[v], d["kind"], edge_caption(d)] for v in sorted(used)
             for u, _, d in ix.edges_at.get(v, ())
             if u in used and u in node_ix and v in node_ix and d.get("expected", True)]
    return {"nodes": sorted(node_ix[n] for n in used if n in node_ix), "edges": edges}, used


def _checks(ix: _Indexes, plan: Plan, mine: list[str], suite: str, test: str, spans: list[Span]
            ) -> list[dict[str, Any]]:
    """Each span expectation of the test, evaluated on its window, with the spans it applies to."""
    from crc.compiler.plan import Plan

    # The test's part of the Plan: `build_phase` reads every node and edge it is given, once per test.
    own = Plan.of({n: ix.plan_nodes[n] for n in mine if n in ix.plan_nodes},
                  [e for n in mine for e in ix.edges_at.get(n, ())], plan.meta)
    # Span attribute values that use captures are rendered from the test's recorded captures, as replay does.
    caps: dict[str, str] = {}
    for n in ix.by_test.get((suite, test), ()):
        got = (n.get("detail") or {}).get("captures")
        if isinstance(got, dict):
            caps.update({str(k): str(v) for k, v in got.items()})
    try:
        selectors, constraints, owner = build_phase(own, suite, test,
                                                    render=lambda text, d: verdicts.render(d, text, caps))
    except TemplateProblem:
        return []  # a capture the run never made: the test's span checks are not drawn
    if not constraints:
        return []
    results = sc.evaluate(spans, selectors, constraints, clock_skew_s=ix.inp.clock_skew)
    matched = sc.matches(spans, selectors)
    owner_of = {cid: n for n, cids in owner.items() for cid in cids}
    labels = {sel.id: sel.label for sel in selectors}

    def refs(ss: Iterable[Span]) -> list[int]:
        return [ix.span_ix[k] for s in ss if (k := (s.trace_id, s.span_id)) in ix.span_ix]

    out = []
    for c, r in zip(constraints, results, strict=True):
        node = owner_of.get(c.id, "")
        item: dict[str, Any] = {"id": c.id, "where": c.where, "ok": r.passed, "m": r.message,
                                "node": ix.node_ix.get(node), "bad": [] if r.passed else refs(r.spans)}
        if isinstance(c, sc.Precedes):
            gap = f" {gap_text(c.min_gap_s, c.max_gap_s)}".rstrip()
            item.update(k="precedes", before=refs(matched.get(c.before, ())), after=refs(matched.get(c.after, ())),
                        lo=_ns(c.min_gap_s), hi=_ns(c.max_gap_s),
                        text=f"{labels.get(c.before)} before {labels.get(c.after)}{gap}")
        elif isinstance(c, sc.Duration):
            item.update(k="duration", spans=refs(matched.get(c.selector, ())), lo=_ns(c.min_s), hi=_ns(c.max_s))
        elif isinstance(c, sc.Contains):
            item.update(k="contains", outer=refs(matched.get(c.outer, ())), inner=refs(matched.get(c.inner, ())),
                        text=f"{labels.get(c.outer)} contains {labels.get(c.inner)}")
        elif isinstance(c, sc.Parent):
            item.update(k="parent", outer=refs(matched.get(c.parent, ())), inner=refs(matched.get(c.child, ())),
                        text=f"{labels.get(c.parent)} parent of {labels.get(c.child)}")
        elif isinstance(c, sc.Hermetic):
            item.update(k="hermetic", spans=refs(r.spans), text="hermetic")
        else:
            sel = getattr(c, "selector", "")
            item.update(k=type(c).__name__.lower(), spans=refs(matched.get(sel, ())))
        item.setdefault("text", ix.texts.get(c.id) or c.id)
        out.append(item)
    return out


def _ns(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1e9)


# ------------------------------------------------------------------------------------------------ the page


def _asset(name: str) -> str:
    return (resources.files("crc.runtime") / "html" / name).read_text(encoding="utf-8")


def _script_json(model: Any) -> str:
    """JSON safe inside a <script> element: no `<`, `>` or `&` can end it or start a comment."""
    text = json.dumps(model, separators=(",", ":"), ensure_ascii=False, default=str)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render(model: Mapping[str, Any], title: str = "crc report") -> str:
    """The whole page as one string."""
    import html

    script = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    page = _asset("report.html")
    # Placeholders are replaced in one pass each, the data last: nothing in the data is read as a placeholder.
    for key, value in (("@@TITLE@@", html.escape(title)), ("@@CSS@@", _asset("report.css")),
                       ("@@SCRIPT_HASH@@", f"sha256-{digest}"), ("@@JS@@", script)):
        page = page.replace(key, value)
    head, tail = page.split("@@DATA@@")
    return head + _script_json(model) + tail


def write_html(path: Path, inp: ReportInput) -> int:
    """Write the HTML report of `inp` to `path` (atomically); returns its size in bytes."""
    title = f"crc report {inp.run_id}"
    data = render(build_model(inp), title).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return len(data)
