"""Spans belong to the suite whose network they came from, not to the suite their attributes name.

A hostile service in a neighbouring suite sends, all through the victim's test, spans with status error
whose resource attributes claim to be the victim suite's (`crc.run`/`crc.suite`, which it reads from its
own environment); the victim's `expect no span { status error }` must still pass, and the forged spans
must be recorded as the attacker's."""

from __future__ import annotations

from pathlib import Path

import pytest
from dockerutil import docker_engine, run_json  # noqa: F401  (fixture)

pytestmark = pytest.mark.docker

# Every 0.2 s for a minute: a span with status error, its resource claiming every suite key of this run.
ATTACK = r"""
import json, os, time, urllib.request
attrs = dict(kv.split("=", 1) for kv in os.environ["OTEL_RESOURCE_ATTRIBUTES"].split(","))
url = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] + "/v1/traces"
print("attacking", flush=True)
for i in range(300):
    for key in ("s0", "s1"):
        res = [{"key": "service.name", "value": {"stringValue": "quiet"}},
               {"key": "crc.run", "value": {"stringValue": attrs["crc.run"]}},
               {"key": "crc.suite", "value": {"stringValue": key}}]
        span = {"traceId": "%032x" % (i + 1), "spanId": "%016x" % (i + 1), "name": "forged", "kind": 2,
                "startTimeUnixNano": str(time.time_ns()), "endTimeUnixNano": str(time.time_ns()),
                "status": {"code": 2, "message": "injected"}}
        doc = {"resourceSpans": [{"resource": {"attributes": res}, "scopeSpans": [{"spans": [span]}]}]}
        req = urllib.request.Request(url, json.dumps(doc).encode(), {"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=5).read()
        except Exception as e:
            print("refused", e, flush=True)
    time.sleep(0.2)
time.sleep(3600)
"""


def test_a_neighbour_cannot_forge_a_suites_spans(tmp_path: Path, docker_engine: None) -> None:  # noqa: F811
    (tmp_path / "attack.py").write_text(ATTACK, encoding="utf-8")
    src = tmp_path / "forge.cr"
    src.write_text('''
suite "victim" {
  service quiet {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
  }
  test "no errors" {
    step wait = exec quiet ["sleep", "6"]
    expect no span { status error }
  }
}

suite "attacker" {
  service evil {
    image "crc/python:dev"
    volume "attack.py" -> "/attack.py" ro
    command ["python3", "/attack.py"]
    ready log "attacking" within 30s
  }
  test "attacks" {
    step idle = exec evil ["sleep", "8"]  # the attacker lives through the victim's test
  }
}
''', encoding="utf-8")
    proc, report = run_json(src, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tests = {t["suite"]: t for t in report["tests"]}
    assert tests["victim"]["status"] == "passed"
    wait = next(n for n in report["nodes"] if n["label"] == "wait")
    forged = [s for s in report["spans"] if s["name"] == "forged"]
    # The attack landed inside the victim's test: otherwise this test would prove nothing.
    assert any(wait["started_ns"] <= s["received_ns"] <= wait["ended_ns"] for s in forged), len(forged)
    # Every forged span is recorded as the attacker's (suite key s1), whatever it claimed.
    assert {s["resource"]["crc.suite"] for s in forged} == {"s1"}
