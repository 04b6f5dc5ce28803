"""Completion by context: what the LALR parser accepts at the cursor, and the names that fit there."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crc.runtime.recording import Recording

    from .analysis import Analysis

_PARTIAL = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*$")
TEMPLATE_FUNCTIONS = {"fake": "seeded Faker data: fake.name()", "uuid": "a seeded version-4 UUID: uuid()",
                      "now": "the suite's clock: now()", "env": 'a variable of crc\'s environment: env("NAME")',
                      "sha256": "hex SHA-256: sha256(x)"}


@dataclass(frozen=True, slots=True)
class Item:
    label: str
    kind: str  # keyword, service, template, param, let, step, span, capture, constant, function, provider, recorded
    detail: str | None = None
    insert: str | None = None


def complete(text: str, line: int, col: int, a: Analysis | None, path: str | None) -> list[Item]:
    """Completion items at a 1-based position of `text` (the document as it is now)."""
    lines = text.split("\n")
    cur = lines[line - 1][: col - 1] if 0 < line <= len(lines) else ""
    partial = _PARTIAL.search(cur)
    head = cur[: partial.start()] if partial else cur
    inside = _template_expression(cur)
    if inside is not None:
        if re.search(r"\bfake\.\w*$", inside):
            return [Item(n, "provider", "Faker provider") for n in faker_providers()]
        names = _names(a, line, col, ("let", "param", "capture"))
        return names + [Item(n, "function", d) for n, d in TEMPLATE_FUNCTIONS.items()]
    if in_string(head):
        if path is not None and re.search(r"\b(span\s+[\w-]+\s*=|count\(|no\s+span|ready\s+span)\s*\"$", head):
            return [Item(n, "recorded", "span name in the last recording") for n in recorded(path)[0]]
        if path is not None and re.search(r"\battr\s*\"$|\.attr\[\"$", head):
            return [Item(n, "recorded", "attribute key in the last recording") for n in recorded(path)[1]]
        return []
    from crc.compiler.parser import accepts_after

    before = "\n".join([*lines[: line - 1], head])
    accepted = accepts_after(before)
    items = [Item(w, "keyword") for w in sorted(accepted) if w.isalpha() and w.islower()]
    if "NAME" in accepted:
        items += _names_for(head, a, line, col)
    return items


def _names_for(head: str, a: Analysis | None, line: int, col: int) -> list[Item]:
    """The names that fit where the parser expects a NAME, judged by the words before the cursor."""
    from crc.grammar.keywords import CONSTANTS

    if re.search(r"\b(needs|uses)\s+([\w-]+\s*,\s*)*$", head) or re.search(r"\bexec\s+$", head):
        return _names(a, line, col, ("service",))
    if re.search(r"^\s*service\s+[\w-]+\s*=\s*$", head):
        return _names(a, line, col, ("template",))
    m = re.search(r"=\s*([\w-]+)\(([^()]*,)?\s*$", head)
    if m and a is not None and a.index is not None:
        tpl = next((s for s in a.index.symbols if s.kind == "template" and s.name == m.group(1)), None)
        if tpl is not None:
            return [Item(p.name.name, "param", "template parameter", f"{p.name.name} = ")
                    for p in tpl.node.params] + _names(a, line, col, ("let",))
    if re.search(r"\bstep\s+[\w-]+\s+after\s+([\w-]+\s*,\s*)*$", head) or re.search(
            r"^\s*capture\s+[\w-]+\s*=\s*$", head):
        return _names(a, line, col, ("step",))
    if re.search(r"\b(parent|ancestor|of)\s+$|\bcount\(\s*$|\bexpect\s+[\w-]+\s+(before|after|contains)\s+$", head):
        return _names(a, line, col, ("span",))
    if re.search(r"^\s*expect\s+$", head):
        return _names(a, line, col, ("step", "span"))
    if re.search(r"\bkind\s+$", head):
        return [Item(k, "constant", "span kind") for k in CONSTANTS["kind"]]
    if re.search(r"\bstatus\s+$|\.status\s*(==|!=)\s*$", head):
        return [Item(k, "constant", "span status") for k in CONSTANTS["status"]]
    return _names(a, line, col, ("let", "param", "capture")) + [
        Item(k, "constant", "boolean") for k in CONSTANTS["boolean"]]


def _names(a: Analysis | None, line: int, col: int, kinds: tuple[str, ...]) -> list[Item]:
    if a is None or a.index is None:
        return []
    from crc.compiler.index import visible_names

    shown = a.shown(a.path) or a.path
    found = visible_names(a.index, shown, line, col)
    return [Item(n, s.kind, f"{s.kind}" + (f" in {s.container}" if s.container else ""))
            for n, s in sorted(found.items()) if s.kind in kinds]


def _template_expression(cur: str) -> str | None:
    """The text of an unclosed `{{ ...` before the cursor, inside a string; None when not in one."""
    if not in_string(cur):
        return None
    start = cur.rfind("{{")
    if start < 0 or "}}" in cur[start:]:
        return None
    return cur[start + 2:]


def in_string(cur: str) -> bool:
    """Whether the text before a position (one line) ends inside a string literal (comments aside)."""
    return _scan(cur) == "string"


def in_code(cur: str) -> bool:
    """Whether the text before a position (one line) ends in code: not in a string, not in a comment."""
    return _scan(cur) == "code"


def _scan(cur: str) -> str:
    """Where a line's text ends: "code", "string" or "comment" (regex literals hold no `"` or `#` that
    matter here: a `#` in one would end the scan early, which only hides a hover or completion)."""
    quoted = False
    i = 0
    while i < len(cur):
        ch = cur[i]
        if quoted and ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return "comment"
        i += 1
    return "string" if quoted else "code"


@functools.cache
def faker_providers() -> tuple[str, ...]:
    """The methods `fake.` offers (Faker is imported on first use)."""
    from faker import Faker

    fake = Faker()
    skip = {"add_provider", "get_providers", "seed", "seed_instance", "seed_locale", "provider", "set_formatter",
            "get_formatter", "format", "parse", "set_arguments", "get_arguments", "del_arguments", "cache_pattern",
            "factories", "generator_attrs", "items", "locales", "random", "weights", "unique", "optional"}
    return tuple(n for n in dir(fake) if not n.startswith("_") and n not in skip)


def recorded(path: str) -> tuple[list[str], list[str]]:
    """Span names and attribute keys of the newest recording of the file at `path`: a recording (written by
    `crc run --record`) found in the file's directory, its `.crc/` directory or their parents' up to three
    levels, whose Plan was compiled from this file. Empty when there is none."""
    rec = _newest_recording(path)
    if rec is None:
        return [], []
    names = sorted({s.name for s in rec.spans})
    keys = sorted({k for s in rec.spans for k in s.attributes})
    return names, keys


def _newest_recording(path: str) -> Recording | None:
    from crc.runtime.recording import RecordingError, is_recording, read

    here = Path(path).parent
    dirs = [here, here / ".crc"]
    for parent in list(here.parents)[:3]:
        dirs += [parent, parent / ".crc"]
    candidates = sorted((p for d in dirs if d.is_dir() for p in d.iterdir()
                         if p.is_file() and p.suffix not in (".cr", ".plan", ".py", ".md")),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    for p in candidates[:200]:
        try:
            if not is_recording(p):
                continue
            rec = read(p)
        except (OSError, RecordingError):
            continue
        if any(_same_file(str(plan.get("meta", {}).get("source", "")), path) for plan in rec.plans):
            return rec
    return None


def _same_file(recorded_source: str, path: str) -> bool:
    """Whether a Plan's source (as given to `crc run`, maybe relative to where it ran) is the file at `path`."""
    if not recorded_source:
        return False
    src = Path(recorded_source)
    if src.is_absolute():
        return src.resolve() == Path(path).resolve()
    rel = src.as_posix().removeprefix("./")
    return Path(path).resolve().as_posix().endswith("/" + rel)
