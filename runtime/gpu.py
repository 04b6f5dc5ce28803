"""GPUs through NVML (pynvml): what the machine has, whether a run's requests can be met, and what the GPUs
did during the run.

NVML answers for the machine crc runs on, so the check is made only when the engine is local (a unix
socket); for a remote engine the engine itself refuses a request it cannot meet when the container starts.
Without NVML (no NVIDIA driver, no GPU) every function here says so in one sentence: never a traceback.
`nvml` parameters take a module with pynvml's functions, so the logic is tested with a fake one.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SAMPLE_INTERVAL = 0.5  # seconds between two samples of each used GPU


class GpuUnavailable(Exception):
    """NVML cannot be used here; the message says why and what to do."""


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_total: int  # bytes
    memory_free: int


@dataclass(frozen=True)
class Inventory:
    driver: str
    cuda: str  # "12.2"
    gpus: tuple[Gpu, ...]

    def describe(self) -> str:
        """One line per GPU, after the driver and CUDA versions."""
        from crc.compiler.resources import format_size

        lines = [f"NVIDIA driver {self.driver}, CUDA {self.cuda}, {len(self.gpus)} GPU(s)"]
        lines += [f"  GPU {g.index}: {g.name} ({g.uuid}), {format_size(g.memory_free)} free of "
                  f"{format_size(g.memory_total)}" for g in self.gpus]
        return "\n".join(lines)


def load_nvml() -> Any:
    """The pynvml module, initialised; raises GpuUnavailable when there is no usable NVML."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # pynvml's notice about its new package name
            import pynvml
    except ImportError as e:
        raise GpuUnavailable(f"pynvml cannot be imported ({e}): reinstall crc's dependencies") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        raise GpuUnavailable(f"NVML is not usable on this machine ({_text(e)}): GPUs need an NVIDIA driver "
                             "(libnvidia-ml.so) on the engine's host") from None
    return pynvml


def inventory(nvml: Any) -> Inventory:
    """What NVML sees: driver and CUDA versions, and each GPU with its free memory."""
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda_int = int(nvml.nvmlSystemGetCudaDriverVersion())
        gpus = []
        for i in range(int(nvml.nvmlDeviceGetCount())):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = nvml.nvmlDeviceGetMemoryInfo(h)
            gpus.append(Gpu(i, _text(nvml.nvmlDeviceGetUUID(h)), _text(nvml.nvmlDeviceGetName(h)),
                            int(mem.total), int(mem.free)))
    except nvml.NVMLError as e:
        raise GpuUnavailable(f"NVML could not list the GPUs: {_text(e)}") from None
    return Inventory(driver, f"{cuda_int // 1000}.{cuda_int % 1000 // 10}", tuple(gpus))


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".") if p.isdigit())


def check(requests: Iterable[tuple[str, Mapping[str, Any]]], inv: Inventory) -> list[str]:
    """What cannot be met of `requests` ((who, the Plan's `gpus` attribute)), one sentence each.

    Requests are checked one by one (each service may share GPUs with another, as the engine allows)."""
    from crc.compiler.resources import format_size

    problems: list[str] = []
    for who, req in requests:
        if req.get("driver") and _version(inv.driver) < _version(req["driver"]):
            problems.append(f"{who} needs NVIDIA driver {req['driver']} or newer; this machine has {inv.driver}")
        if req.get("cuda") and _version(inv.cuda) < _version(req["cuda"]):
            problems.append(f"{who} needs CUDA {req['cuda']} or newer; the driver supports CUDA {inv.cuda}")
        if req.get("devices"):
            known = {str(g.index): g for g in inv.gpus} | {g.uuid: g for g in inv.gpus}
            missing = [d for d in req["devices"] if d not in known]
            if missing:
                problems.append(f"{who} asks for GPU(s) {', '.join(missing)}, which NVML does not list "
                                f"(it sees {', '.join(str(g.index) for g in inv.gpus) or 'none'})")
                continue
            chosen = [known[d] for d in req["devices"]]
        else:
            want = len(inv.gpus) if req.get("count") is None else int(req["count"])
            if not inv.gpus or want > len(inv.gpus):
                problems.append(f"{who} asks for {'all GPUs' if req.get('count') is None else f'{want} GPU(s)'}; "
                                f"this machine has {len(inv.gpus)}")
                continue
            # The engine picks which ones: the request holds if the `want` roomiest GPUs can hold it.
            chosen = sorted(inv.gpus, key=lambda g: -g.memory_free)[:want]
        if req.get("memory"):
            short = [g for g in chosen if g.memory_free < req["memory"]]
            if short:
                problems.append(f"{who} needs {format_size(req['memory'])} free on each GPU; "
                                + ", ".join(f"GPU {g.index} has {format_size(g.memory_free)}" for g in short))
    return problems


def requests_of(plans: Iterable[Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Every service's GPU request in these Plans, as (`service NAME (suite SUITE)`, request)."""
    return [(f"service `{d['name']}` (suite {d['suite']})", d["gpus"])
            for p in plans for d in p.nodes.values() if d.get("kind") == "service" and d.get("gpus")]


@dataclass
class Samples:
    """Memory used and utilisation of each sampled GPU over a run."""

    every: float
    series: dict[int, list[tuple[float, int, int]]] = field(default_factory=dict)  # index -> (t, bytes, %)

    def add(self, nvml: Any, indexes: Iterable[int], t: float) -> None:
        """One sample of each GPU in `indexes` (a GPU NVML stops answering for is skipped)."""
        for i in indexes:
            try:
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                used = int(nvml.nvmlDeviceGetMemoryInfo(h).used)
                util = int(nvml.nvmlDeviceGetUtilizationRates(h).gpu)
            except nvml.NVMLError:
                continue
            self.series.setdefault(i, []).append((round(t, 3), used, util))

    def to_dict(self) -> dict[str, Any]:
        """For the JSON report: per GPU its samples and their peaks."""
        return {"interval_s": self.every, "gpus": [
            {"index": i, "peak_memory_bytes": max(s[1] for s in ss), "peak_utilization": max(s[2] for s in ss),
             "samples": [list(s) for s in ss]} for i, ss in sorted(self.series.items()) if ss]}


async def sample(nvml: Any, indexes: list[int], out: Samples, *, task_status: Any = None) -> None:
    """Sample `indexes` every `out.every` seconds until cancelled (run it in the run's task group)."""
    import anyio

    t0 = time.monotonic()
    if task_status is not None:
        task_status.started()
    while True:
        out.add(nvml, indexes, time.monotonic() - t0)
        await anyio.sleep(out.every)


@dataclass
class Watch:
    """A run's GPUs: NVML, which GPUs to sample, and the samples taken."""

    nvml: Any
    indexes: list[int]
    samples: Samples


def preflight(plans: Iterable[Any], docker_host: str | None) -> Watch | None:
    """Check the Plans' GPU requests against NVML before anything starts.

    None when no service asks for a GPU, or when the engine is remote (NVML here knows nothing of its host;
    the engine refuses what it cannot meet). Raises GpuUnavailable naming every request that cannot be met."""
    reqs = requests_of(plans)
    if not reqs or (docker_host and not docker_host.startswith("unix://")):
        return None
    nvml = load_nvml()
    inv = inventory(nvml)
    problems = check(reqs, inv)
    if problems:
        raise GpuUnavailable("the GPUs cannot meet this run's requests:\n  - " + "\n  - ".join(problems)
                             + "\n" + inv.describe())
    wanted: set[int] = set()
    for _, req in reqs:
        if req.get("devices"):
            by_id = {str(g.index): g.index for g in inv.gpus} | {g.uuid: g.index for g in inv.gpus}
            wanted.update(by_id[d] for d in req["devices"])
        else:  # the engine picks: sample every GPU
            wanted.update(g.index for g in inv.gpus)
    return Watch(nvml, sorted(wanted), Samples(SAMPLE_INTERVAL))
