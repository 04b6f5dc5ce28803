"""The `crc` command line. Heavy modules are imported inside commands so `crc --help` stays fast.

Exit codes: 0 all passed, 1 some test failed, 2 bad input, 3 environment.
"""

from __future__ import annotations

import gc
import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from crc import __version__

if TYPE_CHECKING:
    from crc.compiler.diagnostics import Diagnostic
    from crc.compiler.plan import Plan

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_ENV = 0, 1, 2, 3
PLAN_DIR = ".crc"

app = typer.Typer(
    name="crc",
    help="Cleanroom: hermetic integration tests written in .cr files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _stderr_color() -> bool:
    return sys.stderr.isatty() and "NO_COLOR" not in os.environ


def fail(message: str, code: int, hint: str | None = None) -> NoReturn:
    """Print `crc: error: ...` (and a hint) to stderr and exit with `code`."""
    red, reset = ("\x1b[31m", "\x1b[0m") if _stderr_color() else ("", "")
    print(f"crc: {red}error{reset}: {message}", file=sys.stderr)
    if hint:
        print(f"  help: {hint}", file=sys.stderr)
    raise typer.Exit(code)


def print_diagnostics(diags: list[Diagnostic], sources: dict[str, str]) -> None:
    from crc.compiler.diagnostics import render

    color = _stderr_color()
    for d in diags:
        print(render(d, sources, color=color), file=sys.stderr)
        print(file=sys.stderr)
    errors = sum(d.severity == "error" for d in diags)
    warnings = len(diags) - errors
    if errors or warnings:
        print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)


def find_sources(targets: list[Path]) -> list[Path]:
    """`.cr` files named, or found under named directories (files declaring no suite are modules: skipped)."""
    out: list[Path] = []
    for t in targets:
        if t.is_dir():
            for p in sorted(t.rglob("*.cr")):
                if any(part.startswith(".") for part in p.parts) or not _declares_suite(p):
                    continue
                out.append(p)
        elif t.exists():
            out.append(t)
        else:
            fail(f"no such file or directory: {t}", EXIT_INPUT)
    return out


def _declares_suite(p: Path) -> bool:
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return True  # let the compiler report it
    return any(line.lstrip().startswith("suite ") for line in text.splitlines())


def compile_sources(paths: list[Path]) -> list[tuple[Path, Plan]] | None:
    """Compile every file, printing all diagnostics; None when any file had errors."""
    from crc.compiler.compile import compile_file, sources_of
    from crc.compiler.diagnostics import CompileError

    plans: list[tuple[Path, Plan]] = []
    ok = True
    for p in paths:
        try:
            plan = compile_file(str(p))
        except CompileError as e:
            print_diagnostics(e.diagnostics, sources_of(str(p)))
            ok = False
            continue
        if plan.warnings:  # a file that compiles may still have warnings: every command shows them
            print_diagnostics(list(plan.warnings), sources_of(str(p)))
        plans.append((p, plan))
    return plans if ok else None


@app.command("compile")
def compile_cmd(
    targets: Annotated[list[Path], typer.Argument(help=".cr files or directories", show_default=False)],
    output: Annotated[Path | None, typer.Option("-o", "--output",
                                                help="Plan file (one source) or directory; default .crc/")] = None,
) -> None:
    """Compile .cr files into Plan files (msgpack), by default under .crc/."""
    from crc.compiler.compile import plan_path_for

    sources = find_sources(targets)
    if not sources:
        fail("no .cr files with a suite found", EXIT_INPUT)
    plans = compile_sources(sources)
    if plans is None:
        raise typer.Exit(EXIT_INPUT)
    written: list[str] = []
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
        n = plan.graph.number_of_nodes()
        print(f"compiled {src} -> {dest}  ({n} nodes, digest {plan.digest[:12]})")
    last = Path(output if output is not None and output.suffix != ".plan" else PLAN_DIR)
    last.mkdir(parents=True, exist_ok=True)
    (last / "last").write_text("\n".join(written) + "\n", encoding="utf-8")


@app.command("check")
def check_cmd(
    targets: Annotated[list[Path], typer.Argument(help=".cr files or directories", show_default=False)],
) -> None:
    """Compile without writing anything; report every diagnostic."""
    sources = find_sources(targets)
    if not sources:
        fail("no .cr files with a suite found", EXIT_INPUT)
    plans = compile_sources(sources)
    if plans is None:
        raise typer.Exit(EXIT_INPUT)
    for src, plan in plans:
        print(f"ok {src}  ({plan.graph.number_of_nodes()} nodes)")


class GraphFormat(str, Enum):
    dot = "dot"
    svg = "svg"
    png = "png"
    text = "text"


def load_plan_or_source(path: Path) -> Plan:
    """A Plan from a `.plan` file, or compiled from a `.cr` file; exits 2 on bad input."""
    from crc.compiler.plan import Plan, PlanFormatError

    if not path.exists():
        fail(f"no such file: {path}", EXIT_INPUT)
    if path.suffix == ".cr":
        plans = compile_sources([path])
        if plans is None:
            raise typer.Exit(EXIT_INPUT)
        return plans[0][1]
    try:
        return Plan.from_bytes(path.read_bytes())
    except PlanFormatError as e:
        fail(f"{path}: {e}", EXIT_INPUT, "give a .cr file or a Plan written by `crc compile`")


@app.command("graph")
def graph_cmd(
    target: Annotated[Path, typer.Argument(help="a .cr file, a Plan file or a recording (`crc run --record`)",
                                           show_default=False)],
    fmt: Annotated[GraphFormat, typer.Option("--format", "-f", help="output format")] = GraphFormat.text,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write here instead of stdout")] = None,
) -> None:
    """Show the DAG of a file or Plan: services, steps, asserts, spans and the edges between them.

    Given a recording, nodes are coloured by the verdicts it recorded."""
    from crc.compiler.render import to_dot, to_text
    from crc.runtime.recording import is_recording

    verdicts = None
    if is_recording(target):
        from crc.commands_replay import load_recording, recorded_plan

        rec = load_recording(target)
        plan = recorded_plan(rec)
        verdicts = {r.node: r.status for r in rec.nodes}
    else:
        plan = load_plan_or_source(target)
        if plan.warnings:
            from crc.compiler.compile import sources_of

            print_diagnostics(list(plan.warnings), sources_of(str(target)))
    if fmt is GraphFormat.text:
        _emit(to_text(plan, verdicts).encode(), output)
        return
    dot = to_dot(plan, verdicts)
    if fmt is GraphFormat.dot:
        _emit(dot.encode(), output)
        return
    import shutil

    if shutil.which("dot") is None:
        fail(f"--format {fmt.value} needs Graphviz's `dot` program, which is not installed", EXIT_ENV,
             "install it (Debian: apt-get install graphviz), or use --format dot or text")
    import graphviz

    try:
        data = graphviz.Source(dot).pipe(format=fmt.value)
    except graphviz.backend.ExecutableNotFound:
        fail("Graphviz's `dot` program could not be run", EXIT_ENV, "apt-get install graphviz")
    if output is None and sys.stdout.isatty():
        fail(f"refusing to write {fmt.value} to a terminal", EXIT_INPUT, "give -o FILE")
    _emit(data, output)


def _emit(data: bytes, output: Path | None) -> None:
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(data)
        print(f"wrote {output}", file=sys.stderr)


def _version(value: bool) -> None:
    if value:
        print(f"crc {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """Cleanroom: hermetic integration tests written in .cr files."""


def _register_commands() -> None:
    from crc import commands_run

    commands_run.register(app)
    from crc import commands_fmt

    commands_fmt.register(app)
    from crc import commands_replay

    commands_replay.register(app)
    from crc import commands_spans

    commands_spans.register(app)


_register_commands()


def main() -> None:
    """Console entry point: usage errors exit 2, never a traceback for bad input."""
    # Imports and compiling make hundreds of thousands of objects and no garbage cycles worth collecting:
    # the cyclic GC stays off until `crc run` starts its event loop (commands_run.execute turns it back on).
    gc.disable()
    try:
        app()
    except KeyboardInterrupt:
        print("crc: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
