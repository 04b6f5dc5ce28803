"""http steps against real containers: crc reaches a service at its address on the suite network, the
instrumented demo service joins the trace crc started for the step, exec steps get the same context in their
environment, and a recording of the run replays to the same verdicts."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from crc.runtime.recording import read
from dockerutil import crc, crc_resources, docker_engine, run_json  # noqa: F401

pytestmark = [pytest.mark.docker]


@pytest.fixture
def tag(docker_engine: None) -> Any:  # noqa: F811
    t = "h" + secrets.token_hex(4)
    yield t
    assert not crc_resources(t), "crc left resources behind"


SOURCE = """
suite "http {tag}" {{
  settle 200ms
  service api {{
    image "crc/demo:dev"
    ready http 8080 "/healthz" within 30s
  }}
  service box {{ image "crc/python:dev" command ["sleep", "300"] }}

  test "orders" {{
    step place = http POST "http://api:8080/orders?sku=7" json {{ note: "x" }}
    expect place.status == 200
    expect place.json("$.sku") == 7
    capture id = place.json("$.id")
    step again = http GET "http://api:8080/orders?sku=8" headers {{ "X-Order": id }}
    expect again.body contains "created"
    span request = "POST /orders" {{ in place kind server attr "order.id" == id }}
    span check = "validate" {{ parent request }}
    expect count(request) == 1
    expect request.attr["order.id"] == "{{{{ id }}}}"
  }}

  test "exec gets the context" {{
    step env = exec box ["sh", "-c", "echo $TRACEPARENT"]
    expect env.stdout ~ /^00-[0-9a-f]{{32}}-[0-9a-f]{{16}}-01$/
  }}

  test "refused" {{
    step r = http GET "http://api:9/"
  }}
}}
"""


def test_http_steps_traces_and_replay(tmp_path: Path, tag: str) -> None:
    src = tmp_path / "h.cr"
    src.write_text(SOURCE.format(tag=tag))
    rec = tmp_path / "h.rec"
    proc, rep = run_json(src, "--record", str(rec))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    status = {t["name"]: t["status"] for t in rep["tests"]}
    assert status == {"orders": "passed", "exec gets the context": "passed", "refused": "failed"}, proc.stdout
    nodes = {n["label"]: n for n in rep["nodes"]}
    assert nodes["r"]["message"] == "step `r`: connection refused by api:9"

    recording = read(rec)
    results = {r.node.rsplit("::", 1)[1]: r for r in recording.nodes}
    place = results["step:place"]
    assert place.detail["output"]["status"] == 200
    sent = dict(place.detail["request"]["headers"])
    trace = place.detail["trace"]
    assert sent["traceparent"] == f"00-{trace['trace_id']}-{trace['span_id']}-01"
    # The demo service continued the step's trace: its server span is a child of the step's span.
    server = [s for s in recording.spans if s.name == "POST /orders"]
    assert [(s.trace_id, s.parent_span_id) for s in server] == [(trace["trace_id"], trace["span_id"])]
    env_out = results["step:env"].detail["output"]["stdout"].strip()
    assert env_out == "00-{trace_id}-{span_id}-01".format(**results["step:env"].detail["trace"])

    replayed = crc("replay", str(rec), "--json", str(tmp_path / "replay.json"))
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    again = json.loads((tmp_path / "replay.json").read_text())
    assert {t["name"]: t["status"] for t in again["tests"]} == status
    assert {n["node"]: n["status"] for n in again["nodes"]} == {n["node"]: n["status"] for n in rep["nodes"]}


POLL = """
suite "poll {tag}" {{
  service box {{ image "crc/busybox:dev" command ["sh", "-c", "rm -f /tmp/n; sleep 300"] }}
  test "a counter reaches 3" {{
    step tick = exec box ["sh", "-c", "n=$(cat /tmp/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/n; echo $n"]
    expect tick.stdout == "3\\n" eventually within 60s every 50ms
    capture n = tick.stdout ~ /(\\d+)/
    step show = exec box ["echo", n]
    expect show.stdout == "3\\n"
  }}
  test "never" {{
    step t = exec box ["echo", "1"]
    expect t.stdout == "2\\n" eventually within 1s every 100ms
  }}
}}
"""


def test_eventually_polls_records_every_attempt_and_replays(tmp_path: Path, tag: str) -> None:
    src = tmp_path / "p.cr"
    src.write_text(POLL.format(tag=tag))
    rec = tmp_path / "p.rec"
    proc, rep = run_json(src, "--record", str(rec))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert {t["name"]: t["status"] for t in rep["tests"]} == {"a counter reaches 3": "passed", "never": "failed"}
    nodes = {n["label"]: n for n in rep["nodes"]}
    never = nodes['t.stdout == "2\\n"']["message"]
    assert "eventually:" in never and "attempt(s)" in never, never
    recording = read(rec)
    tick = next(r for r in recording.nodes if r.node.endswith("step:tick"))
    outs = [a["output"]["stdout"] for a in tick.detail["attempts"]]
    assert outs == ["1\n", "2\n", "3\n"] and tick.detail["eventually"]["held"] is True
    # Replay finds the attempt where the expectation held, and the capture read from it.
    replayed = crc("replay", str(rec), "--json", str(tmp_path / "replay.json"))
    again = json.loads((tmp_path / "replay.json").read_text())
    assert {n["node"]: n["status"] for n in again["nodes"]} == {n["node"]: n["status"] for n in rep["nodes"]}, \
        replayed.stdout
    # Edited to hold at the second attempt, polling stops there on replay: the step's result is that attempt's.
    edited = tmp_path / "edited.cr"
    edited.write_text(POLL.format(tag=tag).replace(
        'expect tick.stdout == "3\\n" eventually within 60s every 50ms',
        'expect tick.stdout == "2\\n" eventually within 60s every 50ms\n    expect tick.stdout == "3\\n"'))
    replayed = crc("replay", str(rec), str(edited), "--json", str(tmp_path / "edited.json"))
    nodes = {n["label"]: n for n in json.loads((tmp_path / "edited.json").read_text())["nodes"]}
    assert nodes['tick.stdout == "2\\n"']["status"] == "passed", replayed.stdout
    assert nodes['tick.stdout == "3\\n"']["status"] == "failed", replayed.stdout
    stops = json.loads((tmp_path / "edited.json").read_text())["replay"]["stop_points"]
    assert [s["why"].split(":")[0] for s in stops] == ["the `eventually` condition now holds at attempt 2 of the 3 "
                                                      "recorded"], replayed.stdout
    assert "1 polled step(s) would stop polling at another attempt:" in replayed.stdout


@pytest.mark.slow
def test_the_benchmark_runs_at_its_smallest_size(docker_engine: None) -> None:  # noqa: F811
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "benchmarks/http_step.py", "--smoke"], capture_output=True, text=True,
                          timeout=900, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in ("ratio exec/http", "one attempt beyond", "ratio alone/concurrent"):
        assert line in proc.stdout, proc.stdout
