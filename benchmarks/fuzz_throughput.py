"""The fuzz harness's throughput (tests/fuzz.py), and what its watchdog costs.

Runs the harness in this process for rounds of `--inputs` inputs each (source mutations and files in the mix
`--files` gives), alternating a run with the watchdog (a SIGALRM deadline and a faulthandler backstop armed
around every input) and one without (`--stall 0`), each round with its own seed, both modes on the same seeds.
Prints inputs per CPU second of each run (CPU time, not wall: this machine is shared, and CPU time is what a
campaign can count on per core), the mean of each mode and their ratio (goal: the watchdog costs under 5%),
and the inputs per wall second seen, with how much of the wall time the process spent waiting for a CPU.

Usage: python benchmarks/fuzz_throughput.py [--rounds 3] [--inputs 3000] [--files 0.6] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import fuzz


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--inputs", type=int, default=3000)
    ap.add_argument("--files", type=float, default=0.6)
    ap.add_argument("--smoke", action="store_true", help="one round of 200 inputs")
    a = ap.parse_args()
    if a.smoke:
        a.rounds, a.inputs = 1, 200
    rates: dict[str, list[float]] = {"watchdog": [], "none": []}
    wall_rates: list[float] = []
    waited = wall_total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        fuzz.run(50, None, 0, Path(tmp) / "warm", 60.0, report=lambda s: None, files=a.files)  # imports, caches
        for r in range(a.rounds):
            order = ["watchdog", "none"] if r % 2 == 0 else ["none", "watchdog"]
            for mode in order:
                t0, c0, s0 = time.monotonic(), time.process_time(), fuzz._sched()
                h = fuzz.run(a.inputs, None, 1000 + r, Path(tmp) / f"{mode}-{r}", 60.0, report=lambda s: None,
                             files=a.files, stall=30.0 if mode == "watchdog" else 0)
                wall, cpu, s1 = time.monotonic() - t0, time.process_time() - c0, fuzz._sched()
                rates[mode].append(h.inputs / cpu)
                wall_rates.append(h.inputs / wall)
                wall_total += wall
                waited += s1[1] - s0[1] if s0 and s1 else 0.0
                print(f"round {r} {mode:8s}: {h.inputs} inputs, {cpu:6.1f} s CPU, {wall:6.1f} s wall: "
                      f"{h.inputs / cpu:5.0f} inputs per CPU second, {h.inputs / wall:5.0f}/s wall; "
                      f"{len(h.findings)} findings", flush=True)
    on, off = statistics.mean(rates["watchdog"]), statistics.mean(rates["none"])
    print(f"inputs per CPU second: watchdog {on:.0f}, none {off:.0f}; watchdog/none {on / off:.3f} "
          f"(cost {1 - on / off:+.1%}; goal under 5%: {'met' if on / off > 0.95 else 'not met'})")
    print(f"inputs per wall second: {statistics.mean(wall_rates):.0f} "
          f"({waited / wall_total:.0%} of the wall time spent waiting for a CPU)")


if __name__ == "__main__":
    main()
