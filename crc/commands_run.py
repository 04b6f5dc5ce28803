"""`crc run` and `crc clean`: the commands that talk to a container engine."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crc.cli import (
    EXIT_ENV,
    EXIT_INPUT,
    PLAN_DIR,
    add_command,
    at_least,
    compile_sources,
    fail,
    find_sources,
    print_diagnostics,
)

if TYPE_CHECKING:
    from crc.compiler.diagnostics import Diagnostic
    from crc.compiler.plan import Plan
    from crc.runtime.results import RunResult

CACHE_DIR = "cache"  # under PLAN_DIR
CACHE_FORMAT = "crc-compile-cache"
CACHE_VERSION = 1


OTEL_EXPORTERS = ("none", "stdout", "otlp")
OTEL_PROTOCOLS = ("http/protobuf", "grpc")
PULL = ("missing", "never")


def _source_changed(plan: Plan) -> bool:
    """True when the plan's source (or an import) no longer matches the digest it was compiled from."""
    import hashlib

    def digest(path: str) -> str | None:
        try:
            return hashlib.sha256(Path(path).read_text(encoding="utf-8").encode()).hexdigest()
        except OSError:
            return None

    if digest(plan.meta["source"]) != plan.meta["source_digest"]:
        return True
    return any(not p.startswith("<std>") and digest(p) != d for p, d in plan.meta.get("imports", []))


def resolve_plans(targets: list[Path], *, cache: bool = True) -> list[Plan]:
    """Plans from .cr files (compiled now, or from the compile cache), .plan files, directories, or what
    `crc compile` wrote last. `cache=False` compiles every source afresh (the result is still cached)."""
    from crc.compiler.plan import Plan, PlanFormatError

    if not targets:
        last = Path(PLAN_DIR) / "last"
        if not last.exists():
            fail("nothing to run: no file given and no Plan written by `crc compile`", EXIT_INPUT,
                 "run `crc compile FILE|DIR` first, or `crc run FILE|DIR`")
        targets = [Path(p) for p in last.read_text(encoding="utf-8").split()]
    sources: list[Path] = []
    plans: list[Plan] = []
    for t in targets:
        if t.suffix == ".plan":
            if not t.exists():
                fail(f"no such Plan file: {t}", EXIT_INPUT, "run `crc compile` again")
            try:
                plan = Plan.from_bytes(t.read_bytes())
            except PlanFormatError as e:
                fail(f"{t}: {e}", EXIT_INPUT)
            if _source_changed(plan) and Path(plan.meta["source"]).exists():
                sources.append(Path(plan.meta["source"]))  # recompiled: the source changed since
            else:
                plans.append(plan)
        else:
            sources.extend(find_sources([t]))
    if sources:
        compiled = _compile_cached(sources, read=cache)
        if compiled is None:
            raise SystemExit(EXIT_INPUT)
        plans.extend(compiled)
    if not plans:
        fail("no suite to run", EXIT_INPUT)
    return plans


# ---------------------------------------------------------------- the compile cache
# Compiling is a pure function of the source files (the file and its imports), the environment variables its
# templates read and the compiler itself. `crc run FILE.cr` keeps each compiled Plan in PLAN_DIR/cache and
# reuses it while all of those match, without importing the compiler, lark, jinja2 or networkx. A cache
# problem (a damaged entry, an unwritable directory) is never an error: the file is compiled as before.


def _compile_cached(sources: list[Path], *, read: bool = True) -> list[Plan] | None:
    """The Plan of every source, in order, from the cache or compiled (then cached), printing warnings and
    errors as `compile_sources` does; None when a file has errors."""
    stamp = _compiler_stamp()

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
        compiled = compile_sources([src], on_compiled=store)
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
    return {name for s in plan.meta.get("suites", []) for name in s.get("env_reads", {})}


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
        if _source_changed(plan):
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
            "notes": [[text, loc(where)] for text, where in d.notes]}


def _warnings_from(data: list[dict[str, Any]]) -> list[Diagnostic]:
    from crc.compiler.diagnostics import Diagnostic
    from crc.compiler.ir import Loc

    return [Diagnostic(d["message"], Loc(*d["loc"]) if d["loc"] is not None else None, d["severity"], d["help"],
                       tuple((text, Loc(*where)) for text, where in d["notes"])) for d in data]


def _check_writable(path: Path) -> None:
    """Fail (exit 2) now, not after the run, when a report or recording could not be written there."""
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab"):  # the real test: root may "have access" where nothing can be created (/proc)
            pass
    except OSError as e:
        fail(f"cannot write {path}: {e.strerror or e}", EXIT_INPUT)
    if not existed:
        path.unlink(missing_ok=True)


def _jobs_default() -> int:
    text = os.environ.get("CRC_JOBS")
    if not text:
        return 8
    try:
        return int(at_least(1)(text))
    except argparse.ArgumentTypeError as e:
        fail(f"CRC_JOBS: {e}", EXIT_INPUT)


def register(sub: Any) -> None:
    """Adds `crc run` and `crc clean`."""
    p = add_command(sub, "run", run_cmd, "run suites against the Docker engine")
    p.add_argument("targets", nargs="*", type=Path, metavar="TARGET",
                   help=".cr files, directories or Plan files; default: what `crc compile` wrote last")
    p.add_argument("-j", "--jobs", type=at_least(1), default=None,
                   help="how many services/steps run at once (default: $CRC_JOBS, else 8)")
    p.add_argument("-k", "--select", action="append", metavar="GLOB",
                   help="run only suites/tests matching this glob (suite, suite/test or test); repeatable")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failure")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report here")
    p.add_argument("--json", dest="json_out", type=Path, metavar="FILE", help="write the JSON report here")
    p.add_argument("--no-progress", action="store_true", help="plain lines, no live display")
    p.add_argument("--no-cache", action="store_true",
                   help=f"compile .cr files afresh, not from the Plans cached in {PLAN_DIR}/{CACHE_DIR}/")
    p.add_argument("--shuffle-seed", type=int, metavar="N",
                   help="start nodes that are ready together in an order drawn from this seed")
    p.add_argument("--span-timeout", type=at_least(0, float), default=20.0, metavar="SECONDS",
                   help="seconds a test waits for the spans it expects (default: 20)")
    p.add_argument("--pull", choices=PULL, default="missing",
                   help="pull images that are missing locally, or never (default: missing)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every node as it finishes")
    p.add_argument("--record", type=Path, metavar="FILE",
                   help="write a recording of the run here (`crc replay`, `crc diff`, `crc digest` read it)")
    p.add_argument("--repeat", type=at_least(1), default=1, metavar="N",
                   help="run N times and report every test/node whose outcome or digest differs (flaky); "
                        "with --record, run i is recorded as FILE-STEM.i.SUFFIX")
    p.add_argument("--otel-exporter", choices=OTEL_EXPORTERS, default="none",
                   help="export crc's own trace (run, suites, tests, services, steps, checks); default: none")
    p.add_argument("--otel-endpoint", metavar="URL",
                   help="OTLP base URL for --otel-exporter otlp (default: $OTEL_EXPORTER_OTLP_ENDPOINT)")
    p.add_argument("--otel-protocol", choices=OTEL_PROTOCOLS,
                   help="OTLP protocol (default: $OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf)")
    p = add_command(sub, "clean", clean_cmd, "remove what crc runs left behind")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed")
    p.add_argument("--all", dest="all_runs", action="store_true",
                   help="also remove resources of runs with no lease on this host (another host may share the "
                        "engine)")


def run_cmd(a: argparse.Namespace) -> int:
    """Run suites against the Docker engine (DOCKER_HOST), with live progress and reports."""
    jobs = a.jobs if a.jobs is not None else _jobs_default()
    junit, json_out, record, repeat, select = a.junit, a.json_out, a.record, a.repeat, a.select
    plans = resolve_plans(a.targets, cache=not a.no_cache)
    from crc.runtime.runner import RunOptions

    # Bad output paths and telemetry settings are input errors: say so before anything runs.
    for out in (junit, json_out, record):
        if out is not None:
            _check_writable(out)
    telemetry = None
    if a.otel_exporter != "none":
        from crc.runtime.telemetry import TelemetryOptions, resolve

        telemetry = TelemetryOptions(a.otel_exporter, a.otel_endpoint, a.otel_protocol)
        if a.otel_exporter == "otlp":
            try:
                resolve(telemetry)
            except ValueError as e:
                fail(f"--otel-exporter otlp: {e}", EXIT_INPUT,
                     "set --otel-protocol, or OTEL_EXPORTER_OTLP_PROTOCOL to http/protobuf or grpc")
    options = RunOptions(jobs=jobs, fail_fast=a.fail_fast, select=tuple(select or ()),
                         shuffle_seed=a.shuffle_seed, span_timeout=a.span_timeout,
                         allow_pull=a.pull == "missing", log_tails=record is not None or repeat > 1)
    from crc.runtime.report import summary_text, to_json, write_json, write_junit

    progress, verbose = not a.no_progress, a.verbose
    repeat_exit = None
    if repeat > 1:
        from crc.commands_replay import run_repeated

        repeat_exit, result, labels, spans = run_repeated(
            repeat, lambda: execute(plans, options, progress=progress, verbose=verbose), plans, options, record)
    else:
        result, labels, spans = execute(plans, options, progress=progress, verbose=verbose)
    if not result.tests:
        if select:
            fail(f"--select {' '.join(select)} matched no test", EXIT_INPUT)
        fail("the suites declare no test", EXIT_INPUT, 'add one: test "name" { step ... }')
    if repeat_exit is None:
        print(summary_text(result, labels))
        if record:
            from crc.commands_replay import save_recording

            save_recording(record, result, plans, spans, options)
    try:
        if junit:
            write_junit(junit, result, labels)
        if json_out:
            write_json(json_out, to_json(result, labels, spans))
    except OSError as e:
        fail(f"cannot write a report: {e}", EXIT_ENV)
    if telemetry is not None:
        from crc.runtime.telemetry import ExportFailed, export_run

        try:
            export_run(result, labels, telemetry)
        except ExportFailed as e:
            print(f"crc: warning: {e}", file=sys.stderr)
    if repeat_exit is not None:
        return repeat_exit
    return 130 if result.interrupted else result.exit_code()


def clean_cmd(a: argparse.Namespace) -> int:
    """Remove containers, networks and volumes that crc runs left behind (never anything else)."""
    import anyio

    from crc.runtime.backend import EngineUnavailable
    from crc.runtime.docker_backend import DockerBackend
    from crc.runtime.leases import reap

    async def main() -> Any:
        async with DockerBackend() as backend:
            await backend.ping()
            return await reap(backend, force=a.all_runs, dry_run=a.dry_run)

    try:
        report = anyio.run(main)
    except EngineUnavailable as e:
        fail(str(e), EXIT_ENV)
    print(report.describe())
    return 0 if report.ok else EXIT_ENV


def execute(plans: list[Plan], options: Any, *, progress: bool, verbose: bool = False
            ) -> tuple[RunResult, dict[str, Any], list[dict[str, Any]]]:
    """Run plans with signal handling: the first Ctrl-C cancels and cleans up, the second exits at once."""
    import anyio

    from crc.runtime.backend import EngineUnavailable
    from crc.runtime.docker_backend import DockerBackend
    from crc.runtime.leases import Lease, LeaseError, reap
    from crc.runtime.report import Progress
    from crc.runtime.runner import Runner

    holder: dict[str, Any] = {}

    async def main() -> RunResult:
        async with DockerBackend() as backend:
            await backend.ping()
            await reap(backend)  # what killed runs left behind
            runner = Runner(backend, options)
            holder["runner"] = runner
            labels = {n: d for p in plans for n, d in p.nodes.items()}
            prog = Progress(labels, live=progress, verbose=verbose)
            runner.on_start = prog.started
            runner.on_result = prog.finished_node
            result: RunResult | None = None
            async with Lease.acquire(runner.run_id):
                with prog:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(_signals, tg.cancel_scope)
                        result = await runner.run(plans)
                        tg.cancel_scope.cancel()
            return result if result is not None else runner.partial_result(plans)

    import gc

    gc.freeze()  # what imports and compiling made lives for the whole run: keep it out of every collection
    gc.enable()
    try:
        result = anyio.run(main)
    except EngineUnavailable as e:
        fail(str(e), EXIT_ENV)
    except LeaseError as e:
        fail(str(e), EXIT_ENV)
    runner = holder.get("runner")
    labels = {n: {k: d.get(k) for k in ("kind", "label", "suite", "test", "loc")}
              for p in plans for n, d in p.nodes.items()}
    spans = [s.to_dict() for s in runner.spans] if runner else []
    return result, labels, spans


async def _signals(scope: Any) -> None:
    import anyio

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for _sig in signals:
            count += 1
            if count == 1:
                print("\ncrc: interrupted: cancelling and cleaning up (Ctrl-C again to exit at once)",
                      file=sys.stderr, flush=True)
                scope.cancel()
            else:
                print("crc: exiting now; `crc clean` or the next run removes what is left", file=sys.stderr,
                      flush=True)
                os._exit(130)
