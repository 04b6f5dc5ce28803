"""A keyword's documentation, taken from the language reference (docs/language.md): one source for the
reference and for hover, so the two never disagree.

For a keyword, the first of: the introduction (and syntax summary) of a section named after it (`## Steps`
for `step`); the reference's table rows whose first cell starts with it (`| `image VALUE` | ...`); the lines
of the first syntax summary (a ```text block) that uses it; table rows whose first cell uses it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class _Section:
    title: str
    intro: str  # the first paragraph
    rows: tuple[tuple[str, str], ...]  # table rows: (first cell, the rest)
    syntax: tuple[str, ...]  # lines of ```text blocks


def reference_text() -> str | None:
    """docs/language.md: installed with crc as `crc/docs/language.md`, or beside the sources in a checkout."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "docs" / "language.md", package.parent / "docs" / "language.md"):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    return None


@functools.cache
def _sections() -> tuple[_Section, ...]:
    text = reference_text() or ""
    out: list[_Section] = []
    for chunk in re.split(r"^#{2,3} ", text, flags=re.M)[1:]:
        title, _, body = chunk.partition("\n")
        rows: list[tuple[str, str]] = []
        syntax: list[str] = []
        paragraphs: list[str] = []
        for fenced, lines in _blocks(body):
            if fenced:
                if lines[0].strip() == "```text":
                    syntax.extend(x.rstrip() for x in lines[1:] if x.strip())
                continue
            for line in lines:
                if line.startswith("|") and not re.match(r"^\|[-| ]+\|$", line):
                    cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
                    if len(cells) >= 2:
                        rows.append((cells[0], " — ".join(c for c in cells[1:] if c)))
            if not lines[0].startswith(("|", "- ", "1. ")):
                paragraphs.append(" ".join(x.strip() for x in lines))
        out.append(_Section(title.strip(), paragraphs[0] if paragraphs else "", tuple(rows), tuple(syntax)))
    return tuple(out)


def _blocks(body: str) -> list[tuple[bool, list[str]]]:
    """Paragraphs (split at blank lines) and fenced code blocks (whole, blank lines included)."""
    out: list[tuple[bool, list[str]]] = []
    cur: list[str] = []
    fence = False
    for line in body.split("\n"):
        if line.startswith("```"):
            if fence:
                out.append((True, cur))
                cur, fence = [], False
            else:
                if cur:
                    out.append((False, cur))
                cur, fence = [line], True
        elif fence or line.strip():
            cur.append(line)
        elif cur:
            out.append((False, cur))
            cur = []
    if cur:
        out.append((fence, cur))
    return out


@functools.cache
def keyword_doc(word: str) -> str | None:
    """Markdown documenting keyword `word`, or None when the reference says nothing about it."""
    starts = re.compile(rf"^`{re.escape(word)}(?![\w-])")
    parts: list[str] = []
    for s in _sections():
        title = s.title.lower()
        if re.match(rf"^{re.escape(word)}s?\b", title) and s.intro:
            parts.append(f"**{s.title}**\n\n{s.intro}")
            if s.syntax:
                parts.append("```\n" + "\n".join(s.syntax[:8]) + "\n```")
            break
    if not parts:
        for s in _sections():
            for cell, rest in s.rows:
                if starts.match(cell):
                    parts.append(f"**{s.title}** · {cell}: {rest}")
    used = re.compile(rf"(?<![\w\"-]){re.escape(word)}(?![\w\"-])")
    for comments in (False, True):  # a use in a syntax line's comment counts only when there is no other
        if not parts:
            for s in _sections():
                lines = [line for line in s.syntax if used.search(line if comments else line.split("#")[0])]
                if lines:
                    parts.append(f"**{s.title}**\n```\n" + "\n".join(lines[:6]) + "\n```")
                    break
    if not parts:
        for s in _sections():
            for cell, rest in s.rows:
                if cell.startswith("`") and used.search(cell):
                    parts.append(f"**{s.title}** · {cell}: {rest}")
    return "\n\n".join(parts[:4]) if parts else None
