"""`crc compile`, `crc check` and `crc graph`: the commands that only compile."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crc.clitools import (
    EXIT_ENV,
    EXIT_INPUT,
    PLAN_DIR,
    SELECT_HELP,
    add_command,
    compile_sources,
    damage,
    fail,
    find_sources,
    lint_ignore,
    load_plan_or_source,
    plan_dir,
    print_diagnostics,
    selected_tests,
)

if TYPE_CHECKING:
    from crc.compiler.plan import Plan


def register(sub: Any) -> None:
    """Adds `crc compile`, `crc check` and `crc graph`."""
    p = add_command(sub, "compile", compile_cmd, "compile .cr files into Plan files")
    p.add_argument("targets", nargs="+", type=Path, metavar="TARGET", help=".cr files or directories")
    p.add_argument("-o", "--output", type=Path, help="Plan file (one source) or directory; default .crc/")
    p = add_command(sub, "check", check_cmd, "compile without writing; report every diagnostic")
    p.add_argument("targets", nargs="+", type=Path, metavar="TARGET", help=".cr files or directories")
    p.add_argument("--ignore", action="append", metavar="CODE",
                   help="do not report the lint CODE (repeatable, or CODE,CODE); replaces the project's "
                        "`lints.ignore`")
    p = add_command(sub, "graph", graph_cmd, "show the DAG of a file, Plan or recording")
    p.add_argument("target", type=Path, help="a .cr file, a Plan file or a recording (`crc run --record`)")
    p.add_argument("-f", "--format", choices=GRAPH_FORMATS, default="text", help="output format (default: text)")
    p.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    p.add_argument("-k", "--select", action="append", metavar="EXPR",
                   help=SELECT_HELP.replace("run only", "draw only"))


def _compile_targets(targets: list[Path], ignore: list[str] | None = None) -> list[tuple[Path, Plan]]:
    """The suites found under `targets`, compiled; exit 2 when there are none or any file has errors (its
    diagnostics printed). `ignore`: lint codes given with `--ignore` (instead of the project's)."""
    sources = find_sources(targets)
    if not sources:
        fail("no .cr files with a suite found", EXIT_INPUT)
    plans = compile_sources(sources, ignore=lint_ignore(ignore))
    if plans is None:
        raise SystemExit(EXIT_INPUT)
    return plans


def compile_cmd(a: argparse.Namespace) -> int:
    """Compile .cr files into Plan files (msgpack), by default under .crc/."""
    from crc.compiler.compile import plan_path_for

    output: Path | None = a.output
    plans = _compile_targets(a.targets)
    written: list[str] = []
    if output is None:
        plan_dir()
    for src, plan in plans:
        if output is not None and output.suffix == ".plan":
            if len(plans) > 1:
                fail("-o FILE.plan takes one source; give a directory for several", EXIT_INPUT)
            dest = output
        else:
            dest = plan_path_for(str(src), output or PLAN_DIR)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(plan.to_bytes())
        written.append(str(dest))
        n = len(plan.nodes)
        print(f"compiled {src} -> {dest}  ({n} nodes, digest {plan.digest[:12]})")
    last = Path(output if output is not None and output.suffix != ".plan" else PLAN_DIR)
    last.mkdir(parents=True, exist_ok=True)
    (last / "last").write_text("\n".join(written) + "\n", encoding="utf-8")
    return 0


def check_cmd(a: argparse.Namespace) -> int:
    """Compile without writing anything; report every diagnostic."""
    plans = _compile_targets(a.targets, a.ignore)
    from crc.compiler.host_access import listing

    for src, plan in plans:
        print(f"ok {src}  ({len(plan.nodes)} nodes)")
        for line in listing(plan.nodes.items()):  # what the file takes of the host, one line per grant
            print(f"  {line}")
    return 0


GRAPH_FORMATS = ("text", "dot", "svg", "png")


def graph_cmd(a: argparse.Namespace) -> int:
    """Show the DAG of a file or Plan: services, steps, asserts, spans and the edges between them.

    Given a recording, nodes are coloured by the verdicts it recorded."""
    from crc.compiler.render import to_dot, to_text
    from crc.runtime.recording import is_recording

    target: Path = a.target
    fmt: str = a.format
    output: Path | None = a.output

    verdicts = None
    if is_recording(target):
        from crc.commands_replay import load_recording, recorded_plan

        rec = load_recording(target)
        if not rec.plans:
            fail(f"{target}: the recording holds no Plan to draw", EXIT_INPUT)
        plan = recorded_plan(rec)
        verdicts = {r.node: r.status for r in rec.nodes}
    else:
        plan = load_plan_or_source(target)
        if plan.warnings:
            from crc.compiler.compile import sources_of

            print_diagnostics(list(plan.warnings), sources_of(str(target)))
    if a.select:
        from crc.compiler.render import subplan
        from crc.runtime.runner import selected

        selected_tests([plan], a.select)  # a malformed -k, or one selecting nothing: exit 2 with the closest
        plan = subplan(plan, selected(plan, tuple(a.select)))
    try:
        text = to_text(plan, verdicts) if fmt == "text" else to_dot(plan, verdicts)
    except damage() as e:
        if target.suffix == ".cr":  # compiled just now: a bug, not input
            raise
        fail(f"{target}: damaged {'recording' if verdicts is not None else 'Plan'}: its Plan cannot be drawn: "
             f"{type(e).__name__}: {e}", EXIT_INPUT, "give a .cr file, or a file crc wrote")
    if fmt == "text":
        _emit(text.encode(), output)
        return 0
    dot = text
    if fmt == "dot":
        _emit(dot.encode(), output)
        return 0
    import shutil

    if shutil.which("dot") is None:
        fail(f"--format {fmt} needs Graphviz's `dot` program, which is not installed", EXIT_ENV,
             "install it (Debian: apt-get install graphviz), or use --format dot or text")
    import graphviz

    try:
        data = graphviz.Source(dot).pipe(format=fmt)
    except graphviz.backend.ExecutableNotFound:
        fail("Graphviz's `dot` program could not be run", EXIT_ENV, "apt-get install graphviz")
    except graphviz.backend.CalledProcessError as e:
        fail(f"Graphviz's `dot` failed: {(e.stderr or b'').decode(errors='replace').strip()[:500]}", EXIT_ENV,
             "use --format dot to see the source it was given")
    if output is None and sys.stdout.isatty():
        fail(f"refusing to write {fmt} to a terminal", EXIT_INPUT, "give -o FILE")
    _emit(data, output)
    return 0


def _emit(data: bytes, output: Path | None) -> None:
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(data)
        print(f"wrote {output}", file=sys.stderr)


