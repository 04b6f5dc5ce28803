"""Suite networks on the real engine: `-j` bounds how many exist at once; an internal network has no route out
while crc's receiver still gets its spans; host access (privileged, host network, binds) is applied as written.

Nothing here sends traffic off this machine: the only address outside a suite's network that a container is
asked to reach is a listener this test starts on another network's gateway, on this host.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerutil import crc, crc_resources, docker_engine, remove_resources, run_json  # noqa: F401

pytestmark = [pytest.mark.docker]

BUSYBOX = "crc/busybox:dev"
TAG = {"tag": ""}


@pytest.fixture
def state(tmp_path: Path) -> dict[str, str]:
    d = tmp_path / "state"
    d.mkdir()
    return {"CRC_STATE_DIR": str(d)}


@pytest.fixture(autouse=True)
def no_leftovers(docker_engine: None) -> Iterator[None]:  # noqa: F811
    TAG["tag"] = "h" + secrets.token_hex(4)
    yield
    left = crc_resources(TAG["tag"])
    remove_resources(left)
    assert not left, f"crc left resources behind: {left}"


def write(tmp_path: Path, text: str, name: str = "t.cr") -> Path:
    p = tmp_path / name
    p.write_text(re.sub(r'suite "([^"]+)"', lambda m: f'suite "{m.group(1)} {TAG["tag"]}"', text))
    return p


class NetworkEvents:
    """The engine's network create/destroy events as they happen (a live `docker events`: the engine keeps
    only its last 256 events, too few to read back a busy run's afterwards)."""

    def __init__(self) -> None:
        # --since: what happens before the stream is set up is replayed, not missed.
        self.proc = subprocess.Popen(["docker", "events", "--since", f"{time.time():.3f}", "--filter", "type=network",
                                      "--format", "{{json .}}"], stdout=subprocess.PIPE, text=True)
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

    def of(self, prefix: str, destroyed: int, timeout: float = 120) -> list[tuple[int, str, str]]:
        """The events of networks named `prefix...`, once `destroyed` of them were destroyed."""
        def mine() -> list[tuple[int, str, str]]:
            return sorted(e for e in self.events if e[2].startswith(prefix))
        with self.changed:
            self.changed.wait_for(lambda: sum(a == "destroy" for _, a, _ in mine()) >= destroyed, timeout)
            return mine()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def test_jobs_bound_how_many_suite_networks_exist_at_once(tmp_path: Path, state: dict[str, str]) -> None:
    body = "\n".join(f"""
suite "n{i}" {{
  service box {{ image "{BUSYBOX}" command ["sleep", "300"] }}
  test "t" {{ step a = exec box ["true"] }}
}}""" for i in range(24))
    src = write(tmp_path, body)
    watch = NetworkEvents()
    try:
        proc, rep = run_json(src, "-j", "3", env=state)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert [t["status"] for t in rep["tests"]] == ["passed"] * 24
        events = watch.of(f"crc-{rep['run_id']}-", destroyed=24)
    finally:
        watch.close()
    assert len([e for e in events if e[1] == "create"]) == 24
    alive, most = 0, 0
    for _, action, _ in events:
        alive += 1 if action == "create" else -1
        most = max(most, alive)
    assert most == 3, events  # -j 3: three at once, never more
    assert alive == 0
