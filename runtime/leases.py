"""Crash-safe run leases, and reaping what dead runs left on the engine.

A run holds an exclusive `flock` on `<state dir>/leases/<run id>.lease` for its whole life. The kernel
drops the lock when the process dies, however it dies (SIGKILL, OOM, power loss of the process), so
"lease file exists but nobody holds its lock" means exactly "that run is dead". `reap()` uses this to
remove the containers, networks and volumes labelled with a dead run's id, and nothing else:

- lease locked            -> the run is alive: untouched;
- lease present, unlocked -> the run is dead: its resources are removed (containers, then networks,
                             then volumes); the lease file stays as a tombstone (below);
- no lease on this host   -> maybe another host's run on a shared engine: reported, removed only with
                             `force=True` (`crc clean --all`).

Only resources labelled `io.crc.managed=1` are ever considered.

The lease file is created already locked (written and locked under a temporary name, then hard-linked
into place), so a concurrent reaper can never see a fresh lease unlocked, and every resource carries its
run's label from the request that creates it: no resource of a run can exist before its lease.

Tombstones. A run that dies abruptly may have requests in flight: the engine finishes them after the
process is gone (a network or container can appear seconds after the SIGKILL, after a `crc clean` that
ran at once). So the lease of a run that did not end normally outlives its reap: the first reaper to see
it dead writes `dead_since` into it, and it is deleted only once a reap finds none of the run's
resources left *and* `TOMBSTONE_GRACE` has passed since. Whatever the engine creates for the dead run in
the meantime is reaped by the next run or `crc clean`. A run that ends normally (`release()`) writes
`ended` into its lease: all its requests were answered, so its lease goes as soon as nothing of it
remains. Pass `release(remove_file=True)` when the run knows it left nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

import anyio

from .backend import Backend, BackendError, Labels, Resource

__all__ = ["Lease", "LeaseError", "ReapReport", "lease_dir", "mark_kept", "reap", "state_dir"]

LEASE_SUFFIX = ".lease"
KEPT_SUFFIX = ".kept"  # beside a lease: the run kept its resources for debugging; only `crc clean` reaps them
# Run ids become file names: keep them to a safe alphabet (no "/", no leading dot).
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Concurrent removals during a reap (the engine serialises some of them anyway).
_REMOVE_CONCURRENCY = 16
# How long the lease of a run that died abruptly is kept after its death was first seen: far longer than
# the engine takes to answer a request the dead run had sent (create a network or container).
TOMBSTONE_GRACE = 3600.0
# Removal passes per reap: a resource a dead run's in-flight request creates during the reap (a container
# joining a network being removed) is found and removed by the next pass.
_REAP_PASSES = 3


class LeaseError(BackendError):
    """A lease could not be taken (bad run id, run id already in use, state dir not writable)."""

    environment = True


def state_dir() -> Path:
    """crc's per-user state directory: $CRC_STATE_DIR, else $XDG_STATE_HOME/crc, else ~/.local/state/crc."""
    if explicit := os.environ.get("CRC_STATE_DIR"):
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "crc"


def lease_dir(base: Path | None = None) -> Path:
    """Where lease files live (`<state dir>/leases`)."""
    return (base if base is not None else state_dir()) / "leases"


def _valid_run_id(run_id: str | None) -> bool:
    return bool(run_id) and _RUN_ID_RE.match(run_id or "") is not None


class Lease:
    """An exclusive, crash-safe claim that run `run_id` is alive on this host.

    Use `Lease.acquire(run_id)` as a (sync or async) context manager, or call `release()` yourself.
    """

    def __init__(self, run_id: str, path: Path, fd: int) -> None:
        self.run_id = run_id
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, run_id: str, *, base: Path | None = None, engine: str | None = None) -> Lease:
        """Create and lock `<state dir>/leases/<run_id>.lease`. Raise `LeaseError` if that is impossible.
        `engine` names the engine the run uses: a reap of another engine leaves the lease alone."""
        if not _valid_run_id(run_id):
            raise LeaseError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-'")
        d = lease_dir(base)
        final = d / f"{run_id}{LEASE_SUFFIX}"
        tmp = d / f".{run_id}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        try:
            d.mkdir(parents=True, exist_ok=True)
            # O_CLOEXEC: a child process must not inherit the lock and keep a dead run "alive".
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise LeaseError(
                f"cannot create a lease in {d}: {exc.strerror}\n"
                "help: point CRC_STATE_DIR at a writable directory"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a brand-new file: never contended
            info = {"run": run_id, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                    "engine": engine}
            os.write(fd, json.dumps(info).encode())
            # link() publishes the already-locked inode atomically and, unlike rename(), never replaces.
            os.link(tmp, final)
        except FileExistsError as exc:
            os.close(fd)
            raise LeaseError(f"run id {run_id!r} already has a lease ({final})") from exc
        except OSError as exc:
            os.close(fd)
            raise LeaseError(f"cannot create lease {final}: {exc.strerror}") from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return cls(run_id, final, fd)

    @property
    def held(self) -> bool:
        """True until `release()`."""
        return self._fd is not None

    def release(self, *, remove_file: bool = False) -> None:
        """Drop the lock. The file stays, marked `ended`, so the next reap checks for leftovers; unless
        `remove_file`."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if remove_file:  # unlink while still locked: no reaper can take a half-released lease
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        else:
            with contextlib.suppress(OSError, ValueError):
                _update(fd, ended=time.time())
        os.close(fd)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lease({self.run_id!r}, held={self.held})"


def _read(fd: int) -> dict[str, object]:
    """The JSON object a lease file holds ({} when unreadable: a torn or foreign file)."""
    raw = os.pread(fd, 65536, 0)
    try:
        info = json.loads(raw)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _update(fd: int, **fields: float) -> dict[str, object]:
    """Add `fields` to the lease held on `fd` (we hold its lock) and return the result."""
    info = {**_read(fd), **fields}
    data = json.dumps(info).encode()
    # Write, then cut: the new text only adds fields, so it is longer and covers the old one whole; a
    # process killed in between leaves valid JSON (truncating first could leave an empty file).
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
    return info


def _deletable(fd: int, now: float, grace: float) -> bool:
    """Whether a dead run's lease may go once none of its resources remain (see "Tombstones")."""
    info = _read(fd)
    if isinstance(info.get("ended"), (int, float)):
        return True
    since = info.get("dead_since")
    if not isinstance(since, (int, float)):
        _update(fd, dead_since=now)
        return grace <= 0
    return now - since >= grace


def _probe(path: Path) -> tuple[str, int | None]:
    """("dead", fd we now hold) if nobody holds the lease, else ("alive" | "none" | "unreadable", None)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return "none", None
    except OSError:  # e.g. another user's lease in a shared state dir: not ours to judge
        return "unreadable", None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return "alive", None
    return "dead", fd


def _engine_of(fd: int) -> str | None:
    """The engine a lease names (None when it names none, as leases of older crc versions)."""
    try:
        info = json.loads(os.pread(fd, 65536, 0) or b"{}")
    except (OSError, ValueError):
        return None
    engine = info.get("engine") if isinstance(info, dict) else None
    return engine if isinstance(engine, str) else None


@dataclass
class ReapReport:
    """What `reap()` did: removed (or, with `dry_run`, would remove), kept and why, failures."""

    removed: list[Resource] = field(default_factory=list)
    kept: list[tuple[Resource, str]] = field(default_factory=list)
    errors: list[tuple[Resource, str]] = field(default_factory=list)
    dead_runs: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def describe(self) -> str:
        """A short human summary, one line per resource."""
        verb = "would remove" if self.dry_run else "removed"
        lines: list[str] = []
        for r in self.removed:
            lines.append(f"{verb} {r.kind} {r.name} (run {Labels.run_of(r.labels) or '?'})")
        for r, why in self.kept:
            lines.append(f"kept {r.kind} {r.name}: {why}")
        for r, err in self.errors:
            lines.append(f"failed to remove {r.kind} {r.name}: {err}")
        if not lines:
            return "nothing to clean"
        n = len(self.removed)
        lines.append(
            f"{verb} {n} resource{'s' * (n != 1)} of {len(self.dead_runs)} dead run(s); "
            f"kept {len(self.kept)}; {len(self.errors)} error(s)"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


def mark_kept(run_id: str, base: Path | None = None) -> None:
    """Record that run `run_id` left its resources running on purpose: the next run's reap leaves them."""
    (lease_dir(base) / f"{run_id}{KEPT_SUFFIX}").write_text("kept for debugging\n", encoding="utf-8")


@runtime_checkable
class EngineBackend(Protocol):
    """A backend that names its engine (the Docker backend: `host`)."""

    @property
    def host(self) -> str: ...


async def reap_leftovers(backend: Backend) -> ReapReport:
    """What killed runs left on `backend`'s engine: the reap every run, `crc dev` session and worker starts
    with. Leases of other engines are left to their own reaps."""
    return await reap(backend, engine=_engine(backend))


def run_lease(run_id: str, backend: Backend) -> Lease:
    """The lease a run on `backend` holds while it runs, naming its engine."""
    return Lease.acquire(run_id, engine=_engine(backend))


def _engine(backend: Backend) -> str | None:
    return backend.host if isinstance(backend, EngineBackend) else None


async def reap(
    backend: Backend,
    *,
    force: bool = False,
    dry_run: bool = False,
    base: Path | None = None,
    include_kept: bool = False,
    engine: str | None = None,
    grace: float = TOMBSTONE_GRACE,
) -> ReapReport:
    """Remove the resources of dead crc runs (see module docstring); return what was done.

    `force` also removes managed resources whose run has no lease on this host (or no run label).
    `include_kept` also removes those of runs that kept them for debugging (`crc clean`; a run's own reap
    leaves them). `dry_run` only reports. `base` overrides the state directory and `grace` the tombstone
    grace (tests). `engine` names the backend's engine: a dead run whose lease names another engine (one
    host may drive several) is left to a reap of that engine.
    """
    report = ReapReport(dry_run=dry_run)
    by_run = _by_run(await backend.find({Labels.MANAGED: "1"}))

    leases = lease_dir(base)
    lease_runs: set[str] = set()
    if leases.is_dir():
        lease_runs = {p.name[: -len(LEASE_SUFFIX)] for p in leases.glob(f"*{LEASE_SUFFIX}")}
    held: dict[str, int] = {}  # dead runs whose lease we now hold until their resources are gone
    doomed_runs: set[str | None] = set()
    try:
        for run in sorted(set(by_run) | lease_runs, key=lambda r: r or ""):
            mine = by_run.get(run, [])
            status, fd = ("none", None)
            if run is not None and run in lease_runs:
                status, fd = _probe(leases / f"{run}{LEASE_SUFFIX}")
            if fd is not None and engine is not None and _engine_of(fd) not in (None, engine):
                os.close(fd)  # dead, but its resources are on another engine: its lease must stay for that reap
                report.kept += [(r, f"run {run} is dead, but its lease is for another engine") for r in mine]
                continue
            if status == "alive":
                report.kept += [(r, f"run {run} is alive (its lease is held)") for r in mine]
            elif status == "unreadable":
                report.kept += [(r, f"cannot open the lease of run {run}") for r in mine]
            elif run is not None and fd is not None and not include_kept and \
                    (leases / f"{run}{KEPT_SUFFIX}").exists():
                os.close(fd)
                report.kept += [(r, f"run {run} kept it for debugging (`crc clean` removes it)") for r in mine]
            elif run is not None and fd is not None:  # dead: we hold its lease until we are done
                held[run] = fd
                report.dead_runs.append(run)
                doomed_runs.add(run)
            elif force:
                if mine and run is not None:
                    report.dead_runs.append(run)
                doomed_runs.add(run)
            else:
                why = (
                    "it has no io.crc.run label"
                    if run is None
                    else f"run {run} has no lease on this host (another host may share the engine)"
                )
                report.kept += [(r, f"{why}; use force (crc clean --all) to remove") for r in mine]

        doomed = [r for run in doomed_runs for r in by_run.get(run, [])]
        if dry_run:
            report.removed = doomed
            return report

        left = await _remove_passes(backend, doomed, doomed_runs, report)
        now = time.time()
        for run, fd in held.items():
            if run in left:  # a failure keeps the lease file, so the next reap retries
                continue
            with contextlib.suppress(FileNotFoundError):
                (leases / f"{run}{KEPT_SUFFIX}").unlink()
            if _deletable(fd, now, grace):
                with contextlib.suppress(FileNotFoundError):
                    (leases / f"{run}{LEASE_SUFFIX}").unlink()
    finally:
        for fd in held.values():
            os.close(fd)
    return report


def _by_run(resources: Iterable[Resource]) -> dict[str | None, list[Resource]]:
    """Managed resources grouped by run id (None: no valid run label)."""
    by_run: dict[str | None, list[Resource]] = defaultdict(list)
    for r in resources:
        if Labels.is_managed(r.labels):  # find() filters already; re-check before deleting anything
            run = Labels.run_of(r.labels)
            by_run[run if _valid_run_id(run) else None].append(r)
    return by_run


async def _remove_passes(
    backend: Backend, doomed: list[Resource], runs: set[str | None], report: ReapReport
) -> set[str | None]:
    """Remove `doomed`, then look again for resources of `runs` (a dead run's in-flight request may have
    created one meanwhile) and remove those, up to `_REAP_PASSES` times. Return the runs that may still
    have resources. Only the errors of resources that are still there end up in `report`."""
    errors: dict[str, tuple[Resource, str]] = {}
    for n in range(_REAP_PASSES):
        if not doomed:
            break
        removed, failed = await _remove_all(backend, doomed)
        report.removed += removed
        for r in removed:
            errors.pop(r.id, None)
        errors.update({r.id: (r, why) for r, why in failed})
        if n + 1 == _REAP_PASSES:
            break
        by_run = _by_run(await backend.find({Labels.MANAGED: "1"}))
        doomed = [r for run in runs for r in by_run.get(run, [])]
    report.errors += errors.values()
    return {Labels.run_of(r.labels) for r in doomed}


async def _remove_all(
    backend: Backend, doomed: Iterable[Resource]
) -> tuple[list[Resource], list[tuple[Resource, str]]]:
    """Containers first (they pin networks and volumes), then networks, then volumes."""
    removers: dict[str, Callable[[str], Awaitable[None]]] = {
        "container": backend.remove_container,
        "network": backend.remove_network,
        "volume": backend.remove_volume,
    }
    removed: list[Resource] = []
    failed: list[tuple[Resource, str]] = []
    limiter = anyio.CapacityLimiter(_REMOVE_CONCURRENCY)
    doomed = list(doomed)

    async def remove(r: Resource) -> None:
        async with limiter:
            try:
                await removers[r.kind](r.id)
            except BackendError as exc:
                failed.append((r, str(exc)))
            else:
                removed.append(r)

    for kind in ("container", "network", "volume"):
        async with anyio.create_task_group() as tg:
            for r in doomed:
                if r.kind == kind:
                    tg.start_soon(remove, r)
    return removed, failed
