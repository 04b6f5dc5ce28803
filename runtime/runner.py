"""Executes Plans against a backend: one network per suite, services, steps, checks, span phases, teardown.

Task ownership: `run_plans` owns one task group of suites; each suite owns the scheduler's task group (one
task per node) and a task group of its OTLP listener and service watchers. Teardown runs shielded, in reverse
`needs` order, on success, failure, timeout and cancellation alike.
"""

from __future__ import annotations

import functools
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from crc.compiler.plan import Plan
from crc.compiler.schema import SuiteEntry, TestEntry
from crc.compiler.secrets import Masker, SecretProblem, reveal

from . import probes, selection, verdicts
from .backend import (
    OUTPUT_KEEP,
    AddressSpaceExhausted,
    Backend,
    BackendError,
    BuildSpec,
    ContainerSpec,
    GpuRequest,
    ImageUnavailable,
    Labels,
    Mount,
    PortMapping,
)
from .checks import StepOutput
from .network_space import NetworkSpace
from .options import RunOptions
from .results import (
    ERROR,
    FAILED,
    PASSED,
    SKIPPED,
    Cause,
    NodeResult,
    RunResult,
    TestResult,
    Verdict,
    label_of,
    node_info,
)
from .scheduler import Scheduler
from .spans import Span, in_suite, stamp, stamp_text
from .tracecontext import TraceContext
from .tracecontext import new as new_trace

if TYPE_CHECKING:
    from . import spanphase  # imported by the first span phase: suites without span checks never pay for it

LOG_TAIL = 20
LOG_FULL_MAX = 1 << 20  # bytes of a service's log kept with `log_full`: the last MiB
TEARDOWN_TIMEOUT = 60.0
# How often a suite waiting for network address space tries again on its own (networks crc did not make
# may go too); a suite of the run removing its network wakes it at once.
ADDRESS_RETRY_S = 2.0


@dataclass(frozen=True)
class KeptSuite:
    """A suite left running for debugging: its network and each service's container and published ports."""

    suite: str
    network: str
    services: tuple[tuple[str, str, dict[int, int]], ...]  # (name, container id, {container port: host port})

    def describe(self) -> str:
        """How to reach what was kept, one line each."""
        lines = [f"kept suite `{self.suite}` running (network {self.network}); `crc clean` removes it:"]
        for name, cid, ports in self.services:
            published = ", ".join(f"{c} -> 127.0.0.1:{h}" for c, h in sorted(ports.items()))
            lines.append(f"  {name}: docker exec -it {cid[:12]} sh" + (f"   ports {published}" if published else ""))
        return "\n".join(lines)


@dataclass
class _Test:
    id: str
    started_ns: int = 0
    timeout: float | None = None
    deadline: float | None = None  # on anyio's clock; set when the test's first node starts
    phase: spanphase.SpanPhase | None = None
    seen: int = 0  # how many of the run's spans existed at the phase's last look (recordings replay that set)
    uses: frozenset[str] = frozenset()  # the service nodes the test uses
    by_trace: bool = False  # its span checks see only the spans of its steps' traces

    def dead(self, st: _Suite) -> str:
        """Why the test cannot go on: the services it uses that died, with their exit and log tail."""
        return "\n".join(why for svc, why in st.dead.items() if svc in self.uses)


def new_test_state(plan: Plan, t: TestEntry) -> _Test:
    """A test's state for one run of it."""
    return _Test(t["id"], timeout=t["timeout"], uses=frozenset(plan.services_of(t)), by_trace=t["by_trace"])


@dataclass
class OpenSuite:
    """A suite opened by `Runner.open_suite`, the one path by which a suite's services start, keep running and
    go: `crc run` runs a whole selection at once, the pytest plugin a test at a time, `crc dev` the tests each
    edit touches (`follow` a newer compilation, `stop` the services to restart). Each `run` runs nodes on the
    suite's network and services; nodes that finished in an earlier `run` (its services) count as done for the
    nodes that wait on them, and a node run again gets a new result."""

    runner: Runner
    st: _Suite
    sched: Scheduler
    deadline: float = float("inf")  # the suite's timeout, on anyio's clock

    @property
    def services(self) -> set[str]:
        """The suite's service nodes in its Plan."""
        name = self.st.meta["name"]
        return {n for n, d in self.st.plan.nodes.items() if d["suite"] == name and d["kind"] == "service"}

    async def run(self, nodes: set[str]) -> None:
        """Run `nodes` (of this suite) until they all have a result, within the suite's timeout."""
        plan, timeout = self.st.plan, self.st.meta["timeout"]
        for n in nodes:
            self.runner.labels.setdefault(n, node_info(plan.node(n)))
            self.sched.results.pop(n, None)  # run again: its earlier result is not this run's
        if self.st.no_network is not None:  # its services failed already, when it was opened
            self.runner._fail_all(plan, set(nodes), self.st.no_network)
            return
        with anyio.move_on_at(self.deadline) as deadline:
            # Unfinished nodes say why: this suite's deadline, or an interruption from outside.
            await self.sched.run(nodes, unfinished=lambda: verdicts.suite_timeout(timeout)
                                 if deadline.cancel_called else verdicts.INTERRUPTED)

    async def read_logs(self, test: TestEntry) -> None:
        """Read the last log lines of the services `test` uses now, for its report (a run reads them at
        teardown; a test at a time, they are read after each test that failed)."""
        runner = self.runner

        async def tail(node: str, cid: str) -> None:
            text = runner.secrets.text(await runner._tail(cid))
            runner.results[node] = replace(runner.results[node], detail={**runner.results[node].detail,
                                                                         "log_tail": text})

        async with anyio.create_task_group() as tg:
            for svc in sorted(self.st.tests[test["name"]].uses & set(self.st.containers) & set(runner.results)):
                tg.start_soon(tail, svc, self.st.containers[svc])

    def test_result(self, test: TestEntry) -> TestResult | None:
        """The verdict of a test (an entry of the Plan's `tests`) from what ran so far."""
        ran = set(self.runner.results) & set(self.st.plan.nodes)
        return verdicts.test_result(self.st.plan, test, ran, self.runner.results, self.runner.labels)

    def follow(self, plan: Plan, meta: SuiteEntry) -> None:
        """From now on run the nodes of `plan`, a newer compilation of the suite's file (`crc dev`): what its
        old nodes left (outputs, traces, results) goes with them; a new test gets its state."""
        st = self.st
        st.plan, st.meta = plan, meta
        self.sched.plan = plan
        for kept in (st.outputs, st.traces, st.polled, self.sched.results):
            for n in [n for n in kept if n not in plan.nodes]:
                del kept[n]
        for t in plan.tests:
            if t["suite"] == meta["name"] and t["name"] not in st.tests:
                st.tests[t["name"]] = new_test_state(plan, t)

    def reset(self, test: TestEntry) -> None:
        """Forget what an earlier run of `test` left (its state, captures), before it runs again."""
        self.st.tests[test["name"]] = new_test_state(self.st.plan, test)
        self.st.captures.pop(test["name"], None)

    async def stop(self, services: set[str]) -> None:
        """Remove these services' containers (dependents first) while the suite stays open: `crc dev` restarts
        them; their watchers see them replaced, not dead."""
        await self.runner._remove_services(self.st, services & set(self.st.containers))


@dataclass
class _Suite:
    plan: Plan
    meta: SuiteEntry
    key: str
    network: Any = None
    endpoints: Any = None
    host_endpoints: Any = None  # the listener on 127.0.0.1 its `network host` services export to, if any
    no_receiver: str = ""  # why spans cannot be received in this suite, when they cannot
    no_network: Verdict | None = None  # why nothing can run in this suite: its network could not be made
    containers: dict[str, str] = field(default_factory=dict)  # service node -> container id
    ports: dict[str, dict[int, int]] = field(default_factory=dict)  # service node -> published ports
    dead: dict[str, str] = field(default_factory=dict)  # service node -> why it died
    outputs: dict[str, Any] = field(default_factory=dict)  # step node -> StepOutput or HttpOutput
    captures: dict[str, dict[str, str]] = field(default_factory=dict)  # test id -> captured values
    traces: dict[str, str] = field(default_factory=dict)  # step node -> the trace id crc started for it
    polled: dict[str, dict[str, Any]] = field(default_factory=dict)  # `eventually` step -> its result detail
    addresses: dict[str, str] = field(default_factory=dict)  # container id -> its address on the suite network
    tests: dict[str, _Test] = field(default_factory=dict)
    tearing_down: bool = False
    watchers: Any = None  # the task group owning this suite's OTLP listener and service watchers


def selected(plan: Plan, patterns: tuple[str, ...]) -> set[str]:
    """Nodes of the tests matching any `-k` expression (`runtime.selection`), with their services; all nodes
    when no pattern is given."""
    g = plan.nodes
    if not patterns:
        return set(g)
    match = selection.matcher(patterns)
    keep_tests = {(t["suite"], t["name"]) for t in plan.tests if match(t["suite"], t["name"])}
    nodes = {n for n, d in g.items() if (d["suite"], d.get("test")) in keep_tests}
    suites = {s for s, _ in keep_tests}
    nodes |= {n for n, d in g.items() if d["kind"] == "service" and d["suite"] in suites}
    return nodes


def needs_layers(plan: Plan, services: set[str]) -> list[list[str]]:
    """`services` in layers, each needing (`needs` edges) only services of earlier layers: the order they
    start in; reversed, the order teardown removes them in. A cycle, which the compiler rejects, ends as one
    last layer."""
    deps = {s: {u for u, k in plan.in_edges(s) if k == "needs" and u in services} for s in services}
    layers: list[list[str]] = []
    while deps:
        layer = sorted(s for s, d in deps.items() if not d) or sorted(deps)
        layers.append(layer)
        for s in layer:
            del deps[s]
        for d in deps.values():
            d.difference_update(layer)
    return layers


def _uses_grpc(plan: Plan, nodes: set[str]) -> bool:
    """Whether a service of these asks for OTLP/gRPC; crc injects OTLP/HTTP otherwise, so only then does the
    suite need a gRPC listener (and the run the grpc import)."""
    g = plan.nodes
    return any(g[n]["kind"] == "service" and "grpc" in (g[n]["env"].get("OTEL_EXPORTER_OTLP_PROTOCOL", ""),
                                                        g[n]["env"].get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", ""))
               for n in nodes)


def _ungranted_binds(source: str, d: Mapping[str, Any]) -> str:
    """Why a service's binds cannot be mounted: host access its grants do not cover, found again now (a path may
    resolve elsewhere than when its file was compiled); "" when they can."""
    from crc.compiler import host_access
    from crc.compiler.source import project_root

    base, project = os.path.dirname(os.path.abspath(source)), project_root(source)
    needs = [n for v in d["volumes"] for n in host_access.bind_needs(v["source"], None, base, project)]
    missing = host_access.ungranted(needs, [g["grant"] for g in d.get("host_access") or ()])
    return "\n".join(f"service `{d['name']}` {n.what}: host access no grant of it allows (it resolved elsewhere "
                      "when its file was compiled)" for n in missing)


async def _checked(off_loop: bool, out: Any, check: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """`check(*args, **kw)`; in a worker thread (`off_loop`) when it reads a spilled stream (runtime/spill.py),
    which can take seconds: a timeout or Ctrl-C then ends the wait at once (the check ends by its own
    deadline, reading a file the run may since have unlinked)."""
    if off_loop and isinstance(out, StepOutput) and (out.stdout_spill is not None or out.stderr_spill is not None):
        return await anyio.to_thread.run_sync(functools.partial(check, *args, **kw), abandon_on_cancel=True)
    return check(*args, **kw)


class Runner:
    """One `crc run`: several Plans, a shared backend, receiver and job limit."""

    def __init__(self, backend: Backend, options: RunOptions, *, run_id: str | None = None,
                 on_start: Callable[[str], None] | None = None,
                 on_result: Callable[[NodeResult], None] | None = None,
                 receiver: Callable[[Callable[[list[Span]], None]], Any] | None = None):
        """`receiver(on_spans)` makes the OTLP receiver in place of crc's own (tests: a fake one)."""
        self.backend = backend
        self.options = options
        self.run_id = run_id or time.strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(3)
        self.limiter = anyio.CapacityLimiter(max(1, options.jobs))
        # -j bounds suites too: a suite holds a slot, and so its network, from its start to its end.
        self.suite_slots = anyio.CapacityLimiter(max(1, options.jobs))
        # The networks held or being created by this run's suites (kept ones not: they will not be given back);
        # a cluster worker's runners, one a suite, share their worker's.
        self.network_space = NetworkSpace()
        self._removed = 0  # how many networks of this run were given back so far
        self._network_news = anyio.Event()  # set (and replaced) when a creation ends or a network goes
        self.on_note: Callable[[str], None] | None = None  # a line about the run as it happens
        self.on_start = on_start or (lambda n: None)
        self.on_result = on_result
        self.on_log: Callable[[str, str], None] | None = None  # (service name, line) with `stream_logs`
        self.kept: list[KeptSuite] = []  # suites left running (`keep`), with how to reach them
        self.secrets = Masker()  # every secret value revealed to a container, hidden from everything kept
        # Checks on a spilled stream run in a worker thread. A loop on a virtual clock (the fake backend's tests)
        # sets this False: it would jump to its next timer while the thread works.
        self.check_off_loop = True
        self.receiver: Any = None
        self._make_receiver = receiver
        self.spans: list[Span] = []
        self._images: dict[str, anyio.Event] = {}
        self._image_errors: dict[str, BaseException] = {}
        self.image_ids: dict[str, str] = {}  # image ref -> id, for recordings
        self.results: dict[str, NodeResult] = {}
        self.labels: dict[str, dict[str, Any]] = {}
        self.interrupted = False
        self._schedulers: list[Scheduler] = []
        self._fail_fast: Verdict | None = None
        self._http: Any = None  # the aiohttp session of http steps, opened by the first one

    # ------------------------------------------------------------ entry
    async def run(self, plans: list[Plan]) -> RunResult:
        started = self._started_ns = time.time_ns()
        work: list[tuple[Plan, SuiteEntry, set[str], int]] = []
        self._work = work
        for p in plans:
            nodes = selected(p, self.options.select)
            for n in nodes:
                self.labels[n] = node_info(p.node(n))
            for i, s in enumerate(p.suites):
                snodes = {n for n in nodes if p.node(n)["suite"] == s["name"]}
                if snodes:
                    work.append((p, s, snodes, i))
        try:
            async with self.serving(), anyio.create_task_group() as tg:
                for idx, (p, s, snodes, _) in enumerate(work):
                    tg.start_soon(self._suite, p, s, snodes, f"s{idx}", name=f"suite {s['name']}")
        except anyio.get_cancelled_exc_class():
            self.interrupted = True
            raise
        return self._result(plans, work, started)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """The run's OTLP receiver (and the http steps' session) for the block: `run` holds it around its
        suites, a caller of `open_suite` around the suites it opens."""
        from .otlp import OtlpReceiver
        from .spill import SpillDir, active

        self.receiver = (self._make_receiver or (lambda on_spans: OtlpReceiver(on_spans=on_spans)))(self._on_spans)
        try:
            with active(SpillDir(self.secrets)):  # step output past OUTPUT_KEEP, removed however the run ends
                yield
        finally:
            with anyio.CancelScope(shield=True):
                await self.receiver.aclose()
                if self._http is not None:
                    await self._http.close()

    def _on_spans(self, batch: list[Span]) -> None:
        """A batch the receiver accepted: the run's spans, in arrival order."""
        self.spans.extend(batch)

    def partial_result(self, plans: list[Plan]) -> RunResult:
        """The result of a run that was cancelled (Ctrl-C): what finished, marked interrupted."""
        self.interrupted = True
        return self._result(plans, getattr(self, "_work", []), getattr(self, "_started_ns", time.time_ns()))

    def _result(self, plans: list[Plan], work: list[Any], started: int) -> RunResult:
        tests: list[TestResult] = []
        for p, s, snodes, _ in work:
            for t in p.tests:
                if t["suite"] == s["name"] and (tr := verdicts.test_result(p, t, snodes, self.results,
                                                                           self.labels)) is not None:
                    tests.append(tr)
        return RunResult(self.run_id, started, time.time_ns(), tuple(tests), dict(self.results),
                         tuple(p.meta["source"] for p in plans), self.interrupted)

    def _record(self, r: NodeResult) -> None:
        if self.secrets:  # nothing a run keeps or prints may hold a secret's value
            r = replace(r, message=self.secrets.text(r.message), detail=self.secrets.data(r.detail))
        self.results[r.node] = r
        if self.on_result:
            self.on_result(r)
        if self.options.fail_fast and r.status in (FAILED, ERROR) and self._fail_fast is None:
            # --fail-fast stops the whole run: the other suites skip what they have not started.
            self._fail_fast = verdicts.fail_fast(label_of(self.labels, r.node), r.status)
            for sched in self._schedulers:
                sched.stop(self._fail_fast)

    # ------------------------------------------------------------ suites
    async def _suite(self, plan: Plan, meta: SuiteEntry, nodes: set[str], key: str) -> None:
        try:
            async with self.suite_slots, self.open_suite(plan, meta, key) as suite:
                await suite.run(nodes)
        except anyio.get_cancelled_exc_class():
            # Interrupted while it waited for a slot (-j), a suite ran nothing: its nodes say so, as the
            # unfinished nodes of a running suite do (a recording then replays them as they were).
            now = time.time_ns()
            for n in sorted(nodes):
                if n not in self.results:
                    self._record(NodeResult.of(n, plan.node(n)["kind"], verdicts.INTERRUPTED, now, now))
            raise

    async def _network(self, name: str, labels: dict[str, str], internal: bool, suite: str) -> Any:
        """The suite's network. When the engine has no address space left, wait for a suite of this run to
        remove its own (or for any network to go: retried every ADDRESS_RETRY_S), or, when no suite counted
        by `network_space` holds or is getting one, fail saying what to change."""
        waited = False
        while True:
            removed = self._removed
            self.network_space.add(1)
            net = None
            try:
                with anyio.CancelScope(shield=True):  # an id lost to cancellation would leak the network
                    net = await self.backend.create_network(name, labels, internal=internal)
                return net
            except AddressSpaceExhausted as e:
                exhausted = e
            finally:
                if net is None:  # not made: nothing to give back
                    self.network_space.add(-1)
                self._news()
            if not waited and self.on_note is not None:
                self.on_note(f'suite "{suite}" waits for network address space (the engine has no subnet left '
                             "for another network)")
            waited = True
            with anyio.move_on_after(ADDRESS_RETRY_S):
                # Creations of other suites still under way may yet hold a network to give back: decide once
                # they have ended (on a real engine a creation fails while others it lost to are answered).
                while self._removed == removed:
                    if self.network_space.count == 0:
                        raise AddressSpaceExhausted(
                            f"{exhausted}\nhelp: the engine has no subnet left for another network, and no suite of "
                            "this run holds one it could give back: remove unused networks (`docker network ls`; "
                            "`crc clean` removes what crc left), or give the engine more address space with "
                            '"default-address-pools" in /etc/docker/daemon.json (e.g. [{"base": "10.200.0.0/16", '
                            '"size": 24}]: 256 networks) and restart dockerd') from None
                    await self._network_news.wait()

    def _news(self) -> None:
        self._network_news.set()
        self._network_news = anyio.Event()

    def _network_gone(self) -> None:
        self.network_space.add(-1)
        self._removed += 1
        self._news()

    @asynccontextmanager
    async def open_suite(self, plan: Plan, meta: SuiteEntry, key: str) -> AsyncIterator[OpenSuite]:
        """A suite's network and receiver listener, up for the block: `run` on what it yields runs nodes (a
        whole selection at once, or a test at a time with its services kept); leaving tears the suite down."""
        st = _Suite(plan, meta, key)
        for t in plan.tests:
            if t["suite"] == meta["name"]:
                st.tests[t["name"]] = new_test_state(plan, t)
        sched = Scheduler(plan, lambda n: self._execute(st, n), fail_fast=self.options.fail_fast,
                          on_result=self._record, shuffle_seed=self.options.shuffle_seed)
        self._schedulers.append(sched)
        if self._fail_fast is not None:
            sched.stop(self._fail_fast)
        suite = OpenSuite(self, st, sched)
        try:
            async with anyio.create_task_group() as watchers:
                st.watchers = watchers
                # Its services decide whether the listener serves gRPC; without a network they fail here.
                await self._open(st, {n for n, d in plan.nodes.items()
                                      if d["suite"] == meta["name"] and d["kind"] == "service"})
                suite.deadline = anyio.current_time() + meta["timeout"]
                yield suite
                st.tearing_down = True
                watchers.cancel_scope.cancel()
        finally:
            self._schedulers.remove(sched)
            st.tearing_down = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(TEARDOWN_TIMEOUT):
                await self._teardown(st)
            if st.network is not None:  # removed, kept or left to the lease: not ours to give back any more
                self._network_gone()

    async def _open(self, st: _Suite, nodes: set[str]) -> bool:
        """The suite's network, and its span listener as a task of `st.watchers`; False (every node of `nodes`
        failed) when there is no network."""
        try:
            st.network = await self._network(f"crc-{self.run_id}-{st.key}",
                                             Labels.for_run(self.run_id, st.meta["name"]),
                                             st.meta.get("network") == "internal", st.meta["name"])
        except BackendError as e:
            st.no_network = verdicts.no_network(e)
            self._fail_all(st.plan, nodes, st.no_network)
            return False
        watchers = st.watchers
        try:
            # Spans are the suite's by where they arrive: this listener, a task of the suite's, stamps
            # them with the suite's key and serves only senders on the suite's network.
            st.endpoints = await watchers.start(functools.partial(
                self.receiver.serve, st.network.gateway, grpc=_uses_grpc(st.plan, nodes),
                peers=st.network.subnet or None, stamp=stamp(self.run_id, st.key)),
                name=f"otlp {st.meta['name']}")
        except OSError as e:
            # E.g. crc itself in a container, where the suite's gateway is not a local address. Suites
            # that never look at spans run on; span checks say why they cannot.
            st.no_receiver = (f"crc's OTLP receiver could not listen on the suite network's gateway "
                              f"{st.network.gateway}: {e.strerror or e}")
        if any(st.plan.node(n).get("network") == "host" for n in nodes) and not st.no_receiver:
            # A host-network service is on no suite network: what it sends to the gateway arrives from a host
            # address (Docker masquerades the gateway's own subnet leaving by lo), so it gets a listener of
            # its own on loopback, which only the host (it was granted the host) can reach.
            try:
                st.host_endpoints = await watchers.start(functools.partial(
                    self.receiver.serve, "127.0.0.1", grpc=_uses_grpc(st.plan, nodes), peers="127.0.0.0/8",
                    stamp=stamp(self.run_id, st.key)), name=f"otlp {st.meta['name']} (host)")
            except OSError as e:
                st.no_receiver = f"crc's OTLP receiver could not listen on 127.0.0.1: {e.strerror or e}"
        return True

    def _fail_all(self, plan: Plan, nodes: set[str], why: Verdict) -> None:
        now = time.time_ns()
        for n in nodes:
            self._record(NodeResult.of(n, plan.node(n)["kind"], why, now, now))

    async def _teardown(self, st: _Suite) -> None:
        # Read logs before the containers go: every service's with `log_tails`/`log_full` (recordings and
        # reports), else only those of services that a failed test used (its report shows them).
        wanted = set(st.containers) if self.options.log_tails or self.options.log_full else self._failed_uses(st)
        if wanted:
            async with anyio.create_task_group() as tg:
                for svc in wanted & set(st.containers):
                    tg.start_soon(self._keep_tail, svc, st.containers[svc])
        if self.options.keep == "all" or (self.options.keep == "failed" and self._suite_failed(st)):
            self.kept.append(KeptSuite(st.meta["name"], st.network.name if st.network else "",
                                       tuple((st.plan.node(n)["name"], cid, st.ports.get(n, {}))
                                             for n, cid in sorted(st.containers.items()))))
            return
        await self._remove_services(st, set(st.containers))
        if st.network is not None:
            try:
                await self.backend.remove_network(st.network.id)
            except BackendError:
                pass  # the lease lets the next run or `crc clean` reap it

    async def _remove_services(self, st: _Suite, services: set[str]) -> None:
        """Remove these services' containers, shielded: dependents first, a service after everything that needs
        it. They are the suite's no longer (their watchers see them gone, not dead)."""
        for layer in reversed(needs_layers(st.plan, services)):
            cids = []
            for n in layer:
                cids.append(st.containers.pop(n))
                st.ports.pop(n, None)
                st.dead.pop(n, None)
                st.addresses.pop(cids[-1], None)
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as tg:
                    for cid in cids:
                        tg.start_soon(self._remove, cid)

    async def _remove(self, cid: str) -> None:
        try:
            await self.backend.remove_container(cid)
        except BackendError:
            pass

    def _suite_failed(self, st: _Suite) -> bool:
        return any(r.status in (FAILED, ERROR) for n, r in self.results.items()
                   if n in st.plan.nodes and st.plan.node(n)["suite"] == st.meta["name"])

    def _failed_uses(self, st: _Suite) -> set[str]:
        """The service nodes used by this suite's tests that failed or errored so far."""
        bad = {d["test"] for n, r in self.results.items() if r.status in (FAILED, ERROR)
               and n in st.plan.nodes and (d := st.plan.node(n)).get("test") and d["suite"] == st.meta["name"]}
        failed_services = {n for n, r in self.results.items() if r.status in (FAILED, ERROR) and r.kind == "service"
                           and n in st.containers}
        return failed_services | {svc for name, t in st.tests.items() if name in bad for svc in t.uses}

    async def _keep_tail(self, node: str, cid: str) -> None:
        r = self.results.get(node)
        if r is None:
            return
        extra: dict[str, Any] = {}
        if self.options.log_full:  # one request: the tail is the whole log's last lines
            try:
                whole = await self.backend.logs(cid)
                tail = "\n".join(whole.rstrip().splitlines()[-LOG_TAIL:])
            except BackendError as e:
                whole = tail = f"(the log could not be read: {e})"
            extra["log"] = whole[-LOG_FULL_MAX:]
            if "log_tail" not in r.detail:
                extra["log_tail"] = tail
        elif "log_tail" not in r.detail:
            extra["log_tail"] = await self._tail(cid)
        if extra:
            extra = self.secrets.data(extra)
            self.results[node] = replace(self.results[node], detail={**self.results[node].detail, **extra})

    async def _follow(self, name: str, cid: str) -> None:
        """Hand the service's log lines to `on_log` as they come (`--logs`), until the container ends."""
        buf = b""
        try:
            async for _stream, data in self.backend.stream_logs(cid):
                *lines, buf = (buf + data).split(b"\n")
                for line in lines:
                    if self.on_log is not None:
                        self.on_log(name, self.secrets.text(line.decode("utf-8", "replace")))
        except BackendError:
            pass
        if buf and self.on_log is not None:
            self.on_log(name, self.secrets.text(buf.decode("utf-8", "replace")))

    # ------------------------------------------------------------ nodes
    async def _execute(self, st: _Suite, node: str) -> NodeResult:
        d = st.plan.node(node)
        test = st.tests.get(d["test"]) if d.get("test") else None
        if test is not None and test.timeout:
            if test.deadline is None:
                test.deadline = anyio.current_time() + test.timeout
            started = time.time_ns()
            with anyio.move_on_at(test.deadline) as scope:
                r = await self._execute_node(st, node, d)
            if not scope.cancelled_caught:
                return r
            return NodeResult.of(node, d["kind"], verdicts.test_timeout(test.timeout), started, time.time_ns())
        return await self._execute_node(st, node, d)

    async def _execute_node(self, st: _Suite, node: str, d: Mapping[str, Any]) -> NodeResult:
        kind = d["kind"]
        started = time.time_ns()
        detail: dict[str, Any] = {}
        try:
            # Services and steps hold a job slot (-j); their time starts once they hold it.
            if kind == "service":
                async with self.limiter:
                    self.on_start(node)
                    started = time.time_ns()
                    v, detail = await self._service(st, node, d)
            elif kind == "step":
                async with self.limiter:
                    self.on_start(node)
                    started = time.time_ns()
                    v, detail = await self._step(st, node, d)
            elif kind == "assert":
                self.on_start(node)
                v, detail = await self._assert(st, node, d)
            else:
                self.on_start(node)
                v, detail = await self._span(st, node, d)
        except BackendError as e:
            v = verdicts.backend_error(e)
        return NodeResult.of(node, kind, v, started, time.time_ns(), detail)

    def _service_spec(self, st: _Suite, d: Mapping[str, Any], image: str, base: Path) -> ContainerSpec:
        """The container of a service; its secrets are revealed here (SecretProblem when one cannot be)."""
        gpus = d.get("gpus")
        on_host = d.get("network") == "host"  # the host's network: no suite network, aliases or published ports
        return ContainerSpec(
            name=f"crc-{self.run_id}-{st.key}-{d['name']}",
            image=image,
            command=tuple(reveal(a, os.environ, self.secrets) for a in d["command"]) if d["command"] else None,
            env={k: reveal(v, os.environ, self.secrets) for k, v in self._otel_env(st, d).items()},
            network="host" if on_host else st.network.name,
            aliases=() if on_host else (d["name"],),
            ports=() if on_host else tuple(PortMapping(int(p["container"] or 0), int(p["host"]))
                                           for p in d["ports"] if p["host"] is not None),
            volumes=tuple(Mount(str((base / str(v["source"])).resolve()), str(v["target"]), v["read_only"])
                          for v in d["volumes"]),
            labels=Labels.for_run(self.run_id, st.meta["name"], **{Labels.SERVICE: d["name"]}),
            workdir=d["workdir"],
            cpus=d.get("cpus"),
            memory=d.get("memory"),
            gpus=GpuRequest(gpus["count"], tuple(gpus["devices"] or ())) if gpus else None,
            privileged=bool(d.get("privileged")),
            hermetic=st.meta.get("network") == "internal",
        )

    async def _service_image(self, d: Mapping[str, Any], base: Path) -> str:
        """The image a service runs: its `image`, or the one built from its `build` context."""
        build = d.get("build")
        if not build:
            await self._image(d["image"])
            return str(d["image"])
        from .images import LABEL, ContextProblem, build_request, build_tag, make_context

        root, dockerfile, target, args = build_request(build, base)
        try:  # reading and hashing a large context must not hold up the event loop
            ctx = await anyio.to_thread.run_sync(make_context, root, dockerfile, target, args)
        except ContextProblem as e:
            raise ImageUnavailable(str(e), d["name"]) from None
        tag = build_tag(d["name"], ctx.digest)
        spec = BuildSpec(ctx.tar, tag, dockerfile, target, args, {LABEL: "1", Labels.SERVICE: d["name"]},
                         build.get("network"))
        await self._image(tag, spec)
        return tag

    async def _image(self, ref: str, build: BuildSpec | None = None) -> None:
        """Make sure an image is there, once per run however many services use it; an image to `build` is
        built only when the engine does not have its tag (the tag names the context's digest)."""
        while True:
            ev = self._images.get(ref)
            if ev is None:
                break
            await ev.wait()
            if ref in self._image_errors:
                raise self._image_errors[ref]
            if ref in self.image_ids or self._images.get(ref) is ev:
                return
            # The owner was cancelled (its test timed out, fail-fast): take over the lookup.
        ev = self._images[ref] = anyio.Event()
        try:
            if build is None:
                image_id = await self.backend.ensure_image(ref, allow_pull=self.options.allow_pull,
                                                           always=self.options.pull_always)
            else:
                try:
                    image_id = await self.backend.ensure_image(ref, allow_pull=False)
                except ImageUnavailable:
                    image_id = await self.backend.build_image(build)
            self.image_ids[ref] = image_id if isinstance(image_id, str) else ""
        except Exception as e:
            self._image_errors[ref] = e  # an answer for every waiter; a cancellation is only this caller's
            raise
        except BaseException:
            del self._images[ref]
            raise
        finally:
            ev.set()

    def _otel_env(self, st: _Suite, d: Mapping[str, Any]) -> dict[str, str]:
        env = dict(d["env"])
        proto = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                 or "http/protobuf")
        ep = st.host_endpoints if d.get("network") == "host" else st.endpoints
        if ep is None:
            return env
        env.setdefault("OTEL_EXPORTER_OTLP_PROTOCOL", proto)
        env.setdefault("OTEL_EXPORTER_OTLP_ENDPOINT", ep.grpc_url if proto == "grpc" else ep.http_url)
        env.setdefault("OTEL_SERVICE_NAME", d["name"])
        # Spans are attributed to their suite by this resource attribute; a short batch delay keeps span phases
        # short (the SDK default is 5 s).
        ours = stamp_text(self.run_id, st.key)
        env["OTEL_RESOURCE_ATTRIBUTES"] = f"{env['OTEL_RESOURCE_ATTRIBUTES']},{ours}" \
            if env.get("OTEL_RESOURCE_ATTRIBUTES") else ours
        env.setdefault("OTEL_BSP_SCHEDULE_DELAY", "100")
        return env

    async def _service(self, st: _Suite, node: str, d: Mapping[str, Any]) -> tuple[Verdict, dict[str, Any]]:
        if st.no_receiver and any(p["type"] == "span" for p in d["probes"]):
            return verdicts.environment(st.no_receiver), {}
        base = Path(st.plan.meta["source"]).parent
        if why := _ungranted_binds(st.plan.meta["source"], d):
            return verdicts.environment(why), {}
        try:
            image = await self._service_image(d, base)
        except ImageUnavailable as e:
            return verdicts.backend_error(e), {}
        try:
            spec = self._service_spec(st, d, image, base)
        except SecretProblem as e:
            return verdicts.environment(str(e)), {}
        # Shielded: cancelled mid-request, the container would exist with its id unknown to teardown.
        with anyio.CancelScope(shield=True):
            cid = await self.backend.create_container(spec)
            st.containers[node] = cid
        await anyio.sleep(0)  # and now let a pending cancellation land
        st.ports[node] = await self.backend.start(cid)
        exited = anyio.Event()
        st.watchers.start_soon(self._watch, st, node, d, cid, exited)
        if self.options.stream_logs:
            st.watchers.start_soon(self._follow, d["name"], cid)
        for probe in d["probes"]:
            ok, why = await probes.wait_ready(self.backend, cid, probe, exited=exited,
                                              spans=lambda: self._suite_spans(st), receiver=self.receiver,
                                              service=d["otel_name"])
            if not ok:
                tail = await self._tail(cid)
                state = await self.backend.state(cid)
                if state.oom_killed:  # the probe's own words ("the log ended") would hide the cause
                    return Verdict(FAILED, f"not ready: {await self._death(d, cid)}", Cause.NOT_READY), \
                        {"log_tail": tail}
                return verdicts.not_ready(d["name"], why, state.describe(), tail), {"log_tail": tail}
        return verdicts.PASS, {"container": cid, "image_id": self.image_ids.get(image), "suite_key": st.key}

    async def _tail(self, cid: str) -> str:
        try:
            return (await self.backend.logs(cid, tail=LOG_TAIL)).rstrip()
        except BackendError:
            return "(no logs)"

    async def _watch(self, st: _Suite, node: str, d: Mapping[str, Any], cid: str, exited: anyio.Event) -> None:
        """Notices a service that dies, so the test running then fails with its exit code and log tail."""
        try:
            await self.backend.wait(cid)
        except BackendError:
            return
        exited.set()
        if st.tearing_down or st.containers.get(node) != cid:  # torn down, or replaced (`crc dev` restarts it)
            return
        st.dead[node] = await self._death(d, cid)

    async def _death(self, d: Mapping[str, Any], cid: str) -> str:
        """Why a service's container is gone: its state (an OOM kill with the limit), then its last log lines."""
        try:
            cstate = await self.backend.state(cid)
            state = cstate.describe()
            if cstate.oom_killed and d.get("memory"):
                from crc.compiler.resources import format_size

                state = f"was killed by the kernel: out of memory (its limit is {format_size(d['memory'])})"
            tail = await self._tail(cid)
        except BackendError as e:
            state, tail = "stopped", f"(its state and logs could not be read: {e})"
        return f"service `{d['name']}` {state}\n--- last log lines ---\n{tail}"

    def _suite_spans(self, st: _Suite) -> list[Span]:
        return [s for s in self.spans if in_suite(s, self.run_id, st.key)]

    def _render(self, st: _Suite, d: Mapping[str, Any], text: str) -> str:
        """`text` with its capture-dependent template rendered; raises TemplateProblem when it cannot be."""
        return verdicts.render(d, text, st.captures.get(d["test"], {}))

    async def _step(self, st: _Suite, node: str, d: Mapping[str, Any]) -> tuple[Verdict, dict[str, Any]]:
        if not d.get("eventually"):
            return await self._step_once(st, node, d)
        from . import eventually

        last: list[Verdict] = []

        async def once() -> eventually.Outcome:
            v, detail = await self._step_once(st, node, d)
            last.append(v)
            return v.status, v.message, detail, v.cause.environment

        async def holds() -> str | None:
            for aid in d["eventually"]["asserts"]:
                v, _ = await self._assert(st, aid, st.plan.node(aid))
                if not v.passed:
                    return v.message
            return None

        status, message, detail, _env = await eventually.poll(once, holds, d["eventually"])
        st.polled[node] = detail
        return replace(last[-1], status=status, message=message), detail

    async def _step_once(self, st: _Suite, node: str, d: Mapping[str, Any]) -> tuple[Verdict, dict[str, Any]]:
        from crc.compiler.template_problem import TemplateProblem

        test = st.tests[d["test"]]
        if not test.started_ns:
            test.started_ns = time.time_ns()
        if dead := test.dead(st):
            return verdicts.service_died(dead), {}
        tc = new_trace()
        st.traces[node] = tc.trace_id
        if d["action"] == "http":
            return await self._http_step(st, node, d, tc)
        try:
            late_argv, late_env = set(d.get("deferred_argv", ())), set(d.get("deferred_env", ()))
            argv = [self._render(st, d, a) if i in late_argv else a
                    for i, a in enumerate(d["argv"])] if d["argv"] else None
            env = {k: self._render(st, d, v) if k in late_env else v for k, v in d["env"].items()}
        except TemplateProblem as e:
            return verdicts.cannot_render("the command", e.message), {}
        shown_argv = argv  # reports keep secrets' placeholders; the engine gets their values
        try:
            argv = [reveal(a, os.environ, self.secrets) for a in argv] if argv else argv
            env = {k: reveal(v, os.environ, self.secrets) for k, v in env.items()}
        except SecretProblem as e:
            return verdicts.environment(str(e)), {}
        env = {**tc.env(), **env}  # the step's trace context, unless the step sets its own
        timeout = d["timeout"]
        if d["action"] == "exec":
            cid = st.containers.get(d["service"])
            if cid is None:
                return Verdict(ERROR, "its service was not started", Cause.BACKEND), {}
            try:
                res = await self.backend.exec(cid, argv or [], env=env or None, workdir=d["workdir"],
                                              timeout=timeout)
            except BackendError:
                # The service died as the step began (before its watcher noticed): say why it died.
                svc = st.plan.node(d["service"])
                if not (await self.backend.state(cid)).running:
                    return verdicts.service_died(await self._death(svc, cid)), {}
                raise
        else:
            try:
                await self._image(d["image"])
            except ImageUnavailable as e:
                return verdicts.backend_error(e), {}
            spec = ContainerSpec(name=f"crc-{self.run_id}-{st.key}-step-{secrets.token_hex(3)}", image=d["image"],
                                 command=tuple(argv) if argv else None, env=env, network=st.network.name,
                                 aliases=(), ports=(), volumes=(), labels=Labels.for_run(self.run_id, st.meta["name"]),
                                 workdir=d["workdir"], hermetic=st.meta.get("network") == "internal")
            res = await self.backend.run_oneoff(spec, timeout=timeout)
        # Masked before expectations and captures see the output: it is what they keep. A stream cut short
        # (OUTPUT_KEEP) loses as many bytes as the longest secret, so no secret's beginning is kept unmasked;
        # a spilled one was masked as it was written, and its first OUTPUT_KEEP bytes are read back from there.
        room = max((len(v.encode()) for v in self.secrets.values), default=0)

        def keep(data: bytes, cut: int, spilled: Any) -> tuple[str, int]:
            if spilled is not None:
                from .spill import head

                data = head(spilled, OUTPUT_KEEP)
                return self.secrets.text(data.decode("utf-8", "replace")), spilled.size - len(data)
            n = min(len(data), room) if cut else 0
            return self.secrets.text(data[:len(data) - n].decode("utf-8", "replace")), cut + n

        (stdout, out_cut), (stderr, err_cut) = (keep(res.stdout, res.stdout_cut, res.stdout_spill),
                                                keep(res.stderr, res.stderr_cut, res.stderr_spill))
        out = StepOutput(res.exit_code, stdout, stderr, (res.ended_ns - res.started_ns) / 1e9, res.timed_out,
                         out_cut, err_cut, res.stdout_spill, res.stderr_spill)
        st.outputs[node] = out
        died = oom = ""
        if d["action"] == "exec" and out.exit_code == 137 and not out.timed_out:
            # SIGKILLed: with its whole container (the service died under it: the death is the news), or by the
            # kernel for lack of memory.
            if not await self._running(st, d["service"]):
                died = await self._death(st.plan.node(d["service"]), st.containers[d["service"]])
            else:
                oom = await self._oom(st, d["service"], res)
        v, captured = await _checked(self.check_off_loop, out, verdicts.step, d, out, dead=test.dead(st), died=died,
                                     oom=oom)
        st.captures.setdefault(d["test"], {}).update(captured)
        detail: dict[str, Any] = {"argv": shown_argv, "output": out.to_dict(), "captures": captured,
                                  "trace": tc.to_dict()}
        if d["action"] != "exec":
            detail["image_id"] = self.image_ids.get(d["image"])
        if v.cause is Cause.OOM_KILLED:
            detail["oom_killed"] = True
        return v, detail

    async def _running(self, st: _Suite, service: str) -> bool:
        try:
            return (await self.backend.state(st.containers[service])).running
        except BackendError:
            return True  # cannot tell: say nothing more than the exit code

    async def _oom(self, st: _Suite, service: str, res: Any) -> str:
        """Why an exec that died of SIGKILL was killed, when the kernel did it for lack of memory (else "")."""
        limit = st.plan.node(service).get("memory")
        cid = st.containers.get(service)
        if not limit or cid is None:
            return ""
        try:
            if not await self.backend.oom_killed_between(cid, res.started_ns, res.ended_ns):
                return ""
        except BackendError:
            return ""
        from crc.compiler.resources import format_size

        return f"service `{st.plan.node(service)['name']}` has a memory limit of {format_size(limit)}"

    async def _http_step(self, st: _Suite, node: str, d: Mapping[str, Any], tc: TraceContext
                         ) -> tuple[Verdict, dict[str, Any]]:
        """Sends an http step's request (to its service's address on the suite network) and checks the answer."""
        from crc.compiler.template_problem import TemplateProblem

        from . import http_step

        try:
            req = http_step.request(d, lambda text: self._render(st, d, text), tc,
                                    Path(st.plan.meta["source"]).parent)
        except TemplateProblem as e:
            return verdicts.cannot_render("the request", e.message), {}
        if d["service"]:
            cid = st.containers.get(d["service"])
            if cid is None:
                return Verdict(ERROR, "its service was not started", Cause.BACKEND), {}
            if cid not in st.addresses:
                st.addresses[cid] = await self.backend.address(cid, st.network.name)
            req = replace(req, address=st.addresses[cid])
        shown = req.to_dict()  # reports keep secrets' placeholders; the service gets their values
        try:
            req = replace(req, url=reveal(req.url, os.environ, self.secrets),
                          headers=tuple((k, reveal(v, os.environ, self.secrets)) for k, v in req.headers),
                          body=reveal(req.body.decode(), os.environ, self.secrets).encode() if req.body else req.body)
        except SecretProblem as e:
            return verdicts.environment(str(e)), {}
        if self._http is None:
            self._http = http_step.new_session()
        out = await http_step.send(self._http, req)
        mask = self.secrets.text  # before expectations and captures see the answer: it is what they keep
        out = replace(out, body=mask(out.body), headers=tuple((k, mask(v)) for k, v in out.headers))
        st.outputs[node] = out
        detail: dict[str, Any] = {"request": shown, "output": out.to_dict(), "captures": {},
                                  "trace": tc.to_dict()}
        v, caps = verdicts.step(d, out, dead=st.tests[d["test"]].dead(st))
        st.captures.setdefault(d["test"], {}).update(caps)
        detail["captures"] = caps
        return v, detail

    async def _assert(self, st: _Suite, node: str, d: Mapping[str, Any]) -> tuple[Verdict, dict[str, Any]]:
        if d["check"] == "hermetic":  # checked on spans, in the test's span phase
            return await self._span(st, node, d, with_spans=False)
        out = st.outputs[d["step"]]
        return await _checked(self.check_off_loop, out, verdicts.expectation, d, out, st.captures.get(d["test"], {}),
                              st.polled.get(d["step"])), {}

    def _phase(self, st: _Suite, test: str) -> spanphase.SpanPhase:
        from . import spanphase

        t = st.tests[test]
        if t.phase is None:
            traces = {n: tr for n, tr in st.traces.items() if st.plan.node(n).get("test") == test}
            mine = set(traces.values())

            def look() -> list[Span]:
                t.seen = len(self.spans)  # the phase's last look is its verdict's span set: recordings replay it
                return [s for s in self._suite_spans(st)
                        if verdicts.in_window(s, t.started_ns, self.options.clock_skew)
                        and (not t.by_trace or s.trace_id in mine)]

            def window(complete: bool, waited_s: float) -> verdicts.SpanWindow:
                return verdicts.SpanWindow(st.key, t.started_ns, t.seen, waited_s, complete)

            def render(text: str, d: Mapping[str, Any]) -> str:
                return verdicts.render(d, text, st.captures.get(test, {}))

            wait = self.options.span_timeout
            if t.deadline is not None:
                # Within the test's own timeout, leaving time to report which spans are missing.
                wait = max(0.0, min(wait, t.deadline - anyio.current_time() - 0.2))
            t.phase = spanphase.SpanPhase(
                st.plan, suite=st.meta["name"], test=test, receiver=self.receiver, spans=look, window=window,
                settle=st.meta["settle"], deadline=wait, clock_skew=self.options.clock_skew, traces=traces,
                render=render, early=self._early_end(st, test))
        return t.phase

    def _early_end(self, st: _Suite, test: str) -> Callable[[], Awaitable[None]] | None:
        """What may end a test's span phase before its deadline (`crc dev`'s confirming runs, which judge the
        test again on a span that comes later); a run waits for every awaited span or the deadline."""
        return None

    async def _span(self, st: _Suite, node: str, d: Mapping[str, Any], *, with_spans: bool = True
                    ) -> tuple[Verdict, dict[str, Any]]:
        """A span node's (or `expect hermetic`'s) verdict from the test's one span phase."""
        if st.no_receiver:
            return verdicts.environment(st.no_receiver), {}
        phase = self._phase(st, d["test"])
        v = (await phase.results()).get(node)
        if v is None or phase.seen is None:
            return Verdict(ERROR, "the test's span checks did not finish", Cause.INTERNAL), {}
        detail: dict[str, Any] = {"spans": [s.to_dict() for s in v.spans]} if with_spans else {}
        detail["window"] = phase.seen.to_dict()
        return v, detail


__all__ = ["ERROR", "FAILED", "PASSED", "SKIPPED", "RunOptions", "Runner", "selected"]
