"""crc's own trace, exported by the SDK's real OTLP exporters into crc's own receiver, and `crc spans`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from crc.runtime.otlp import OtlpReceiver
from crc.runtime.results import FAILED, PASSED, NodeResult, RunResult
from crc.runtime.results import TestResult as TResult
from crc.runtime.spans import Span
from crc.runtime.telemetry import ExportFailed, TelemetryOptions, export_run, resolve
from dockerutil import ROOT, crc, docker_engine  # noqa: F401


def _result() -> tuple[RunResult, dict[str, dict[str, Any]]]:
    t0 = 1_700_000_000_000_000_000
    ms = 1_000_000
    nodes = {
        "s::service:1": NodeResult("s::service:1", "service", PASSED, "", t0, t0 + 100 * ms),
        "s::t::step:1": NodeResult("s::t::step:1", "step", PASSED, "", t0 + 100 * ms, t0 + 150 * ms),
        "s::t::assert:1": NodeResult("s::t::assert:1", "assert", FAILED, "no", t0 + 150 * ms, t0 + 151 * ms),
    }
    labels = {
        "s::service:1": {"kind": "service", "label": "db", "suite": "s", "test": None, "loc": "f.cr:2:3"},
        "s::t::step:1": {"kind": "step", "label": "put", "suite": "s", "test": "t", "loc": "f.cr:4:5"},
        "s::t::assert:1": {"kind": "assert", "label": "put.exit == 1", "suite": "s", "test": "t", "loc": "f.cr:5:5"},
    }
    tests = (TResult("s", "t", FAILED, 0.051, ("f.cr:5:5: no",), ("s::t::assert:1", "s::t::step:1")),)
    return RunResult("r1", t0 - ms, t0 + 152 * ms, tests, nodes, ("f.cr",)), labels


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_trace_reaches_a_receiver_with_its_tree_and_times(protocol: str) -> None:
    got: list[Span] = []

    async def main() -> int:
        async with OtlpReceiver(on_spans=got.extend) as rx:
            ep = await rx.listen("127.0.0.1")
            url = ep.grpc_url if protocol == "grpc" else ep.http_url
            result, labels = _result()
            n = await anyio.to_thread.run_sync(
                lambda: export_run(result, labels, TelemetryOptions("otlp", url, protocol)))
            await rx.wait_for(lambda spans: len(spans) >= n, timeout=60)
            return n

    n = anyio.run(main)
    assert n == 6
    by_name = {s.name: s for s in got}
    assert set(by_name) == {"crc run", "suite s", "test t", "service db", "step put", "check put.exit == 1"}
    parent = {s.name: next((p.name for p in got if p.span_id == s.parent_span_id), None) for s in got}
    assert parent == {"crc run": None, "suite s": "crc run", "test t": "suite s", "service db": "suite s",
                      "step put": "test t", "check put.exit == 1": "test t"}
    assert len({s.trace_id for s in got}) == 1
    assert by_name["step put"].start_ns == 1_700_000_000_100_000_000
    assert by_name["step put"].duration_ns == 50_000_000
    assert by_name["check put.exit == 1"].status == "error"
    assert by_name["crc run"].status == "error"  # a test failed
    assert by_name["step put"].status == "ok"
    assert by_name["step put"].service == "crc"
    assert by_name["step put"].attributes["crc.loc"] == "f.cr:4:5"


def test_export_to_nowhere_raises_export_failed(tmp_path: Path) -> None:
    result, labels = _result()
    with pytest.raises(ExportFailed, match="not accepted"):
        export_run(result, labels, TelemetryOptions("otlp", "http://127.0.0.1:9", "http/protobuf"))


def test_endpoint_and_protocol_defaults_follow_the_otel_environment() -> None:
    assert resolve(TelemetryOptions("otlp"), {}) == ("http://localhost:4318", "http/protobuf")
    assert resolve(TelemetryOptions("otlp"), {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) == \
        ("http://localhost:4317", "grpc")
    assert resolve(TelemetryOptions("otlp", "http://x:1/"), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://y:2"}) == \
        ("http://x:1", "http/protobuf")
    with pytest.raises(ValueError, match="unknown OTLP protocol"):
        resolve(TelemetryOptions("otlp"), {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


SPANS = [
    {"trace_id": "t1", "span_id": "a", "parent_span_id": None, "name": "GET /orders", "service": "api",
     "kind": "server", "status": "ok", "start_ns": 1_000_000_000, "end_ns": 1_020_000_000,
     "attributes": {"http.route": "/orders"}},
    {"trace_id": "t1", "span_id": "b", "parent_span_id": "a", "name": "redis SET", "service": "api",
     "kind": "client", "status": "unset", "start_ns": 1_005_000_000, "end_ns": 1_006_000_000,
     "attributes": {"db.system": "redis"}},
    {"trace_id": "t1", "span_id": "c", "parent_span_id": "gone", "name": "orphan", "service": "api",
     "kind": "internal", "status": "error", "start_ns": 0, "end_ns": 0, "attributes": {}},
]


def _report(tmp_path: Path) -> Path:
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"schema": "crc-report", "version": 1, "spans": SPANS}))
    return p


def test_crc_spans_draws_the_tree(tmp_path: Path) -> None:
    proc = crc("spans", str(_report(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].strip().startswith("GET /orders  [api server]  20.0ms")
    assert lines[1].startswith("   redis SET  [api client]  1.0ms +5.0ms")  # indented under its parent
    assert "orphan" in lines[2] and "untimed" in lines[2] and "ERROR" in lines[2]


def test_crc_spans_grep_keeps_ancestors_and_json_filters(tmp_path: Path) -> None:
    proc = crc("spans", str(_report(tmp_path)), "--grep", "db.system=redis")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("·GET /orders")  # context, marked
    assert "redis SET" in proc.stdout and "orphan" not in proc.stdout
    proc = crc("spans", str(_report(tmp_path)), "--grep", "SET", "--json")
    assert [s["name"] for s in json.loads(proc.stdout)] == ["redis SET"]
    assert crc("spans", str(_report(tmp_path)), "--grep", "nothing-like-this").returncode == 1


def test_crc_spans_rejects_what_is_not_a_report(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    proc = crc("spans", str(bad))
    assert proc.returncode == 2 and "not a crc JSON report" in proc.stderr
    proc = crc("spans", str(tmp_path / "missing.json"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.docker
def test_run_exports_its_trace_over_otlp_http(tmp_path: Path, docker_engine: None) -> None:  # noqa: F811
    """A real `crc run` subprocess exports to a receiver in this process."""
    got: list[Span] = []

    async def main() -> subprocess.CompletedProcess[str]:
        async with OtlpReceiver(on_spans=got.extend) as rx:
            ep = await rx.listen("127.0.0.1")
            proc = await anyio.to_thread.run_sync(lambda: subprocess.run(
                [sys.executable, "-m", "crc", "run", "examples/hello.cr", "--no-progress", "--pull", "never",
                 "--otel-exporter", "otlp", "--otel-endpoint", ep.http_url],
                cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ)))
            await rx.wait_for(lambda spans: any(s.name == "crc run" for s in spans), timeout=60)
            return proc

    proc = anyio.run(main)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = {s.name for s in got}
    assert {"crc run", "suite hello", "service web", "step get", "test the page is served"} <= names
    run = next(s for s in got if s.name == "crc run")
    assert run.attributes["crc.tests"] == 2 and run.status == "ok"


def test_crc_spans_survives_parent_loops(tmp_path: Path) -> None:
    loop = [dict(SPANS[0], span_id="x", parent_span_id="y", name="x"),
            dict(SPANS[0], span_id="y", parent_span_id="x", name="y"),
            dict(SPANS[0], span_id="z", parent_span_id="z", name="self")]
    p = tmp_path / "loop.json"
    p.write_text(json.dumps({"schema": "crc-report", "version": 1, "spans": loop}))
    proc = crc("spans", str(p), timeout=30)
    assert proc.returncode == 0
    marked = {"x (in a parent loop)", "y (in a parent loop)", "self (in a parent loop)"}
    assert {ln.strip().split("  ")[0] for ln in proc.stdout.splitlines()} == marked
    assert crc("spans", str(p), "--grep", "self", timeout=30).returncode == 0


def test_bad_telemetry_protocol_and_unwritable_reports_fail_before_running(tmp_path: Path) -> None:
    src = ROOT / "examples" / "hello.cr"
    proc = crc("run", str(src), "--otel-exporter", "otlp", env={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
                                                                   "DOCKER_HOST": "unix:///nonexistent"})
    assert proc.returncode == 2 and "unknown OTLP protocol 'http/json'" in proc.stderr, proc.stderr
    proc = crc("run", str(src), "--json", "/proc/crc-cannot-write.json", env={"DOCKER_HOST": "unix:///nonexistent"})
    assert proc.returncode == 2 and "cannot write /proc/crc-cannot-write.json" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
