"""`crc run --shard` and the critical path end to end on the real engine: the shards' reports together hold
every test exactly once, balanced by the first run's durations; each report names its critical path."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from dockerutil import crc, crc_resources, docker_engine, remove_resources  # noqa: F401

pytestmark = [pytest.mark.docker]


@pytest.fixture(autouse=True)
def no_leftovers(docker_engine: None) -> Any:  # noqa: F811
    tag = "sh" + secrets.token_hex(4)
    yield tag
    left = crc_resources(tag)
    remove_resources(left)
    assert not left, f"crc left resources behind: {left}"


def test_shards_cover_every_test_once_with_a_critical_path(tmp_path: Path, no_leftovers: str) -> None:
    tag = no_leftovers
    tests = "\n".join(f'  test "t{i}" {{ step s = exec box ["sleep", "0.{i}"] }}' for i in range(4))
    src = tmp_path / "s.cr"
    src.write_text("\n".join(f'suite "{s} {tag}" {{\n  service box {{ image "crc/busybox:dev" command ["sleep", '
                             f'"300"] }}\n{tests}\n}}' for s in ("one", "two")) + "\n")
    env = {"CRC_STATE_DIR": str(tmp_path / "state")}
    full = tmp_path / "full.json"
    proc = crc("run", str(src), "--no-progress", "--pull", "never", "--json", str(full), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(full.read_text())
    everything = sorted((t["suite"], t["name"]) for t in data["tests"])
    assert len(everything) == 8
    # The critical path of this run: a service, then its suite's steps (tests sharing a service run in order).
    cp = data["critical_path"]
    kinds = [n["kind"] for n in cp["nodes"]]
    assert kinds[0] == "service" and "step" in kinds, cp
    assert 0 < cp["duration_s"] <= cp["wall_s"]
    assert "critical path (" in proc.stdout

    got: list[tuple[str, str]] = []
    for i in (1, 2, 3):
        out = tmp_path / f"shard{i}.json"
        proc = crc("run", str(src), "--no-progress", "--pull", "never", "--shard", f"{i}/3", "--shard-durations",
                   str(full), "--json", str(out), env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"shard {i}/3: " in proc.stderr and f"balanced by the durations in {full}" in proc.stderr
        rep = json.loads(out.read_text())
        assert rep["shard"]["index"] == i and rep["shard"]["count"] == 3
        got += [(t["suite"], t["name"]) for t in rep["tests"] if t["status"] != "skipped"]
        assert rep["tests"], rep
    assert sorted(got) == everything
