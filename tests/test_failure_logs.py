"""Logs where a failure is read: the terminal, the JSON report and JUnit show a failed test's services' logs
without --record; `--logs` streams them; `crc logs` prints a reported or recorded service's whole log."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerutil import crc, crc_resources, docker_engine, remove_resources  # noqa: F401

pytestmark = [pytest.mark.docker]

SOURCE = """suite "logs-fail" {
  service api {
    image "crc/busybox:dev"
    command ["sh", "-c", "echo on-stderr >&2; for i in $(seq 1 30); do echo line-$i; done; echo 'KeyError: sku'; sleep 100"]
    ready log "KeyError"
  }
  service quiet {
    image "crc/busybox:dev"
    command ["sh", "-c", "echo quiet-up; sleep 100"]
  }
  test "crashes" {
    step s = exec api ["sh", "-c", "exit 3"]
  }
  test "fine" {
    step s = exec quiet ["true"]
  }
}
"""


@pytest.fixture
def src(docker_engine: None, tmp_path: Path) -> Iterator[Path]:  # noqa: F811
    f = tmp_path / "l.cr"
    f.write_text(SOURCE)
    yield f
    left = crc_resources("logs-fail")
    remove_resources(left)
    assert not left


def test_a_failed_tests_service_logs_are_in_every_report(src: Path) -> None:
    proc = crc("run", str(src), "--no-progress", "--pull", "never", "--junit", "j.xml", cwd=src.parent)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "log of service `api` (last lines):" in out and "    | KeyError: sku" in out
    assert "    | line-30" in out and "    | line-5\n" not in out  # the last lines only
    assert "quiet-up" not in out  # the passing test's service is not shown
    case = next(c for c in ET.parse(src.parent / "j.xml").iter("testcase") if c.get("name") == "crashes")
    sysout = case.find("system-out")
    assert sysout is not None and "KeyError: sku" in (sysout.text or "")
    fine = next(c for c in ET.parse(src.parent / "j.xml").iter("testcase") if c.get("name") == "fine")
    assert fine.find("system-out") is None


def test_json_keeps_whole_logs_and_crc_logs_prints_them(src: Path) -> None:
    proc = crc("run", str(src), "--no-progress", "--pull", "never", "--json", "r.json", cwd=src.parent)
    assert proc.returncode == 1
    data = json.loads((src.parent / "r.json").read_text())
    tests = {t["name"]: t for t in data["tests"]}
    assert "KeyError: sku" in tests["crashes"]["logs"]["api"] and tests["fine"]["logs"] == {}
    whole = crc("logs", "r.json", "api", cwd=src.parent)
    assert whole.returncode == 0
    assert "line-1\n" in whole.stdout and "line-30" in whole.stdout and "KeyError: sku" in whole.stdout
    assert "on-stderr" in whole.stdout  # both streams
    both = crc("logs", "r.json", cwd=src.parent)
    assert "==> logs-fail/api <==" in both.stdout and "==> logs-fail/quiet <==" in both.stdout
    miss = crc("logs", "r.json", "apy", cwd=src.parent)
    assert miss.returncode == 2 and "did you mean `api`?" in miss.stderr


def test_logs_stream_prefixed_by_service(src: Path) -> None:
    proc = crc("run", str(src), "--no-progress", "--pull", "never", "--logs", cwd=src.parent)
    assert proc.returncode == 1
    assert "api | line-1\n" in proc.stdout and "quiet | quiet-up" in proc.stdout


def test_crc_logs_refuses_what_is_not_a_report(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"schema": "other"}')
    proc = crc("logs", "x.json", cwd=tmp_path)
    assert proc.returncode == 2 and "is not a crc JSON report" in proc.stderr
    (tmp_path / "y.bin").write_bytes(b"\x00garbage")
    proc = crc("logs", "y.bin", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def _running(suite: str) -> list[str]:
    import subprocess

    out = subprocess.run(["docker", "ps", "--filter", f"label=io.crc.suite={suite}", "--format", "{{.Names}}"],
                         capture_output=True, text=True).stdout
    return sorted(out.split())


def test_keep_leaves_a_failed_suite_running_until_crc_clean(src: Path) -> None:
    env = {"CRC_STATE_DIR": str(src.parent / "state")}
    passing = src.parent / "ok.cr"
    passing.write_text('suite "logs-fail-ok" {\n  service s { image "crc/busybox:dev" command ["sleep", "100"] }\n'
                       '  test "t" { step a = exec s ["true"] }\n}\n')
    proc = crc("run", str(src), str(passing), "--no-progress", "--pull", "never", "--keep", cwd=src.parent, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "kept suite `logs-fail` running" in proc.stdout and "api: docker exec -it " in proc.stdout
    assert "kept suite `logs-fail-ok`" not in proc.stdout
    kept = _running("logs-fail")
    assert len(kept) == 2 and _running("logs-fail-ok") == []
    # The next run's reap leaves them; `crc clean` removes them.
    again = crc("run", str(passing), "--no-progress", "--pull", "never", cwd=src.parent, env=env)
    assert again.returncode == 0 and _running("logs-fail") == kept
    clean = crc("clean", cwd=src.parent, env=env)
    assert clean.returncode == 0 and _running("logs-fail") == []
    every = crc("run", str(passing), "--no-progress", "--pull", "never", "--keep", "all", cwd=src.parent, env=env)
    assert every.returncode == 0 and len(_running("logs-fail-ok")) == 1
    assert crc("clean", cwd=src.parent, env=env).returncode == 0 and _running("logs-fail-ok") == []
