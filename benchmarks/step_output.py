"""Memory of `crc run` as a step's output grows (needs the Docker engine and crc/busybox:dev).

Each size runs `crc run` in a fresh process on a file whose one step prints N bytes (`yes ... | head -c N`)
with an expectation on its stdout, and prints that process's peak RSS (from the OS) and wall time. crc keeps
OUTPUT_KEEP (8 MiB) of each stream in memory; past that it spills the stream to a file and the expectation
reads it whole (runtime/spill.py). Goal: peak RSS at 200 MB of output within 64 MB of the run printing
nothing.

Usage: python benchmarks/step_output.py [--sizes 0,20000000,200000000] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_MB = 64
CHILD = r"""
import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
SOURCE = '''suite "stepout" {{
  service box {{
    image "crc/busybox:dev"
    command ["sleep", "3600"]
  }}
  test "t" {{
    step big = exec box ["sh", "-c", "yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx | head -c {n}"]
    expect big.exit == 0
    expect big.stdout ~ /^x*/
  }}
}}
'''


def measure(n: int, tmp: Path) -> tuple[int, float, float]:
    """(exit code, peak RSS MB, wall seconds) of `crc run` on a step printing `n` bytes."""
    src = tmp / f"out{n}.cr"
    src.write_text(SOURCE.format(n=n), encoding="utf-8")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, sys.executable, "-m", "crc", "run", str(src), "--no-progress",
                          "--pull", "never"], cwd=tmp, capture_output=True, text=True, check=True,
                         env={**os.environ, "NO_COLOR": "1"})
    code, rss = out.stdout.split()
    return int(code), int(rss) / 1024, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    """Run the sizes; exit 1 when memory grows with the output past the goal."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0,20000000,200000000", help="bytes a step prints, comma-separated")
    ap.add_argument("--smoke", action="store_true", help="0 and 10 MB only")
    a = ap.parse_args(argv)
    sizes = [0, 10_000_000] if a.smoke else [int(x) for x in a.sizes.split(",")]
    print(f"{'printed':>12} {'exit':>4} {'peak RSS MB':>11} {'wall s':>7}", flush=True)
    peaks = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            code, rss, wall = measure(n, Path(tmp))
            peaks.append(rss)
            print(f"{n:>12,} {code:>4} {rss:>11.0f} {wall:>7.1f}", flush=True)
    growth = peaks[-1] - peaks[0]
    print(f"peak RSS growth from {sizes[0]:,} to {sizes[-1]:,} bytes printed: {growth:.0f} MB (goal <= {GOAL_MB})")
    return 0 if growth <= GOAL_MB else 1


if __name__ == "__main__":
    sys.exit(main())
