"""Images from source, GPU sampling and log capture: what they cost.

1. Build cache hit. An unchanged build context, ready to run, three ways, interleaved in one run:
   * crc       what `crc run` does for a `build` service whose image is cached: tar and hash the context,
               one image lookup (no build request);
   * engine    the engine's build endpoint on the same context (every layer cached), through the same client;
   * docker    `docker build -q` of the same context (every layer cached), as a user would.
   Printed: medians and the ratios engine/crc and docker/crc.
2. GPU sampling on a run. `crc run`'s execute() of the same Plan with and without the NVML sampler running
   beside it (every 0.5 s, one call per sampled GPU; the NVML here is a scripted one with two GPUs, as this
   machine has no GPU: real NVML calls cost more and are not measured here). Printed: medians and the ratio
   sampled/plain (goal <= 1.03x).
3. Log capture on a run. The same execute() of 4 services (each printing 2,000 log lines) with their whole
   logs kept (`--json`/`--record`, what `crc logs` prints) and tails of every service read, against a run
   that reads no log (all tests pass). Printed: medians and the ratio captured/plain (goal <= 1.03x).

Usage: python benchmarks/images.py [--runs R] [--files N] [--smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BASE = "crc/busybox:dev"
DOCKER_BUILD = ["docker", "build", "-q", "--network", "none"]  # RUN steps need no network (nor docker0)


def make_context(where: Path, files: int) -> None:
    """A context like a small service's: N source files of a few KB and a three-step Dockerfile."""
    (where / "src").mkdir(parents=True)
    for i in range(files):
        (where / "src" / f"mod{i}.py").write_text(f"# module {i}\n" + "x = 1\n" * 400)
    (where / "Dockerfile").write_text(f"FROM {BASE}\nCOPY src /app/src\nRUN ls /app/src | wc -l > /count\n"
                                      'CMD ["sleep", "1000"]\n')


async def bench_builds(ctx: Path, runs: int) -> dict[str, list[float]]:
    from crc.runtime.backend import BuildSpec, ImageUnavailable
    from crc.runtime.docker_backend import DockerBackend
    from crc.runtime.images import build_tag, make_context

    out: dict[str, list[float]] = {"crc": [], "engine": [], "docker": []}
    async with DockerBackend() as backend:
        c = make_context(ctx, "Dockerfile", None, {})
        tag = build_tag("bench", c.digest)
        await backend.build_image(BuildSpec(c.tar, tag, network="none"))  # warm: the image and every layer exist
        subprocess.run(DOCKER_BUILD + ["-t", tag, str(ctx)], capture_output=True, check=True)
        for _ in range(runs):
            t = time.perf_counter()
            c = make_context(ctx, "Dockerfile", None, {})
            try:
                await backend.ensure_image(build_tag("bench", c.digest), allow_pull=False)
            except ImageUnavailable:  # pragma: no cover - the warm-up built it
                raise SystemExit("the cached image vanished during the benchmark") from None
            out["crc"].append(time.perf_counter() - t)
            t = time.perf_counter()
            await backend.build_image(BuildSpec(make_context(ctx, "Dockerfile", None, {}).tar, tag, network="none"))
            out["engine"].append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run(DOCKER_BUILD + ["-t", tag, str(ctx)], capture_output=True, check=True)
            out["docker"].append(time.perf_counter() - t)
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
    return out


class ScriptedNVML:
    """Two GPUs that answer at once (see the module docstring)."""

    class NVMLError(Exception):
        pass

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(total=16 * 2**30, free=8 * 2**30, used=8 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=50, memory=10)


SOURCE = """suite "gpu-bench" {
  service app { image "crc/busybox:dev" command ["sleep", "1000"] }
  test "t" {
%s  }
}
"""


def bench_sampling(runs: int, steps: int) -> dict[str, list[float]]:
    from crc.compiler.compile import compile_file
    from crc.runtime.gpu import SAMPLE_INTERVAL, Samples, Watch
    from crc.runtime.runner import RunOptions

    from crc.commands_run import execute

    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "g.cr"
        body = "".join(f'    step s{i} = exec app ["sleep", "0.2"]\n' for i in range(steps))
        src.write_text(SOURCE % body)
        plan = compile_file(str(src))
        options = RunOptions()
        out: dict[str, list[float]] = {"plain": [], "sampled": []}
        samples = 0
        for _ in range(runs):
            for mode in ("plain", "sampled"):
                watch = Watch(ScriptedNVML(), [0, 1], Samples(SAMPLE_INTERVAL)) if mode == "sampled" else None
                t = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):  # the run's progress lines
                    result, _, _ = execute([plan], options, progress=False, gpus=watch)
                out[mode].append(time.perf_counter() - t)
                if result.exit_code() != 0:
                    raise SystemExit(f"the benchmark's run failed: {result.counts()}")
                if watch is not None:
                    samples += sum(len(s) for s in watch.samples.series.values())
        print(f"  ({samples} GPU samples taken in the sampled runs)")
    return out


LOGGY = """suite "log-bench" {
%s  test "t" {
%s  }
}
"""


def bench_logs(runs: int, services: int) -> dict[str, list[float]]:
    from dataclasses import replace

    from crc.compiler.compile import compile_file
    from crc.runtime.runner import RunOptions

    from crc.commands_run import execute

    svcs = "".join(f'  service s{i} {{ image "crc/busybox:dev" command ["sh", "-c", '
                   f'"for i in $(seq 1 2000); do echo log line $i of s{i}; done; sleep 1000"] }}\n'
                   for i in range(services))
    steps = "".join(f'    step x{i} = exec s{i} ["true"]\n' for i in range(services))
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "l.cr"
        src.write_text(LOGGY % (svcs, steps))
        plan = compile_file(str(src))
        plain = RunOptions()
        captured = replace(plain, log_full=True, log_tails=True)
        out: dict[str, list[float]] = {"plain": [], "captured": []}
        for _ in range(runs):
            for mode, options in (("plain", plain), ("captured", captured)):
                t = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    result, _, _ = execute([plan], options, progress=False)
                out[mode].append(time.perf_counter() - t)
                if result.exit_code() != 0:
                    raise SystemExit(f"the benchmark's run failed: {[t.failures for t in result.tests]}")
                if mode == "captured" and not all("log" in r.detail for r in result.nodes.values()
                                                  if r.kind == "service"):
                    raise SystemExit("the captured run kept no log")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--files", type=int, default=200, help="source files in the build context")
    ap.add_argument("--steps", type=int, default=10, help="steps of the sampled run (0.2 s each)")
    ap.add_argument("--smoke", action="store_true", help="smallest size, for the test suite")
    a = ap.parse_args()
    if a.smoke:
        a.runs, a.files, a.steps = 1, 5, 2
    import anyio

    with tempfile.TemporaryDirectory() as d:
        make_context(Path(d), a.files)
        times = anyio.run(bench_builds, Path(d), a.runs)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"build cache hit ({a.files} files, {a.runs} runs): " +
          ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in med.items()))
    print(f"ratio engine/crc: {med['engine'] / med['crc']:.2f}x")
    print(f"ratio docker/crc: {med['docker'] / med['crc']:.2f}x")
    times = bench_sampling(a.runs, a.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"run with GPU sampling ({a.steps} steps, {a.runs} runs): " +
          ", ".join(f"{k} {v:.3f} s" for k, v in med.items()))
    print(f"ratio sampled/plain: {med['sampled'] / med['plain']:.3f}x (goal <= 1.03x)")
    times = bench_logs(a.runs, 2 if a.smoke else 4)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"run with log capture ({a.runs} runs): " + ", ".join(f"{k} {v:.3f} s" for k, v in med.items()))
    print(f"ratio captured/plain: {med['captured'] / med['plain']:.3f}x (goal <= 1.03x)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
