"""Located diagnostics: `file:line:col`, the source line, a caret under the fault, and a `help:` line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .ir import Loc

TAB_WIDTH = 4


@dataclass(frozen=True, slots=True)
class Diagnostic:
    message: str
    loc: Loc | None
    severity: str = "error"  # "error" | "warning"
    help: str | None = None
    notes: tuple[tuple[str, Loc], ...] = ()  # secondary locations ("first declared here")
    code: str | None = None  # a lint's stable name (compiler/lints.py), shown as `warning[CODE]`


class CompileError(Exception):
    """Raised with every diagnostic found, when at least one is an error."""

    def __init__(self, diagnostics: list[Diagnostic]):
        super().__init__(f"{len(diagnostics)} error(s)")
        self.diagnostics = diagnostics


@dataclass
class Diagnostics:
    """Collects diagnostics so a file reports all its errors in one pass."""

    items: list[Diagnostic] = field(default_factory=list)

    def error(self, message: str, loc: Loc | None, help: str | None = None,
              notes: tuple[tuple[str, Loc], ...] = (), code: str | None = None) -> None:
        self.items.append(Diagnostic(message, loc, "error", help, notes, code))

    def warning(self, message: str, loc: Loc | None, help: str | None = None, code: str | None = None) -> None:
        self.items.append(Diagnostic(message, loc, "warning", help, code=code))

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)

    def raise_if_errors(self) -> None:
        if self.has_errors:
            raise CompileError(sorted_diagnostics(self.items))


def sorted_diagnostics(items: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Source order, file by file; duplicates (same place, same message) removed."""
    seen: set[tuple[object, ...]] = set()
    out: list[Diagnostic] = []
    for d in items:
        key = (d.loc.file, d.loc.line, d.loc.col, d.message) if d.loc else (None, 0, 0, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return sorted(out, key=lambda d: (d.loc.file, d.loc.line, d.loc.col) if d.loc else ("", 0, 0))


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A `help:` text suggesting the closest candidate, if one is close enough."""
    matches = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None


def render(diag: Diagnostic, sources: Mapping[str, str], color: bool = False) -> str:
    """Render like a compiler: header, location, the source line with a caret, notes and help."""
    red, blue, bold, reset = ("\x1b[31m", "\x1b[34m", "\x1b[1m", "\x1b[0m") if color else ("",) * 4
    sev = diag.severity
    tag = f"{sev}[{diag.code}]" if diag.code else sev
    lines = [f"{bold}{red if sev == 'error' else blue}{tag}{reset}{bold}: {diag.message}{reset}"]
    if diag.loc is not None:
        lines.extend(_excerpt(diag.loc, sources, blue, reset))
    for text, loc in diag.notes:
        lines.append(f"  {blue}note{reset}: {text} at {loc}")
    if diag.help:
        lines.append(f"  {blue}help{reset}: {diag.help}")
    return "\n".join(lines)


def _excerpt(loc: Loc, sources: Mapping[str, str], blue: str, reset: str) -> list[str]:
    out = [f"  {blue}-->{reset} {loc}"]
    text = sources.get(loc.file)
    if text is None:
        return out
    src_lines = text.split("\n")  # as the lexer counts lines (str.splitlines also splits at \f, \x1c, ...)
    if not 1 <= loc.line <= len(src_lines):
        return out
    raw = src_lines[loc.line - 1].rstrip("\r")
    # Tabs are expanded in the echoed line and the caret is placed by the expanded width of what precedes the
    # fault, so both line up whatever the terminal's tab stops are.
    line = raw.expandtabs(TAB_WIDTH)
    pad = len(raw[: loc.col - 1].expandtabs(TAB_WIDTH))
    # Underline the whole token when it sits on one line; a caret otherwise.
    if loc.end_line == loc.line and loc.end_col > loc.col:
        span = len(raw[: loc.end_col - 1].expandtabs(TAB_WIDTH)) - pad
    else:
        span = 1
    span = max(1, min(span, len(line) - pad))
    width = len(str(loc.line))
    out.append(f"  {' ' * width} {blue}|{reset}")
    out.append(f"  {loc.line} {blue}|{reset} {line}")
    out.append(f"  {' ' * width} {blue}|{reset} {' ' * pad}{'^' * span}")
    return out
