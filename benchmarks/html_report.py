"""Time and size of the HTML report (`crc report --html`, `crc run --html`) for a large run.

The run is synthetic but shaped like a real one and goes through the real code: a .cr file of N tests is
compiled, each test gets a step, assertions and span expectations (duration, order, containment, parent), and
a trace of M spans (a server span with M-1 children, some with status error); every tenth test fails (a wrong
output with a diff, a span too slow). The recording is built with `crc.runtime.recording.build` (secrets
masked), written and read back as `crc report` reads it; then the report is written from it.

It prints the median wall time of writing the HTML report (read, model, page, write), its size, and the ratio
to writing the JSON report of the same run, all measured in one process. Goal: <= 1 s for 100 tests x 50 spans.

Usage: python benchmarks/html_report.py [--smoke] [--tests 100] [--spans 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from crc.compiler.compile import compile_file
from crc.runtime import recording
from crc.runtime.options import RunOptions
from crc.runtime.results import FAILED, PASSED, NodeResult, RunResult, TestResult

T0 = 1_790_000_000_000_000_000
MS = 1_000_000
GOAL_S = 1.0
SUITE_KEY = "s0"
RUN_ID = "20270101000000-bench0"

SOURCE_HEAD = """suite "synthetic" {
  service api {
    image "crc/demo:dev"
    port 8080
  }
"""
TEST = """
  test "{name}" {{
    step order = exec api ["wget", "-qO-", "http://localhost:8080/orders"]
    expect order.stdout == "created\\n"

    span request = "GET /orders" {{ service "api" }}
    span query = "db query" {{ parent request }}
    expect request.duration < 900ms
    expect query.duration < 50ms
    expect request contains query
    expect count("db *") >= 1
  }}
"""


def synthetic_recording(tests: int, spans: int, workdir: Path, payload: str = "") -> recording.Recording:
    """A recording of `tests` tests with `spans` spans each. `payload` goes into names, attributes and
    outputs (tests of escaping pass markup here)."""
    src = workdir / "synthetic.cr"
    names = [f"test {i:03d}" + (f" {payload}" if payload and i == 0 else "") for i in range(tests)]
    body = "".join(TEST.format(name=n.replace("\\", "\\\\").replace('"', '\\"')) for n in names)
    src.write_text(SOURCE_HEAD + body + "}\n", encoding="utf-8")
    plan = compile_file(str(src))
    nodes: dict[str, NodeResult] = {}
    out_spans: list[dict[str, Any]] = []
    test_results: list[TestResult] = []
    svc = next(n for n, d in plan.nodes.items() if d["kind"] == "service")
    nodes[svc] = NodeResult(svc, "service", PASSED, "", T0 - 500 * MS, T0,
                            {"suite_key": SUITE_KEY, "log_tail": f"listening on :8080 {payload}\n" * 3})
    for i, name in enumerate(names):
        t = T0 + i * 200 * MS
        bad = i % 10 == 0
        trace = f"{i + 1:032x}"
        root = f"{(i + 1) << 20:016x}"
        res = {"service.name": "api", "crc.run": RUN_ID, "crc.suite": SUITE_KEY}
        first = len(out_spans)
        dur_root = (1200 if bad else 40) * MS
        out_spans.append(_span(trace, root, None, "GET /orders", "server", t + 5 * MS, dur_root, res,
                               {"http.route": "/orders", "note": payload}))
        for k in range(spans - 1):
            start = t + 6 * MS + k * (30 * MS // max(spans, 1))
            status = "error" if bad and k == 3 else "unset"
            out_spans.append(_span(trace, f"{((i + 1) << 20) + k + 1:016x}", root, "db query", "client", start,
                                   MS // 2, res, {"db.statement": f"SELECT {k} {payload}"}, status))
        mine = [n for n, d in plan.nodes.items() if d.get("test") == name]
        for n in mine:
            d = plan.nodes[n]
            status, msg, detail = PASSED, "", {}
            if d["kind"] == "step":
                detail = {"argv": d["argv"], "captures": {}, "output": {
                    "exit_code": 0, "stdout": ("rejected\n" if bad else "created\n") + payload, "stderr": "",
                    "duration_s": 0.15, "timed_out": False}}
            elif d["kind"] == "assert" and bad:
                status, msg = FAILED, ("output differs\n--- expected\n+++ actual\n@@ -1 +1 @@\n-created\n"
                                       f"+rejected\n+{payload}")
            elif d["kind"] == "span":
                detail = {"spans": out_spans[first:first + 3],
                          "window": {"suite_key": SUITE_KEY, "started_ns": t, "seen": first + spans}}
                if bad and d["label"] == "request":
                    status, msg = FAILED, "span `request`: 1 of 1 span(s) do not have duration < 900.0ms"
            nodes[n] = NodeResult(n, d["kind"], status, msg, t, t + 180 * MS, detail)
        statuses = [nodes[n].status for n in mine]
        failures = tuple(f"{plan.nodes[n]['loc']}: {nodes[n].message}" for n in mine if nodes[n].status == FAILED)
        verdict = FAILED if FAILED in statuses else PASSED
        test_results.append(TestResult("synthetic", name, verdict, 0.18, failures, tuple(mine)))
    result = RunResult(RUN_ID, T0 - 500 * MS, T0 + tests * 200 * MS, tuple(test_results), nodes, (str(src),))
    return recording.build(result, [plan], out_spans, RunOptions(), "bench")


def _span(trace: str, sid: str, parent: str | None, name: str, kind: str, start: int, dur: int,
          res: dict[str, Any], attrs: dict[str, Any], status: str = "unset") -> dict[str, Any]:
    return {"trace_id": trace, "span_id": sid, "parent_span_id": parent, "name": name, "kind": kind,
            "status": status, "status_message": "timeout" if status == "error" else "", "start_ns": start,
            "end_ns": start + dur, "service": "api", "attributes": attrs, "resource": res, "scope": "bench",
            "events": [], "links": [], "received_ns": start + dur + MS}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="10 tests x 10 spans, one repetition, no goal check")
    ap.add_argument("--tests", type=int, default=100)
    ap.add_argument("--spans", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    if a.smoke:
        a.tests, a.spans, a.repeat = 10, 10, 1
    from crc.runtime.html_report import from_recording, write_html
    from crc.runtime.report import to_json, write_json
    from crc.runtime.results import labels_of

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rec = synthetic_recording(a.tests, a.spans, work)
        rec_path = work / "run.crcrec"
        recording.write(rec_path, rec)
        html_times, json_times = [], []
        size = json_size = 0
        for _ in range(a.repeat):
            t = time.perf_counter()
            size = write_html(work / "report.html", from_recording(recording.read(rec_path)))
            html_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = recording.read(rec_path)
            res = RunResult(r.run_id, r.started_ns, r.ended_ns, r.tests, r.results(), ())
            labels = labels_of(r.plan_objects())
            write_json(work / "report.json", to_json(res, labels, [s.to_dict() for s in r.spans]))
            json_times.append(time.perf_counter() - t)
            json_size = (work / "report.json").stat().st_size
        html_s, json_s = statistics.median(html_times), statistics.median(json_times)
    print(f"{a.tests} tests x {a.spans} spans ({len(rec.spans)} spans, {len(rec.nodes)} nodes), "
          f"median of {a.repeat}:")
    print(f"  html report: {html_s * 1000:.0f} ms, {size / 1e6:.2f} MB ({size / max(len(rec.spans), 1):.0f} B/span)")
    print(f"  json report: {json_s * 1000:.0f} ms, {json_size / 1e6:.2f} MB")
    print(f"  ratio html/json: time {html_s / json_s:.2f}, size {size / json_size:.2f}")
    if (a.tests, a.spans) == (100, 50) and html_s > GOAL_S:  # the goal is stated for this size
        print(f"GOAL MISSED: {html_s:.2f}s > {GOAL_S:g}s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
