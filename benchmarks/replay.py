"""Live run vs replay of its recording, and recording size vs what the run captured.

For each workload this runs the suites live against the Docker engine once (in this process, as `crc run`
does), records the run, then replays the recording (read + re-check every expectation, as `crc replay` does)
`--replays` times and reports:

    live:    wall time of the live run
    replay:  median wall time of read + replay, in process; ratio = live / replay (goal >= 50x)
    cli:     wall time of a `crc replay FILE` process (interpreter start-up and imports included)
    verdicts identical: every node's and test's status in the replay equals the live run's
    size:    recording bytes, captured bytes (outputs, messages, log tails, encoded spans), and their ratio

Workloads: `examples` (multi.cr, hello.cr, otel/orders.cr: outputs, captures and spans) and `bulk` (one suite
whose steps print `--kib` KiB each: shows size staying proportional to the output captured).

Usage: python benchmarks/replay.py [--smoke] [--replays N] [--steps N] [--kib K]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_RATIO = 50.0

BULK = """suite "bulk" {{
  service box {{
    image "crc/busybox:dev"
    command ["sleep", "3600"]
  }}
  test "outputs" {{
{steps}
  }}
}}
"""


def _bulk_source(steps: int, kib: int) -> str:
    body = []
    for i in range(steps):
        body.append(f'    step s{i} = exec box ["sh", "-c", "head -c {kib * 1024} /dev/urandom | base64"]')
        body.append(f"    expect s{i}.exit == 0")
    return BULK.format(steps="\n".join(body))


def measure(name: str, files: list[Path], replays: int, tmp: Path) -> tuple[bool, float]:
    from crc.runtime import recording
    from crc.runtime.replay import replay
    from crc.runtime.runner import RunOptions

    from crc.clitools import compile_sources
    from crc.commands_run import execute

    compiled = compile_sources(files)
    if compiled is None:
        raise SystemExit(f"{name}: does not compile")
    plans = [p for _, p in compiled]
    options = RunOptions(allow_pull=False, log_tails=True)
    t0 = time.perf_counter()
    result, _labels, spans = execute(plans, options, progress=False)
    live = time.perf_counter() - t0
    rec = recording.build(result, plans, spans, options, "bench")
    path = tmp / f"{name}.crcrec"
    size = recording.write(path, rec)
    times = []
    replayed = None
    for _ in range(replays):
        t0 = time.perf_counter()
        replayed = replay(recording.read(path))
        times.append(time.perf_counter() - t0)
    assert replayed is not None
    same = ({n: r.status for n, r in replayed.result.nodes.items()} == {n: r.status for n, r in result.nodes.items()}
            and [t.status for t in replayed.result.tests] == [t.status for t in result.tests])
    t0 = time.perf_counter()
    cli = subprocess.run([sys.executable, "-m", "crc", "replay", str(path)], capture_output=True, text=True,
                         env={"DOCKER_HOST": "unix:///nonexistent", "PATH": "/usr/bin:/bin"}, cwd=ROOT)
    cli_s = time.perf_counter() - t0
    med = statistics.median(times)
    captured = rec.captured_bytes()
    ratio = live / med
    print(f"{name}: {len(result.nodes)} nodes, {len(rec.spans)} spans, {len(result.tests)} tests")
    print(f"  live {live * 1000:.0f}ms  replay {med * 1000:.2f}ms (median of {replays})  ratio {ratio:.0f}x"
          f"  cli replay {cli_s * 1000:.0f}ms (exit {cli.returncode}, live exit {result.exit_code()})")
    print(f"  verdicts identical: {same}")
    from crc.compiler.plan import canonical_bytes

    plan_bytes = sum(len(canonical_bytes(p)) for p in rec.plans)
    print(f"  size {size} bytes (Plans {plan_bytes}), captured {captured} bytes, size/captured "
          f"{size / max(1, captured):.2f}, (size - Plans)/captured {(size - plan_bytes) / max(1, captured):.2f}")
    return same and cli.returncode == result.exit_code(), ratio


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="smallest workloads, no goal check")
    ap.add_argument("--replays", type=int, default=20, help="replays per workload (median reported)")
    ap.add_argument("--steps", type=int, default=20, help="steps of the bulk workload")
    ap.add_argument("--kib", type=int, default=16, help="KiB each bulk step prints (base64 of random bytes)")
    args = ap.parse_args(argv)
    ex = ROOT / "examples"
    ok = True
    ratios = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bulk = tmp / "bulk.cr"
        bulk.write_text(_bulk_source(2 if args.smoke else args.steps, 1 if args.smoke else args.kib))
        workloads = {"examples": [ex / "hello.cr"] if args.smoke else
                     [ex / "multi.cr", ex / "hello.cr", ex / "otel" / "orders.cr"], "bulk": [bulk]}
        for name, files in workloads.items():
            same, ratio = measure(name, files, 3 if args.smoke else args.replays, tmp)
            ok = ok and same
            ratios.append(ratio)
    if not ok:
        print("!! replay verdicts differ from the live run", file=sys.stderr)
        return 1
    if not args.smoke and min(ratios) < GOAL_RATIO:
        print(f"!! replay is under {GOAL_RATIO:.0f}x faster than the live run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
