"""The container backend interface the runtime schedules against.

One small abstract surface: the Docker engine (`docker_backend.DockerBackend`) implements it today; a
Kubernetes or remote-host backend implements the same methods later. Inputs and outputs are frozen
dataclasses so they can be logged, hashed and recorded without touching the engine.

Containers are referred to by the id string `create_container` returns (a Docker container id, a pod
name, ...); callers never parse it.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal, Self

__all__ = [
    "OUTPUT_KEEP",
    "AddressSpaceExhausted",
    "Backend",
    "BackendError",
    "BuildSpec",
    "ContainerFailed",
    "ContainerSpec",
    "ContainerState",
    "EngineUnavailable",
    "ExecResult",
    "GpuRequest",
    "ImageUnavailable",
    "Labels",
    "LogChunk",
    "Mount",
    "NetworkInfo",
    "NotFound",
    "OutputCapture",
    "PortInUse",
    "PortMapping",
    "Resource",
    "registry_host",
]


# --------------------------------------------------------------------------- errors


class BackendError(Exception):
    """Base of every error a backend raises; the message is meant for the user, no traceback needed.

    `environment` is True when the cause is the machine rather than the test (no engine, missing image,
    port taken): the CLI maps those to exit code 3.
    """

    environment: ClassVar[bool] = False


class EngineUnavailable(BackendError):
    """The container engine cannot be reached (no socket, refused, connection lost)."""

    environment = True


class ImageUnavailable(BackendError):
    """An image is not present locally and may not (or could not) be pulled."""

    environment = True

    def __init__(self, message: str, image: str) -> None:
        super().__init__(message)
        self.image = image


class PortInUse(BackendError):
    """A fixed host port requested by a container is already bound on the host."""

    environment = True


class AddressSpaceExhausted(BackendError):
    """The engine has no subnet left in its address pools for another network."""

    environment = True


class NotFound(BackendError):
    """The container, network or volume does not exist (any more)."""


class ContainerFailed(BackendError):
    """The engine refused to create or start a container (bad command, bad mount, ...)."""


# --------------------------------------------------------------------------- labels


class Labels:
    """Label keys carried by every resource crc creates, and helpers to build and test them.

    Nothing without `io.crc.managed=1` is ever removed by crc.
    """

    MANAGED: ClassVar[str] = "io.crc.managed"
    RUN: ClassVar[str] = "io.crc.run"
    SUITE: ClassVar[str] = "io.crc.suite"
    # Optional, informative: which .cr service/step a container belongs to.
    SERVICE: ClassVar[str] = "io.crc.service"
    # On every image crc builds: `crc clean --builds` finds them by it.
    BUILD: ClassVar[str] = "io.crc.build"

    @staticmethod
    def for_run(run_id: str, suite: str | None = None, **extra: str) -> dict[str, str]:
        """Labels for a resource of run `run_id` (and optionally suite `suite`)."""
        labels = {Labels.MANAGED: "1", Labels.RUN: run_id}
        if suite is not None:
            labels[Labels.SUITE] = suite
        labels.update(extra)
        return labels

    @staticmethod
    def is_managed(labels: Mapping[str, str] | None) -> bool:
        """True when `labels` mark a resource as created by crc."""
        return bool(labels) and labels.get(Labels.MANAGED) == "1"  # type: ignore[union-attr]

    @staticmethod
    def run_of(labels: Mapping[str, str] | None) -> str | None:
        """The run id a resource belongs to, if labelled."""
        return (labels or {}).get(Labels.RUN)


# --------------------------------------------------------------------------- data


def _frozen(m: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(m or {}))


@dataclass(frozen=True, slots=True)
class PortMapping:
    """Publish `container_port` on 127.0.0.1:`host_port` (0 = an ephemeral port the engine picks)."""

    container_port: int
    host_port: int = 0
    protocol: Literal["tcp", "udp"] = "tcp"


@dataclass(frozen=True, slots=True)
class Mount:
    """A bind mount (`source` is an absolute host path) or a named volume (`source` is a volume name)."""

    source: str
    target: str
    read_only: bool = False

    @property
    def is_bind(self) -> bool:
        return self.source.startswith("/")


@dataclass(frozen=True, slots=True)
class GpuRequest:
    """GPUs for a container: `count` of them (None with no `devices`: all), or these device ids."""

    count: int | None = None
    devices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BuildSpec:
    """An image to build: a tar of the context (made by `runtime.images`), tagged `tag`."""

    context_tar: bytes
    tag: str
    dockerfile: str = "Dockerfile"
    target: str | None = None
    args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str | None = None  # the network RUN steps get ("none": no network); None: the engine's default


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """Everything needed to create one container. `command`/`entrypoint` None = the image's default."""

    name: str
    image: str
    command: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    network: str | None = None  # a network's name, or "host": the host's own network (no aliases, no ports)
    aliases: tuple[str, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    volumes: tuple[Mount, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    entrypoint: tuple[str, ...] | None = None
    cpus: float | None = None  # CPUs' worth of time (the engine's NanoCpus)
    memory: int | None = None  # bytes; swap is not allowed past it, so running out means an OOM kill
    gpus: GpuRequest | None = None
    privileged: bool = False  # every device and capability of the host (granted in the .cr file)
    # No default route: the container reaches the addresses of its own network only, from its first instruction
    # (the engine gives containers of an internal network a default route to the host).
    hermetic: bool = False

    def __post_init__(self) -> None:
        # Mappings are copied into read-only views so a spec really is immutable once built.
        object.__setattr__(self, "env", _frozen(self.env))
        object.__setattr__(self, "labels", _frozen(self.labels))

    def __hash__(self) -> int:
        return hash(
            (
                self.name,
                self.image,
                self.command,
                tuple(sorted(self.env.items())),
                self.network,
                self.aliases,
                self.ports,
                self.volumes,
                tuple(sorted(self.labels.items())),
                self.workdir,
                self.entrypoint,
                self.cpus,
                self.memory,
                self.gpus,
                self.privileged,
                self.hermetic,
            )
        )


# What crc keeps of each output stream of a step in memory: the first 8 MiB. Past that, a run spills the whole
# stream to a file it owns (runtime/spill.py) that checks read in bounded memory; without a spill directory
# (a capture outside a run) the rest is counted, not kept, and checks on the cut stream fail saying so.
OUTPUT_KEEP = 8 * 1024 * 1024


class OutputCapture:
    """One output stream as it arrives: the first `keep` bytes kept in memory; past them the whole stream
    goes to a spill file when the run has a spill directory (`close` gives it), else the rest is counted."""

    __slots__ = ("buf", "cut", "keep", "spill")

    def __init__(self, keep: int = OUTPUT_KEEP) -> None:
        self.buf, self.cut, self.keep = bytearray(), 0, keep
        # None while the stream fits in `keep`; then a runtime.spill.SpillWriter, or False when there is no
        # spill directory (a capture outside a run) or the disk refused: the rest is counted, not kept.
        self.spill: Any = None

    def add(self, data: bytes) -> None:
        if self.spill is None and len(self.buf) + len(data) <= self.keep:
            self.buf += data
            return
        if self.spill is None:  # the stream outgrows memory now: the whole of it goes to disk, if the run spills
            self.spill = self._open()
            self._write(bytes(self.buf))
        room = max(self.keep - len(self.buf), 0)
        self.buf += data[:room]
        self.cut += len(data) - room
        self._write(data)

    @staticmethod
    def _open() -> Any:
        from .spill import current

        d = current()
        try:
            return False if d is None else d.writer()
        except OSError:
            return False

    def _write(self, data: bytes) -> None:
        if not self.spill:
            return
        try:
            self.spill.write(data)
        except OSError:  # no room on disk: the stream is cut instead, and checks on it say so
            self.spill.abandon()
            self.spill = False

    @property
    def data(self) -> bytes:
        return bytes(self.buf)

    def close(self) -> Any:
        """The spilled stream (a runtime.spill.Spilled), or None when it fitted in memory or was cut."""
        if not self.spill:
            return None
        try:
            return self.spill.close()
        except OSError:
            self.spill.abandon()
            self.spill = False
            return None


@dataclass(frozen=True, slots=True)
class ExecResult:
    """Outcome of a command. Times are wall-clock `time.time_ns()` (comparable with span timestamps).

    `exit_code` is None when the command was killed because it ran past its timeout (`timed_out`).
    `stdout_cut`/`stderr_cut`: bytes written past the OUTPUT_KEEP bytes kept of that stream in memory;
    `stdout_spill`/`stderr_spill`: the whole stream in a spill file (runtime.spill.Spilled), when it was spilled.
    """

    exit_code: int | None
    stdout: bytes
    stderr: bytes
    started_ns: int
    ended_ns: int
    timed_out: bool = False
    stdout_cut: int = 0
    stderr_cut: int = 0
    stdout_spill: Any = None
    stderr_spill: Any = None

    @classmethod
    def of(cls, exit_code: int | None, out: OutputCapture, err: OutputCapture, started_ns: int, ended_ns: int,
           timed_out: bool = False) -> ExecResult:
        """The result of a command whose streams were captured by `out` and `err`."""
        return cls(exit_code, out.data, err.data, started_ns, ended_ns, timed_out, out.cut, err.cut,
                   out.close(), err.close())

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def duration_s(self) -> float:
        return (self.ended_ns - self.started_ns) / 1e9


@dataclass(frozen=True, slots=True)
class ContainerState:
    """What the engine reports about a container."""

    status: str  # engine word: created, running, exited, dead, ...
    running: bool
    exit_code: int | None
    oom_killed: bool = False
    error: str = ""

    def describe(self) -> str:
        """A short human phrase: "running", "exited with code 3", "OOM-killed", ..."""
        if self.running:
            return "running"
        if self.oom_killed:
            return "OOM-killed"
        if self.error:
            return f"failed: {self.error}"
        if self.status == "created":
            return "created, never started"
        if self.exit_code is not None and self.status in ("exited", "dead"):
            if self.exit_code > 128:
                return f"exited with code {self.exit_code} (killed by signal {self.exit_code - 128})"
            return f"exited with code {self.exit_code}"
        return self.status


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    """A user-defined network; `gateway` is the host's address on it (how containers reach crc)."""

    id: str
    name: str
    gateway: str
    subnet: str = ""  # e.g. "172.18.0.0/16": the addresses its containers have ("" when unknown)


@dataclass(frozen=True, slots=True)
class Resource:
    """A container, network or volume found by label."""

    kind: Literal["container", "network", "volume"]
    id: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))

    def __hash__(self) -> int:
        return hash((self.kind, self.id))


LogStream = Literal["stdout", "stderr"]
LogChunk = tuple[LogStream, bytes]


# --------------------------------------------------------------------------- image references

_HOST_RE = re.compile(r"^(localhost(:\d+)?|[^/]*[.:][^/]*)$")


def registry_host(ref: str) -> str | None:
    """The registry host named in an image reference, or None for an implicit Docker Hub reference.

    `127.0.0.1:5000/app:1` -> "127.0.0.1:5000"; `crc/busybox:dev` -> None (this would go to Docker Hub).
    Same rule as Docker's reference parser: the first path component is a host if it contains "." or
    ":" or is "localhost".
    """
    first, sep, _ = ref.partition("/")
    if sep and _HOST_RE.match(first):
        return first
    return None


# --------------------------------------------------------------------------- the interface


class Backend(abc.ABC):
    """The operations the runtime needs from a container engine. All I/O methods are async.

    Every error raised is a `BackendError`. Removal methods are idempotent: removing something that is
    already gone is not an error.
    """

    @abc.abstractmethod
    async def ping(self) -> None:
        """Check the engine answers; raise `EngineUnavailable` with a hint on how to fix it."""

    @abc.abstractmethod
    async def ensure_image(self, ref: str, *, allow_pull: bool, always: bool = False) -> str:
        """Return the id of image `ref`. Present locally: no pull (unless `always`, which pulls first and
        keeps the local image only when the registry cannot be asked). Absent: pull only if `allow_pull`,
        else raise `ImageUnavailable` naming the image and how to build it."""

    async def build_image(self, spec: BuildSpec) -> str:
        """Build `spec` and return the image id; raise `ImageUnavailable` with the build's output tail when
        the build fails. Engines that cannot build say so."""
        raise ImageUnavailable(f"this engine cannot build images (needed for {spec.tag})", spec.tag)

    async def oom_killed_between(self, container: str, since_ns: int, until_ns: int) -> bool:
        """Whether the kernel killed a process of `container` for lack of memory in that time window."""
        return False

    @abc.abstractmethod
    async def create_network(self, name: str, labels: Mapping[str, str], *, internal: bool = False) -> NetworkInfo:
        """Create a user-defined bridge network on which containers resolve each other by alias; `internal`:
        one the engine gives no route outside itself. Raise `AddressSpaceExhausted` when the engine has no
        subnet left for it."""

    @abc.abstractmethod
    async def remove_network(self, network: str) -> None:
        """Remove a network by id or name (no error if it is gone)."""

    @abc.abstractmethod
    async def create_volume(self, name: str, labels: Mapping[str, str]) -> str:
        """Create a named volume (labelled, so it can be reaped); return its name."""

    @abc.abstractmethod
    async def remove_volume(self, name: str) -> None:
        """Remove a named volume (no error if it is gone)."""

    @abc.abstractmethod
    async def create_container(self, spec: ContainerSpec) -> str:
        """Create (not start) a container; return its id."""

    @abc.abstractmethod
    async def start(self, container: str) -> dict[int, int]:
        """Start a created container; return {container port: host port} for its published ports."""

    @abc.abstractmethod
    async def exec(
        self,
        container: str,
        argv: tuple[str, ...] | list[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run `argv` (as argv, never through a shell) in a running container and collect its output.

        After `timeout` seconds the process and everything it spawned are killed, and the result has
        `timed_out=True`.
        """

    @abc.abstractmethod
    async def run_oneoff(self, spec: ContainerSpec, *, timeout: float | None = None) -> ExecResult:
        """Create, start, wait for and remove a container; stdout and stderr are collected apart.

        After `timeout` seconds the container is killed (`timed_out=True`). The container is always
        removed.
        """

    @abc.abstractmethod
    async def logs(self, container: str, tail: int | None = None) -> str:
        """The container's combined stdout/stderr so far (the last `tail` lines if given)."""

    @abc.abstractmethod
    def stream_logs(self, container: str, *, since_ns: int | None = None) -> AsyncIterator[LogChunk]:
        """Follow a container's output as ("stdout"|"stderr", bytes) chunks until it exits.

        Read it once, incrementally (e.g. for a readiness pattern), instead of polling `logs`.
        """

    @abc.abstractmethod
    async def address(self, container: str, network: str | None = None) -> str:
        """An IP address at which crc (on the engine's host) reaches the container's unpublished ports.

        On `network` if given, else its first network. Raise `BackendError` if it has none.
        """

    @abc.abstractmethod
    async def state(self, container: str) -> ContainerState:
        """The container's current state."""

    @abc.abstractmethod
    async def wait(self, container: str) -> int:
        """Block until the container is not running; return its exit code."""

    @abc.abstractmethod
    async def remove_container(self, container: str) -> None:
        """Force-remove a container and its anonymous volumes (no error if it is gone)."""

    @abc.abstractmethod
    async def find(self, labels: Mapping[str, str]) -> list[Resource]:
        """All containers (running or not), networks and volumes carrying every label in `labels`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connection to the engine. The backend must not be used afterwards."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
