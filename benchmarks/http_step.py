"""What an `http` step costs, against the same request made by exec'ing a Python client in the service; what
one `eventually` attempt costs; and 4 span tests scoped by trace running concurrently vs alone.

All three run real `crc run` invocations against the engine (the demo service, crc/demo:dev) and read the
per-node times from the JSON report or the recording, so what is measured is crc's own work per step:

* http vs exec   N `http GET /healthz` steps, and N `exec api ["python3", "-c", "urllib ... /healthz"]`
                 steps, in one run; the ratio of the median step times (goal: exec / http >= 10);
* eventually     an http step whose expectation never holds, polled every 10 ms for 2 s: the time of one
                 attempt beyond the interval (the attempt itself plus crc's checking);
* trace-scoped   4 tests, each calling its own service's /slow?ms=D and checking the server span: with
                 `{ in STEP }` selectors they are attributed by trace and run concurrently; without, each
                 runs alone. The ratio of the two runs' wall times (4 would be perfect overlap).

Usage: python benchmarks/http_step.py [--steps N] [--slow-ms D] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
API = 'service api {{ image "crc/demo:dev" ready http 8080 "/healthz" within 60s }}'
CLIENT = "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/healthz').read()"


def run(src: str, tmp: Path, name: str, *extra: str) -> tuple[dict[str, Any], Path]:
    path, report, rec = tmp / f"{name}.cr", tmp / f"{name}.json", tmp / f"{name}.rec"
    path.write_text(src)
    proc = subprocess.run([sys.executable, "-m", "crc", "run", str(path), "--no-progress", "--pull", "never",
                           "--json", str(report), "--record", str(rec), *extra],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    if not report.exists():
        raise SystemExit(f"crc run {name} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(report.read_text()), rec


def step_times(report: dict[str, Any], prefix: str) -> list[float]:
    return [(n["ended_ns"] - n["started_ns"]) / 1e6 for n in report["nodes"]
            if n["kind"] == "step" and n["label"].startswith(prefix)]


def http_vs_exec(tmp: Path, n: int) -> None:
    lines = ['suite "bench http" {', "  " + API.format(), '  test "http" {']
    lines += [f'    step h{i} = http GET "http://api:8080/healthz"' for i in range(n)]
    lines += ["  }", '  test "exec" {']
    lines += [f'    step e{i} = exec api ["python3", "-c", "{CLIENT}"]' for i in range(n)]
    lines += ["  }", "}", ""]
    report, _ = run("\n".join(lines), tmp, "http_vs_exec")
    h, e = statistics.median(step_times(report, "h")), statistics.median(step_times(report, "e"))
    print(f"http step   median {h:8.2f} ms  ({n} steps)")
    print(f"exec client median {e:8.2f} ms  ({n} steps)")
    print(f"ratio exec/http {e / h:.1f}x  (goal >= 10x)")


def eventually_attempt(tmp: Path, within: float) -> None:
    from crc.runtime.recording import read

    src = "\n".join(['suite "bench eventually" {', "  " + API.format(), '  test "never" {',
                     '    step poll = http GET "http://api:8080/healthz"',
                     f"    expect poll.status == 299 eventually within {within:g}s every 10ms", "  }", "}", ""])
    _, rec = run(src, tmp, "eventually")
    poll = next(r for r in read(rec).nodes if r.node.endswith("step:poll"))
    ev = poll.detail["eventually"]
    per = ev["waited_s"] / ev["attempts"] * 1000 - 10
    print(f"eventually: {ev['attempts']} attempts in {ev['waited_s']:.2f}s; one attempt beyond the 10 ms "
          f"interval {per:.2f} ms")


def trace_scoped(tmp: Path, slow_ms: int) -> None:
    def source(scoped: bool) -> str:
        lines = ['suite "bench spans" {', "  settle 100ms"]
        lines += [f'  service api{i} {{ image "crc/demo:dev" ready http 8080 "/healthz" within 60s }}'
                  for i in range(4)]
        for i in range(4):
            scope = " in call" if scoped else ""
            lines += [f'  test "t{i}" {{', f'    step call = http GET "http://api{i}:8080/slow?ms={slow_ms}"',
                      f'    span work = "work" {{{scope} service "api{i}" }}', "  }"]
        return "\n".join([*lines, "}", ""])

    walls = {}
    for scoped in (True, False):
        report, _ = run(source(scoped), tmp, f"spans_{scoped}")
        starts = [n["started_ns"] for n in report["nodes"] if n["kind"] == "step"]
        ends = [n["ended_ns"] for n in report["nodes"] if n["kind"] == "span"]
        assert all(t["status"] == "passed" for t in report["tests"]), report["tests"]
        walls[scoped] = (max(ends) - min(starts)) / 1e9
    print(f"4 span tests: by trace (concurrent) {walls[True]:.2f}s, by time (alone) {walls[False]:.2f}s, "
          f"ratio alone/concurrent {walls[False] / walls[True]:.2f}x")


def main() -> None:
    """Run the three measurements and print their figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--slow-ms", type=int, default=1000)
    ap.add_argument("--smoke", action="store_true", help="the smallest size, to check the script runs")
    a = ap.parse_args()
    n, slow, within = (3, 100, 0.3) if a.smoke else (a.steps, a.slow_ms, 2.0)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        http_vs_exec(tmp, n)
        eventually_attempt(tmp, within)
        trace_scoped(tmp, slow)


if __name__ == "__main__":
    main()
