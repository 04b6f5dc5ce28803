"""Lowering of what a service builds and may use: `build`, `cpus`, `memory`, `gpus`.

Each function takes the IR item and a `text` callable (the compiler's own value rendering, which reports
template problems itself) and returns the Plan attribute, reporting located errors for values that cannot
mean anything to the engine. A bad value gives None, so one mistake is reported once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import ir
from .diagnostics import Diagnostics

Text = Callable[[ir.Value, str], "str | None"]
Value = Callable[[ir.Value], Any]

_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(KiB|MiB|GiB|TiB|KB|MB|GB|TB|B)\s*")
# Docker refuses a memory limit under 6 MiB ("Minimum memory limit allowed is 6MB").
MIN_MEMORY = 6 * 2**20
_VERSION = re.compile(r"\d+(\.\d+){0,2}")


def size_bytes(text: str) -> int | None:
    """`"512MiB"` -> 536870912; None when `text` is not a size with a unit."""
    m = _SIZE.fullmatch(text)
    if not m:
        return None
    n = float(m.group(1)) * _UNITS[m.group(2)]
    return int(n) if n < 2**63 else None  # past 64 bits (or infinite): no size an engine takes


def format_size(n: int) -> str:
    """A byte count the way a person reads it: 536870912 -> "512 MiB"."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if n >= _UNITS[unit]:
            return f"{n / _UNITS[unit]:.4g} {unit}"
    return f"{n} B"


def from_module(path: str | None, v: ir.Value, files: Mapping[str, str], root: str) -> str | None:
    """A relative path written in an imported module, as seen from the root file's directory: a module's
    volume sources and build contexts are relative to the module's own directory, as its imports are.

    A path that starts with a template (`"{{ data }}/x"`) keeps the root's meaning: its text comes from a
    template parameter, written by the importer. Absolute paths, and paths of the root file, are unchanged."""
    if path is None or not isinstance(v, ir.Str) or v.loc.file == root or v.loc.file not in files \
            or os.path.isabs(path) or v.value.lstrip().startswith(("{{", "{%")):
        return path
    written = v.loc.file
    module_dir = os.path.dirname(files[written])
    root_dir = os.path.dirname(files.get(root, os.path.realpath(root)))
    return Path(os.path.relpath(os.path.join(module_dir, path), root_dir)).as_posix()


def lower_build(b: ir.Build, text: Text, diags: Diagnostics, base: Path,
                rebase: Callable[[str | None, ir.Value], str | None] | None = None) -> dict[str, Any] | None:
    """`build DIR { dockerfile F target T args {...} network N }` -> {context, dockerfile, target, args,
    network} (network: what RUN steps may reach, e.g. "none"; None = the engine's default).

    The context stays relative to the root file, like volume sources (`rebase` turns a module's own into
    that; the runtime resolves it); a context or Dockerfile that does not exist is reported here, before
    anything runs."""
    context = text(b.context, "a build context")
    if rebase is not None:
        context = rebase(context, b.context)
    dockerfile = text(b.dockerfile, "a Dockerfile path") if b.dockerfile is not None else None
    target = text(b.target, "a build target") if b.target is not None else None
    args = {p.key: text(p.value, f"build arg {p.key}") or "" for p in b.args}
    network = text(b.network, "a build network") if b.network is not None else None
    if context is None:
        return None
    where = (base / context).resolve() if base is not None else Path(context)
    if not where.is_dir():
        diags.error(f"build context `{context}` is not a directory", _loc(b.context),
                    "the path is relative to this file's directory")
        return None
    df = where / (dockerfile or "Dockerfile")
    if not df.is_file():
        diags.error(f"no Dockerfile at `{df}`", _loc(b.dockerfile) if b.dockerfile is not None else b.loc,
                    "name it with `dockerfile \"PATH\"` (relative to the build context)")
        return None
    if dockerfile is not None and not df.resolve().is_relative_to(where):
        diags.error("the Dockerfile must be inside the build context", _loc(b.dockerfile))
        return None
    return {"context": context, "dockerfile": dockerfile or "Dockerfile", "target": target,
            "args": dict(sorted(args.items())), "network": network}


def lower_cpus(v: ir.Value, value: Value, diags: Diagnostics) -> float | None:
    """`cpus 1.5` -> 1.5 (CPUs' worth of time; the engine's NanoCpus)."""
    val = value(v)
    if isinstance(val, str):
        try:
            val = float(val)
        except ValueError:
            pass
    if isinstance(val, bool) or not isinstance(val, int | float) or not 0 < val <= 1024:
        if val is not None:
            diags.error(f"`{val}` is not a CPU count", _loc(v), "write a positive number such as 0.5 or 2")
        return None
    return float(val)


def lower_memory(v: ir.Value, text: Text, diags: Diagnostics, what: str = "a memory limit") -> int | None:
    """`memory 512MiB` (or "512MiB") -> bytes."""
    t = text(v, what)
    if t is None:
        return None
    n = size_bytes(t)
    if n is None:
        diags.error(f"`{t}` is not a size", _loc(v), "write a number and a unit: 512MiB, 2GiB, 100MB")
        return None
    if n < MIN_MEMORY:
        diags.error(f"{what} of {format_size(n)} is below the engine's minimum of 6 MiB", _loc(v))
        return None
    return n


def lower_gpus(g: ir.Gpus, value: Value, text: Text, diags: Diagnostics) -> dict[str, Any] | None:
    """`gpus 2 | all | ["0", "3"] { memory 8GiB cuda "12.2" driver "535" }` ->
    {count: int | None (None = all), devices: [ids] | None, memory: bytes | None, cuda, driver}."""
    out: dict[str, Any] = {"count": None, "devices": None, "memory": None, "cuda": None, "driver": None}
    bad = False  # every part is checked, so all its mistakes are reported at once
    if g.request is not None:
        req = value(g.request)
        if isinstance(req, list):
            ids = [str(x) for x in req if isinstance(x, str | int) and not isinstance(x, bool)]
            if not req or len(ids) != len(req) or len(set(ids)) != len(ids):
                diags.error("GPU device ids must be a non-empty list of distinct ids or indexes", _loc(g.request),
                            'e.g. gpus ["0", "1"] or gpus ["GPU-3f1c..."]')
                bad = True
            out["devices"] = ids
        elif isinstance(req, int) and not isinstance(req, bool) and req > 0:
            out["count"] = req
        else:
            if req is not None:
                diags.error(f"`{req}` is not a GPU request", _loc(g.request),
                            "write a count (gpus 1), `gpus all`, or device ids (gpus [\"0\", \"1\"])")
            bad = True
    if g.memory is not None:
        out["memory"] = lower_memory(g.memory, text, diags, "a GPU memory requirement")
        bad = bad or out["memory"] is None
    for key, v in (("cuda", g.cuda), ("driver", g.driver)):
        if v is None:
            continue
        t = text(v, f"a minimum {key} version")
        if t is not None and not _VERSION.fullmatch(t):
            diags.error(f"`{t}` is not a version", _loc(v), f'write it as numbers: {key} "12.2"')
            t = None
        bad = bad or t is None
        out[key] = t
    return None if bad else out


def _loc(v: Any) -> ir.Loc:
    return v.loc  # every IR value carries its location
