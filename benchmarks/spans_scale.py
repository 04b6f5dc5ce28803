"""What `crc digest`, `crc diff`, `crc run --repeat`'s comparison and `crc spans` cost as a recording's spans grow.

Recordings of N spans (the trace shape of benchmarks/spans.py: traces of 10 spans, 5 services), each span's
attributes quoting its own and its parent's id (as instrumentation that logs ids does, so the normalizer has ids
to find), one deep chain of 5,000 spans and a parent loop, and a step whose stdout quotes 1,000 span ids. Two
runs of the "same system" differ in every id and timestamp. Per size it prints the CPU seconds (best of
--repeat; the machine is shared, so CPU time rather than wall time) of:
  read     `recording.read` of the file (what every command starts with)
  digest   `crc digest`: `digest(rec)`
  diff     `crc diff A B`: `rundiff.diff(a, b)` (they differ in nothing the diff reports)
  repeat   `crc run --repeat 2`'s comparison: `flaky_items([a, b])` (item digests of both runs)
  spans    `crc spans`: `tree_lines` of the recording's spans
with microseconds per span, and the ratio of the largest size's time to the one before, next to the ratio of
their sizes (linear: equal). Goal: at 200k -> 1M spans (x5), each ratio under 6.5.

Usage: python benchmarks/spans_scale.py [--sizes 10000,200000,1000000] [--repeat 1] [--smoke]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from crc.runtime import recording
from crc.runtime.digest import digest
from crc.runtime.recording import Recording
from crc.runtime.results import PASSED, NodeResult, TestResult
from crc.runtime.rundiff import diff
from crc.runtime.runner import RunOptions
from crc.runtime.spans import Span

from crc.commands_replay import flaky_items
from crc.commands_spans import tree_lines

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spans import make_spans

GOAL = 6.5  # x5 spans: linear is 5
CHAIN = 5000


def spans_of(n: int, salt: int) -> list[Span]:
    """`n` spans; `salt` changes every id and time (another run of the same system)."""
    base = make_spans(max(0, n - CHAIN - 2))
    out = []
    for s in base:
        tid = f"{int(s.trace_id, 16) + salt * 7919:032x}"
        sid = f"{int(s.span_id, 16) + salt * 104729:016x}"
        pid = s.parent_span_id and f"{int(s.parent_span_id, 16) + salt * 104729:016x}"
        out.append(replace(s, trace_id=tid, span_id=sid, parent_span_id=pid, start_ns=s.start_ns + salt,
                           end_ns=s.end_ns + salt, attributes={**s.attributes, "span.self": sid, "span.up": pid or ""},
                           resource={**s.resource, "crc.suite": "s0"}))
    trace = f"{salt + 1:032x}"
    for i in range(CHAIN):  # one chain CHAIN deep
        out.append(Span(trace, f"{(salt << 40) + i + 1:016x}", f"{(salt << 40) + i:016x}" if i else None,
                        f"level {i}", "internal", "unset", "", 1 + salt, 2 + salt, "deep", {}, {"crc.suite": "s0"}))
    for a, b in (("1", "2"), ("2", "1")):  # a parent loop
        out.append(Span(trace, f"{salt:04x}" + a * 12, f"{salt:04x}" + b * 12, f"loop {a}", "internal", "unset", "",
                        1, 2, "deep", {}, {"crc.suite": "s0"}))
    return out[:n] if n < len(out) else out


def make_recording(n: int, salt: int) -> Recording:
    spans = spans_of(n, salt)
    quoted = " ".join(s.span_id for s in spans[:1000])
    node = NodeResult("s::t::step:a", "step", PASSED, "", 1, 2,
                      {"suite_key": "s0", "output": {"exit_code": 0, "stdout": f"ids {quoted}\n", "stderr": ""}})
    test = TestResult("s", "t", PASSED, 0.1, (), ("s::t::step:a",))
    return Recording("bench", f"20260101000000-{salt:06x}", 0, 1, False, 0, RunOptions().recorded(), (), (node,),
                     (test,), tuple(spans))


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        c = time.process_time()
        out = fn()
        best = min(best, time.process_time() - c)
    return best, out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when a step of the largest size grows clearly faster than linear."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,200000,1000000", help="comma-separated span counts")
    ap.add_argument("--repeat", type=int, default=1, help="best of N timings per size")
    ap.add_argument("--smoke", action="store_true", help="10,000 spans only, no goal check")
    a = ap.parse_args(argv)
    sizes = [int(x) for x in a.sizes.split(",") if x.strip()]
    if a.smoke:
        sizes = [10_000]
    ops = ("read", "digest", "diff", "repeat", "spans")
    print(f"{'spans':>9} " + " ".join(f"{o + ' s':>9} {'us/span':>7}" for o in ops), flush=True)
    times: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / "a.crcrec"
            recording.write(path, make_recording(n, 1))
            t: dict[str, float] = {}
            t["read"], ra = _best(lambda path=path: recording.read(path), a.repeat)
            rb = make_recording(n, 2)
            t["digest"], d = _best(lambda ra=ra: digest(ra), a.repeat)
            t["diff"], df = _best(lambda ra=ra, rb=rb: diff(ra, rb), a.repeat)
            t["repeat"], fl = _best(lambda ra=ra, rb=rb: flaky_items([ra, rb]), a.repeat)
            spans = [s.to_dict() for s in ra.spans]
            t["spans"], lines = _best(lambda spans=spans: tree_lines(spans), a.repeat)
            if df.differ or fl or len(lines) != len(ra.spans) or digest(rb) != d:
                print(f"  !! the two runs should look the same: differ={df.differ} flaky={fl} "
                      f"lines={len(lines)}/{len(ra.spans)}", file=sys.stderr)
                return 1
            print(f"{len(ra.spans):>9,} " + " ".join(f"{t[o]:9.2f} {t[o] / len(ra.spans) * 1e6:7.1f}" for o in ops),
                  flush=True)
            times.append(t)
            del ra, rb, spans, lines
    ok = True
    if len(sizes) >= 2:
        k = sizes[-1] / sizes[-2]
        ratios = {o: times[-1][o] / max(times[-2][o], 1e-9) for o in ops}
        print(f"ratio {sizes[-1]:,}/{sizes[-2]:,} spans (x{k:g}; linear = {k:g}): "
              + ", ".join(f"{o} {r:.2f}" for o, r in ratios.items()))
        if not a.smoke and k == 5 and any(r > GOAL for r in ratios.values()):
            print(f"  !! growth above {GOAL} for x5 spans", file=sys.stderr)
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
