"""Shared helpers for tests that need the real Docker engine and the crc test images."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
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


class NetworkEvents:
    """The engine's network create/destroy events as they happen (a live `docker events`: the engine keeps
    only its last 256 events, too few to read back a busy run's afterwards)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        """`env`: the environment of `docker events` (DOCKER_HOST names another engine)."""
        # --since: what happens before the stream is set up is replayed, not missed.
        self.proc = subprocess.Popen(["docker", "events", "--since", f"{time.time():.3f}", "--filter", "type=network",
                                      "--format", "{{json .}}"], stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.events: list[tuple[int, str, str]] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            e = json.loads(line)
            name = e.get("Actor", {}).get("Attributes", {}).get("name", "")
            if e["Action"] in ("create", "destroy"):
                with self.changed:
                    self.events.append((int(e["timeNano"]), e["Action"], name))
                    self.changed.notify_all()

    def of(self, prefix: str, destroyed: int = 0, created: int = 0, timeout: float = 120
           ) -> list[tuple[int, str, str]]:
        """The events of networks named `prefix...`, once `destroyed` of them were destroyed and `created`
        created (or `timeout` passed)."""
        def mine() -> list[tuple[int, str, str]]:
            return sorted(e for e in self.events if e[2].startswith(prefix))

        def count(action: str) -> int:
            return sum(a == action for _, a, _ in mine())
        with self.changed:
            self.changed.wait_for(lambda: count("destroy") >= destroyed and count("create") >= created, timeout)
            return mine()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def most_at_once(events: list[tuple[int, str, str]]) -> int:
    """The most networks that existed at once, from `NetworkEvents.of`'s create/destroy events."""
    alive = most = 0
    for _, action, _ in events:
        alive += 1 if action == "create" else -1
        most = max(most, alive)
    return most


class EngineDidNotStart(RuntimeError):
    """`small_engine` could not start its dockerd (not root, no dockerd): the reason."""


def _free_octet() -> int:
    """An X for which neither 10.151.X.0/24 (a small engine's pool) nor 10.152.X.0/24 (its bridge) meets a
    route of this host (the shared engine's 10.150.0.0/16, another engine's bridge or networks)."""
    routes = []
    out = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if (dest := line.split()[0]) != "default":
            routes.append(ipaddress.ip_network(dest, strict=False))
    for x in secrets.SystemRandom().sample(range(256), 256):
        mine = (ipaddress.ip_network(f"10.151.{x}.0/24"), ipaddress.ip_network(f"10.152.{x}.0/24"))
        if not any(m.overlaps(r) for m in mine for r in routes):
            return x
    raise EngineDidNotStart("no free 10.151.X.0/24 on this host for a small engine's address pool")


@contextlib.contextmanager
def small_engine(room: int, images: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """A private dockerd (`.ci/engine-b` under a name of its own) whose default address pool has room for
    `room` (a power of two) /28 networks, with `images` loaded from the shared engine; yields the environment
    that reaches it (DOCKER_HOST). Stopped, and its data and exec roots deleted, on leaving, whatever is on it."""
    name = "p" + secrets.token_hex(2)  # its bridge docker-pXXXX0 stays within an interface name's 15 characters
    x = _free_octet()
    script = ["bash", str(ROOT / ".ci" / "engine-b")]
    env = {**os.environ, "ENGINE": name, "ENGINE_POOL": f"10.151.{x}.0/{28 - (room.bit_length() - 1)}",
           "ENGINE_POOL_SIZE": "28", "ENGINE_BRIDGE_ADDR": f"10.152.{x}.1/24", "ENGINE_IMAGES": " ".join(images)}
    try:
        started = subprocess.run([*script, "start"], capture_output=True, text=True, env=env, timeout=300)
        if started.returncode != 0:
            raise EngineDidNotStart(f"a private dockerd could not start: {started.stderr.strip()}")
        yield {"DOCKER_HOST": f"unix:///run/docker-{name}.sock"}
    finally:
        subprocess.run([*script, "stop", "--purge"], capture_output=True, text=True, env=env, timeout=300)
