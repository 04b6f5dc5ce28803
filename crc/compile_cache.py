"""The compile cache of `crc run FILE.cr`: compiled Plans kept under .crc/cache and reused while unchanged.

Compiling is a pure function of the source files (the file and its imports), the environment variables its
templates read and the compiler itself. `crc run FILE.cr` keeps each compiled Plan in PLAN_DIR/cache and
reuses it while all of those match, without importing the compiler, lark, jinja2 or networkx. A cache
problem (a damaged entry, an unwritable directory) is never an error: the file is compiled as before.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crc.clitools import PLAN_DIR, compile_sources, lint_ignore, plan_dir, print_diagnostics

if TYPE_CHECKING:
    from crc.compiler.diagnostics import Diagnostic
    from crc.compiler.plan import Plan

CACHE_DIR = "cache"  # under PLAN_DIR
CACHE_FORMAT = "crc-compile-cache"
CACHE_VERSION = 1


def plan_stale(plan: Plan) -> bool:
    """True when a Plan written by `crc compile` no longer matches what it was compiled from, as far as the
    Plan can tell: its source or an import changed, another crc compiled it, or an environment variable its
    templates read is now set to another value (one now unset would fall back to the template's default, which
    the Plan does not record: the compile cache of `crc run FILE.cr` keeps the raw environment for that)."""
    from crc import __version__

    if plan.meta["crc_version"] != __version__ or source_changed(plan):
        return True
    return any(name in os.environ and os.environ[name] != value
               for s in plan.suites for name, value in s["env_reads"].items())


def source_changed(plan: Plan) -> bool:
    """True when the plan's source (or an import) no longer matches the digest it was compiled from."""
    import hashlib

    from crc.compiler.source import SourceError, read_source

    def digest(path: str) -> str | None:
        try:
            return hashlib.sha256(read_source(path).encode()).hexdigest()
        except SourceError:
            return None

    if digest(plan.meta["source"]) != plan.meta["source_digest"]:
        return True
    return any(not i["path"].startswith("<std>") and digest(i["path"]) != i["digest"] for i in plan.meta["imports"])


def compile_cached(sources: list[Path], *, read: bool = True) -> list[Plan] | None:
    """The Plan of every source, in order, from the cache or compiled (then cached), printing warnings and
    errors as `compile_sources` does; None when a file has errors."""
    ignore = lint_ignore()
    stamp = _compiler_stamp()
    if stamp is not None and ignore:  # the warnings kept depend on the lints the project ignores
        stamp = f"{stamp}:ignore={','.join(sorted(ignore))}"

    def store(src: Path, plan: Plan, texts: Mapping[str, str]) -> None:
        if stamp is not None:
            _cache_store(src, plan, texts, stamp)

    plans: list[Plan] = []
    ok = True
    for src in sources:
        hit = _cache_lookup(src, stamp) if read and stamp is not None else None
        if hit is not None:
            plan, warnings, texts = hit
            if warnings:
                print_diagnostics(warnings, texts)
            plans.append(plan)
            continue
        compiled = compile_sources([src], on_compiled=store, ignore=ignore)
        if compiled is None:
            ok = False
            continue
        plans.extend(p for _, p in compiled)
    return plans if ok else None


def _cache_path(src: Path) -> Path:
    """A source's entry: Plans record paths as given, relative to the working directory, as PLAN_DIR is."""
    import hashlib

    return Path(PLAN_DIR) / CACHE_DIR / f"{src.stem}-{hashlib.sha256(str(src).encode()).hexdigest()[:16]}.cache"


def _compiler_stamp() -> str | None:
    """What a Plan depends on besides its sources and environment: crc's version and, so that an edited
    (editable) install or an upgraded Faker, Jinja2 or Lark is never served an old Plan, the size and mtime of
    every compiler, grammar and stdlib file and of those libraries' `__init__.py` (found, not imported). None
    when they cannot be listed: nothing is cached then."""
    import hashlib
    from importlib.util import find_spec

    from crc import __version__

    files: list[tuple[str, str, int, int]] = []

    def add(pkg: str, path: str) -> None:
        st = os.stat(path)
        files.append((pkg, os.path.basename(path), st.st_size, st.st_mtime_ns))

    try:
        for pkg in ("crc.compiler", "crc.grammar", "crc.stdlib"):
            spec = find_spec(pkg)
            for d in (spec.submodule_search_locations or []) if spec else []:
                with os.scandir(d) as it:
                    for e in it:
                        if e.name.endswith((".py", ".lark", ".cr")):
                            add(pkg, e.path)
        for lib in ("faker", "jinja2", "lark"):
            spec = find_spec(lib)
            if spec is not None and spec.origin:
                add(lib, spec.origin)
    except (OSError, ImportError, ValueError):
        return None
    return hashlib.sha256(repr((__version__, sorted(files))).encode()).hexdigest()


def _env_reads(plan: Plan) -> set[str]:
    return {name for s in plan.suites for name in s["env_reads"]}


def _cache_lookup(src: Path, stamp: str) -> tuple[Plan, list[Diagnostic], dict[str, str]] | None:
    """The cached Plan of `src` with its warnings (and the texts they point into), or None when there is none
    or anything it was compiled from changed: a source or import digest, an environment variable its
    templates read, crc itself."""
    import msgpack

    from crc.compiler.plan import Plan

    try:
        entry = msgpack.unpackb(_cache_path(src).read_bytes(), raw=False)
        if not (isinstance(entry, dict) and entry.get("format") == CACHE_FORMAT
                and entry.get("version") == CACHE_VERSION and entry.get("stamp") == stamp):
            return None
        plan = Plan.from_bytes(entry["plan"])
        # env_reads records the value a template got (a default when unset): the entry keeps what os.environ
        # held, unset as None.
        env = entry["env"]
        if plan.meta["source"] != str(src) or any(name not in env or os.environ.get(name) != env[name]
                                                  for name in _env_reads(plan)):
            return None
        if source_changed(plan):
            return None
        warnings = _warnings_from(entry["warnings"]) if entry["warnings"] else []
        texts = entry["texts"]
        if not isinstance(texts, dict):
            return None
        return plan, warnings, texts
    except Exception:  # unreadable, damaged, or from another crc: a cache miss, never an error
        return None


def _cache_store(src: Path, plan: Plan, texts: Mapping[str, str], stamp: str) -> None:
    """Keep `plan` (and its warnings) as `src`'s entry; silently nothing when the directory is not writable."""
    from crc.compiler.plan import canonical_bytes

    files = {loc.file for w in plan.warnings for loc in (w.loc, *(n for _, n in w.notes)) if loc is not None}
    entry = {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "stamp": stamp,
        "env": {name: os.environ.get(name) for name in sorted(_env_reads(plan))},
        "warnings": [_warning_data(w) for w in plan.warnings],
        "texts": {f: texts[f] for f in sorted(files) if f in texts},
        "plan": plan.to_bytes(),
    }
    path = _cache_path(src)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        plan_dir()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(canonical_bytes(entry))
        os.replace(tmp, path)  # whole entries only, also with concurrent runs
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def _warning_data(d: Diagnostic) -> dict[str, Any]:
    def loc(x: Any) -> list[Any] | None:
        return None if x is None else [x.file, x.line, x.col, x.end_line, x.end_col]

    return {"message": d.message, "loc": loc(d.loc), "severity": d.severity, "help": d.help,
            "notes": [[text, loc(where)] for text, where in d.notes], "code": d.code}


def _warnings_from(data: list[dict[str, Any]]) -> list[Diagnostic]:
    from crc.compiler.diagnostics import Diagnostic
    from crc.compiler.ir import Loc

    return [Diagnostic(d["message"], Loc(*d["loc"]) if d["loc"] is not None else None, d["severity"], d["help"],
                       tuple((text, Loc(*where)) for text, where in d["notes"]), d.get("code")) for d in data]
