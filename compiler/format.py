"""`crc fmt`: one canonical layout for `.cr` files, keeping every comment and never changing meaning.

The layout: 2-space indentation; one statement per line (blocks — suite, template, service, overrides,
test — always open on their header line and close on a line of their own); one space between words and
around operators, none inside `(...)` and `[...]`, one inside an inline `{ ... }`; strings re-escaped
canonically; numbers, durations and regexes kept as written (the IR keeps a duration's text). Lists, env
maps, argument lists and span selector bodies are written on one line, unless the source breaks the line
right after the opening bracket (or a comment sits inside): then one item goes per line, comma-separated ones
with a trailing comma. Runs of blank lines become one;
blank lines at the start or end of a block go.

Comments: a comment on a line of its own stays on a line of its own, at the indentation of what follows it;
a comment after code stays after that code when a line ends there, and one that sat inside a statement being
joined onto one line moves to a line of its own just above that statement.

How: the Lark parser (the real grammar, with every token kept) gives the structure; comments, which the
grammar ignores, are found in the gaps between tokens. The result is parsed again and its IR compared,
locations aside, with the input's: a layout bug raises `FormatterBug` instead of changing a file's meaning.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, cast

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from . import ir
from .diagnostics import CompileError, Diagnostics, sorted_diagnostics
from .parser import escape, grammar_text, parse, unescape

INDENT = "  "
_COMMENT = re.compile(r"#[^\n]*")
# Rules whose body is a block of statements, one per line: `header { items }`.
_BLOCKS = frozenset({"suite", "template_def", "service_decl", "service_overrides", "test"})
# Rules whose `( ... )` right in their children is a comma-separated argument or parameter list.
_PAREN_GROUPS = frozenset({"template_def", "service_from"})


class FormatterBug(Exception):
    """The layout would have changed what the file means: a bug in the formatter, never the user's."""


@functools.cache
def _parser() -> Lark:
    """The language's own LALR parser, keeping punctuation and keyword tokens (the compiler drops them)."""
    return Lark(grammar_text(), parser="lalr", keep_all_tokens=True, maybe_placeholders=False, cache=True)


@dataclass(frozen=True, slots=True)
class _Comment:
    pos: int
    line: int
    text: str
    trailing: bool  # written after code on the same line
    blank_before: bool  # a blank line separates it from what comes before


def format_source(text: str, path: str = "<input>", *, verify: bool = True) -> str:
    """The canonical layout of `text`. Raises CompileError (located diagnostics) when it does not parse, and
    FormatterBug when `verify` finds that the result would mean something else than the input."""
    diags = Diagnostics()
    before = parse(text, path, diags)
    if before is None:
        raise CompileError(sorted_diagnostics(d for d in diags.items if d.severity == "error"))
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:  # pragma: no cover - `parse` above accepted the same text with the same grammar
        raise FormatterBug(f"the formatter's parser rejected what the compiler's accepted: {e}") from e
    out = _Layout(text, tree).run()
    if verify:
        after = parse(out, path, Diagnostics())
        if after is None or meaning(after) != meaning(before):
            raise FormatterBug(f"{path}: formatting would change the file's meaning; it was left as it is "
                               "(please report this as a bug in `crc fmt`)")
    return out


def is_formatted(text: str, path: str = "<input>") -> bool:
    """True when `text` is already in the canonical layout (raises like `format_source`)."""
    return format_source(text, path) == text


def meaning(node: Any) -> Any:
    """IR without source locations: two files with equal `meaning` compile to the same Plan, locations aside."""
    if isinstance(node, ir.Loc):
        return None
    if is_dataclass(node) and not isinstance(node, type):
        return (type(node).__name__,
                tuple(meaning(getattr(node, f.name)) for f in fields(node) if f.name not in ("loc", "path")))
    if isinstance(node, tuple | list):
        return tuple(meaning(x) for x in node)
    return node


def canonical_string(literal: str) -> str:
    """A string literal with canonical escapes: the same value, written one way."""
    return '"' + escape(unescape(literal[1:-1])) + '"'


def _tokens(tree: Tree[Token]) -> Iterator[Token]:
    for c in tree.children:
        if isinstance(c, Tree):
            yield from _tokens(c)
        elif isinstance(c, Token):
            yield c


def _first_token(node: Tree[Token] | Token) -> Token:
    return node if isinstance(node, Token) else next(_tokens(node))


def _kids(tree: Tree[Token]) -> list[Tree[Token] | Token]:
    return [c for c in tree.children if c is not None]


def _is(node: object, value: str) -> bool:
    return isinstance(node, Token) and node.value == value and node.type != "STRING"


class _Layout:
    """Walks the parse tree, writing lines; comments are placed as the tokens around them are written."""

    def __init__(self, text: str, tree: Tree[Token]):
        self.text = text
        self.tree = tree
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]
        toks = list(_tokens(tree))
        self.comments = self._find_comments(toks)
        self.ci = 0  # next comment to place
        # A blank line before a token: it is at least two lines below the element (token or comment) before it.
        elements = sorted([(t.start_pos or 0, t.line or 0) for t in toks] + [(c.pos, c.line) for c in self.comments])
        self.blank_at = {pos for (pos, line), (_, prev) in zip(elements[1:], elements, strict=False)
                         if line - prev >= 2}
        self.lines: list[list[Any] | None] = []  # [indent, code, comment]; None is a blank line
        self.indent = 0
        self.units = [0]  # per open block or group: the line its current statement/item starts on
        self.fresh = True  # nothing written yet in the current block or group (no blank line goes first)
        self.prev: Token | None = None  # the token last written on the current line
        self.prev2: Token | None = None  # and the one before it
        self.at_start = True

    def _line_of(self, pos: int) -> int:
        return bisect.bisect_right(self.starts, pos)

    def _find_comments(self, toks: list[Token]) -> list[_Comment]:
        out: list[_Comment] = []
        bounds = [0] + [p for t in toks for p in (t.start_pos or 0, t.end_pos or 0)] + [len(self.text)]
        prev_line: int | None = None  # line of the element before the gap being scanned
        for k in range(0, len(bounds), 2):
            lo, hi = bounds[k], bounds[k + 1]
            for m in _COMMENT.finditer(self.text, lo, hi):
                line = self._line_of(m.start())
                trailing = k > 0 and prev_line == line
                out.append(_Comment(m.start(), line, m.group().rstrip(), trailing,
                                    prev_line is not None and line - prev_line >= 2))
                prev_line = line
            if k + 2 < len(bounds):
                prev_line = self._line_of(bounds[k + 1])
        return out

    # ------------------------------------------------------------ writing
    def _pending(self, tok: Token | None) -> Iterator[_Comment]:
        """The comments before `tok` (all the rest when None) not placed yet."""
        limit = len(self.text) + 1 if tok is None else (tok.start_pos or 0)
        while self.ci < len(self.comments) and self.comments[self.ci].pos < limit:
            self.ci += 1
            yield self.comments[self.ci - 1]

    def _append(self, line: list[Any] | None) -> None:
        self.lines.append(line)
        self.fresh = False

    def newline(self, tok: Token | None, indent: int, comment_indent: int | None = None, unit: bool = False,
                blank_ok: bool = True) -> None:
        """Place the comments before `tok`, then start a new line at `indent` for it."""
        ci = indent if comment_indent is None else comment_indent
        for c in self._pending(tok):
            last = self.lines[-1] if self.lines else None
            if c.trailing and last is not None and last[1] and last[2] is None:
                last[2] = c.text
                continue
            if c.blank_before and not self.fresh:
                self._append(None)
            self._append([ci, "", c.text])
        if tok is None:
            return
        if blank_ok and tok.start_pos in self.blank_at and not self.fresh:
            self._append(None)
        self._append([indent, "", None])
        if unit:
            self.units[-1] = len(self.lines) - 1
        self.at_start = True

    def token(self, tok: Token, space: bool | None = None) -> None:
        """Write `tok` on the current line; comments before it cannot stay there, so they go above the
        statement (or list item) being written."""
        for c in self._pending(tok):
            at = self.units[-1]
            line = self.lines[at]
            indent = line[0] if line is not None else self.indent
            self.lines.insert(at, [indent, "", c.text])
            self.units[-1] += 1
        text = canonical_string(tok.value) if tok.type == "STRING" else tok.value
        self._write(text, tok, space)

    def _write(self, text: str, tok: Token | None, space: bool | None) -> None:
        line = self.lines[-1]
        assert line is not None
        if space is None:
            space = not self.at_start and _space(self.prev, text, tok, self.prev2)
        line[1] += (" " if space and not self.at_start else "") + text
        self.at_start = False
        self.prev2 = self.prev
        if tok is not None:
            self.prev = tok
        else:
            self.prev = Token("SYNTHETIC", text)

    # ------------------------------------------------------------ structure
    def run(self) -> str:
        for item in _kids(self.tree):
            self.newline(_first_token(item), 0, unit=True)
            self.emit(item)
        self.newline(None, 0)
        out = []
        for line in self.lines:
            if line is None:
                out.append("")
                continue
            indent, code, comment = line
            pad = INDENT * indent
            out.append(pad + code + ("  " + comment if comment else "") if code else pad + (comment or ""))
        return "\n".join(out) + "\n" if out else ""

    def emit(self, node: Tree[Token] | Token) -> None:
        if isinstance(node, Token):
            self.token(node)
            return
        kids = _kids(node)
        if node.data in _BLOCKS:
            i = next(k for k, c in enumerate(kids) if _is(c, "{"))
            self.inline(node, kids[:i])
            self.block(cast(Token, kids[i]), kids[i + 1:-1], cast(Token, kids[-1]))
        elif node.data in ("list", "env_map", "json_object"):
            self.group(cast(Token, kids[0]), [c for c in kids[1:-1] if not _is(c, ",")], cast(Token, kids[-1]),
                       comma=True)
        elif node.data == "selector_body":
            self.group(cast(Token, kids[0]), kids[1:-1], cast(Token, kids[-1]), comma=False)
        else:
            self.inline(node, kids)

    def inline(self, node: Tree[Token], kids: list[Tree[Token] | Token]) -> None:
        i = 0
        while i < len(kids):
            c = kids[i]
            if node.data in _PAREN_GROUPS and _is(c, "("):
                j = next(k for k in range(i + 1, len(kids)) if _is(kids[k], ")"))
                self.group(c, [x for x in kids[i + 1:j] if not _is(x, ",")], kids[j], comma=True)  # type: ignore[arg-type]
                i = j + 1
                continue
            self.emit(c)
            i += 1

    def _has_comment(self, open_: Token, close: Token) -> bool:
        k = bisect.bisect_right([c.pos for c in self.comments], open_.start_pos or 0)
        return k < len(self.comments) and self.comments[k].pos < (close.start_pos or 0)

    def _open(self) -> None:
        self.indent += 1
        self.units.append(len(self.lines) - 1)
        self.fresh = True

    def _close(self, close: Token) -> None:
        self.units.pop()
        self.indent -= 1
        self.newline(close, self.indent, comment_indent=self.indent + 1, blank_ok=False)
        self.token(close)

    def block(self, open_: Token, items: list[Tree[Token] | Token], close: Token) -> None:
        self.token(open_)
        if not items and not self._has_comment(open_, close):
            self.token(close, space=False)
            return
        self._open()
        for it in items:
            self.newline(_first_token(it), self.indent, unit=True)
            self.emit(it)
        self._close(close)

    def group(self, open_: Token, items: list[Tree[Token] | Token], close: Token, comma: bool) -> None:
        self.token(open_)
        if not items and not self._has_comment(open_, close):
            self.token(close, space=False)
            return
        # Like Prettier's objects: a line break right after the opening bracket asks for one item per line.
        if items and _first_token(items[0]).line == open_.line and not self._has_comment(open_, close):
            for k, it in enumerate(items):
                if k and comma:
                    self._write(",", None, False)
                self.emit(it)
            self.token(close)
            return
        self._open()
        for it in items:
            self.newline(_first_token(it), self.indent, unit=True)
            self.emit(it)
            if comma:
                self._write(",", None, False)
        self._close(close)


def _space(prev: Token | None, text: str, tok: Token | None, prev2: Token | None = None) -> bool:
    """Whether one space goes between the token written last and `text` (`prev2` is the one before)."""
    if prev is None:
        return False
    if text in (",", ":", ")", "]", ".") or prev.value in ("(", "[", ".", ".."):
        return False
    if text == "(":
        return False  # calls, templates, `count(`, `json(`
    if text == "[":
        # `span.attr["key"]`, `step.headers["key"]`, `capture x = step.headers["key"]`; a list elsewhere
        return prev.type != "ATTR" and not (prev2 is not None and prev2.value == ".")
    if text == "..":
        return prev.type == "GAP"  # `gap 1ms..5ms`, `gap ..5ms`
    return True
