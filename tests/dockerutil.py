"""Shared helpers for tests that need the real Docker engine and the crc test images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ("crc/busybox:dev", "crc/python:dev", "crc/demo:dev")


def engine_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip (with the reason) when no engine answers; `.ci/setup` starts one, so CI never skips."""
    if not engine_answers():
        if os.environ.get("CI"):
            pytest.fail("no Docker engine answers in CI: .ci/setup should have started one")
        pytest.skip("no Docker engine answers (run `bash .ci/setup`)")
    missing = [i for i in IMAGES if subprocess.run(["docker", "image", "inspect", i],
                                                   capture_output=True).returncode != 0]
    if missing:
        pytest.fail(f"test images missing: {missing}; build them with `bash .ci/images/build`")


def crc(*args: str, cwd: Path = ROOT, timeout: float = 600, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run the crc CLI as a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "crc", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def run_json(path: Path, *extra: str, cwd: Path = ROOT, env: dict[str, str] | None = None
             ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    report = path.parent / (path.stem + ".report.json")
    proc = crc("run", str(path), "--no-progress", "--pull", "never", "--json", str(report), *extra, cwd=cwd,
               env=env)
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc, data


def crc_resources(tag: str | None = None) -> list[str]:
    """Containers and networks carrying crc's label, as `docker` sees them; with `tag`, only those of suites
    whose name contains it (so tests are not confused by other crc runs on the same engine)."""
    out = []
    for kind in ("ps", "network"):
        cmd = ["docker", "ps", "-a"] if kind == "ps" else ["docker", "network", "ls"]
        res = subprocess.run([*cmd, "--filter", "label=io.crc.managed=1", "--format",
                              '{{.ID}}\t{{.Label "io.crc.suite"}}'], capture_output=True, text=True)
        for line in res.stdout.splitlines():
            rid, _, suite = line.partition("\t")
            if tag is None or tag in suite:
                out.append(f"{kind}:{rid}")
    return out


def remove_resources(ids: list[str]) -> None:
    """Force-remove resources listed by `crc_resources` (a failed test must not pollute the next)."""
    for r in ids:
        kind, _, rid = r.partition(":")
        cmd = ["docker", "rm", "-f", rid] if kind == "ps" else ["docker", "network", "rm", rid]
        subprocess.run(cmd, capture_output=True)
