"""Smoke test of benchmarks/peers.py: it runs at its smallest size, prints its ratio lines and cleans up.

No timing is asserted (timings belong to the benchmark's own report); peers whose tool is missing are skipped
by the benchmark itself, which is checked too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from dockerutil import ROOT, docker_engine  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SCRIPT = ROOT / "benchmarks" / "peers.py"


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


def leftovers(label: str) -> list[str]:
    """Containers and networks still carrying this benchmark run's label."""
    found = []
    for cmd in (["docker", "ps", "-aq"], ["docker", "network", "ls", "-q"]):
        out = subprocess.run([*cmd, "--filter", f"label=io.crc.bench={label}"], capture_output=True, text=True)
        found += out.stdout.split()
    return found


def test_smoke_run_prints_ratios_and_cleans_up(docker_engine: None) -> None:  # noqa: F811
    proc = bench("--smoke")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"^ratio crc/floor\s+N=1: \d+\.\d+x", proc.stdout, re.M), out
    for name in ("compose/crc", "testcontainers/crc"):
        # A number when the peer is installed, "n/a (... skipped)" with the reason printed when it is not.
        line = re.search(rf"^ratio {name}\s+N=1: (\d+\.\d+x|n/a \(\w+ skipped\))", proc.stdout, re.M)
        assert line, out
        if "n/a" in line.group(1):
            assert re.search(rf"^skip {name.split('/')[0]}: .+", proc.stdout, re.M), out
    assert re.search(r"^ratio scaling -j 1/-j 2: \d+\.\d+x", proc.stdout, re.M), out
    assert re.search(r"^peak RSS crc, 1 suite: \d+ MiB", proc.stdout, re.M), out
    label = re.search(r"io\.crc\.bench=(\w+)", proc.stdout)
    assert label, out
    assert leftovers(label.group(1)) == []


def test_a_missing_peer_is_skipped_with_its_reason(docker_engine: None) -> None:  # noqa: F811
    proc = bench("--smoke", "--peers", "floor,crc,compose", "--no-scaling",
                 env={"CRC_BENCH_COMPOSE": "no-such-docker-compose"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^skip compose: no-such-docker-compose is not installed", proc.stdout, re.M), proc.stdout
    assert re.search(r"^ratio compose/crc\s+N=1: n/a \(compose skipped\)", proc.stdout, re.M), proc.stdout
    assert re.search(r"^ratio crc/floor\s+N=1: \d+\.\d+x", proc.stdout, re.M), proc.stdout
