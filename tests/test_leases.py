"""Leases and reaping: the lock logic on a fake backend, and a SIGKILLed run against a real engine."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from crc.runtime.backend import (
    Backend,
    BackendError,
    ContainerSpec,
    EngineUnavailable,
    ImageUnavailable,
    Labels,
    Resource,
)
from crc.runtime.docker_backend import DockerBackend
from crc.runtime.leases import Lease, LeaseError, lease_dir, reap, reap_leftovers, run_lease, state_dir

IMAGE = "crc/busybox:dev"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private state dir, so tests never see (or reap for) real crc runs."""
    monkeypatch.setenv("CRC_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


# ---------------------------------------------------------------- leases


def test_state_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CRC_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir() == tmp_path / "xdg" / "crc"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir() == tmp_path / "home" / ".local" / "state" / "crc"
    monkeypatch.setenv("CRC_STATE_DIR", str(tmp_path / "explicit"))
    assert state_dir() == tmp_path / "explicit"
    assert lease_dir() == tmp_path / "explicit" / "leases"


def test_lease_lifecycle(base: Path) -> None:
    lease = Lease.acquire("run-1")
    assert lease.path == base / "leases" / "run-1.lease" and lease.held
    assert json.loads(lease.path.read_text())["pid"] == os.getpid()
    assert [p.name for p in lease.path.parent.iterdir()] == ["run-1.lease"]  # no temp file left
    with pytest.raises(LeaseError, match="already has a lease"):
        Lease.acquire("run-1")
    lease.release()
    assert lease.path.exists() and not lease.held  # kept: the next reap checks for leftovers
    lease.release()  # idempotent
    with Lease.acquire("run-2") as l2:
        assert l2.held
    l2.path.unlink()
    l3 = Lease.acquire("run-3")
    l3.release(remove_file=True)
    assert not l3.path.exists()


@pytest.mark.parametrize("bad", ["", "../evil", "a/b", ".hidden", "x" * 200])
def test_lease_rejects_unsafe_run_ids(base: Path, bad: str) -> None:
    with pytest.raises(LeaseError, match="invalid run id"):
        Lease.acquire(bad)


def test_lease_error_is_an_environment_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("CRC_STATE_DIR", str(blocker))  # a file where a directory should be
    with pytest.raises(LeaseError, match="CRC_STATE_DIR") as info:
        Lease.acquire("r")
    assert info.value.environment


# ---------------------------------------------------------------- reap on a fake engine


class FakeBackend(Backend):
    """Only what reap() uses: find and the three removers, recording the order of removals."""

    def __init__(self, resources: list[Resource], fail: set[str] | None = None) -> None:
        self.resources = list(resources)
        self.removed: list[str] = []
        self.fail = fail or set()

    async def find(self, labels: Mapping[str, str]) -> list[Resource]:
        return [r for r in self.resources if all(r.labels.get(k) == v for k, v in labels.items())]

    async def _remove(self, rid: str) -> None:
        if rid in self.fail:
            raise BackendError(f"cannot remove {rid}")
        self.removed.append(rid)
        self.resources = [r for r in self.resources if r.id != rid]

    async def remove_container(self, container: str) -> None:
        await self._remove(container)

    async def remove_network(self, network: str) -> None:
        await self._remove(network)

    async def remove_volume(self, name: str) -> None:
        await self._remove(name)

    async def close(self) -> None:
        pass

    def _unused(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - reap uses none of these
        raise AssertionError("reap() must only find and remove")

    ping = ensure_image = create_network = create_volume = create_container = start = _unused  # type: ignore[assignment]
    exec = run_oneoff = logs = stream_logs = state = wait = address = _unused  # type: ignore[assignment]


def res(kind: str, rid: str, run: str | None, managed: bool = True) -> Resource:
    labels = {Labels.MANAGED: "1"} if managed else {}
    if run is not None:
        labels[Labels.RUN] = run
    return Resource(kind, rid, rid, labels)  # type: ignore[arg-type]


def dead_lease(run: str) -> Path:
    lease = Lease.acquire(run)
    lease.release()  # unlocked file left behind = the owner is gone
    return lease.path


@pytest.mark.anyio
async def test_reap_decides_by_lease(base: Path) -> None:
    dead = dead_lease("dead")
    alive = Lease.acquire("alive")  # held by this process: another open file description conflicts
    fake = FakeBackend(
        [
            res("volume", "dead-v", "dead"),
            res("network", "dead-n", "dead"),
            res("container", "dead-c1", "dead"),
            res("container", "dead-c2", "dead"),
            res("container", "alive-c", "alive"),
            res("container", "foreign-c", "elsewhere"),
            res("container", "nolabel-c", None),
            res("container", "user-c", "dead", managed=False),  # not crc's: never even considered
        ]
    )
    try:
        report = await reap(fake)
    finally:
        alive.release(remove_file=True)
    # Containers first, then networks, then volumes.
    assert sorted(fake.removed[:2]) == ["dead-c1", "dead-c2"] and fake.removed[2:] == ["dead-n", "dead-v"]
    assert {r.id for r in report.removed} == {"dead-c1", "dead-c2", "dead-n", "dead-v"}
    assert {r.id: why for r, why in report.kept} == {
        "alive-c": "run alive is alive (its lease is held)",
        "foreign-c": "run elsewhere has no lease on this host (another host may share the engine); "
        "use force (crc clean --all) to remove",
        "nolabel-c": "it has no io.crc.run label; use force (crc clean --all) to remove",
    }
    assert report.dead_runs == ["dead"] and report.ok and not dead.exists()
    assert "removed container dead-c1" in report.describe()


@pytest.mark.anyio
async def test_reap_force_dry_run_and_stale_leases(base: Path) -> None:
    stale = dead_lease("stale")  # a run that cleaned up but kept its lease file
    fake = FakeBackend([res("container", "foreign-c", "elsewhere"), res("network", "nolabel-n", None)])
    report = await reap(fake, force=True, dry_run=True)
    assert {r.id for r in report.removed} == {"foreign-c", "nolabel-n"} and fake.removed == []
    assert "would remove" in report.describe() and stale.exists()
    report = await reap(fake, force=True)
    assert fake.removed == ["foreign-c", "nolabel-n"] and not stale.exists()
    assert (await reap(fake)).describe() == "nothing to clean"


@pytest.mark.anyio
async def test_reap_keeps_lease_when_removal_fails(base: Path) -> None:
    lease = dead_lease("dead")
    fake = FakeBackend([res("container", "c1", "dead"), res("network", "n1", "dead")], fail={"c1"})
    report = await reap(fake)
    assert not report.ok and [r.id for r, _ in report.errors] == ["c1"]
    assert lease.exists()  # so the next reap retries
    fake.fail = set()
    report = await reap(fake)
    assert report.ok and not lease.exists() and fake.resources == []


def killed_lease(run: str) -> Path:
    """The lease of a run that died without ending: unlocked, not marked `ended`."""
    lease = Lease.acquire(run)
    assert lease._fd is not None
    os.close(lease._fd)  # what the kernel does for a SIGKILLed process
    lease._fd = None
    return lease.path


@pytest.mark.anyio
async def test_killed_run_lease_stays_as_a_tombstone(base: Path) -> None:
    path = killed_lease("killed")
    fake = FakeBackend([res("container", "c1", "killed"), res("network", "n1", "killed")])
    report = await reap(fake)
    assert fake.removed == ["c1", "n1"] and report.ok
    # The engine may still finish requests of the dead run: its lease stays, with the moment it was found dead.
    info = json.loads(path.read_text())
    assert info["run"] == "killed" and "dead_since" in info and "ended" not in info
    fake.resources.append(res("network", "late", "killed"))  # a request the engine finished late
    report = await reap(fake)
    assert [r.id for r in report.removed] == ["late"] and not report.kept and path.exists()
    assert json.loads(path.read_text())["dead_since"] == info["dead_since"]  # the first sighting counts
    assert (await reap(fake, grace=0)).describe() == "nothing to clean" and not path.exists()


@pytest.mark.anyio
async def test_tombstone_stays_while_resources_remain(base: Path) -> None:
    path = killed_lease("killed")
    fake = FakeBackend([res("container", "c1", "killed")], fail={"c1"})
    assert not (await reap(fake, grace=0)).ok and path.exists()  # c1 is still there: past the grace, kept
    fake.fail = set()
    assert (await reap(fake, grace=0)).ok and not path.exists() and fake.resources == []


@pytest.mark.anyio
async def test_reap_removes_what_appears_during_the_reap(base: Path) -> None:
    killed_lease("killed")

    class Racing(FakeBackend):
        raced = False

        async def remove_network(self, network: str) -> None:
            if network == "n1" and not self.raced:
                self.raced = True
                # The dead run's container create lands on the network: the engine refuses to remove it.
                self.resources.append(res("container", "c-late", "killed"))
                raise BackendError("network n1 has active endpoints")
            await super().remove_network(network)

    fake = Racing([res("network", "n1", "killed")])
    report = await reap(fake)
    assert fake.resources == [] and fake.removed == ["c-late", "n1"]
    assert report.ok, report.describe()  # the failure of the first pass was resolved by the second


# ---------------------------------------------------------------- a SIGKILLed run, real engine


CHILD = textwrap.dedent(
    """
    import sys, time, anyio
    from crc.runtime.backend import ContainerSpec, Labels
    from crc.runtime.docker_backend import DockerBackend
    from crc.runtime.leases import Lease

    run = sys.argv[1]

    async def main():
        lease = Lease.acquire(run)
        b = DockerBackend()
        labels = Labels.for_run(run, "lease-test")
        net = await b.create_network(f"crc-{run}", labels)
        vol = await b.create_volume(f"crc-{run}-vol", labels)
        cid = await b.create_container(ContainerSpec(
            name=f"crc-{run}-svc", image="crc/busybox:dev", command=("sleep", "600"),
            network=net.name, labels=labels))
        await b.start(cid)
        print("ready", cid, net.id, vol, flush=True)
        await anyio.sleep(600)

    anyio.run(main)
    """
)


@pytest.fixture
async def engine_backend() -> AsyncIterator[DockerBackend]:
    """A backend on the real engine (skip if none answers), with the test image present."""
    async with DockerBackend(connect_timeout=3) as b:
        try:
            await b.ping()
        except EngineUnavailable as exc:
            pytest.skip(f"no Docker engine: {str(exc).splitlines()[0]}")
        try:
            await b.ensure_image(IMAGE, allow_pull=False)
        except ImageUnavailable:
            subprocess.run([str(REPO / ".ci/images/build"), "busybox"], check=True)
        yield b


@pytest.mark.docker
@pytest.mark.anyio
async def test_sigkilled_run_is_reaped(base: Path, engine_backend: DockerBackend) -> None:
    b = engine_backend
    tag = secrets.token_hex(3)
    dead_run, live_run, foreign_run = f"t{tag}-dead", f"t{tag}-live", f"t{tag}-foreign"
    created: list[tuple[str, str]] = []  # (kind, id) to clean up whatever happens
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, dead_run], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        with anyio.fail_after(60):
            line = await anyio.to_thread.run_sync(child.stdout.readline, abandon_on_cancel=True)
        assert line.startswith("ready"), child.stderr.read() if child.stderr else line
        _, cid, net_id, vol = line.split()
        created += [("container", cid), ("network", net_id), ("volume", vol)]
        lease_file = lease_dir() / f"{dead_run}.lease"
        assert lease_file.exists()

        # Neighbours that must survive: an unlabelled container, a live run's, another host's run's.
        user = await b.create_container(
            ContainerSpec(name=f"user-{tag}", image=IMAGE, command=("sleep", "600"))
        )
        live = await b.create_container(
            ContainerSpec(
                name=f"crc-{live_run}", image=IMAGE, command=("sleep", "600"), labels=Labels.for_run(live_run)
            )
        )
        foreign = await b.create_container(
            ContainerSpec(name=f"crc-{foreign_run}", image=IMAGE, labels=Labels.for_run(foreign_run))
        )
        created += [("container", user), ("container", live), ("container", foreign)]
        live_lease = Lease.acquire(live_run)

        # While the child lives, its lease is held: nothing of it is touched.
        report = await reap(b)
        assert not {r.id for r in report.removed} & {cid, net_id, vol}

        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        report = await reap(b)
        live_lease.release(remove_file=True)

        assert {(r.kind, r.id) for r in report.removed} == {
            ("container", cid),
            ("network", net_id),
            ("volume", vol),
        }
        assert report.dead_runs == [dead_run] and report.ok, report.describe()
        assert "dead_since" in json.loads(lease_file.read_text())  # a tombstone, for requests finished late
        kept = {r.id for r, _ in report.kept}
        assert {live, foreign} <= kept and user not in kept  # unmanaged: never even looked at
        left = {r.id for r in await b.find({Labels.MANAGED: "1"})}
        assert {live, foreign} <= left and not left & {cid, net_id}
        assert (await b.state(user)).status == "created"  # the unlabelled container survived
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        for stream in (child.stdout, child.stderr):
            if stream:
                stream.close()
        removers = {"container": b.remove_container, "network": b.remove_network, "volume": b.remove_volume}
        with anyio.CancelScope(shield=True):
            for kind in ("container", "network", "volume"):
                for k, rid in created:
                    if k == kind:
                        await removers[kind](rid)


@pytest.mark.anyio
async def test_reap_of_one_engine_keeps_dead_leases_of_another(base: Path) -> None:
    """One host, two engines: reaping engine B must not delete the lease of a dead run on engine A (its
    resources there would then never be reaped); the reap of engine A removes them and the lease."""
    lease = Lease.acquire("on-a", engine="unix:///a.sock")
    lease.release()
    on_b = FakeBackend([])
    report = await reap(on_b, engine="unix:///b.sock")
    assert report.dead_runs == [] and lease.path.exists()
    on_a = FakeBackend([res("container", "c1", "on-a")])
    report = await reap(on_a, engine="unix:///a.sock")
    assert report.dead_runs == ["on-a"] and on_a.removed == ["c1"] and not lease.path.exists()


class _EngineFake(FakeBackend):
    """A fake backend that names its engine, as the Docker backend does."""

    def __init__(self, resources: list[Resource], host: str) -> None:
        super().__init__(resources)
        self.host = host


@pytest.mark.anyio
async def test_every_run_reaps_and_leases_through_one_pair(base: Path) -> None:
    """`reap_leftovers` and `run_lease` name the backend's engine (the interactive view once reaped every
    engine's dead leases); no command or runner reaps or takes a lease by hand."""
    with run_lease("on-a", _EngineFake([], "unix:///a.sock")) as lease:
        assert json.loads(lease.path.read_text())["engine"] == "unix:///a.sock"
    lease = Lease.acquire("dead-a", engine="unix:///a.sock")
    lease.release()
    report = await reap_leftovers(_EngineFake([], "unix:///b.sock"))
    assert report.dead_runs == [] and lease.path.exists()
    report = await reap_leftovers(_EngineFake([res("container", "c1", "dead-a")], "unix:///a.sock"))
    assert sorted(report.dead_runs) == ["dead-a", "on-a"] and not lease.path.exists()
    root = Path(__file__).resolve().parents[1]
    by_hand = [f"{p.relative_to(root)}:{i}" for d in ("crc", "runtime") for p in (root / d).rglob("*.py")
               if p.name != "leases.py"
               for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
               if ("Lease.acquire(" in line or "await reap(" in line) and "include_kept=True" not in line]
    assert by_hand == []  # `crc clean` (include_kept) is the one reap of its own
