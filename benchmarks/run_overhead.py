"""What `crc run` adds on top of the engine work it orders.

Scenario: one suite, one busybox service, a chain of K exec steps (each after the previous one) with an
output check each, then teardown. Measured, interleaved in one run so machine noise hits all alike:

* floor    raw aiodocker: network, container, K sequential execs, remove (the engine's own cost);
* crc      `crc run` in-process (Runner on the same engine, no interpreter start-up);
* crc-cli  `crc run` as a user types it (a new interpreter each time, imports, compile, report).

Printed: medians and spreads, and the ratios crc/floor and crc-cli/floor, plus the per-step overhead
(crc - floor) / K. Usage: python benchmarks/run_overhead.py [--steps K] [--runs R] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "crc/busybox:dev"


def source(k: int) -> str:
    steps = []
    for i in range(k):
        after = f" after s{i - 1}" if i else ""
        steps.append(f'    step s{i}{after} = exec box ["echo", "{i}"]\n    expect s{i}.stdout == "{i}\\n"')
    return (f'suite "overhead" {{\n  service box {{ image "{IMAGE}" command ["sleep", "300"] }}\n'
            f'  test "chain" {{\n' + "\n".join(steps) + "\n  }\n}\n")


async def floor(k: int) -> float:
    import aiodocker

    t0 = time.perf_counter()
    async with aiodocker.Docker() as d:
        name = f"crcbench-floor-{time.time_ns()}"
        net = await d.networks.create({"Name": name, "Labels": {"io.crc.bench": "1"}})
        c = await d.containers.run({"Image": IMAGE, "Cmd": ["sleep", "300"], "Labels": {"io.crc.bench": "1"},
                                    "HostConfig": {"NetworkMode": name}}, name=name)
        try:
            for i in range(k):
                ex = await c.exec(["echo", str(i)], stdout=True, stderr=True)
                out = b""
                async with ex.start(detach=False) as stream:
                    while (msg := await stream.read_out()) is not None:
                        out += msg.data
                info = await ex.inspect()
                assert info["ExitCode"] == 0 and out == f"{i}\n".encode(), out
        finally:
            await c.delete(force=True)
            await net.delete()
    return time.perf_counter() - t0


async def crc_inprocess(path: Path) -> float:
    from crc.compiler.compile import compile_file
    from crc.runtime.docker_backend import DockerBackend
    from crc.runtime.runner import Runner, RunOptions

    t0 = time.perf_counter()
    plan = compile_file(path)
    async with DockerBackend() as backend:
        result = await Runner(backend, RunOptions(allow_pull=False)).run([plan])
    assert result.exit_code() == 0, [r.message for r in result.nodes.values() if r.message]
    return time.perf_counter() - t0


def crc_cli(path: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "crc", "run", str(path), "--no-progress", "--pull", "never"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return time.perf_counter() - t0


def stats(xs: list[float]) -> str:
    med = statistics.median(xs)
    return f"median {med:7.3f}s  min {min(xs):7.3f}s  max {max(xs):7.3f}s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--smoke", action="store_true", help="smallest size, one run each")
    args = ap.parse_args()
    k, runs = (3, 1) if args.smoke else (args.steps, args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overhead.cr"
        path.write_text(source(k))
        asyncio.run(floor(1))  # warm the engine and the page cache
        times: dict[str, list[float]] = {"floor": [], "crc": [], "crc-cli": []}
        for _ in range(runs):
            times["floor"].append(asyncio.run(floor(k)))
            times["crc"].append(asyncio.run(crc_inprocess(path)))
            times["crc-cli"].append(crc_cli(path))
    print(f"run overhead: 1 service, chain of {k} exec steps with checks, {runs} interleaved runs")
    for name, xs in times.items():
        print(f"  {name:8s} {stats(xs)}")
    f = statistics.median(times["floor"])
    c = statistics.median(times["crc"])
    cli = statistics.median(times["crc-cli"])
    print(f"ratio crc/floor      {c / f:6.2f}x")
    print(f"ratio crc-cli/floor  {cli / f:6.2f}x")
    print(f"overhead per step    {(c - f) / k * 1000:6.1f} ms (crc in-process minus floor, over {k} steps)")


if __name__ == "__main__":
    main()
