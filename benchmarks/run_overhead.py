"""What `crc run` adds on top of the engine work it orders.

Scenario (the same for both): one network, S busybox httpd services with TCP readiness, K exec steps per
service (`wget` of the service's own page, output checked), then teardown. Measured, interleaved in one
run so machine noise hits both alike:

* floor    a hand-written aiodocker script doing the same calls with full parallelism: every service
           created and started at once, readiness by a TCP connect every 10 ms, each service's steps
           as soon as it is ready, parallel removes;
* crc      the same work as one `.cr` test per service (each test uses only its service, so the tests run
           concurrently, each as soon as its service is ready; a test's steps run in order), run by crc's
           Runner in this process (-j large enough for every node);
* crc-cli  `crc run` as a user types it: a new interpreter, imports, compile, reap, lease, report.

Printed: medians and spreads, the ratios crc/floor and crc-cli/floor, and the split of crc's time by phase
against the floor's: start-up (imports + compile for crc-cli), network + receiver, services ready, steps,
teardown. Usage: python benchmarks/run_overhead.py [--services S] [--steps K] [--runs R] [--smoke]
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "crc/busybox:dev"
HTTPD = ["sh", "-c", "mkdir -p /www && echo page-$0 > /www/index.html && exec httpd -f -p 8080 -h /www"]


def source(services: int, k: int) -> str:
    lines = ['suite "overhead" {']
    for s in range(services):
        argv = ", ".join(f'"{a}"' for a in [*HTTPD, f"s{s}"])
        lines.append(f'  service s{s} {{ image "{IMAGE}" command [{argv}] ready tcp 8080 within 20s }}')
    for s in range(services):
        lines.append(f'  test "s{s}" {{')
        for i in range(k):
            lines.append(f'    step s{s}x{i} = exec s{s} ["wget", "-qO-", "http://127.0.0.1:8080/"]')
            lines.append(f'    expect s{s}x{i}.stdout == "page-s{s}\\n"')
        lines.append("  }")
    lines += ["}", ""]
    return "\n".join(lines)


async def floor(services: int, k: int) -> dict[str, float]:
    import aiodocker

    marks: dict[str, float] = {"start": time.perf_counter()}
    async with aiodocker.Docker() as d:
        name = f"crcbench-floor-{time.time_ns()}"
        net = await d.networks.create({"Name": name, "Labels": {"io.crc.bench": "1"}})
        marks["network"] = time.perf_counter()
        ready_at: list[float] = []
        steps_done: list[float] = []

        async def service(s: int) -> Any:
            c = await d.containers.run({"Image": IMAGE, "Cmd": [*HTTPD, f"s{s}"], "Labels": {"io.crc.bench": "1"},
                                        "HostConfig": {"NetworkMode": name}}, name=f"{name}-s{s}")
            info = await c.show()
            ip = info["NetworkSettings"]["Networks"][name]["IPAddress"]
            while True:
                try:
                    _, w = await asyncio.wait_for(asyncio.open_connection(ip, 8080), 1)
                    w.close()
                    break
                except OSError:
                    await asyncio.sleep(0.01)
            ready_at.append(time.perf_counter())

            async def step() -> None:
                ex = await c.exec(["wget", "-qO-", "http://127.0.0.1:8080/"], stdout=True, stderr=True)
                out = b""
                async with ex.start(detach=False) as stream:
                    while (msg := await stream.read_out()) is not None:
                        out += msg.data
                assert (await ex.inspect())["ExitCode"] == 0 and out == f"page-s{s}\n".encode(), out

            await asyncio.gather(*(step() for _ in range(k)))
            steps_done.append(time.perf_counter())
            return c

        containers = await asyncio.gather(*(service(s) for s in range(services)))
        marks["ready"] = max(ready_at)
        marks["steps"] = max(steps_done)
        await asyncio.gather(*(c.delete(force=True) for c in containers))
        await net.delete()
    marks["end"] = time.perf_counter()
    return marks


async def crc_inprocess(path: Path) -> dict[str, float]:
    from crc.compiler.compile import compile_file
    from crc.runtime.docker_backend import DockerBackend
    from crc.runtime.runner import Runner, RunOptions

    t0 = time.perf_counter()
    plan = compile_file(path)
    compiled = time.perf_counter()
    async with DockerBackend() as backend:
        runner = Runner(backend, RunOptions(allow_pull=False, jobs=64))
        result = await runner.run([plan])
    end = time.perf_counter()
    assert result.exit_code() == 0, [r.message for r in result.nodes.values() if r.message]
    # Node times are wall-clock ns; map them onto this process's perf_counter through the run's end.
    shift = end - result.ended_ns / 1e9
    svc = [r for r in result.nodes.values() if r.kind == "service"]
    steps = [r for r in result.nodes.values() if r.kind == "step"]
    return {"start": t0, "compiled": compiled, "network": min(r.started_ns for r in svc) / 1e9 + shift,
            "ready": max(r.ended_ns for r in svc) / 1e9 + shift, "steps": max(r.ended_ns for r in steps) / 1e9 + shift,
            "end": end}


def crc_cli(path: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "crc", "run", str(path), "--no-progress", "--pull", "never",
                           "-j", "64"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return time.perf_counter() - t0


def phases(m: dict[str, float]) -> dict[str, float]:
    return {"network": m["network"] - m.get("compiled", m["start"]), "services ready": m["ready"] - m["network"],
            "steps": m["steps"] - m["ready"], "teardown": m["end"] - m["steps"], "total": m["end"] - m["start"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--services", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--smoke", action="store_true", help="smallest size, one run each")
    args = ap.parse_args()
    services, k, runs = (1, 1, 1) if args.smoke else (args.services, args.steps, args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overhead.cr"
        path.write_text(source(services, k))
        asyncio.run(floor(1, 1))  # warm the engine and the page cache
        fl: list[dict[str, float]] = []
        cr: list[dict[str, float]] = []
        cli: list[float] = []
        for _ in range(runs):
            fl.append(phases(asyncio.run(floor(services, k))))
            m = asyncio.run(crc_inprocess(path))
            p = phases(m)
            p["compile"] = m["compiled"] - m["start"]
            cr.append(p)
            cli.append(crc_cli(path))

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(f"run overhead: {services} services with tcp readiness, {k} exec steps each, {runs} interleaved runs")
    print(f"  {'phase':16s} {'floor':>9s} {'crc':>9s} {'crc-floor':>10s}")
    for key in ("network", "services ready", "steps", "teardown", "total"):
        f, c = med(fl, key), med(cr, key)
        print(f"  {key:16s} {f * 1000:8.1f}ms {c * 1000:8.1f}ms {(c - f) * 1000:+9.1f}ms")
    print(f"  {'compile':16s} {'':9s} {med(cr, 'compile') * 1000:8.1f}ms")
    f_total, c_total, cli_total = med(fl, "total"), med(cr, "total"), statistics.median(cli)
    print(f"  crc-cli total    {cli_total * 1000:8.1f}ms (min {min(cli) * 1000:.1f}, max {max(cli) * 1000:.1f})")
    print(f"ratio crc/floor      {c_total / f_total:6.2f}x (goal <= 1.10x)")
    print(f"ratio crc-cli/floor  {cli_total / f_total:6.2f}x (includes interpreter start-up and imports)")


if __name__ == "__main__":
    main()
