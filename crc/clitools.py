"""What every `crc` command shares: exit codes, `crc: error:` messages, diagnostics, finding and compiling
sources. The command modules import this, never `crc.cli`, so `crc/` has no import cycle."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from crc.compiler.diagnostics import Diagnostic
    from crc.compiler.plan import Plan
    from crc.compiler.schema import Loc as PlanLoc
    from crc.config import Config

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_ENV = 0, 1, 2, 3
PLAN_DIR = ".crc"

# argparse, not a CLI framework: it costs nothing to import, where typer (which pulls in pydantic) added
# ~80 ms to every command, `crc run` included.
Handler = Callable[[argparse.Namespace], "int | None"]


class CrcParser(argparse.ArgumentParser):
    """argparse with usage errors in crc's format: `crc: error: MESSAGE`, a `help:` line, exit 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("crc").strip()  # "run" for `crc run`, "" for `crc` itself
        fail(f"{command}: {message}" if command else message, EXIT_INPUT, f"see `{self.prog} --help`")


def add_command(sub: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
    """A subcommand whose description is `handler`'s docstring; `handler(args)` returns the exit code."""
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=(handler.__doc__ or help).strip(), allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(handler=handler)
    return p


def add_run_options(p: argparse.ArgumentParser) -> None:
    """`-j`, `--span-timeout` and `--pull`, which `crc run` and `crc dev` share; defaults from RunOptions and
    the config."""
    from crc.config import PULL
    from crc.runtime.options import DEFAULTS

    p.add_argument("-j", "--jobs", type=at_least(1), default=None,
                   help="how many services/steps (and suites) run at once (default: $CRC_JOBS, `jobs` in the "
                        f"config, else {DEFAULTS.jobs})")
    p.add_argument("--span-timeout", type=at_least(0, float), metavar="SECONDS",
                   help=f"seconds a test waits for the spans it expects (default: $CRC_SPAN_TIMEOUT, "
                        f"`span_timeout` in the config, else {DEFAULTS.span_timeout:g})")
    p.add_argument("--pull", choices=PULL,
                   help="pull images that are missing locally, never, or always (ask the registry for a newer "
                        "image even when the engine has one; default: $CRC_PULL, `pull` in the config, else "
                        "missing)")


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


def damage() -> tuple[type[BaseException], ...]:
    """What a well-formed file with nonsense inside (a crafted Plan in a recording) can raise deep in a command
    that reads it; such a command catches these and reports the file as damaged (exit 2), never a traceback.
    Called in the `except` clause, so networkx is imported only when something was raised."""
    from networkx import NetworkXException

    return (KeyError, TypeError, ValueError, AttributeError, IndexError, AssertionError, NetworkXException)


def use_color(stream: Any) -> bool:
    """Colours on `stream`: never with NO_COLOR set, always with FORCE_COLOR set (not to 0; CI logs that render
    ANSI), else when it is a terminal."""
    if os.environ.get("NO_COLOR"):
        return False
    force = os.environ.get("FORCE_COLOR")
    if force is not None and force not in ("", "0", "false"):
        return True
    return bool(stream.isatty())


def _stderr_color() -> bool:
    return use_color(sys.stderr)


def plan_dir() -> Path:
    """`.crc/`, created with a `.gitignore` that ignores all of it, so it is never committed by accident."""
    d = Path(PLAN_DIR)
    d.mkdir(parents=True, exist_ok=True)
    ignore = d / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# written by crc: nothing in .crc/ belongs in version control\n*\n", encoding="utf-8")
    return d


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
                if any(part.startswith(".") for part in p.parts) or not declares_suite(p):
                    continue
                out.append(p)
        elif t.exists():
            out.append(t)
        else:
            fail(f"no such file or directory: {t}", EXIT_INPUT)
    return out


def declares_suite(p: Path) -> bool:
    """Whether a `.cr` file declares a suite (else it is a module that others import); unreadable: True."""
    from crc.compiler.source import SourceError, read_source

    try:
        text = read_source(p)  # never /dev/zero or a FIFO, even through a symlink in a directory
    except SourceError:
        return True  # let the compiler report it
    return any(line.lstrip().startswith("suite ") for line in text.splitlines())


def compile_sources(paths: list[Path], *,
                    on_compiled: Callable[[Path, Plan, Mapping[str, str]], None] | None = None,
                    ignore: Collection[str] | None = None) -> list[tuple[Path, Plan]] | None:
    """Compile every file, printing all diagnostics; None when any file had errors. `on_compiled` is given each
    file that compiles, its Plan, and the source texts its warnings were printed with (empty when none).
    `ignore`: the lint codes not reported (default: the project's `lints.ignore` setting)."""
    from crc.compiler.compile import compile_file, sources_of
    from crc.compiler.diagnostics import CompileError

    if ignore is None:
        ignore = lint_ignore()
    plans: list[tuple[Path, Plan]] = []
    ok = True
    for p in paths:
        try:
            plan = compile_file(str(p), ignore=ignore)
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


def settings(cli: Mapping[str, tuple[Any, str]] | None = None) -> Config:
    """The effective settings (command line > environment > config file > defaults); a bad config file or
    value is reported, located when it is in a file, and exits 2."""
    from crc.config import ConfigError, load

    try:
        return load(cli)
    except ConfigError as e:
        if e.file is None:
            fail(e.message, EXIT_INPUT, e.help)
        from crc.compiler.diagnostics import Diagnostic, render
        from crc.compiler.ir import Loc

        loc = Loc(e.file, e.line, e.col, e.line, max(e.col, e.end_col))
        try:
            text = Path(e.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = ""
        print(render(Diagnostic(e.message, loc, help=e.help), {e.file: text}, color=_stderr_color()),
              file=sys.stderr)
        raise SystemExit(EXIT_INPUT) from None


def lint_ignore(given: Sequence[str] | None = None) -> tuple[str, ...]:
    """The lint codes not reported: `--ignore` codes when `given`, else the `lints.ignore` setting
    (environment, then config file)."""
    cli: tuple[Any, str] = (None, "--ignore")
    if given:
        from crc.config import SubKeyError, lint_codes

        try:
            cli = ({"ignore": lint_codes(",".join(given))}, "--ignore")
        except SubKeyError as e:
            fail(f"--ignore: {e}", EXIT_INPUT, e.help)
    ignore: tuple[str, ...] = settings({"lints": cli})["lints"]["ignore"]
    return ignore


SELECT_HELP = ("run only tests whose suite/test contains EXPR (any case); `and`, `or`, `not`, parentheses "
               "and globs (`checkout/order*`) work as in pytest; repeatable (any match selects)")


def check_select(exprs: Sequence[str]) -> None:
    """Exit 2, pointing at the fault, when a `-k` expression is malformed."""
    from crc.runtime.selection import SelectError, compile_expr

    for e in exprs:
        try:
            compile_expr(e)
        except SelectError as err:
            fail(f"-k {e!r}: {err} at column {err.col}\n    {e}\n    {' ' * (err.col - 1)}^", EXIT_INPUT,
                 "names are matched as substrings; quote a name that contains `and`, `or`, `not` or parentheses")


def selected_tests(plans: Sequence[Plan], exprs: Sequence[str] | None) -> list[dict[str, Any]]:
    """The tests (Plan's test entries) the `-k` expressions select, in file and source order. A
    malformed expression, or one selecting nothing, exits 2; the latter names the closest tests."""
    from crc.runtime.selection import closest, matcher

    exprs = list(exprs or ())
    check_select(exprs)
    match = matcher(exprs)
    tests = [t for p in plans for t in p.tests]
    chosen = [t for t in tests if match(t["suite"], t["name"])]
    if not tests:
        fail("the suites declare no test", EXIT_INPUT, 'add one: test "name" { step ... }')
    if not chosen:
        near = closest(exprs, [f"{t['suite']}/{t['name']}" for t in tests])
        fail(f"-k {' '.join(repr(e) for e in exprs)} matched no test", EXIT_INPUT,
             ("the closest: " + ", ".join(near)) if near else "`crc list` shows every test")
    return chosen


def print_tests(plans: Sequence[Plan], select: Sequence[str] | None) -> None:
    """One line per suite and per selected test: `FILE:LINE: suite NAME` / `FILE:LINE: test SUITE/NAME`."""
    chosen = selected_tests(plans, select)
    keep = {(t["suite"], t["name"]) for t in chosen}
    for p in plans:
        for s in p.suites:
            tests = [t for t in p.tests if t["suite"] == s["name"] and (t["suite"], t["name"]) in keep]
            if not tests:
                continue
            print(f"{_line(s['loc'])}: suite {s['name']}")
            for t in tests:
                print(f"{_line(t['loc'])}:   test {t['suite']}/{t['name']}")
    suites = len({t["suite"] for t in chosen})
    print(f"{len(chosen)} test{'s' * (len(chosen) != 1)} in {suites} suite{'s' * (suites != 1)}")


def _line(loc: PlanLoc) -> str:
    """`file:line` of a Plan location."""
    return f"{loc['file']}:{loc['line']}"
