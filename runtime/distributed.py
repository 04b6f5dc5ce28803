"""`crc run --cluster ADDRESS` / `--workers N`: suites as tasks on a dask.distributed cluster.

Each suite is one Dask task. A worker runs it with an ordinary `Runner` against its own engine (the worker's
DOCKER_HOST), under a lease of its own on the worker's host, and returns node results, spans and image ids as
plain data; the Plans travel as bytes. The coordinator is a `Runner` too, whose suites run remotely: the run's
selection, suite keys (`s0`, `s1`, ...: spans are attributed by them), test verdicts and report are computed
exactly as in a local run, so the same Plans give the same report shape, recording, replay and digest.

Live progress: workers publish "attempt", "start" and "result" events on a Dask topic of the run, which the
coordinator's progress display consumes as they come. Cancellation (Ctrl-C, a suite re-run too often): the
coordinator sets the suite's Dask `Event`; the worker's runner is cancelled and tears the suite down as locally.

A worker lost mid-suite: Dask's scheduler gives the task to another worker. The new attempt announces itself;
the coordinator drops what the lost attempt reported, notes the re-run, and lets it go on once (a third
attempt is cancelled). What the lost worker left on its engine carries its attempt's run id, whose lease died
with the worker process: the next crc run or `crc clean` on that host reaps it.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import anyio
import msgpack
from crc.compiler.plan import Plan

from . import network_space, verdicts
from .results import Cause, NodeResult, RunResult
from .runner import Runner, RunOptions
from .spans import RUN_KEY, Span

MAX_ATTEMPTS = 2  # a suite runs once, and once more if its worker is lost
CANCEL_POLL_S = 0.5
TEARDOWN_GRACE_S = 90.0  # how long a cancelled remote suite may take to tear down and answer


class ClusterUnavailable(Exception):
    """The cluster cannot be reached or started (exit 3)."""


# ---------------------------------------------------------------------------------------------- worker side


@dataclass
class _Request:
    """One suite's task: everything as plain data, Plans as bytes."""

    plans: list[bytes]
    options: dict[str, Any]
    run_id: str
    key: str
    topic: str
    cancel: str  # the name of the Dask Event that cancels this suite
    crc_version: str

    def to_bytes(self) -> bytes:
        return msgpack.packb(asdict(self), use_bin_type=True)

    @classmethod
    def from_bytes(cls, blob: bytes) -> _Request:
        return cls(**msgpack.unpackb(blob, raw=False))


class _OneSuite(Runner):
    """A worker's runner: of the run's suites, only the one with this key runs."""

    def __init__(self, *args: Any, key: str, **kw: Any):
        super().__init__(*args, **kw)
        self.key = key
        self.network_space = network_space.WORKER  # the worker's other suites may give a network back

    async def _suite(self, plan: Plan, meta: dict[str, Any], nodes: set[str], key: str) -> None:
        if key == self.key:
            await super()._suite(plan, meta, nodes, key)


def worker_identity() -> dict[str, str]:
    """This worker's name, address, host and engine, as the report names them."""
    from distributed import get_worker

    w = get_worker()
    # "name", not "worker": the scheduler sets an event's "worker" to the worker's address.
    return {"name": str(w.name), "address": str(w.address), "host": socket.gethostname(),
            "docker_host": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")}


def run_suite_task(blob: bytes) -> bytes:
    """The Dask task: run one suite on this worker's engine; returns the reply as msgpack bytes."""
    from distributed import Event, get_worker

    from crc import __version__

    req = _Request.from_bytes(blob)
    me = worker_identity()
    attempt = f"{req.run_id}-{req.key}-{secrets.token_hex(2)}"  # this attempt's run id: labels and lease
    worker = get_worker()

    def emit(event: str, **data: Any) -> None:
        worker.log_event(req.topic, {"event": event, "key": req.key, "attempt": attempt, **data})

    emit("attempt", **me)
    if req.crc_version != __version__:
        return _reply(me, attempt, [], [], {}, [], f"the worker has crc {__version__}, the coordinator crc "
                      f"{req.crc_version}: install the same crc on every worker")
    cancel = Event(req.cancel)
    result = anyio.run(_run_suite, req, attempt, emit, cancel)
    return _reply(me, attempt, *result)


def _reply(me: dict[str, str], attempt: str, results: list[dict[str, Any]], spans: list[dict[str, Any]],
           images: dict[str, str], kept: list[str], env_error: str = "") -> bytes:
    return msgpack.packb({**me, "attempt": attempt, "results": results, "spans": spans, "images": images,
                          "kept": kept, "env_error": env_error}, use_bin_type=True)


async def _run_suite(req: _Request, attempt: str, emit: Callable[..., None], cancel: Any
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str], list[str], str]:
    from .backend import EngineUnavailable
    from .docker_backend import DockerBackend
    from .leases import LeaseError, mark_kept, reap_leftovers, run_lease

    plans = [Plan.from_bytes(b) for b in req.plans]
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in req.options.items()}
    options = RunOptions(**fields)
    runner = _OneSuite(None, options, run_id=attempt, key=req.key)  # type: ignore[arg-type]
    try:
        async with DockerBackend() as backend:
            await backend.ping()
            # What dead runs (a lost worker's attempts among them) left on this engine.
            await reap_leftovers(backend)
            runner.backend = backend
            runner.on_start = lambda n: emit("start", node=n)
            runner.on_result = lambda r: emit("result", result=r.to_dict())
            runner.on_log = lambda service, line: emit("log", service=service, line=line)  # with `--logs`
            runner.on_note = lambda line: emit("note", line=line)  # e.g. waiting for network address space
            async with run_lease(attempt, backend):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_watch_cancel, cancel, tg.cancel_scope)
                    await runner.run(plans)
                    tg.cancel_scope.cancel()
                if runner.kept:  # `--keep`: before the lease is let go, so this host's next reap leaves them
                    mark_kept(attempt)
    except (EngineUnavailable, LeaseError) as e:
        return [], [], {}, [], str(e)
    return ([r.to_dict() for r in runner.results.values()], [s.to_dict() for s in runner.spans],
            dict(runner.image_ids), [k.describe() for k in runner.kept], "")


async def _watch_cancel(event: Any, scope: anyio.CancelScope) -> None:
    """Cancels the suite when the coordinator sets its Event (Ctrl-C, or a suite re-run too often)."""
    while not await anyio.to_thread.run_sync(event.wait, CANCEL_POLL_S, abandon_on_cancel=True):
        pass
    scope.cancel()


# ---------------------------------------------------------------------------------------------- coordinator


@dataclass
class SuiteRun:
    """Where a suite ran: each attempt's worker, and why it was re-run."""

    suite: str
    key: str
    attempts: list[dict[str, str]] = field(default_factory=list)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite, "key": self.key, "attempts": self.attempts, "note": self.note}


class ClusterRunner(Runner):
    """A run whose suites are Dask tasks. `client` is an asynchronous `distributed.Client`."""

    def __init__(self, client: Any, options: RunOptions, *, plans: list[Plan], run_id: str | None = None):
        super().__init__(None, options, run_id=run_id)  # type: ignore[arg-type]
        self.client = client
        self.topic = f"crc-{self.run_id}"
        self.suite_runs: dict[str, SuiteRun] = {}
        self.kept_notes: list[str] = []  # `--keep`: what workers left running, and where
        self._fail_fast_spread = False
        self._plan_bytes = [p.to_bytes() for p in plans]
        self._current: dict[str, str] = {}  # suite key -> its current attempt's run id
        self._streamed: dict[str, set[str]] = {}  # suite key -> nodes whose results arrived as events
        self._nodes: dict[str, set[str]] = {}  # suite key -> its nodes

    async def run(self, plans: list[Plan]) -> RunResult:
        """Run the Plans on the cluster; progress events stream in while it runs."""
        self.client.subscribe_topic(self.topic, self._event)
        try:
            return await super().run(plans)
        finally:
            self.client.unsubscribe_topic(self.topic)

    # ------------------------------------------------------------ events from workers
    async def _event(self, event: tuple[float, dict[str, Any]]) -> None:
        _t, msg = event
        key, attempt = str(msg.get("key")), str(msg.get("attempt"))
        if key not in self.suite_runs:
            return
        if msg["event"] == "attempt":
            if self._attempt(key, attempt, msg):
                await self._cancel(key)
        elif attempt != self._current.get(key):
            return  # a lost attempt's late words
        elif msg["event"] == "start":
            self.on_start(msg["node"])
        elif msg["event"] == "log":
            if self.on_log is not None:
                self.on_log(str(msg["service"]), str(msg["line"]))
        elif msg["event"] == "note":
            if self.on_note is not None:
                self.on_note(str(msg["line"]))
        elif msg["event"] == "result":
            r = self._fail_fast_skip(NodeResult.from_dict(msg["result"]))
            self._streamed.setdefault(key, set()).add(r.node)
            self._record(r)
            await self._spread_fail_fast()

    def _fail_fast_skip(self, r: NodeResult) -> NodeResult:
        """A node a worker cancelled because `--fail-fast` stopped the run is skipped, and says why."""
        if self._fail_fast is not None and r.cause is Cause.INTERRUPTED:
            return NodeResult.of(r.node, r.kind, self._fail_fast, r.started_ns, r.ended_ns)
        return r

    async def _spread_fail_fast(self) -> None:
        """`--fail-fast`: the first failure anywhere cancels every other suite, started or queued."""
        if self._fail_fast is not None and not self._fail_fast_spread:
            self._fail_fast_spread = True
            for key in self.suite_runs:
                await self._cancel(key)

    def _attempt(self, key: str, attempt: str, who: dict[str, Any]) -> bool:
        """Note an attempt of a suite; True when it is one too many (the caller cancels it)."""
        sr = self.suite_runs[key]
        where = {k: str(who.get(k, "")) for k in ("name", "address", "host", "docker_host")}
        sr.attempts.append({"run_id": attempt, **where})
        if len(sr.attempts) > 1:
            lost = sr.attempts[-2]
            sr.note = (f"re-run on worker {where['name']} ({where['address']}): worker {lost['name']} "
                       f"({lost['address']}) was lost mid-suite")
            print(f"crc: suite {sr.suite}: {sr.note}", flush=True)
            for n in self._streamed.pop(key, set()):  # the lost attempt's results no longer count
                self.results.pop(n, None)
        self._current[key] = attempt
        if len(sr.attempts) > MAX_ATTEMPTS:
            sr.note = f"its workers were lost {len(sr.attempts) - 1} times; not run again"
            return True
        return False

    async def _cancel(self, key: str) -> None:
        from distributed import Event

        await Event(self._cancel_name(key), client=self.client).set()

    def _cancel_name(self, key: str) -> str:
        return f"crc-cancel-{self.run_id}-{key}"

    # ------------------------------------------------------------ one suite, remotely
    async def _suite(self, plan: Plan, meta: dict[str, Any], nodes: set[str], key: str) -> None:
        from crc import __version__

        self.suite_runs[key] = SuiteRun(meta["name"], key)
        if self._fail_fast_spread:  # --fail-fast stopped the run before this suite was submitted
            await self._cancel(key)
        self._nodes[key] = nodes
        req = _Request(self._plan_bytes, _options_data(self.options), self.run_id, key, self.topic,
                       self._cancel_name(key), __version__)
        future = self.client.submit(run_suite_task, req.to_bytes(), key=f"crc-{self.run_id}-{key}", pure=False)
        try:
            blob = await future
        except anyio.get_cancelled_exc_class():
            # Interrupted: tell the worker, and wait (shielded) for its teardown and what it finished.
            with anyio.CancelScope(shield=True), anyio.move_on_after(TEARDOWN_GRACE_S):
                await self._cancel(key)
                try:
                    self._merge(key, plan, nodes, await future)
                except Exception:
                    pass  # nothing came back: the nodes are marked unfinished by the run's result
            raise
        except Exception as e:  # the task failed as a whole (a bug, or every worker lost)
            self._fail_all(plan, nodes - set(self.results), verdicts.environment(
                f"the suite failed on the cluster: {type(e).__name__}: {e}"))
            return
        self._merge(key, plan, nodes, blob)
        await self._spread_fail_fast()
        if self._fail_fast is not None:  # cancelled before its scheduler began: nothing of it ran
            now = time.time_ns()
            for n in sorted(nodes - set(self.results)):
                self._record(NodeResult.of(n, plan.node(n)["kind"], self._fail_fast, now, now))

    def _merge(self, key: str, plan: Plan, nodes: set[str], blob: bytes) -> None:
        reply = msgpack.unpackb(blob, raw=False)
        where = f"on worker {reply['name']} ({reply['address']}, DOCKER_HOST={reply['docker_host']})"
        if reply["env_error"]:
            self._fail_all(plan, nodes, verdicts.environment(f"{reply['env_error']}\n  {where}"))
            return
        sr = self.suite_runs[key]
        if not sr.attempts or sr.attempts[-1]["run_id"] != reply["attempt"]:  # its events have not arrived
            self._attempt(key, reply["attempt"], reply)
        streamed = self._streamed.get(key, set())
        for d in reply["results"]:
            r = self._fail_fast_skip(NodeResult.from_dict(d))
            if r.env_problem:  # which engine lacks the image, or failed: the user must know where
                r = replace(r, message=f"{r.message}\n  {where}")
            if r.node in streamed:
                self.results[r.node] = r  # the final word (log tails are read at teardown)
            else:
                self._record(r)
        for d in reply["spans"]:
            s = Span.from_dict(d)
            s.resource[RUN_KEY] = self.run_id  # spans belong to the run, as in a local run
            self.spans.append(s)
        self.image_ids.update(reply["images"])
        self.kept_notes += [f"{k}\n  (on worker {reply['name']}: DOCKER_HOST={reply['docker_host']})"
                            for k in reply["kept"]]

    def cluster_json(self) -> dict[str, Any]:
        """The `cluster` entry of the JSON report: where each suite ran, and re-runs."""
        return {"suites": [sr.to_json() for _k, sr in sorted(self.suite_runs.items(), key=lambda kv: int(kv[0][1:]))]}


def _options_data(options: RunOptions) -> dict[str, Any]:
    d = asdict(options)
    d["select"] = list(d["select"])
    return d


# ---------------------------------------------------------------------------------------------- entry


async def connect(address: str | None, workers: int | None, threads: int) -> Any:
    """An asynchronous client of the cluster at `address`, or of a local cluster of `workers` processes
    with `threads` threads each (suites a worker runs at once). Raises ClusterUnavailable."""
    # distributed imports pynvml, which warns that it is deprecated: noise for crc's users, here and in the
    # local cluster's worker processes (they inherit the environment).
    quiet = "ignore::FutureWarning:distributed.diagnostics.nvml"
    warnings.filterwarnings("ignore", category=FutureWarning, module="distributed.diagnostics.nvml")
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (os.environ.get("PYTHONWARNINGS"), quiet)))
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:
        raise ClusterUnavailable(f"dask.distributed is not installed ({e}): pip install 'cleanroom-crc[cluster]'") \
            from e
    try:
        if address is not None:
            with anyio.fail_after(30):
                client = await Client(address, asynchronous=True, timeout="20s")
            try:
                await client.wait_for_workers(1, timeout=30)
            except TimeoutError:
                await client.close()
                raise ClusterUnavailable(f"the Dask scheduler at {address} has no worker (waited 30s)") from None
            return client
        cluster = await LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                                     host="127.0.0.1", dashboard_address=None, asynchronous=True)
        return await Client(cluster, asynchronous=True)
    except (OSError, TimeoutError) as e:
        raise ClusterUnavailable(f"cannot reach the Dask scheduler at {address}: {e}") from e


async def close(client: Any) -> None:
    """Close the client, and the local cluster if it started one."""
    cluster = getattr(client, "cluster", None)
    await client.close()
    if cluster is not None:
        await cluster.close()


__all__ = ["ClusterRunner", "ClusterUnavailable", "close", "connect", "run_suite_task"]
