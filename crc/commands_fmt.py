"""`crc fmt`: rewrite `.cr` files in the canonical layout, or (`--check`) show how they differ from it."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

from crc.clitools import EXIT_FAILED, EXIT_INPUT, add_command, fail, print_diagnostics


def fmt_targets(targets: list[Path]) -> list[Path]:
    """Every `.cr` file named or found under a named directory (modules too: they are formatted as well);
    hidden directories are skipped."""
    out: list[Path] = []
    for t in targets:
        if t.is_dir():
            out.extend(p for p in sorted(t.rglob("*.cr"))
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(t).parts))
        elif t.is_file():
            out.append(t)
        else:
            fail(f"no such file or directory: {t}", EXIT_INPUT)
    return out


def unified_diff(before: str, after: str, name: str) -> str:
    """A unified diff from the file as it is to the file formatted."""
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile=f"{name} (as written)", tofile=f"{name} (formatted)"))


def register(sub: Any) -> None:
    """Adds `crc fmt`."""
    p = add_command(sub, "fmt", fmt_cmd, "format .cr files in the canonical layout")
    p.add_argument("targets", nargs="+", type=Path, metavar="TARGET",
                   help=".cr files or directories; `-` formats standard input to standard output")
    p.add_argument("--check", action="store_true",
                   help="change nothing: print a diff for each file not formatted and exit 1")


def fmt_cmd(a: argparse.Namespace) -> int:
    """Format .cr files in place in the one canonical layout (comments and blank-line groups kept)."""
    from crc.compiler.diagnostics import CompileError, Diagnostic
    from crc.compiler.format import FormatterBug, format_source
    from crc.compiler.source import SourceError, read_source

    targets: list[Path] = a.targets
    check: bool = a.check
    if [str(t) for t in targets] == ["-"]:
        text = sys.stdin.read()
        try:
            out = format_source(text, "<stdin>")
        except CompileError as e:
            print_diagnostics(e.diagnostics, {"<stdin>": text})
            return EXIT_INPUT
        except FormatterBug as e:
            fail(str(e), EXIT_INPUT)
        if check:
            diff = unified_diff(text, out, "<stdin>")
            sys.stdout.write(diff)
            return EXIT_FAILED if diff else 0
        sys.stdout.write(out)
        return 0
    paths = fmt_targets(targets)
    if not paths:
        fail("no .cr files found", EXIT_INPUT)
    bad = changed = 0
    for p in paths:
        try:
            text = read_source(p)
        except SourceError as e:
            if e.loc is not None:
                print_diagnostics([Diagnostic(e.message, e.loc, help=e.help)], {str(p): e.shown or ""})
            else:
                print(f"crc: error: {e.message}", file=sys.stderr)
            bad += 1
            continue
        try:
            out = format_source(text, str(p))
        except CompileError as e:
            print_diagnostics(e.diagnostics, {str(p): text})
            bad += 1
            continue
        except FormatterBug as e:
            print(f"crc: error: {e}", file=sys.stderr)
            bad += 1
            continue
        if out == text:
            continue
        changed += 1
        if check:
            sys.stdout.write(unified_diff(text, out, str(p)))
        else:
            p.write_text(out, encoding="utf-8")
            print(f"formatted {p}")
    verb = "would reformat" if check else "reformatted"
    summary = f"{verb} {changed} of {len(paths)} file(s)" + (f"; {bad} could not be formatted" if bad else "")
    print(summary, file=sys.stderr)
    if bad:
        return EXIT_INPUT
    if check and changed:
        return EXIT_FAILED
    return 0
