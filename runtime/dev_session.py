"""`crc dev`: a warm session that keeps each suite's services running between edits.

Two parts, each usable alone:

* `classify(old, new, touched)` compares two compilations node by node (`node_digests`: a node's attributes
  and the edges into it, without source locations) and says what an edit changed: which services must start
  anew (their definition changed, a file they mount or build from changed, a service they need restarts, or
  they are new, dead or failed), which tests must run (a step changed, a service they use restarts, their
  settings changed, they are new), and which tests changed only in their expectations.
* `DevSession`, a `Runner` whose suites stay open: one network, span listener and set of service containers
  per suite for the session's whole life, under one run id (one lease). `recheck` answers an
  expectation-only edit from the last run's outputs and spans through `replay` (the verdict path replay and
  the runner share); `execute` restarts what must restart and runs the chosen tests against the services
  that kept running. `aclose` tears everything down, shielded, whatever ended the session.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from crc.compiler.plan import Plan, canonical_bytes
from crc.compiler.schema import SuiteEntry

from . import verdicts
from .options import RunOptions
from .results import PASSED, NodeResult, RunResult, TestResult, labels_of
from .runner import TEARDOWN_TIMEOUT, OpenSuite, Runner, _uses_grpc, selected
from .spans import Span, in_suite

TestKey = tuple[str, str]  # (suite, test)
# Edges that only order tests one after another: a test's digest does not depend on the test before it.
_ORDER_ONLY = frozenset({"then"})
# Suite settings that say nothing a run does: where it is written, and lists derived from the nodes.
_SUITE_IGNORED = frozenset({"loc", "services", "otel_services", "env_reads", "tests"})
_TEST_IGNORED = frozenset({"loc", "nodes"})
_EXPECTATIONS = frozenset({"assert", "span"})


def _without_locations(x: Any, depth: int = 0) -> Any:
    """`x` without where it is written, at any depth: `loc` entries, and the ids of nested parts (a span
    constraint's id names its line and column). Moving a line is no change."""
    if isinstance(x, Mapping):
        return {k: _without_locations(v, depth + 1) for k, v in x.items()
                if k != "loc" and not (k == "id" and depth > 0)}
    if isinstance(x, list | tuple):
        return [_without_locations(v, depth + 1) for v in x]
    return x


def _hash(x: Any) -> str:
    return hashlib.sha256(canonical_bytes(x)).hexdigest()


def node_digests(plan: Plan) -> dict[str, str]:
    """Each node's digest: its attributes and the edges into it (their sources and attributes), without
    source locations and without the edges that only order tests."""
    into: dict[str, list[Any]] = {}
    for u, v, d in plan.edges:
        if d["kind"] not in _ORDER_ONLY:
            into.setdefault(v, []).append([u, _without_locations(dict(d))])
    return {n: _hash([_without_locations(dict(d)), into.get(n, [])]) for n, d in plan.nodes.items()}


def mounted_paths(plan: Plan, node: str) -> list[Path]:
    """The host paths a service node mounts (volumes) or is built from (its build context), resolved."""
    d = plan.node(node)
    base = Path(str(plan.meta.get("source", "."))).parent
    out = []
    for v in d.get("volumes") or ():
        src = v["source"] if isinstance(v, Mapping) else v[0]
        out.append((base / str(src)).resolve())
    if d.get("build"):
        from .images import build_request

        out.append(build_request(d["build"], base)[0])
    return out


def watched_paths(plans: Iterable[Plan]) -> tuple[set[Path], set[Path]]:
    """What a session over `plans` watches: (`.cr` files: sources and their imports, paths services mount or
    are built from). Imports from crc's standard library are not the user's to edit."""
    sources: set[Path] = set()
    mounts: set[Path] = set()
    for p in plans:
        sources.add(Path(str(p.meta["source"])).resolve())
        sources.update(Path(i["path"]).resolve() for i in p.meta["imports"] if not i["path"].startswith("<std>"))
        for n in p.nodes_of("service"):
            mounts.update(mounted_paths(p, n))
    return sources, mounts


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


@dataclass
class Change:
    """What an edit changed and what it takes: `lines` say it for people, the sets say it for the session."""

    lines: list[str] = field(default_factory=list)
    run: set[TestKey] = field(default_factory=set)  # tests that run for real
    recheck: set[TestKey] = field(default_factory=set)  # expectation-only: re-checked from the last run first
    restart: set[str] = field(default_factory=set)  # service nodes (re)started
    stop: set[str] = field(default_factory=set)  # service nodes that are gone
    removed: set[TestKey] = field(default_factory=set)  # tests that are gone

    @property
    def empty(self) -> bool:
        """Nothing to start, run or check."""
        return not (self.run or self.recheck or self.restart or self.stop or self.removed)


def _suites(plans: Iterable[Plan]) -> dict[str, tuple[Plan, SuiteEntry]]:
    return {s["name"]: (p, s) for p in plans for s in p.suites}


def _tests(plans: Iterable[Plan]) -> dict[TestKey, tuple[Plan, Mapping[str, Any]]]:
    return {(t["suite"], t["name"]): (p, t) for p in plans for t in p.tests}


def _nodes_by_test(plan: Plan) -> dict[TestKey, set[str]]:
    out: dict[TestKey, set[str]] = {}
    for n, d in plan.nodes.items():
        if d.get("test") is not None:
            out.setdefault((d["suite"], d["test"]), set()).add(n)
    return out


def _dependents(plan: Plan, services: set[str]) -> set[str]:
    """The services that need (directly or through others) any of `services`."""
    out: set[str] = set()
    todo = list(services)
    while todo:
        s = todo.pop()
        for n in plan.nodes_of("service"):
            if n not in out and n not in services and (s, "needs") in plan.in_edges(n):
                out.add(n)
                todo.append(n)
    return out


def _what(d: Mapping[str, Any]) -> str:
    kind = {"assert": "expectation", "span": "span"}.get(d["kind"], d["kind"])
    return f"{kind} `{d.get('label') or d.get('name')}`"


def classify(old: Sequence[Plan], new: Sequence[Plan], touched: Iterable[Path] = (), *,
             broken: Iterable[str] = (), cold: Iterable[str] = (),
             unfinished: Mapping[str, Plan] | None = None) -> Change:
    """What changed from `old` to `new` (see the module docstring). `touched`: files that changed on disk
    (resolved paths); `broken`: service nodes that died or failed (started anew); `cold`: suites with nothing
    running (all their services start and all their tests run); `unfinished`: suites not in `old` whose
    services run from the Plan given (their first run was superseded): their services are compared with it,
    and all their tests run."""
    ch = Change()
    touched = [Path(t) for t in touched]
    broken, cold = set(broken), set(cold)
    old_d = {n: dg for p in old for n, dg in node_digests(p).items()}
    new_d = {n: dg for p in new for n, dg in node_digests(p).items()}
    old_nodes = {n: d for p in old for n, d in p.nodes.items()}
    old_suites, new_suites = _suites(old), _suites(new)
    never_finished = set()
    for name, up in (unfinished or {}).items():
        if name not in old_suites:  # only this suite's nodes: the Plan may hold newer versions of others
            never_finished.add(name)
            old_suites[name] = next((up, s) for s in up.suites if s["name"] == name)
            old_d.update({n: dg for n, dg in node_digests(up).items() if up.node(n)["suite"] == name})
    old_tests, new_tests = _tests(old), _tests(new)
    old_by_test = {k: v for p in old for k, v in _nodes_by_test(p).items()}

    for name in sorted(set(old_suites) - set(new_suites)):
        p, _ = old_suites[name]
        ch.lines.append(f"suite `{name}` is gone")
        ch.stop |= {n for n in p.nodes_of("service") if p.node(n)["suite"] == name}
    run_all: set[str] = set()  # suites whose every test runs
    for name, (p, s) in sorted(new_suites.items()):
        services = {n for n in p.nodes_of("service") if p.node(n)["suite"] == name}
        if name not in old_suites or name in cold:
            ch.lines.append(f"suite `{name}`: " + ("new" if name not in old_suites else "starting"))
            ch.restart |= services
            run_all.add(name)
            continue
        op, os_ = old_suites[name]
        old_services = {n for n in op.nodes_of("service") if op.node(n)["suite"] == name}
        if _uses_grpc(p, services) != _uses_grpc(op, old_services):  # its span listener must change
            ch.lines.append(f"suite `{name}`: OTLP/gRPC is now {'wanted' if _uses_grpc(p, services) else 'unused'}")
            ch.restart |= services
            run_all.add(name)
        elif name in never_finished:
            ch.lines.append(f"suite `{name}`: its first run did not finish (every test runs)")
            run_all.add(name)
        elif {k: v for k, v in s.items() if k not in _SUITE_IGNORED} != \
                {k: v for k, v in os_.items() if k not in _SUITE_IGNORED}:
            ch.lines.append(f"suite `{name}`: its settings changed")
            run_all.add(name)
        for n in sorted(old_services - services):
            ch.lines.append(f"service `{op.node(n)['name']}` is gone")
            ch.stop.add(n)
        for n in sorted(services):
            why = ""
            if n not in old_d:
                why = "new"
            elif old_d[n] != new_d[n]:
                why = "its definition changed"
            elif any(_under(t, mounted_paths(p, n)) for t in touched):
                why = "a file it mounts or is built from changed"
            elif n in broken:
                why = "it had stopped or failed"
            if why:
                ch.lines.append(f"service `{p.node(n)['name']}`: {why}")
                ch.restart.add(n)
        needing = _dependents(p, ch.restart & services)
        if needing:
            names = ", ".join(f"`{p.node(n)['name']}`" for n in sorted(needing))
            ch.lines.append(f"restarted with what they need: {names}")
            ch.restart |= needing

    ch.removed = set(old_tests) - set(new_tests)
    for key in sorted(ch.removed):
        ch.lines.append(f"test `{key[0]} / {key[1]}` is gone")
    for key, (p, t) in new_tests.items():
        label = f"test `{key[0]} / {key[1]}`"
        if key[0] in run_all:
            ch.run.add(key)
            continue
        if key not in old_tests:
            ch.lines.append(f"{label}: new")
            ch.run.add(key)
            continue
        _, ot = old_tests[key]
        if {k: v for k, v in t.items() if k not in _TEST_IGNORED} != \
                {k: v for k, v in ot.items() if k not in _TEST_IGNORED}:
            ch.lines.append(f"{label}: its settings changed")
            ch.run.add(key)
            continue
        mine = {n for n, d in p.nodes.items() if d.get("test") == key[1] and d["suite"] == key[0]}
        before = old_by_test.get(key, set())
        diff = sorted(n for n in mine | before if old_d.get(n) != new_d.get(n))
        if not diff:
            continue
        parts = []
        for n in diff:
            d = p.node(n) if n in mine else old_nodes[n]
            state = "new" if n not in before else "removed" if n not in mine else "changed"
            parts.append(f"{_what(d)} {state}")
        ch.lines.append(f"{label}: " + "; ".join(parts))
        kinds = {(p.node(n) if n in mine else old_nodes[n])["kind"] for n in diff}
        if kinds <= _EXPECTATIONS and not (ch.restart & set(p.services_of(t))):
            ch.recheck.add(key)
        else:
            ch.run.add(key)
    for key, (p, t) in new_tests.items():
        if key not in ch.run and key not in ch.recheck and ch.restart & set(p.services_of(t)):
            ch.run.add(key)
    return ch


# ---------------------------------------------------------------------------------------- the confirming run
# Seconds between a batch reaching the receiver's socket and its spans being counted, and between a step's end
# and its test's span phase: the margin of every wait below.
QUIET_MARGIN = 0.25
SDK_BATCH_DELAY = 5.0  # the OTel SDK's default OTEL_BSP_SCHEDULE_DELAY, for a value crc cannot read


def flush_window(plan: Plan, services: Iterable[str]) -> float:
    """Seconds within which a span a service ended reaches the receiver: twice the longest export delay of
    the services' OTel SDKs (crc gives them OTEL_BSP_SCHEDULE_DELAY=100 ms unless they set their own), plus
    the margin."""
    delays = []
    for n in services:
        raw = plan.node(n)["env"].get("OTEL_BSP_SCHEDULE_DELAY", "100")
        try:
            delays.append(max(0.0, float(raw)) / 1000)
        except ValueError:
            delays.append(SDK_BATCH_DELAY)
    return 2 * max(delays, default=0.1) + QUIET_MARGIN


class SpanQuiet:
    """When the confirming run of an expectation-only edit may stop waiting for spans: the rule of docs/dev.md
    ("The confirming run"). The test's steps are the ones its last run ran (only expectations changed), so
    that run shows how long after its last step its spans kept coming (`lag`). The wait ends once, all at
    once: the test's steps are done (its span phase has begun), `max(flush, 1.5 * lag + margin)` has passed
    since, no span reached the suite for a flush window, and no span seen names a parent span that has not
    arrived (a parent still open: its span is still to come), crc's own step spans excepted."""

    def __init__(self, session: DevSession, st: Any, test: str, lag: float):
        self.session, self.st, self.test = session, st, test
        self.flush = flush_window(st.plan, {n for n in st.plan.nodes_of("service")
                                            if st.plan.node(n)["suite"] == st.meta["name"]})
        self.need = max(self.flush, 1.5 * lag + QUIET_MARGIN)

    def _open_parent(self) -> bool:
        """Whether a span of the test's window names a parent that has not arrived (nor is a step's own)."""
        st, s = self.st, self.session
        t = st.tests[self.test]
        mine = [x for x in s._suite_spans(st) if verdicts.in_window(x, t.started_ns, s.options.clock_skew)]
        ids = {x.span_id for x in mine}
        ids |= {r.detail["trace"]["span_id"] for n, r in s.results.items() if n in st.plan.nodes
                and st.plan.node(n).get("test") == self.test and "span_id" in r.detail.get("trace", {})}
        return any(x.parent_span_id and x.parent_span_id not in ids for x in mine)

    async def __call__(self) -> None:
        t0 = anyio.current_time()
        count, last = len(self.session.spans), t0
        while True:
            now = anyio.current_time()
            if len(self.session.spans) != count:
                count, last = len(self.session.spans), now
            if now - t0 >= self.need and now - last >= self.flush and not self._open_parent():
                self.session.ended_early[(self.st.meta["name"], self.test)] = now - t0
                self.session._watch_late(self.st, self.test)
                return
            await anyio.sleep(self.flush / 4)


@dataclass(frozen=True)
class Recheck:
    """An expectation-only edit answered from the last run: the re-checked tests' verdicts, and the nodes that
    had nothing recorded to be checked against (never passed)."""

    result: RunResult
    labels: dict[str, dict[str, Any]]
    no_data: tuple[tuple[str, str], ...]


class DevSession(Runner):
    """A `Runner` whose suites stay open between runs (see the module docstring). Use it as an async context
    manager: it owns the task group that holds each suite open (`Runner.open_suite`, the path `crc run` and the
    pytest plugin open suites by) and tears every suite down on the way out."""

    def __init__(self, backend: Any, options: RunOptions, **kw: Any):
        super().__init__(backend, options, **kw)
        self.suites: dict[str, OpenSuite] = {}  # suite name -> the suite held open
        self.plans: list[Plan] = []  # what the last `execute` that finished ran
        self._keys = itertools.count()
        self._hosts: dict[str, tuple[anyio.CancelScope, anyio.Event]] = {}  # suite name -> its host task
        self._stack = AsyncExitStack()
        self._tg: anyio.abc.TaskGroup | None = None
        self._started = time.time_ns()
        self.arrived: list[float] = []  # when each of `spans` arrived, on anyio's clock
        self.finished: dict[str, float] = {}  # node -> when its latest result came, on anyio's clock
        self._lags: dict[TestKey, float] = {}  # confirming runs: how long their last run's spans kept coming
        self.ended_early: dict[TestKey, float] = {}  # tests of the last `execute` whose span wait ended early
        self._late: dict[TestKey, anyio.CancelScope] = {}  # their watches for spans that come after all
        # Told of a test whose verdict a span that came after an early end changed (`crc dev` prints it).
        self.on_late: Callable[[TestResult], None] | None = None

    def _on_spans(self, batch: list[Span]) -> None:
        super()._on_spans(batch)
        self.arrived.extend([anyio.current_time()] * len(batch))

    def _record(self, r: NodeResult) -> None:
        super()._record(r)
        self.finished[r.node] = anyio.current_time()

    def _early_end(self, st: Any, test: str) -> SpanQuiet | None:
        lag = self._lags.get((st.meta["name"], test))
        return None if lag is None else SpanQuiet(self, st, test, lag)

    def _watch_late(self, st: Any, test: str) -> None:
        """Watch for spans that come after `test`'s span wait ended early, until `crc run`'s wait would have
        ended (`_late_spans`)."""
        assert self._tg is not None
        phase = st.tests[test].phase
        key = (st.meta["name"], test)
        if key in self._late:
            self._late.pop(key).cancel()
        scope = self._late[key] = anyio.CancelScope(deadline=phase.started_at + phase.deadline)
        self._tg.start_soon(self._late_spans, st, test, scope, name=f"late spans {test}")

    async def _late_spans(self, st: Any, test: str, scope: anyio.CancelScope) -> None:
        """Each span that reaches the receiver judges the test's span checks again, as the wait `crc run` makes
        would have; a verdict that changes replaces the early one, and `on_late` hears of it. Ends once every
        awaited span came, at `scope`'s deadline, or when the test runs again."""
        phase = st.tests[test].phase
        key = (st.meta["name"], test)
        with scope:
            count = len(self.spans)
            while True:
                await self.receiver.wait_for(lambda _, seen=count: len(self.spans) > seen, timeout=None)
                count = len(self.spans)
                complete = phase.complete()
                if complete:
                    await anyio.sleep(phase.settle)
                was = {n: self.results[n].status for n in phase.checks.owner if n in self.results}
                verdicts_now = phase.judge(complete)
                if any(was.get(n) != v.status for n, v in verdicts_now.items()):
                    for n, v in verdicts_now.items():
                        kind = st.plan.node(n)["kind"]
                        detail: dict[str, Any] = {"spans": [x.to_dict() for x in v.spans]} if kind == "span" else {}
                        detail["window"] = phase.seen.to_dict()
                        old = self.results.get(n)
                        self._record(NodeResult.of(n, kind, v, old.started_ns if old else 0, time.time_ns(), detail))
                    self.ended_early.pop(key, None)
                    t = next(t for t in st.plan.tests if (t["suite"], t["name"]) == key)
                    tr = verdicts.test_result(st.plan, t, set(self.results) & set(st.plan.nodes), self.results,
                                              labels_of([st.plan]))
                    if tr is not None and self.on_late is not None:
                        self.on_late(tr)
                if complete:
                    break
        if self._late.get(key) is scope:
            del self._late[key]

    def _lag(self, key: TestKey) -> float | None:
        """How long after its last step ended the last run of test `key` still received spans of its window
        (seconds, on anyio's clock); None when that run gives no evidence (it checked no spans)."""
        tests = _tests(self.plans)
        if key not in tests:
            return None
        p, t = tests[key]
        nodes = [n for n in t["nodes"] if n in self.results]
        steps = [n for n in nodes if p.node(n)["kind"] == "step" and n in self.finished]
        windows = [self.results[n].detail["window"] for n in nodes if "window" in self.results[n].detail]
        if not steps or not windows:
            return None
        w = verdicts.SpanWindow.from_dict(windows[0])
        end = max(self.finished[n] for n in steps)
        traces = {self.results[n].detail.get("trace", {}).get("trace_id") for n in steps}
        skew = self.options.clock_skew
        came = [self.arrived[i] for i, x in enumerate(self.spans)
                if in_suite(x, self.run_id, w.suite_key) and verdicts.in_window(x, w.started_ns, skew)
                and (i < w.seen or x.trace_id in traces)]
        return max([0.0] + [a - end for a in came])

    async def __aenter__(self) -> DevSession:
        await self._stack.enter_async_context(self.serving())  # the receiver outlives every suite
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        await self.aclose()
        return await self._stack.__aexit__(*exc)

    async def aclose(self) -> None:
        """Remove every container and network of the session (shielded, bounded); leaving the session then
        closes the receiver."""
        for scope in self._late.values():
            scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(TEARDOWN_TIMEOUT):
            async with anyio.create_task_group() as tg:
                for name in list(self.suites):
                    tg.start_soon(self._close_suite, name)

    async def _host(self, plan: Plan, meta: SuiteEntry, done: anyio.Event, *,
                    task_status: anyio.abc.TaskStatus[tuple[anyio.CancelScope, OpenSuite]]) -> None:
        """Holds one suite open (`open_suite`) until cancelled; leaving it tears the suite down."""
        try:
            with anyio.CancelScope() as scope:
                async with self.open_suite(plan, meta, f"s{next(self._keys)}") as suite:
                    task_status.started((scope, suite))
                    await anyio.sleep_forever()
        finally:
            done.set()

    async def _open_suite(self, plan: Plan, meta: SuiteEntry) -> OpenSuite:
        """A suite opened in a host task of its own, held open until `_close_suite`."""
        assert self._tg is not None
        done = anyio.Event()
        scope, suite = await self._tg.start(self._host, plan, meta, done, name=f"suite {meta['name']}")
        self.suites[meta["name"]] = suite
        self._hosts[meta["name"]] = (scope, done)
        return suite

    async def _close_suite(self, name: str) -> None:
        """Stop a suite's host: its listener and watchers stop, then its containers and network go."""
        self.suites.pop(name, None)
        scope, done = self._hosts.pop(name)
        scope.cancel()
        with anyio.CancelScope(shield=True):
            await done.wait()

    # ------------------------------------------------------------ what changed
    def change(self, plans: Sequence[Plan], touched: Iterable[Path] = ()) -> Change:
        """What going from the last executed Plans to `plans` takes (`classify`, with what died meanwhile)."""
        broken = {n for s in self.suites.values() for n in s.st.dead}
        broken |= {n for n, r in self.results.items() if r.kind == "service" and r.status != PASSED}
        cold = {s["name"] for p in plans for s in p.suites if s["name"] not in self.suites}
        finished = {s["name"] for p in self.plans for s in p.suites}
        unfinished = {name: s.st.plan for name, s in self.suites.items() if name not in finished}
        return classify(self.plans, plans, touched, broken=broken, cold=cold, unfinished=unfinished)

    def last_run(self) -> RunResult:
        """Every test's latest verdict as one run: what the last `execute` of each left."""
        tests: list[TestResult] = []
        labels = labels_of(self.plans)
        for p in self.plans:
            snodes = selected(p, self.options.select)
            for t in p.tests:
                tr = verdicts.test_result(p, t, snodes, self.results, labels)
                if tr is not None and all(n in self.results for n in tr.nodes):
                    tests.append(tr)
        nodes = {n: r for n, r in self.results.items() if n in labels}
        return RunResult(self.run_id, self._started, time.time_ns(), tuple(tests), nodes,
                         tuple(str(p.meta["source"]) for p in self.plans))

    def recheck(self, plans: Sequence[Plan], tests: set[TestKey]) -> Recheck | None:
        """`tests` (expectation-only edits) checked against the last run's outputs and spans, as `crc replay`
        checks an edited file against a recording; None when there is nothing to check."""
        if not tests or not self.plans:
            return None
        from crc import __version__

        from .recording import build
        from .replay import replay

        rec = build(self.last_run(), self.plans, [s.to_dict() for s in self.spans], self.options, __version__)
        r = replay(rec, list(plans))
        mine = tuple(t for t in r.result.tests if (t.suite, t.name) in tests)
        nodes = {n for t in mine for n in t.nodes}
        return Recheck(replace(r.result, tests=mine), r.labels, tuple((n, w) for n, w in r.no_data if n in nodes))

    # ------------------------------------------------------------ running
    async def execute(self, plans: Sequence[Plan], change: Change) -> RunResult:
        """Stop what is gone, (re)start what must, run `change.run | change.recheck` against the services that
        kept running; the result holds those tests.

        Cancelled (a newer save supersedes the run), the tests' steps and span waits stop where they are (an
        exec's process is killed, a one-off container removed), the services keep running, and the session
        stays where the last run that finished left it: the tests that ran keep that run's results (the next
        re-check answers from them), `plans` stays the last Plans that finished, so the next `change` still
        holds everything this one would have done. A service cut short while starting counts as failed: the
        next change starts it again."""
        started = time.time_ns()
        suites = _suites(plans)
        wanted = change.run | change.recheck
        before, finished = dict(self.results), dict(self.finished)
        self._lags = {k: lag for k in change.recheck if (lag := self._lag(k)) is not None}
        self.ended_early = {}
        for key in wanted & set(self._late):  # the test runs again: its late spans are no news
            self._late.pop(key).cancel()
        try:
            for name in [n for n in self.suites if n not in suites]:
                await self._close_suite(name)
            self.labels = labels_of(plans)
            async with anyio.create_task_group() as tg:
                for name, (p, meta) in suites.items():
                    tg.start_soon(self._suite_run, p, meta, change, wanted, name=f"suite {name}")
        except anyio.get_cancelled_exc_class():
            for key in wanted & set(self._late):  # what this run judged is not kept: nor judged again
                self._late.pop(key).cancel()
            for p in plans:
                for n, d in p.nodes.items():
                    if (d["suite"], d.get("test")) in wanted:
                        if n in before:
                            self.results[n] = before[n]
                            self.finished[n] = finished.get(n, self.finished.get(n, 0.0))
                        else:
                            self.results.pop(n, None)
            raise
        self.plans = list(plans)
        for gone in set(self.results) - set(self.labels):
            del self.results[gone]
        labels = labels_of(plans)
        tests: list[TestResult] = []
        for p in plans:
            snodes = selected(p, self.options.select)
            for t in p.tests:
                if (t["suite"], t["name"]) in wanted and \
                        (tr := verdicts.test_result(p, t, snodes, self.results, labels)) is not None:
                    tests.append(tr)
        return RunResult(self.run_id, started, time.time_ns(), tuple(tests),
                         {n: r for n, r in self.results.items() if any(n in t.nodes for t in tests)},
                         tuple(str(p.meta["source"]) for p in plans))

    async def _suite_run(self, plan: Plan, meta: SuiteEntry, change: Change, wanted: set[TestKey]) -> None:
        name = meta["name"]
        snodes = {n for n in selected(plan, self.options.select) if plan.node(n)["suite"] == name}
        services = {n for n in snodes if plan.node(n)["kind"] == "service"}
        suite = self.suites.get(name)
        if suite is not None and services & change.restart and \
                _uses_grpc(plan, services) != _uses_grpc(suite.st.plan, suite.services):
            await self._close_suite(name)  # its listener must change: a new network too
            suite = None
        if suite is None:
            suite = await self._open_suite(plan, meta)
        await suite.stop(change.stop | change.restart)
        suite.follow(plan, meta)  # the suite now runs the new Plan's nodes
        tests = [t for t in plan.tests if t["suite"] == name and (name, t["name"]) in wanted]
        for t in tests:
            suite.reset(t)
        names = {t["name"] for t in tests}
        nodes = {n for n in services if n in change.restart or n not in suite.st.containers}
        nodes |= {n for n in snodes if plan.node(n).get("test") in names}
        if nodes:
            suite.deadline = anyio.current_time() + meta["timeout"]  # each run has the suite's timeout
            await suite.run(nodes)
        if suite.st.no_network is not None:  # nothing ran: the next change opens it again
            await self._close_suite(name)

    def warm(self) -> list[tuple[str, str]]:
        """The services running now: (suite, service name)."""
        return sorted((s.st.meta["name"], s.st.plan.node(n)["name"]) for s in self.suites.values()
                      for n in s.st.containers if n in s.st.plan.nodes and n not in s.st.dead)
