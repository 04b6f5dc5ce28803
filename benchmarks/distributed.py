"""`crc run --cluster`: what a second engine buys, and what Dask costs.

Workload: S suites (default 24), each a busybox service that becomes ready after ~1 s (`ready exec`) and one
test whose step sleeps 1 s: ~2 s of waiting per suite, one job slot at a time. Measured with the CLI as a user
types it, interleaved round by round so machine noise hits every variant alike:

* local     `crc run -j J` on the shared engine: J suites' slots at a time;
* dask-2    `crc run --cluster` on a Dask scheduler with two workers, one per engine (the shared one and a second
            dockerd, `.ci/engine-b`), each running J suites at once: twice the engine capacity;
* dask-1    the same through a cluster with one worker on the shared engine: the same capacity as local, so the
            ratio is Dask's overhead (submitting, events, merging).

Goals (issue 18): local / dask-2 >= 1.8, dask-1 / local <= 1.10. Needs root (it may start the second engine)
and the test images. Usage: python benchmarks/distributed.py [--suites S] [--jobs J] [--rounds R] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE_B = "unix:///run/docker-b.sock"
QUIET = {"PYTHONWARNINGS": "ignore"}


def source(suites: int) -> str:
    return "\n".join(f'''suite "bench{i}" {{
  service box {{ image "crc/busybox:dev" command ["sh", "-c", "sleep 1; touch /ready; sleep 300"]
                ready exec ["test", "-e", "/ready"] within 60s }}
  test "t" {{ step s = exec box ["sh", "-c", "sleep 1; echo {i}"]
             expect s.stdout == "{i}\\n" }}
}}''' for i in range(suites)) + "\n"


class Cluster:
    """A Dask scheduler and one worker per engine given, as processes."""

    def __init__(self, base: Path, engines: dict[str, str], threads: int, state: Path):
        base.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **QUIET}
        sched_file = base / "scheduler.json"
        self.procs = [subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", str(sched_file)], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)]
        deadline = time.monotonic() + 60
        while not (sched_file.exists() and sched_file.read_text().strip()):
            if time.monotonic() > deadline:
                raise SystemExit("the Dask scheduler did not start")
            time.sleep(0.1)
        self.address = json.loads(sched_file.read_text())["address"]
        for name, host in engines.items():
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--name", name, "--nthreads",
                 str(threads), "--no-nanny", "--no-dashboard"],
                env={**env, "DOCKER_HOST": host, "CRC_STATE_DIR": str(state)}, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
        code = (f"from distributed import Client; c = Client({self.address!r}, timeout=60); "
                f"c.wait_for_workers({len(engines)}, timeout=60); c.close()")
        subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True, timeout=120)

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def timed_run(plan: Path, jobs: int, state: Path, *extra: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "crc", "run", str(plan), "--no-progress", "--pull", "never",
                           "-j", str(jobs), *extra], capture_output=True, text=True,
                          env={**os.environ, **QUIET, "CRC_STATE_DIR": str(state)}, timeout=900)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"crc run {' '.join(extra)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suites", type=int, default=24)
    ap.add_argument("--jobs", type=int, default=4, help="-j locally, threads per worker on the clusters")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="smallest size: 2 suites, 1 round")
    a = ap.parse_args()
    if a.smoke:
        a.suites, a.rounds = 2, 1

    started = subprocess.run(["bash", str(ROOT / ".ci" / "engine-b"), "start"], capture_output=True, text=True,
                             check=True).stdout.strip() == "started"
    engine_a = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    with tempfile.TemporaryDirectory(prefix="crc-bench-dist-") as tmp:
        base = Path(tmp)
        state = base / "state"
        (base / "bench.cr").write_text(source(a.suites))
        plan = base / "bench.plan"
        subprocess.run([sys.executable, "-m", "crc", "compile", str(base / "bench.cr"), "-o", str(plan)],
                       check=True, capture_output=True)
        two = Cluster(base / "two", {"a": engine_a, "b": ENGINE_B}, a.jobs, state)
        one = Cluster(base / "one", {"a": engine_a}, a.jobs, state)
        times: dict[str, list[float]] = {"local": [], "dask-2": [], "dask-1": []}
        try:
            timed_run(plan, a.jobs, state, "--cluster", two.address)  # warm both engines and the workers
            for r in range(a.rounds):
                times["local"].append(timed_run(plan, a.jobs, state))
                times["dask-2"].append(timed_run(plan, a.jobs, state, "--cluster", two.address))
                times["dask-1"].append(timed_run(plan, a.jobs, state, "--cluster", one.address))
                print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
        finally:
            two.close()
            one.close()
            if started:
                subprocess.run(["bash", str(ROOT / ".ci" / "engine-b"), "stop"], check=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{a.suites} suites (~2 s each), -j {a.jobs} locally / {a.jobs} threads per worker, "
          f"{a.rounds} rounds, medians:")
    for k, v in med.items():
        print(f"  {k:7} {v:6.2f}s  (min {min(times[k]):.2f}, max {max(times[k]):.2f})")
    speedup, overhead = med["local"] / med["dask-2"], med["dask-1"] / med["local"]
    print(f"two engines through Dask vs one locally: {speedup:.2f}x faster (goal >= 1.8x)")
    print(f"one worker through Dask vs local:       {overhead:.2f}x the time (goal <= 1.10x)")


if __name__ == "__main__":
    main()
