"""Suite networks when the engine runs out of address space, on a real engine that does.

A private dockerd started for this module (`.ci/engine-b` with ENGINE=NAME: its own socket, data and exec
roots, pid file and bridge) whose default address pool has room for two networks (a /27 cut into /28s, in
10.151.X.0, beside the shared engine's 10.150.0.0/16 and clear of the host's routes), with crc/busybox:dev
loaded into it. Checked: more suites than subnets wait for each other and all pass, never more networks at
once than there is room for (from the engine's own events), in one process and on a cluster worker; a pool held entirely by networks crc did not
create is exit 3 naming default-address-pools, nothing of crc's left; a suite waiting for address space
takes it as soon as a foreign network is removed. The engine, and everything on it, is stopped and deleted
at the end, also when a test fails. Skipped, with the reason, only where dockerd cannot start (never in CI).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerutil import (  # noqa: F401
    ROOT,
    EngineDidNotStart,
    NetworkEvents,
    docker_engine,
    most_at_once,
    run_json,
    small_engine,
)

pytestmark = [pytest.mark.docker]

BUSYBOX = "crc/busybox:dev"
ROOM = 2  # networks the private engine has room for: a /27 pool cut into /28s
WAITS = "waits for network address space"


def on(engine: dict[str, str], *args: str, check: bool = True) -> str:
    """A docker command against the private engine; its output."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=120,
                          env={**os.environ, **engine}).stdout


def everything(engine: dict[str, str]) -> list[str]:
    """Every container and user network on the private engine (all of them this module's)."""
    containers = on(engine, "ps", "-aq").split()
    networks = [n for n in on(engine, "network", "ls", "--format", "{{.Name}}").split()
                if n not in ("bridge", "host", "none")]
    return [f"container:{c}" for c in containers] + [f"network:{n}" for n in networks]


def remove_everything(engine: dict[str, str]) -> None:
    for r in everything(engine):
        kind, _, name = r.partition(":")
        on(engine, *(["rm", "-f", name] if kind == "container" else ["network", "rm", name]), check=False)


@pytest.fixture(scope="module")
def engine(docker_engine: None) -> Iterator[dict[str, str]]:  # noqa: F811
    """The private engine's environment (DOCKER_HOST); stopped and purged after the module."""
    try:
        with small_engine(ROOM, (BUSYBOX,)) as mine:
            try:
                yield mine
            finally:
                remove_everything(mine)
    except EngineDidNotStart as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e} (CI runs as root with docker.io installed: it must start there)")
        pytest.skip(str(e))


@pytest.fixture
def state(tmp_path: Path, engine: dict[str, str]) -> Iterator[dict[str, str]]:
    """crc's environment for one test; afterwards the engine holds nothing (what a failed test left goes)."""
    d = tmp_path / "state"
    d.mkdir()
    yield {**engine, "CRC_STATE_DIR": str(d)}
    left = everything(engine)
    remove_everything(engine)
    assert not left, f"left on the engine: {left}"


def suites(tmp_path: Path, n: int, step: str = '["true"]') -> Path:
    """A file of `n` one-service suites, each with one test of one exec step."""
    path = tmp_path / "many.cr"
    path.write_text("\n".join(f'''suite "n{i}" {{
  service box {{ image "{BUSYBOX}" command ["sleep", "300"] }}
  test "t" {{ step a = exec box {step} }}
}}''' for i in range(n)) + "\n")
    return path


@pytest.mark.parametrize("where", [(), ("--workers", "1")], ids=["run", "cluster-worker"])
def test_more_suites_than_subnets_wait_for_each_other_and_all_pass(tmp_path: Path, state: dict[str, str],
                                                                   where: tuple[str, ...]) -> None:
    # On a cluster worker each suite has a runner of its own: they wait for each other all the same.
    watch = NetworkEvents(state)
    try:
        proc, rep = run_json(suites(tmp_path, 6), "-j", "6", *where, env=state)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        events = watch.of(f"crc-{rep['run_id']}-", destroyed=6)
    finally:
        watch.close()
    assert [t["status"] for t in rep["tests"]] == ["passed"] * 6
    assert len([e for e in events if e[1] == "create"]) == 6, events
    assert most_at_once(events) <= ROOM, events
    # -j 6 let all six try at once: four found no room and said that they wait (a worker's suites through it).
    assert proc.stdout.count(WAITS) >= 6 - ROOM, proc.stdout


def test_a_pool_held_by_networks_crc_did_not_make_is_exit_3_saying_what_to_change(
        tmp_path: Path, state: dict[str, str]) -> None:
    foreign = [f"foreign-{i}" for i in range(ROOM)]
    for f in foreign:
        on(state, "network", "create", f)
    try:
        full = subprocess.run(["docker", "network", "create", "one-too-many"], capture_output=True, text=True,
                              env={**os.environ, **state})
        assert full.returncode != 0 and "could not find an available" in full.stderr, full  # full indeed
        proc, rep = run_json(suites(tmp_path, 3), "-j", "3", env=state)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert [t["status"] for t in rep["tests"]] == ["error"] * 3
        for t in rep["tests"]:
            why = json.dumps(t)
            assert "non-overlapping IPv4 address pool" in why and "default-address-pools" in why, why
            assert "remove unused networks" in why, why
        assert "default-address-pools" in proc.stdout
        assert sorted(everything(state)) == sorted(f"network:{f}" for f in foreign)  # nothing of crc's
    finally:
        for f in foreign:
            on(state, "network", "rm", f, check=False)


def test_a_waiting_suite_takes_the_space_a_foreign_network_gives_back(tmp_path: Path, state: dict[str, str]) -> None:
    # Room for two; a foreign network holds one. Two suites whose steps wait for /tmp/go: one runs, the other
    # waits for address space, and gets it when the foreign network goes, while the first still holds its own.
    on(state, "network", "create", "foreign")
    hold = '["sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.1; done"]'
    src = suites(tmp_path, 2, hold)
    watch = NetworkEvents(state)
    proc = subprocess.Popen([sys.executable, "-m", "crc", "run", str(src), "--no-progress", "--pull", "never",
                             "-j", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **state})
    lines: queue.Queue[str] = queue.Queue()
    out: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")
    threading.Thread(target=read, daemon=True).start()
    try:
        while WAITS not in (line := lines.get(timeout=120)):
            out.append(line)
            assert line, "crc ended without waiting:\n" + "".join(out)
        out.append(line)
        before = watch.of("crc-", created=1)
        assert [a for _, a, _ in before] == ["create"], before  # one suite holds a network, the other waits
        on(state, "network", "rm", "foreign")
        during = watch.of("crc-", created=2)
        # The second network came while the first suite, still blocked on /tmp/go, held its own.
        assert [a for _, a, _ in during] == ["create", "create"], during
        while proc.poll() is None:  # release both suites (the second's container may still be starting)
            for c in on(state, "ps", "-q", "--filter", "label=io.crc.managed=1").split():
                on(state, "exec", c, "touch", "/tmp/go", check=False)
            try:
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
        while line := lines.get(timeout=60):
            out.append(line)
        assert proc.returncode == 0, "".join(out)
        assert "2 passed, 0 failed" in "".join(out)
        assert most_at_once(watch.of("crc-", destroyed=2)) == ROOM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        watch.close()
        on(state, "network", "rm", "foreign", check=False)
