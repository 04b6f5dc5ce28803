"""A scriptable, in-process `Backend` and OTLP receiver, for tests of the runner's behaviour.

No engine, no sockets, no threads: containers are records whose life follows anyio's clock, so a test run on
a virtual clock (tests/virtualclock.py) takes milliseconds whatever the scripted delays, and never depends on
the machine's speed. What happens is scripted:

* `FakeService` per service name: when its container dies by itself, its log, how long until its
  `ready exec` probe passes;
* `on_exec(call) -> FakeExec` for every exec and one-off container: exit code, output, how long it runs, the
  spans it emits, a service it kills.

Every call is logged in `FakeBackend.calls` (name, container or network, detail), so tests check teardown
order and what the runner asked for.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskStatus

from .backend import (
    AddressSpaceExhausted,
    Backend,
    BackendError,
    ContainerFailed,
    ContainerSpec,
    ContainerState,
    ExecResult,
    ImageUnavailable,
    LogChunk,
    NetworkInfo,
    OutputCapture,
    Resource,
)
from .spans import Span

__all__ = ["ExecCall", "FakeBackend", "FakeExec", "FakeReceiver", "FakeService", "FakeSpan"]


@dataclass(frozen=True)
class FakeSpan:
    """A span an exec emits, timed relative to the moment the exec ends (negative: before)."""

    name: str
    start_ms: float = -1.0
    duration_ms: float = 1.0
    status: str = "unset"
    kind: str = "internal"
    attributes: Mapping[str, Any] = field(default_factory=dict)
    parent: int | None = None  # index of its parent among the same exec's spans


@dataclass(frozen=True)
class FakeExec:
    """What one exec (or one-off container) does: runs `delay` seconds, then exits with `exit_code`."""

    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    delay: float = 0.0
    spans: tuple[FakeSpan, ...] = ()
    kills: str | None = None  # a service whose container dies when this exec ends (before its spans go out)


@dataclass(frozen=True)
class FakeService:
    """A service container's script. Times are seconds after it started, on anyio's clock."""

    dies_after: float | None = None  # it exits by itself then, with `exit_code`
    exit_code: int = 1
    log: str = ""
    ready_after: float = 0.0  # an exec of `ready_argv` (a `ready exec` probe) exits 0 from then on, else 1
    ready_argv: tuple[str, ...] = ("ready",)
    spans_at_start: tuple[FakeSpan, ...] = ()  # emitted as it starts (a `ready span` probe's span)


@dataclass(frozen=True)
class ExecCall:
    """One exec as the script sees it: `service` is None for a one-off container (`run` steps)."""

    service: str | None
    argv: tuple[str, ...]
    env: Mapping[str, str]
    since_start: float  # seconds since the container started


@dataclass
class _Container:
    id: str
    spec: ContainerSpec
    service: FakeService
    started: float | None = None
    exit_at: float | None = None
    exit_code: int = 0
    removed: bool = False
    changed: anyio.Event = field(default_factory=anyio.Event)

    def running(self, now: float) -> bool:
        return self.started is not None and not self.removed and (self.exit_at is None or now < self.exit_at)

    def stop(self, now: float, code: int) -> None:
        if self.exit_at is None or self.exit_at > now:
            self.exit_at, self.exit_code = now, code
        self.changed.set()
        self.changed = anyio.Event()


class FakeReceiver:
    """Stands in for crc's OTLP receiver: spans arrive when the fake backend emits them."""

    def __init__(self, on_spans: Callable[[list[Span]], None] | None = None):
        self.spans: list[Span] = []
        self._on_spans = on_spans
        self._arrival = anyio.Event()
        self.closed = False
        self.stamps: dict[str, dict[str, str]] = {}  # listen address -> what its spans are stamped with

    async def serve(self, host: str, *, grpc: bool = False, peers: Any = None, stamp: dict[str, str] | None = None,
                    task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        """Like the real receiver's: spans sent to `host` are stamped with `stamp` (their run and suite), until
        the task is cancelled."""
        from .otlp import Endpoints

        self.stamps[host] = dict(stamp or {})
        task_status.started(Endpoints(host, 4318, 4317 if grpc else 0, f"http://{host}:4318",
                                      f"http://{host}:4317" if grpc else ""))
        await anyio.sleep_forever()

    def deliver(self, batch: list[Span]) -> None:
        self.spans.extend(batch)
        if self._on_spans is not None:
            self._on_spans(batch)
        self._arrival.set()
        self._arrival = anyio.Event()

    async def wait_for(self, predicate: Callable[[Sequence[Span]], bool], timeout: float | None) -> bool:
        """Like the real receiver's: re-checked on each arriving batch, until `timeout`."""
        with anyio.move_on_after(timeout):
            while not predicate(self.spans):
                await self._arrival.wait()
            return True
        return predicate(self.spans)

    async def aclose(self) -> None:
        self.closed = True


class FakeBackend(Backend):
    """A `Backend` whose containers and commands follow a script (see the module docstring)."""

    def __init__(self, *, on_exec: Callable[[ExecCall], FakeExec] = lambda call: FakeExec(),
                 services: Mapping[str, FakeService] | None = None, images: frozenset[str] | None = None,
                 receiver: FakeReceiver | None = None, address_pools: int | None = None,
                 network_answer: float = 0.0):
        """`address_pools`: how many networks the engine can hold at once (None: no limit); past it,
        `create_network` fails as Docker's does when its default-address-pools are used up. `network_answer`:
        seconds from a network taking its subnet to crc having the answer (on Docker, a create and an
        inspect), during which the engine already refuses others."""
        self.on_exec = on_exec
        self.services = dict(services or {})
        self.images = images  # None: every image is present
        self.receiver = receiver
        self.calls: list[tuple[str, str, str]] = []
        self.containers: dict[str, _Container] = {}
        self.networks: dict[str, NetworkInfo] = {}
        self.internal: set[str] = set()  # ids of the networks created `internal`
        self.address_pools = address_pools
        self.network_answer = network_answer
        self.most_networks = 0  # the most networks that existed at once
        self._labels: dict[str, Mapping[str, str]] = {}
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ helpers
    def _log(self, what: str, ref: str, detail: str = "") -> None:
        self.calls.append((what, ref, detail))

    def _get(self, cid: str) -> _Container:
        c = self.containers.get(cid)
        if c is None or c.removed:
            raise BackendError(f"no such container: {cid}")
        return c

    def _service_of(self, c: _Container) -> str:
        return c.spec.aliases[0] if c.spec.aliases else c.spec.name

    def alive(self) -> list[str]:
        """Containers and networks not removed: what a run left behind."""
        return [c.spec.name for c in self.containers.values() if not c.removed] + list(self.networks)

    async def _run(self, c: _Container | None, service: str | None, argv: tuple[str, ...], env: Mapping[str, str],
                   timeout: float | None, since: float) -> ExecResult:
        step = self.on_exec(ExecCall(service, argv, dict(env), since))
        t0 = anyio.current_time()
        timed_out = False
        with anyio.move_on_after(timeout) as scope:
            await anyio.sleep(step.delay)
        timed_out = scope.cancelled_caught
        now = anyio.current_time()
        started_ns, ended_ns = int(t0 * 1e9), int(now * 1e9)
        if timed_out:
            return ExecResult(None, b"", b"", started_ns, ended_ns, True)
        if step.kills is not None:
            for other in self.containers.values():
                if not other.removed and other.spec.aliases[:1] == (step.kills,):
                    other.stop(now, 137)
        if step.spans and c is not None:
            self._emit(c, step.spans)
        out, err = OutputCapture(), OutputCapture()  # kept as the Docker backend keeps them
        out.add(step.stdout.encode())
        err.add(step.stderr.encode())
        return ExecResult.of(step.exit_code, out, err, started_ns, ended_ns)

    def _emit(self, c: _Container, spans: Sequence[FakeSpan]) -> None:
        """Spans as the service's OTel SDK would send them, with the resource attributes crc injected."""
        if self.receiver is None:
            return
        env = c.spec.env
        resource: dict[str, Any] = dict(kv.split("=", 1) for kv in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")
                                        if "=" in kv)
        service = env.get("OTEL_SERVICE_NAME", self._service_of(c))
        resource["service.name"] = service
        gateway = next((n.gateway for n in self.networks.values() if n.name == c.spec.network), "")
        resource.update(self.receiver.stamps.get(gateway, {}))  # as the suite's listener stamps what it gets
        now = time.time_ns()
        trace = f"{next(self._ids):032x}"
        ids = [f"{next(self._ids):016x}" for _ in spans]
        batch = []
        for i, s in enumerate(spans):
            start = now + int(s.start_ms * 1e6)
            parent = ids[s.parent] if s.parent is not None and 0 <= s.parent < len(ids) and s.parent != i else None
            batch.append(Span(trace, ids[i], parent, s.name, s.kind, s.status, "", start,
                              start + int(s.duration_ms * 1e6), service, dict(s.attributes), resource,
                              received_ns=now))
        self.receiver.deliver(batch)

    # ------------------------------------------------------------------ the interface
    async def ping(self) -> None:
        """Always answers."""

    async def ensure_image(self, ref: str, *, allow_pull: bool, always: bool = False) -> str:
        """Present unless `images` was given without it."""
        await anyio.sleep(0)
        if self.images is not None and ref not in self.images:
            raise ImageUnavailable(f"image {ref!r} is not present on the engine, and pulling is disabled", ref)
        return f"sha256:{abs(hash(ref)):064x}"[:71]

    async def create_network(self, name: str, labels: Mapping[str, str], *, internal: bool = False) -> NetworkInfo:
        """A network record; its gateway is the loopback address."""
        await anyio.sleep(0)
        if self.address_pools is not None and len(self.networks) >= self.address_pools:
            self._log("create_network_failed", "", name)
            raise AddressSpaceExhausted(f"create network {name}: could not find an available, non-overlapping "
                                        "IPv4 address pool among the defaults to assign to the network")
        n = next(self._ids)
        net = NetworkInfo(f"net{n}", name, f"127.0.{n // 250}.{n % 250 + 1}")
        self.networks[net.id] = net
        self.most_networks = max(self.most_networks, len(self.networks))
        if internal:
            self.internal.add(net.id)
        self._labels[net.id] = dict(labels)
        self._log("create_network", net.id, name)
        if self.network_answer:
            await anyio.sleep(self.network_answer)
        return net

    async def remove_network(self, network: str) -> None:
        """Forget the network; a network with containers still on it cannot go, as on Docker."""
        net = self.networks.get(network)
        if net is not None and any(not c.removed and c.spec.network == net.name for c in self.containers.values()):
            raise BackendError(f"network {net.name} has active endpoints")
        self.networks.pop(network, None)
        self._log("remove_network", network)

    async def create_volume(self, name: str, labels: Mapping[str, str]) -> str:
        """Volumes are names only."""
        return name

    async def remove_volume(self, name: str) -> None:
        """Nothing to remove."""

    async def create_container(self, spec: ContainerSpec) -> str:
        """A container record following the script of its service (its first alias)."""
        await anyio.sleep(0)
        if self.images is not None and spec.image not in self.images:
            raise ImageUnavailable(f"image {spec.image!r} is not present on the engine", spec.image)
        cid = f"{next(self._ids):064x}"
        service = self.services.get(spec.aliases[0], FakeService()) if spec.aliases else FakeService()
        self.containers[cid] = _Container(cid, spec, service)
        self._labels[cid] = dict(spec.labels)
        self._log("create_container", cid, spec.name)
        return cid

    async def start(self, container: str) -> dict[int, int]:
        """Start it; a scripted death is set on anyio's clock."""
        c = self._get(container)
        now = anyio.current_time()
        c.started = now
        if c.service.dies_after is not None:
            c.exit_at, c.exit_code = now + c.service.dies_after, c.service.exit_code
        if c.service.spans_at_start:
            self._emit(c, c.service.spans_at_start)
        self._log("start", container, c.spec.name)
        return {p.container_port: p.host_port or 30000 + p.container_port for p in c.spec.ports}

    async def exec(self, container: str, argv: tuple[str, ...] | list[str], *, env: Mapping[str, str] | None = None,
                   workdir: str | None = None, timeout: float | None = None) -> ExecResult:
        """Run the script's answer for this command in a running container."""
        c = self._get(container)
        now = anyio.current_time()
        if not c.running(now):
            raise ContainerFailed(f"container {container[:12]} is not running")
        since = now - c.started if c.started is not None else 0.0
        self._log("exec", container, " ".join(argv))
        if tuple(argv) == c.service.ready_argv:
            await anyio.sleep(0)
            ok = since >= c.service.ready_after
            return ExecResult(0 if ok else 1, b"", b"" if ok else b"not ready", int(now * 1e9), int(now * 1e9))
        return await self._run(c, self._service_of(c), tuple(argv), env or {}, timeout, since)

    async def run_oneoff(self, spec: ContainerSpec, *, timeout: float | None = None) -> ExecResult:
        """A one-off container: the script's answer for its command; always removed."""
        cid = await self.create_container(spec)
        try:
            await self.start(cid)
            return await self._run(None, None, tuple(spec.command or ()), spec.env, timeout, 0.0)
        finally:
            await self.remove_container(cid)

    async def logs(self, container: str, tail: int | None = None) -> str:
        """The service's scripted log (its last `tail` lines)."""
        c = self._get(container)
        lines = c.service.log.splitlines()
        return "\n".join(lines[-tail:] if tail else lines)

    async def stream_logs(self, container: str, *, since_ns: int | None = None) -> AsyncIterator[LogChunk]:
        """The scripted log at once, then nothing until the container exits."""
        c = self._get(container)
        if c.service.log:
            yield ("stdout", c.service.log.encode())
        await self.wait(container)

    async def address(self, container: str, network: str | None = None) -> str:
        """Fake containers have no address: tcp and http probes never pass."""
        raise BackendError("the fake backend has no network addresses")

    async def state(self, container: str) -> ContainerState:
        """Running, or exited with its scripted code."""
        c = self.containers.get(container)
        if c is None:
            raise BackendError(f"no such container: {container}")
        if c.running(anyio.current_time()):
            return ContainerState("running", True, None)
        if c.started is None:
            return ContainerState("created", False, None)
        return ContainerState("exited", False, c.exit_code)

    async def wait(self, container: str) -> int:
        """Until the container stops: its scripted death, a kill by another exec, or its removal."""
        c = self._get(container)
        while c.running(anyio.current_time()):
            changed = c.changed
            if c.exit_at is None:
                await changed.wait()
            else:
                with anyio.move_on_at(c.exit_at):
                    await changed.wait()
        return c.exit_code

    async def remove_container(self, container: str) -> None:
        """Remove it (idempotent); whoever waits on it is woken."""
        c = self.containers.get(container)
        if c is None or c.removed:
            return
        c.stop(anyio.current_time(), 137)
        c.removed = True
        self._log("remove_container", container, c.spec.name)

    async def find(self, labels: Mapping[str, str]) -> list[Resource]:
        """Containers and networks carrying every label in `labels`."""
        out = [Resource("container", c.id, c.spec.name, c.spec.labels) for c in self.containers.values()
               if not c.removed and all(c.spec.labels.get(k) == v for k, v in labels.items())]
        out += [Resource("network", n.id, n.name, self._labels[n.id]) for n in self.networks.values()
                if all(self._labels[n.id].get(k) == v for k, v in labels.items())]
        return out

    async def close(self) -> None:
        """Nothing to release."""
