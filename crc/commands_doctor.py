"""`crc doctor`: whether this machine can run the given files: the engine, the images, the GPUs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from crc.clitools import EXIT_ENV, add_command


def register(sub: Any) -> None:
    p = add_command(sub, "doctor", doctor_cmd, "check the engine, the images the files need and the GPUs")
    p.add_argument("targets", nargs="*", type=Path, metavar="TARGET", help=".cr files, directories or Plans")


def doctor_cmd(a: argparse.Namespace) -> int:
    """Print one line per thing checked, `ok` or what is wrong and what to do; exit 3 if anything is wrong."""
    import anyio

    from crc.commands_run import resolve_plans
    from crc.runtime.backend import BackendError
    from crc.runtime.docker_backend import DockerBackend, engine_host
    from crc.runtime.gpu import GpuUnavailable, check, inventory, load_nvml, requests_of

    plans = resolve_plans(a.targets) if a.targets else []
    lines: list[tuple[bool, str]] = []

    async def engine() -> None:
        async with DockerBackend() as backend:
            try:
                await backend.ping()
                lines.append((True, f"engine: {await backend.version()} at {backend.host}"))
            except BackendError as e:
                lines.append((False, f"engine: {e}"))
                return
            for p in plans:
                for d in p.nodes.values():
                    if d.get("kind") == "service" and d.get("build"):
                        lines.append((True, f"image of service `{d['name']}`: built from {d['build']['context']} "
                                            f"(by `crc run`, cached by the context's digest)"))
            refs = sorted({str(d["image"]) for p in plans for d in p.nodes.values()
                           if d.get("image") and not d.get("build")})
            for ref in refs:
                present = await backend.has_image(ref)
                lines.append((present, f"image {ref}: " + ("present" if present else
                              "missing (`crc run --pull missing` pulls it if a registry has it; or build it)")))

    anyio.run(engine)
    reqs = requests_of(plans)
    try:
        nvml = load_nvml()
        inv = inventory(nvml)
        lines.append((True, "gpus: " + inv.describe().replace("\n", "\n      ")))
        host = engine_host()
        if reqs and host and not host.startswith("unix://"):
            lines.append((True, f"gpus: the engine at {host} is remote; NVML here says nothing of its GPUs"))
        else:
            problems = check(reqs, inv)
            lines += [(False, f"gpus: {p}") for p in problems]
            if reqs and not problems:
                lines.append((True, f"gpus: the {len(reqs)} request(s) of these files can be met"))
    except GpuUnavailable as e:
        lines.append((not reqs, f"gpus: {e}" + (f" ({len(reqs)} service(s) of these files ask for GPUs)"
                                                 if reqs else " (no file given asks for one)")))
    for ok, text in lines:
        print(f"{'  ok' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for ok, _ in lines) else EXIT_ENV
