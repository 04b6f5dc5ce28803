"""`crc run` and `crc clean`: the commands that talk to a container engine."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crc.clitools import (
    EXIT_ENV,
    EXIT_INPUT,
    PLAN_DIR,
    SELECT_HELP,
    add_command,
    add_run_options,
    at_least,
    fail,
    find_sources,
    print_tests,
    selected_tests,
    settings,
)

if TYPE_CHECKING:
    from crc.compiler.plan import Plan
    from crc.runtime.results import RunResult
    from crc.runtime.shard import ShardPlan

OTEL_EXPORTERS = ("none", "stdout", "otlp")
OTEL_PROTOCOLS = ("http/protobuf", "grpc")


def resolve_plans(targets: list[Path], *, cache: bool = True) -> list[Plan]:
    """Plans from .cr files (compiled now, or from the compile cache), .plan files, directories, or what
    `crc compile` wrote last. `cache=False` compiles every source afresh (the result is still cached)."""
    from crc.compile_cache import compile_cached, plan_stale
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
            if plan_stale(plan) and Path(plan.meta["source"]).exists():
                sources.append(Path(plan.meta["source"]))  # recompiled: what it was compiled from changed
            else:
                plans.append(plan)
        else:
            sources.extend(find_sources([t]))
    if sources:
        compiled = compile_cached(sources, read=cache)
        if compiled is None:
            raise SystemExit(EXIT_INPUT)
        plans.extend(compiled)
    if not plans:
        fail("no suite to run", EXIT_INPUT)
    return plans


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


@dataclass(frozen=True)
class ClusterSpec:
    """Where suites run: the Dask scheduler at `address`, or a local cluster of `workers` processes."""

    address: str | None
    workers: int | None


def _cluster(a: argparse.Namespace) -> ClusterSpec | None:
    if a.cluster is not None and a.workers is not None:
        fail("give --cluster ADDRESS or --workers N, not both", EXIT_INPUT)
    if a.cluster is None and a.workers is None:
        return None
    return ClusterSpec(a.cluster, a.workers)


def _shard_arg(text: str) -> Any:
    from crc.runtime.shard import ShardError, parse_shard

    try:
        return parse_shard(text)
    except ShardError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _shard(a: argparse.Namespace, plans: list[Plan]) -> ShardPlan | None:
    """This shard's tests (None without --shard); exits 2 on bad input, 0 when the shard has no test (more
    shards than tests)."""
    if a.shard_durations is not None and a.shard is None:
        fail("--shard-durations needs --shard I/N", EXIT_INPUT)
    if a.shard is None:
        return None
    from crc.runtime.shard import ShardError, load_durations, plan_shard

    try:
        durations = load_durations(a.shard_durations) if a.shard_durations is not None else None
        sp = plan_shard(plans, a.shard, tuple(a.select or ()), durations)
    except ShardError as e:
        fail(f"--shard: {e}", EXIT_INPUT, "give a file written by `crc run --json` or `crc run --record`"
             if a.shard_durations is not None else None)
    print(sp.describe(a.shard_durations), file=sys.stderr)
    if not sp.keys:
        if not sp.total_tests:
            fail("--select " + " ".join(a.select) + " matched no test" if a.select else "the suites declare no test",
                 EXIT_INPUT)
        print(f"crc: shard {a.shard} has no test to run ({sp.total_tests} tests over {a.shard.count} shards)",
              file=sys.stderr)
        raise SystemExit(0)
    return sp


def register(sub: Any) -> None:
    """Adds `crc run` and `crc clean`."""
    p = add_command(sub, "run", run_cmd, "run suites against the Docker engine")
    p.add_argument("targets", nargs="*", type=Path, metavar="TARGET",
                   help=".cr files, directories or Plan files; default: `paths` in the config, else what "
                        "`crc compile` wrote last")
    add_run_options(p)
    p.add_argument("-k", "--select", action="append", metavar="EXPR", help=SELECT_HELP)
    p.add_argument("--list", action="store_true", help="list the tests that would run (file:line) and exit")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failure")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run suites as tasks on the dask.distributed scheduler at ADDRESS (tcp://HOST:PORT); "
                        "each worker uses its own Docker engine")
    p.add_argument("--workers", type=at_least(1), metavar="N",
                   help="run suites on a local Dask cluster of N worker processes (each runs up to -j suites)")
    p.add_argument("--shard", type=_shard_arg, metavar="I/N",
                   help="run only shard I of N: a deterministic split of the tests for N parallel CI jobs")
    p.add_argument("--shard-durations", type=Path, metavar="FILE",
                   help="balance --shard by the test durations in this JSON report or recording")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report here")
    p.add_argument("--json", dest="json_out", type=Path, metavar="FILE", help="write the JSON report here")
    p.add_argument("--html", type=Path, metavar="FILE",
                   help="write a self-contained HTML report here (span waterfalls, DAGs, outputs, logs)")
    p.add_argument("--no-progress", action="store_true", help="plain lines, no live display")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="a terminal app: tests with live status, service logs as they come, keys to re-run the "
                        "selected test (r), the failed ones (f) or all (a)")
    p.add_argument("--no-cache", action="store_true",
                   help=f"compile .cr files afresh, not from the Plans cached in {PLAN_DIR}/cache/")
    p.add_argument("--shuffle-seed", type=int, metavar="N",
                   help="start nodes that are ready together in an order drawn from this seed")
    p.add_argument("-v", "--verbose", action="store_true", help="print every node as it finishes")
    p.add_argument("--keep", nargs="?", const="failed", choices=("failed", "all"),
                   help="leave the containers and network of suites with a failed test (or of all suites) "
                        "running, and print how to reach them; `crc clean` removes them (default: failed)")
    p.add_argument("--logs", action="store_true",
                   help="print every service's log lines as they come, prefixed by the service's name")
    p.add_argument("--record", type=Path, metavar="FILE",
                   help="write a recording of the run here (`crc replay`, `crc diff`, `crc digest` read it)")
    p.add_argument("--repeat", type=at_least(1), default=1, metavar="N",
                   help="run N times and report every test/node whose outcome or digest differs (flaky); "
                        "with --record, run i is recorded as FILE-STEM.i.SUFFIX")
    from crc.commands_replay import add_mask_option

    add_mask_option(p)
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
    cfg = settings({"jobs": (a.jobs, "--jobs"), "span_timeout": (a.span_timeout, "--span-timeout"),
                    "pull": (a.pull, "--pull")})
    jobs, pull = cfg["jobs"], cfg["pull"]
    junit, json_out, record, repeat, select = a.junit, a.json_out, a.record, a.repeat, a.select
    cluster = _cluster(a)
    plans = resolve_plans(a.targets or [Path(p) for p in cfg["paths"]], cache=not a.no_cache)
    if a.list:
        print_tests(plans, select)
        return 0
    from crc.compiler.host_access import listing

    for line in (line for p in plans for line in listing(p.nodes.items())):  # once, before anything starts
        print(f"crc: {line}", file=sys.stderr)
    selected_tests(plans, select)  # a bad -k, or one selecting nothing, stops here: nothing has started
    shard = _shard(a, plans)
    if shard is not None:
        select = list(shard.select)
    from crc.runtime.options import RunOptions

    # Bad output paths and telemetry settings are input errors: say so before anything runs.
    for out in (junit, json_out, record, a.html):
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
                         shuffle_seed=a.shuffle_seed, span_timeout=cfg["span_timeout"],
                         allow_pull=pull != "never", pull_always=pull == "always",
                         log_tails=record is not None or repeat > 1 or a.html is not None,
                         log_full=record is not None or json_out is not None, stream_logs=a.logs,
                         keep=a.keep or "none")
    if a.interactive:
        given = [name for name, v in (("--junit", junit), ("--json", json_out), ("--html", a.html),
                                      ("--record", record), ("--repeat", repeat > 1), ("--otel-exporter", telemetry))
                 if v]
        if given:
            fail(f"--interactive writes no report and runs once per request: drop {', '.join(given)}", EXIT_INPUT)
        if cluster is not None:
            fail("--interactive runs on this machine's engine: drop --cluster/--workers", EXIT_INPUT)
        from crc.interactive import run_interactive

        return run_interactive(plans, options)
    from crc.runtime.report import summary_text, to_json, write_json, write_junit

    progress, verbose = not a.no_progress, a.verbose
    from crc.commands_replay import parse_masks

    masks = parse_masks(a.mask)
    # On a cluster the GPUs that count are the workers': their engines refuse a service they cannot give GPUs.
    gpus = _gpu_preflight(plans) if cluster is None else None
    extra: dict[str, Any] = {}
    repeat_exit = None
    if repeat > 1:
        from crc.commands_replay import run_repeated

        repeat_exit, result, labels, spans = run_repeated(
            repeat, lambda: execute(plans, options, progress=progress, verbose=verbose, gpus=gpus, cluster=cluster,
                                    extra=extra), plans, options, record, masks)
    else:
        result, labels, spans = execute(plans, options, progress=progress, verbose=verbose, gpus=gpus,
                                        cluster=cluster, extra=extra)
    if not result.tests:
        if select:
            fail(f"--select {' '.join(select)} matched no test", EXIT_INPUT)
        fail("the suites declare no test", EXIT_INPUT, 'add one: test "name" { step ... }')
    from crc.runtime.critical_path import critical_path

    critical = critical_path(plans, result.nodes, result.ended_ns - result.started_ns)
    if repeat_exit is None:
        print(summary_text(result, labels))
        if critical is not None:
            print(critical.describe(labels))
        if record:
            from crc.commands_replay import save_recording

            save_recording(record, result, plans, spans, options, gpus.samples.to_dict() if gpus else None)
    try:
        if junit:
            write_junit(junit, result, plans)
        if json_out:
            data = to_json(result, labels, spans)
            if gpus is not None:
                data["gpus"] = gpus.samples.to_dict()
            data["critical_path"] = critical.to_json(labels) if critical is not None else None
            data.update(extra)
            if shard is not None:
                from crc.runtime.shard import shard_json

                data["shard"] = shard_json(shard, a.shard_durations)
            write_json(json_out, data)
        if a.html:
            from crc.commands_report import write_run_html

            write_run_html(a.html, result, plans, spans, options)
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
    from crc.runtime.spill import sweep

    # A SIGKILLed run's spilled step output: on this host's disk, whatever engine it ran against.
    spilled = sweep(dry_run=a.dry_run)
    if spilled:
        verb = "would remove" if a.dry_run else "removed"
        print(f"{verb} {len(spilled)} spill director{'y' if len(spilled) == 1 else 'ies'} of crc runs that no "
              f"longer run: {', '.join(str(p) for p in spilled)}")

    async def main() -> Any:
        async with DockerBackend() as backend:
            await backend.ping()
            return await reap(backend, force=a.all_runs, dry_run=a.dry_run, include_kept=True, engine=backend.host)

    try:
        report = anyio.run(main)
    except EngineUnavailable as e:
        fail(str(e), EXIT_ENV)
    print(report.describe())
    return 0 if report.ok else EXIT_ENV


def _gpu_preflight(plans: list[Plan]) -> Any:
    """The run's GPU watch (None when no service asks for a GPU); exit 3 when the requests cannot be met."""
    if not any(d.get("gpus") for p in plans for d in p.nodes.values()):
        return None  # the common case: NVML is not even imported
    from crc.runtime.docker_backend import engine_host
    from crc.runtime.gpu import GpuUnavailable, preflight

    try:
        return preflight(plans, engine_host())
    except GpuUnavailable as e:
        fail(str(e), EXIT_ENV, "run on a machine with the GPUs the services ask for, or change their `gpus`")


def execute(plans: list[Plan], options: Any, *, progress: bool, verbose: bool = False, gpus: Any = None,
            cluster: ClusterSpec | None = None, extra: dict[str, Any] | None = None
            ) -> tuple[RunResult, dict[str, Any], list[dict[str, Any]]]:
    """Run plans with signal handling: the first Ctrl-C cancels and cleans up, the second exits at once.
    With `cluster`, suites run on a Dask cluster; `extra` then receives the report's `cluster` entry."""
    import anyio

    from crc.runtime.backend import EngineUnavailable
    from crc.runtime.leases import LeaseError
    from crc.runtime.runner import Runner

    holder: dict[str, Any] = {}

    async def drive(runner: Runner, backend: Any = None) -> RunResult:
        from crc.runtime.report import Progress
        from crc.runtime.results import labels_of

        holder["runner"] = runner
        labels = labels_of(plans)
        prog = Progress(labels, live=progress, verbose=verbose)
        runner.on_start = prog.started
        if backend is not None:
            backend.on_progress = prog.note
        runner.on_log = prog.log_line
        runner.on_note = prog.note
        runner.on_result = prog.finished_node
        result: RunResult | None = None
        with prog:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_signals, tg.cancel_scope)
                if gpus is not None:
                    from crc.runtime.gpu import sample

                    await tg.start(sample, gpus.nvml, gpus.indexes, gpus.samples)
                result = await runner.run(plans)
                tg.cancel_scope.cancel()
        return result if result is not None else runner.partial_result(plans)

    async def main() -> RunResult:
        from crc.runtime.session import docker_runner

        async with docker_runner(options) as runner:
            result = await drive(runner, runner.backend)
        for kept in runner.kept:
            print(kept.describe())
        return result

    async def on_cluster() -> RunResult:
        from crc.runtime.distributed import ClusterRunner, close, connect

        assert cluster is not None
        client = await connect(cluster.address, cluster.workers, options.jobs)
        try:
            runner = ClusterRunner(client, options, plans=plans)
            try:
                result = await drive(runner)
                for note in runner.kept_notes:
                    print(note)
                return result
            finally:
                if extra is not None:
                    extra["cluster"] = {"address": cluster.address, "workers": cluster.workers,
                                        **runner.cluster_json()}
        finally:
            with anyio.CancelScope(shield=True):
                await close(client)

    import gc

    gc.freeze()  # what imports and compiling made lives for the whole run: keep it out of every collection
    gc.enable()
    try:
        if cluster is None:
            result = anyio.run(main)
        else:
            from crc.runtime.distributed import ClusterUnavailable

            try:
                result = anyio.run(on_cluster)
            except ClusterUnavailable as e:
                fail(str(e), EXIT_ENV, "start a scheduler (`dask scheduler`) and a worker per Docker host "
                     "(`dask worker ADDRESS`); see docs/scaling.md")
    except EngineUnavailable as e:
        fail(str(e), EXIT_ENV)
    except LeaseError as e:
        fail(str(e), EXIT_ENV)
    runner = holder.get("runner")
    from crc.runtime.results import labels_of

    labels = labels_of(plans)
    # Spans go into reports and recordings: a secret a service put in an attribute is hidden there too.
    spans = [runner.secrets.data(s.to_dict()) for s in runner.spans] if runner else []
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
