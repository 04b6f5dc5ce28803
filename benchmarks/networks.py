"""Suite networks: what `network internal` costs, and what bounding suites by `-j` costs.

1. Internal network. The same suite (S busybox services, one test with a step in each) with and without
   `network internal`, each run by `crc run` as a user runs it, interleaved. An internal suite's containers
   each start in the namespace of a holder container whose default route is removed first (one more
   container and one exec per container). Printed: medians and the ratio internal/plain.
2. Many suites. N one-service suites in one file, `crc run -j J` for a low and a high J, interleaved: with
   -j bounding suites (and so their networks), a low J runs them in waves. Printed: medians and the ratio.
3. Waiting for address space. The same N suites on a private dockerd (tests/dockerutil.small_engine, needs
   root) whose address pool has room for 2 networks: `-j 2`, which never finds the pool full, against
   `-j 8`, whose suites find it full and wait for a network of the run to go (a failed create each, a note,
   and the wake-up). Printed: medians and the ratio waiting/-j 2, the cost of waiting over bounding by -j.

Usage: python benchmarks/networks.py [--runs R] [--services S] [--suites N] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOX = 'image "crc/busybox:dev"\n    command ["sleep", "300"]'


def suite_file(where: Path, name: str, services: int, internal: bool) -> Path:
    svcs = "\n".join(f"  service s{i} {{\n    {BOX}\n  }}" for i in range(services))
    steps = "\n".join(f'    step e{i} = exec s{i} ["true"]' for i in range(services))
    text = (f'suite "{name}" {{\n' + ("  network internal\n" if internal else "") + f"{svcs}\n"
            f'  test "t" {{\n{steps}\n  }}\n}}\n')
    path = where / f"{name}.cr"
    path.write_text(text)
    return path


def many_suites(where: Path, n: int) -> Path:
    path = where / "many.cr"
    path.write_text("\n".join(f'suite "m{i}" {{\n  service s {{\n    {BOX}\n  }}\n  test "t" {{\n'
                              '    step e = exec s ["true"]\n  }\n}' for i in range(n)) + "\n")
    return path


def run(path: Path, *extra: str, env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "crc", "run", str(path), "--no-progress", "--pull", "never",
                           *extra], capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})})
    took = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"crc run {path.name} failed:\n{proc.stdout}\n{proc.stderr}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--services", type=int, default=4)
    ap.add_argument("--suites", type=int, default=24)
    ap.add_argument("--low", type=int, default=3, help="the low -j of part 2")
    ap.add_argument("--high", type=int, default=8, help="the high -j of part 2")
    ap.add_argument("--smoke", action="store_true", help="one run of the smallest sizes")
    a = ap.parse_args()
    if a.smoke:
        a.runs, a.services, a.suites = 1, 1, 4
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        plain, internal = suite_file(where, "plain", a.services, False), suite_file(where, "sealed", a.services, True)
        many = many_suites(where, a.suites)
        run(plain)  # warm: the compile cache and the engine's image cache
        times: dict[str, list[float]] = {"plain": [], "internal": [], "low": [], "high": []}
        for _ in range(a.runs):
            times["plain"].append(run(plain))
            times["internal"].append(run(internal))
            times["low"].append(run(many, "-j", str(a.low)))
            times["high"].append(run(many, "-j", str(a.high)))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"1. {a.services} service(s), one step each ({a.runs} runs, medians)")
    print(f"   plain network     {med['plain']:.2f} s")
    print(f"   network internal  {med['internal']:.2f} s   internal/plain {med['internal'] / med['plain']:.2f}x")
    print(f"2. {a.suites} one-service suites ({a.runs} runs, medians)")
    print(f"   -j {a.low:<2}             {med['low']:.2f} s")
    print(f"   -j {a.high:<2}             {med['high']:.2f} s   -j {a.low}/-j {a.high} {med['low'] / med['high']:.2f}x")
    waiting(a.suites, a.runs)


def waiting(suites: int, runs: int) -> None:
    """Part 3: suites waiting for address space on an engine with room for 2 networks, against -j 2."""
    sys.path.insert(0, str(ROOT / "tests"))
    from dockerutil import EngineDidNotStart, small_engine

    try:
        with small_engine(2, ("crc/busybox:dev",)) as engine, tempfile.TemporaryDirectory() as tmp:
            many = many_suites(Path(tmp), suites)
            env = {**engine, "CRC_STATE_DIR": tmp}
            run(many, "-j", "2", env=env)  # warm: the compile cache
            times: dict[str, list[float]] = {"bounded": [], "waiting": []}
            for _ in range(runs):
                times["bounded"].append(run(many, "-j", "2", env=env))
                times["waiting"].append(run(many, "-j", "8", env=env))
    except EngineDidNotStart as e:
        print(f"3. skipped: {e}")
        return
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"3. {suites} one-service suites on an engine with room for 2 networks ({runs} runs, medians)")
    print(f"   -j 2 (never full) {med['bounded']:.2f} s")
    print(f"   -j 8 (waiting)    {med['waiting']:.2f} s   waiting/-j 2 {med['waiting'] / med['bounded']:.2f}x")


if __name__ == "__main__":
    main()
