"""The `crc` command line. Heavy modules are imported inside commands so `crc --help` stays fast.

Exit codes: 0 all passed, 1 some test failed, 2 bad input, 3 environment.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from crc import __version__

if TYPE_CHECKING:
    from crc.compiler.diagnostics import Diagnostic
    from crc.compiler.plan import Plan

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_ENV = 0, 1, 2, 3
PLAN_DIR = ".crc"

# argparse, not a CLI framework: it costs nothing to import, where typer (which pulls in pydantic) added
# ~80 ms to every command, `crc run` included.
Handler = Callable[[argparse.Namespace], "int | None"]


def add_command(sub: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
    """A subcommand whose description is `handler`'s docstring; `handler(args)` returns the exit code."""
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=(handler.__doc__ or help).strip(), allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(handler=handler)
    return p


def at_least(low: float, kind: type[int] | type[float] = int) -> Callable[[str], Any]:
    """An argparse type: a number of `kind`, no smaller than `low`."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is smaller than {low:g}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _stderr_color() -> bool:
    return sys.stderr.isatty() and "NO_COLOR" not in os.environ


def fail(message: str, code: int, hint: str | None = None) -> NoReturn:
    """Print `crc: error: ...` (and a hint) to stderr and exit with `code`."""
    red, reset = ("\x1b[31m", "\x1b[0m") if _stderr_color() else ("", "")
    print(f"crc: {red}error{reset}: {message}", file=sys.stderr)
    if hint:
        print(f"  help: {hint}", file=sys.stderr)
    raise SystemExit(code)


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


def compile_sources(paths: list[Path], *,
                    on_compiled: Callable[[Path, Plan, Mapping[str, str]], None] | None = None
                    ) -> list[tuple[Path, Plan]] | None:
    """Compile every file, printing all diagnostics; None when any file had errors. `on_compiled` is given each
    file that compiles, its Plan, and the source texts its warnings were printed with (empty when none)."""
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
        texts: dict[str, str] = {}
        if plan.warnings:  # a file that compiles may still have warnings: every command shows them
            texts = sources_of(str(p))
            print_diagnostics(list(plan.warnings), texts)
        if on_compiled is not None:
            on_compiled(p, plan, texts)
        plans.append((p, plan))
    return plans if ok else None


def compile_cmd(a: argparse.Namespace) -> int:
    """Compile .cr files into Plan files (msgpack), by default under .crc/."""
    from crc.compiler.compile import plan_path_for

    output: Path | None = a.output
    sources = find_sources(a.targets)
    if not sources:
        fail("no .cr files with a suite found", EXIT_INPUT)
    plans = compile_sources(sources)
    if plans is None:
        return EXIT_INPUT
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
        n = len(plan.nodes)
        print(f"compiled {src} -> {dest}  ({n} nodes, digest {plan.digest[:12]})")
    last = Path(output if output is not None and output.suffix != ".plan" else PLAN_DIR)
    last.mkdir(parents=True, exist_ok=True)
    (last / "last").write_text("\n".join(written) + "\n", encoding="utf-8")
    return 0


def check_cmd(a: argparse.Namespace) -> int:
    """Compile without writing anything; report every diagnostic."""
    sources = find_sources(a.targets)
    if not sources:
        fail("no .cr files with a suite found", EXIT_INPUT)
    plans = compile_sources(sources)
    if plans is None:
        return EXIT_INPUT
    for src, plan in plans:
        print(f"ok {src}  ({len(plan.nodes)} nodes)")
    return 0


GRAPH_FORMATS = ("text", "dot", "svg", "png")


def load_plan_or_source(path: Path) -> Plan:
    """A Plan from a `.plan` file, or compiled from a `.cr` file; exits 2 on bad input."""
    from crc.compiler.plan import Plan, PlanFormatError

    if not path.exists():
        fail(f"no such file: {path}", EXIT_INPUT)
    if path.suffix == ".cr":
        plans = compile_sources([path])
        if plans is None:
            raise SystemExit(EXIT_INPUT)
        return plans[0][1]
    try:
        return Plan.from_bytes(path.read_bytes())
    except PlanFormatError as e:
        fail(f"{path}: {e}", EXIT_INPUT, "give a .cr file or a Plan written by `crc compile`")


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
        plan = recorded_plan(rec)
        verdicts = {r.node: r.status for r in rec.nodes}
    else:
        plan = load_plan_or_source(target)
        if plan.warnings:
            from crc.compiler.compile import sources_of

            print_diagnostics(list(plan.warnings), sources_of(str(target)))
    if fmt == "text":
        _emit(to_text(plan, verdicts).encode(), output)
        return 0
    dot = to_dot(plan, verdicts)
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


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The whole command line and its commands by name: every command module adds its subcommands."""
    from crc import (
        commands_doctor,
        commands_fmt,
        commands_logs,
        commands_replay,
        commands_report,
        commands_run,
        commands_spans,
        lsp,
    )

    parser = argparse.ArgumentParser(
        prog="crc", description="Cleanroom: hermetic integration tests written in .cr files.", allow_abbrev=False,
        epilog="Exit codes: 0 all passed, 1 a test failed, 2 bad input, 3 environment (engine, image).")
    parser.add_argument("--version", action="version", version=f"crc {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    p = add_command(sub, "compile", compile_cmd, "compile .cr files into Plan files")
    p.add_argument("targets", nargs="+", type=Path, metavar="TARGET", help=".cr files or directories")
    p.add_argument("-o", "--output", type=Path, help="Plan file (one source) or directory; default .crc/")
    p = add_command(sub, "check", check_cmd, "compile without writing; report every diagnostic")
    p.add_argument("targets", nargs="+", type=Path, metavar="TARGET", help=".cr files or directories")
    p = add_command(sub, "graph", graph_cmd, "show the DAG of a file, Plan or recording")
    p.add_argument("target", type=Path, help="a .cr file, a Plan file or a recording (`crc run --record`)")
    p.add_argument("-f", "--format", choices=GRAPH_FORMATS, default="text", help="output format (default: text)")
    p.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    commands_run.register(sub)
    commands_fmt.register(sub)
    commands_replay.register(sub)
    commands_spans.register(sub)
    commands_report.register(sub)
    commands_doctor.register(sub)
    commands_logs.register(sub)
    lsp.register(sub)
    return parser, dict(sub.choices)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: usage errors exit 2, never a traceback for bad input."""
    # Imports and compiling make hundreds of thousands of objects and no garbage cycles worth collecting:
    # the cyclic GC stays off until `crc run` starts its event loop (commands_run.execute turns it back on).
    gc.disable()
    parser, commands = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((i for i, w in enumerate(words) if not w.startswith("-")), None)
    if command is not None and words[command] in commands:
        parser.parse_args(words[:command])  # options before the command: --help, --version, or an error
        # Options may come between a command's arguments (`crc run a.cr -j 2 b.cr`), as users expect.
        args = commands[words[command]].parse_intermixed_args(words[command + 1:])
    else:
        args = parser.parse_args(words)  # help, version, or an unknown command: argparse says which
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:  # `crc` alone
        parser.print_help()
        raise SystemExit(EXIT_INPUT)
    try:
        code = handler(args)
    except KeyboardInterrupt:
        print("crc: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code or 0)
