"""`-k` expressions, as in pytest: a case-insensitive substring of `suite/test`, combined with `and`, `or`,
`not` and parentheses; a term with `*`, `?` or `[` is a glob matched against `suite`, `suite/test` or `test`.

Words next to each other form one term, so test names with spaces need no quotes (`-k 'order is placed'`);
a quoted term ("a and b") is taken literally. Imports nothing heavy: the runner, replay and the CLI share it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

GLOB = re.compile(r"[*?\[]")
_TOKEN = re.compile(r"\s*(?:(\()|(\))|\"([^\"]*)\"|'([^']*)'|([^\s()\"']+))")
KEYWORDS = ("and", "or", "not")
Match = Callable[[str, str], bool]  # (suite, test) -> selected


class SelectError(ValueError):
    """A malformed expression; `col` is the 1-based column of the fault."""

    def __init__(self, message: str, col: int):
        super().__init__(message)
        self.col = col


@dataclass(frozen=True)
class _Tok:
    kind: str  # "(", ")", "and", "or", "not", "term", "end"
    text: str
    col: int
    quoted: bool = False  # a quoted term is never joined with the words around it


def _tokens(expr: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None or m.end() == pos:
            if expr[pos:].strip():
                raise SelectError("unclosed quote", pos + 1)
            break
        col = m.start(m.lastindex or 0) + 1
        if m[1] or m[2]:
            out.append(_Tok(m[1] or m[2], m[1] or m[2], col))
        elif m[3] is not None or m[4] is not None:
            out.append(_Tok("term", m[3] if m[3] is not None else m[4], col, quoted=True))
        else:
            word = m[5]
            if word.lower() in KEYWORDS:
                out.append(_Tok(word.lower(), word, col))
            elif out and out[-1].kind == "term" and not out[-1].quoted:
                prev = out[-1]  # adjacent words: one term with a space ("order is placed")
                out[-1] = _Tok("term", f"{prev.text} {word}", prev.col)
            else:
                out.append(_Tok("term", word, col))
        pos = m.end()
    out.append(_Tok("end", "", len(expr) + 1))
    return out


def compile_expr(expr: str) -> Match:
    """A matcher for one `-k` expression. Raises SelectError on a malformed one."""
    toks = _tokens(expr)
    i = 0

    def peek() -> _Tok:
        return toks[i]

    def take(kind: str) -> _Tok:
        nonlocal i
        t = toks[i]
        if t.kind != kind:
            raise SelectError(f"expected {_what(kind)}, found {_what(t.kind, t.text)}", t.col)
        i += 1
        return t

    def or_() -> Match:
        left = and_()
        while peek().kind == "or":
            take("or")
            left = _either(left, and_())
        return left

    def and_() -> Match:
        left = not_()
        while peek().kind == "and":
            take("and")
            left = _both(left, not_())
        return left

    def not_() -> Match:
        if peek().kind == "not":
            take("not")
            inner = not_()
            return lambda s, t: not inner(s, t)
        if peek().kind == "(":
            take("(")
            inner = or_()
            take(")")
            return inner
        return term(take("term").text)

    if peek().kind == "end":
        raise SelectError("empty expression", 1)
    m = or_()
    take("end")
    return m


def _either(a: Match, b: Match) -> Match:
    return lambda s, t: a(s, t) or b(s, t)


def _both(a: Match, b: Match) -> Match:
    return lambda s, t: a(s, t) and b(s, t)


def term(text: str) -> Match:
    """One term: a glob (case-insensitive) on suite, suite/test or test; else a substring of suite/test."""
    low = text.lower()
    if GLOB.search(text):
        return lambda s, t: any(fnmatch.fnmatchcase(n.lower(), low) for n in (s, f"{s}/{t}", t))
    return lambda s, t: low in f"{s}/{t}".lower()


def _what(kind: str, text: str = "") -> str:
    return {"end": "the end", "term": f"`{text}`" if text else "a name", "(": "`(`", ")": "`)`"}.get(
        kind, f"`{text or kind}`")


def matcher(exprs: Iterable[str]) -> Match:
    """Any of several `-k` expressions (repeated `-k` selects the union); everything when none is given."""
    ms = [compile_expr(e) for e in exprs]
    if not ms:
        return lambda s, t: True
    return lambda s, t: any(m(s, t) for m in ms)


def closest(exprs: Iterable[str], names: Iterable[str], n: int = 3) -> list[str]:
    """The `suite/test` names closest to what was asked for (for "matched nothing")."""
    import difflib

    words = [w for e in exprs for w in re.split(r"\s+(?:and|or|not)\s+|[()\"']", e) if w.strip()]
    pool = sorted(set(names))
    scored: dict[str, float] = {}
    for w in words:
        w = GLOB.sub("", w.strip().lower())
        for name in pool:
            low = name.lower()
            parts = [p for p in (low, *low.split("/"), *low.split()) if len(p) >= 3]
            best = max((difflib.SequenceMatcher(None, w, part).ratio() for part in parts), default=0.0)
            scored[name] = max(scored.get(name, 0.0), best)
    ranked = sorted(pool, key=lambda x: (-scored.get(x, 0.0), x))
    return [x for x in ranked if scored.get(x, 0.0) >= 0.6][:n]


def exact(suite: str, test: str) -> str:
    """A `-k` expression selecting exactly `suite/test` (up to case): a quoted glob, its glob characters
    escaped and the `/` bracketed (`[/]`), so it is always a glob and never taken as a substring."""
    import glob

    pattern = f"{glob.escape(suite)}[/]{glob.escape(test)}"
    quote = "'" if '"' in pattern else '"'
    return f"{quote}{pattern}{quote}"
