"""A `crc run` SIGKILLed at any moment leaves nothing that `crc clean` (without --all) cannot remove.

The run is killed at 0.2 s steps from its start to past its end, on the real engine. Right after each kill
`crc clean` runs (as a CI script would); requests the engine was still serving for the dead run may finish
after that clean, so the lease of the dead run stays as a tombstone, and a later `crc clean` removes what
they created. The test fails if a clean ever keeps one of these runs' resources for want of a lease, or if
anything of them is left in the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dockerutil import ROOT, docker_engine  # noqa: F401  (fixture)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SUITES = """
suite "kill-a" {
  timeout 1m
  service web {
    image "crc/busybox:dev"
    command ["sh", "-c", "echo up; exec httpd -f -p 8080"]
    ready log "up" within 20s
  }
  service side {
    image "crc/busybox:dev"
    command ["sh", "-c", "echo up; exec sleep 3600"]
    needs web
    ready log "up" within 20s
  }
  test "reaches web" {
    step get = run "crc/busybox:dev" ["sh", "-c", "wget -qO- http://web:8080/ || true"]
    expect get.exit == 0
  }
}

suite "kill-b" {
  timeout 1m
  service one {
    image "crc/busybox:dev"
    command ["sh", "-c", "echo up; exec sleep 3600"]
    ready log "up" within 20s
  }
  test "execs" {
    step a = exec one ["echo", "hi"]
    expect a.stdout == "hi\\n"
  }
}
"""


def _crc(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crc", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def _resources(runs: set[str]) -> list[str]:
    """Containers, networks and volumes of `runs` as the docker CLI sees them."""
    out = []
    for cmd, name in ((["ps", "-a"], "Names"), (["network", "ls"], "Name"), (["volume", "ls"], "Name")):
        res = subprocess.run(["docker", *cmd, "--filter", "label=io.crc.managed=1", "--format",
                              f'{{{{.{name}}}}}\t{{{{.Label "io.crc.run"}}}}'],
                             capture_output=True, text=True, check=True)
        for line in res.stdout.splitlines():
            name, _, run = line.partition("\t")
            if run in runs:
                out.append(f"{cmd[0]}:{name}")
    return out


def _lease(path: Path) -> dict[str, object]:
    info = json.loads(path.read_text())  # never empty nor torn, even when crc is killed while writing it
    assert isinstance(info, dict)
    return info


def test_sigkill_at_any_moment_then_clean_leaves_nothing(tmp_path: Path, docker_engine: None) -> None:  # noqa: F811
    cr = tmp_path / "kill.cr"
    # Several suites: their networks and containers are created concurrently, so kills land mid-request.
    cr.write_text("".join(SUITES.replace('suite "kill-', f'suite "k{i}-') for i in range(2)), encoding="utf-8")
    state = tmp_path / "state"
    # A private state dir: these cleans only ever remove resources of this test's own runs.
    env = {**os.environ, "CRC_STATE_DIR": str(state)}
    leases = state / "leases"

    # How long a whole run takes here, to step the kills through start-up and teardown.
    t0 = time.monotonic()
    whole = _crc("run", str(cr), "--no-progress", "--pull", "never", env=env)
    duration = time.monotonic() - t0
    assert whole.returncode == 0, whole.stdout + whole.stderr
    runs: set[str] = {p.stem for p in leases.glob("*.lease")}

    done = set(runs)  # runs already cleaned (the lease of a run that ended stays until a clean)
    late = 0  # kills after which something appeared after the first clean (requests the engine finished late)
    moments = [round(0.2 * i, 1) for i in range(1, int(duration / 0.2) + 3)]
    try:
        for at in moments:
            proc = subprocess.Popen([sys.executable, "-m", "crc", "run", str(cr), "--no-progress", "--pull",
                                     "never"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                proc.wait(at)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
            # Every resource is created after its run's lease: the lease files name every run that may have any.
            runs |= {p.stem for p in leases.glob("*.lease")}
            # Runs that died without ending (a run that ended had all its requests answered).
            killed = {p.stem for p in leases.glob("*.lease") if "ended" not in _lease(p)} - done
            cleans = 0
            deadline = time.monotonic() + 120
            while True:
                clean = _crc("clean", env=env)
                cleans += 1
                mine = [line for line in clean.stdout.splitlines() if any(r in line for r in runs)]
                assert not [line for line in mine if line.startswith("kept")], \
                    f"killed at {at}s: a clean kept this test's resources:\n{clean.stdout}"
                assert clean.returncode == 0, f"killed at {at}s:\n{clean.stdout}{clean.stderr}"
                if cleans == 1:
                    # What the engine does when it finishes a dead run's request after that clean: a resource
                    # of the run appears. Made here for each run killed this time, so it never depends on luck.
                    for run in killed:
                        subprocess.run(["docker", "network", "create", "--label", "io.crc.managed=1", "--label",
                                        f"io.crc.run={run}", f"crc-{run}-late"], capture_output=True, check=True)
                    if killed:
                        continue
                if not _resources(runs):
                    break
                assert time.monotonic() < deadline, f"killed at {at}s: left {_resources(runs)}"
            late += cleans > 2 or (cleans > 1 and not killed)
            done |= killed
        final = _crc("clean", env=env)
        assert final.returncode == 0 and not _resources(runs), final.stdout
        # The tombstones of killed runs are still there (within their grace), ready for late resources.
        tombstones = [json.loads(p.read_text()) for p in leases.glob("*.lease")]
        assert tombstones and all("dead_since" in t or "ended" in t for t in tombstones)
        print(f"{len(moments)} kills from 0.2 s to {moments[-1]} s (a whole run: {duration:.1f} s); "
              f"{late} needed a second clean; {len(runs)} runs; nothing left")
    finally:
        for r in _resources(runs):  # only this test's runs, whatever failed
            kind, _, name = r.partition(":")
            cmd = {"ps": ["rm", "-f"], "network": ["network", "rm"], "volume": ["volume", "rm", "-f"]}[kind]
            subprocess.run(["docker", *cmd, name], capture_output=True)
