"""Source text -> IR. Syntax errors become located diagnostics; the parser recovers to report several."""

from __future__ import annotations

import builtins
import dataclasses
import functools
import math
import re
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any

from crc.grammar.keywords import ALL_KEYWORDS
from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ir
from .diagnostics import Diagnostics, did_you_mean

MAX_SYNTAX_ERRORS = 20
# Deeper parse trees are refused (a located error) before anything recursive walks them: the transformer,
# the compiler, the formatter and msgpack all recurse. Real files are ~10 deep; each list adds one.
MAX_DEPTH = 100
# Longer names are refused: they end up in container names, DNS aliases and file names.
MAX_NAME = 128
# Longer durations are refused: timers take seconds as floats, and no test waits for a year.
MAX_DURATION = 365 * 86400.0

_UNITS = {"us": Decimal("0.000001"), "ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}

# How terminals read in "expected ..." messages.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "STRING": "a string",
    "INT": "an integer",
    "FLOAT": "a number",
    "DURATION": "a duration (like 250ms, 2s, 1m)",
    "REGEX": "a regex (/.../)",
    "COMPARE": "a comparison (==, !=, <, <=, >, >=)",
    "MATCH": "`~` or `!~`",
    "$END": "end of file",
}


def grammar_text() -> str:
    return resources.files("crc.grammar").joinpath("cr.lark").read_text(encoding="utf-8")


# The text being parsed by `parse`, for the keyword check below (lark's lexer callbacks see only the token).
_SOURCE: ContextVar[str | None] = ContextVar("crc_parse_source", default=None)
# The comments lexed by `parse` (the grammar ignores them, but lark's lexer still hands them to a callback).
_COMMENTS: ContextVar[list[Token] | None] = ContextVar("crc_parse_comments", default=None)
# What the NAME terminal matches, so a keyword glued to a name is reported as the whole word.
_WORD = re.compile(r"[A-Za-z_]([A-Za-z0-9_\-]*[A-Za-z0-9_])?")
# A character that would continue a NAME after the keyword (`-` only before a letter: `seed -1` is a number).
_WORD_CHAR = re.compile(r"[A-Za-z0-9_]|-[A-Za-z_]")


def _glued_keyword(tok: Token) -> Token:
    """Reject a keyword matched as the prefix of a longer word.

    Where the grammar accepts no NAME, lark's contextual lexer has only the keywords to try, so `servicea {`
    would lex as `service` `a` and `kindd` as `kind` `d`. Raising here makes it a syntax error on the whole word,
    with the parser's state before it, so the message names `servicea` and did-you-mean offers `service`."""
    text = _SOURCE.get()
    end = tok.end_pos
    if text is None or end is None or tok.start_pos is None or not _WORD_CHAR.match(text, end):
        return tok
    m = _WORD.match(text, tok.start_pos)
    word = m.group(0) if m else str(tok)
    name = Token("NAME", word, tok.start_pos, tok.line, tok.column, tok.line, (tok.column or 1) + len(word),
                 tok.start_pos + len(word))
    raise UnexpectedToken(name, set())


def _comment(tok: Token) -> Token:
    """Keep a comment for `parse` (when it is the one lexing)."""
    found = _COMMENTS.get()
    if found is not None:
        found.append(tok)
    return tok


@functools.cache
def lark_parser() -> Lark:
    """The LALR parser, built once per process (and cached on disk by lark between processes)."""
    callbacks = {kw.upper(): _glued_keyword for kw in ALL_KEYWORDS}  # lark names keyword terminals so
    callbacks["COMMENT"] = _comment
    parser = Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True, cache=True,
                  lexer_callbacks=callbacks)
    missing = {t.name for t in parser.terminals if t.pattern.type == "str" and t.pattern.value in ALL_KEYWORDS
               and t.name not in callbacks}
    if missing:  # lark changed how it names keyword terminals: fail loudly rather than accept `servicea`
        raise RuntimeError(f"keyword terminals without the glued-keyword check: {sorted(missing)}")
    return parser


@functools.cache
def _terminal_patterns() -> dict[str, str]:
    return {t.name: t.pattern.value for t in lark_parser().terminals if t.pattern.type == "str"}


def describe_terminal(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    lit = _terminal_patterns().get(name)
    return f"`{lit}`" if lit is not None else name.lower()


def describe_expected(names: set[str]) -> str:
    words = sorted({describe_terminal(n) for n in names}, key=lambda w: (not w.startswith("`"), w))
    if len(words) > 12:
        return ", ".join(words[:12]) + f" or one of {len(words) - 12} more"
    if len(words) <= 1:
        return words[0] if words else "nothing"
    return ", ".join(words[:-1]) + " or " + words[-1]


def _token_text(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    return f"`{tok.value}`" if len(tok.value) <= 40 else f"`{tok.value[:37]}...`"


def parse_tree(text: str) -> Any:
    """The lark parse tree of `text`; raises lark's UnexpectedInput on a syntax error."""
    reset = _SOURCE.set(text)
    try:
        return lark_parser().parse(text)
    finally:
        _SOURCE.reset(reset)


def accepts_after(text: str) -> set[str]:
    """What the parser accepts right after `text` (a file's beginning, up to a cursor): keywords and punctuation
    as written (`service`, `{`), other terminals by name (`NAME`, `STRING`, `DURATION`...).

    Statements with syntax errors before the end are blanked out as `parse` does, so an earlier mistake does not
    hide what fits here; empty when nothing can be said."""
    work = text
    for _ in range(MAX_SYNTAX_ERRORS):
        interactive = lark_parser().parse_interactive(work)
        try:
            interactive.exhaust_lexer()
            return {_terminal_patterns().get(t, t) for t in interactive.accepts()}
        except UnexpectedInput as e:
            blanked = _blank_statement(work, getattr(e, "line", 0) or 0) if getattr(e, "line", 0) else work
            if blanked == work:
                return set()
            work = blanked
    return set()


def parse(text: str, path: str, diags: Diagnostics) -> ir.Module | None:
    """Parse one file. Returns None when there were syntax errors (all of them are in `diags`)."""
    comments: list[Token] = []
    reset = _COMMENTS.set(comments)
    try:
        tree = parse_tree(text)
    except UnexpectedInput:
        _report_syntax(syntax_errors(text), path, text, diags)
        return None
    finally:
        _COMMENTS.reset(reset)
    if (deep := _too_deep(tree)) is not None:
        diags.error(f"nested too deeply: more than {MAX_DEPTH} levels", _meta_loc(path, deep.meta),
                    "flatten the lists, or build them with let")
        return None
    try:
        module: ir.Module = _ToIR(path, diags).transform(tree)
    except VisitError as e:  # a value the grammar accepts but the IR cannot hold (e.g. a bad escape)
        if isinstance(e.orig_exc, _ValueProblem):
            diags.error(e.orig_exc.message, e.orig_exc.loc, e.orig_exc.help)
            return None
        raise
    return dataclasses.replace(module, comments=tuple(
        ir.Comment(str(t).rstrip(), ir.Loc(path, t.line or 1, t.column or 1, t.end_line or 1, t.end_column or 1))
        for t in comments))


def syntax_errors(text: str) -> list[UnexpectedInput]:
    """Up to MAX_SYNTAX_ERRORS syntax errors of `text`, in one pass whatever their number.

    After each error the statement it sits in is skipped: from the start of its line until the braces opened
    there are closed again (as if those lines were blanked out, which keeps every position), and the parser
    goes on from the state it had at the start of that line (a copy is kept at each line's first token).
    Unlike skipping tokens, this never lets a stray `}` close the wrong block; unlike parsing again from the
    top after each error, it costs one parse of the file."""
    parser = lark_parser()
    lines = text.split("\n")
    starts = [0]
    for ln in lines:
        starts.append(starts[-1] + len(ln) + 1)
    errors: list[UnexpectedInput] = []
    ip = parser.parse_interactive(text)
    last: Token | None = None
    reset = _SOURCE.set(text)
    try:
        while True:
            snap_line, snap = 0, ip.parser_state.copy(deepcopy_values=False)
            try:
                for tok in ip.iter_parse():  # yields each token before feeding it
                    if tok.line != snap_line:
                        snap_line, snap = tok.line or 0, ip.parser_state.copy(deepcopy_values=False)
                    last = tok
                ip.feed_eof(last)
                return errors
            except UnexpectedInput as e:
                if getattr(e, "interactive_parser", None) is None:  # as lark's parse loop leaves it: `accepts()`
                    e.interactive_parser = type(ip)(ip.parser, ip.parser_state, ip.lexer_thread)
                errors.append(e)
                if len(errors) >= MAX_SYNTAX_ERRORS or isinstance(e, UnexpectedEOF) or (
                        isinstance(e, UnexpectedToken) and e.token.type == "$END"):
                    return errors
                line = getattr(e, "line", 1) or 1
                end = _statement_end(lines, line)
                if all(not lines[i].strip() for i in range(line - 1, end + 1)):
                    return errors
                # The state before line `line`: the copy at its first token, or (no token of it was fed) now's.
                state = snap if snap_line == line else ip.parser_state.copy(deepcopy_values=False)
                ip = _resume(ip, state, text, end + 2, min(starts[end + 1], len(text)))
    finally:
        _SOURCE.reset(reset)


def _resume(ip: Any, state: Any, text: str, line: int, pos: int) -> Any:
    """An interactive parser in `state` whose lexer starts at `pos`, the start of line `line` of `text`."""
    from lark.lexer import LexerState, LexerThread, LineCounter, TextSlice

    ctr = LineCounter("\n")
    ctr.char_pos, ctr.line, ctr.column, ctr.line_start_pos = pos, line, 1, pos
    thread = LexerThread(ip.lexer_thread.lexer, LexerState(TextSlice.cast_from(text), ctr))
    state.lexer = thread
    return type(ip)(ip.parser, state, thread)


def _too_deep(tree: Tree[Any]) -> Tree[Any] | None:
    """The first subtree deeper than MAX_DEPTH, found without recursion."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return node
        stack.extend((c, depth + 1) for c in node.children if isinstance(c, Tree))
    return None


def _meta_loc(path: str, meta: Any) -> ir.Loc:
    if getattr(meta, "empty", True):
        return ir.Loc(path, 1, 1, 1, 2)
    return ir.Loc(path, meta.line, meta.column, meta.line, meta.column + 1)


def _statement_end(lines: list[str], line: int) -> int:
    """The index of the last line of the statement at `line` (1-based): where the braces opened from that
    line on are closed again (braces are counted as written, in strings and comments too)."""
    depth, end = 0, line - 1
    for i in range(line - 1, len(lines)):
        depth += lines[i].count("{") - lines[i].count("}")
        end = i
        if depth <= 0:
            break
    return end


def _blank_statement(text: str, line: int) -> str:
    """Replace with spaces the lines from `line` until the braces opened there are closed again."""
    lines = text.split("\n")
    end = _statement_end(lines, line)
    for i in range(line - 1, end + 1):
        lines[i] = " " * len(lines[i])
    return "\n".join(lines)


def _report_syntax(errors: list[UnexpectedInput], path: str, text: str, diags: Diagnostics) -> None:
    for e in errors:
        line, col = getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1
        if isinstance(e, UnexpectedToken) and e.token.type == "$END":
            e = UnexpectedEOF(e.expected)
        if isinstance(e, UnexpectedEOF):
            lines = text.splitlines() or [""]
            line, col = len(lines), len(lines[-1]) + 1
            loc = ir.Loc(path, line, col, line, col + 1)
            diags.error(f"unexpected end of file, expected {describe_expected(set(e.expected))}", loc,
                        "is a `}` missing?" if "RBRACE" in e.expected else None)
        elif isinstance(e, UnexpectedToken):
            tok = e.token
            loc = ir.Loc(path, line, col, tok.end_line or line, tok.end_column or col + 1)
            expected = set(e.expected)
            if e.interactive_parser is not None:  # the exact set; `e.expected` may include default reductions
                try:
                    expected = set(e.interactive_parser.accepts()) or expected
                except Exception:
                    pass
            expected = expected - {"$END"} if len(expected) > 1 else expected
            msg = f"unexpected {_token_text(tok)}, expected {describe_expected(expected)}"
            hint = None
            if tok.type == "NAME" or tok.value in ALL_KEYWORDS:
                words = [_terminal_patterns()[n] for n in expected if n in _terminal_patterns()]
                hint = did_you_mean(tok.value, [w for w in words if w.isalpha()])
            diags.error(msg, loc, hint)
        elif isinstance(e, UnexpectedCharacters):
            pos = e.pos_in_stream or 0
            ch = text[pos] if pos < len(text) else ""
            loc = ir.Loc(path, line, col, line, col + 1)
            hint = None
            if ch == "'":
                hint = "strings are written in double quotes"
            elif ch == "/":
                hint = "a regex is written /pattern/ on one line"
            elif ch == '"':
                hint = "is the closing `\"` missing? strings end on the line they start"
            diags.error(f"unexpected character `{ch}`", loc, hint)
        else:  # pragma: no cover - lark raises only the kinds above
            diags.error(str(e), ir.Loc(path, line, col, line, col + 1))


def _first_loc(value: Any, default: ir.Loc) -> ir.Loc:
    """Where a step option's value is written (its first part, for tuples of pairs or names)."""
    if isinstance(value, tuple):
        value = value[0] if value else None
    return getattr(value, "loc", None) or default


class _ValueProblem(Exception):
    def __init__(self, message: str, loc: ir.Loc, help: str | None = None):
        super().__init__(message)
        self.message, self.loc, self.help = message, loc, help


def unescape(body: str) -> str:
    """Unescape the inside of a string literal: \\n \\t \\r \\\\ \\" ; other escapes are kept as written."""
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            n = body[i + 1]
            out.append({"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"'}.get(n, "\\" + n))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def escape(value: str) -> str:
    """The inverse of `unescape`, for the formatter and generated sources."""
    out = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return out.replace("\r", "\\r")


def duration_seconds(text: str) -> float:
    for unit in ("ms", "us", "s", "m", "h"):
        if text.endswith(unit):
            return float(Decimal(text[: -len(unit)]) * _UNITS[unit])
    raise ValueError(text)


@dataclass(frozen=True, slots=True)
class _Uses:
    """A test header's `uses` clause, until `test` takes it apart."""

    names: tuple[ir.Name, ...]


@dataclass(frozen=True, slots=True)
class _Params:
    """A test header's `for` clause, until `test` takes it apart."""

    bindings: tuple[tuple[ir.Name, Any], ...]


@v_args(meta=True)
class _ToIR(Transformer[Token, Any]):
    """Parse tree -> IR nodes. Grammar rule names map one-to-one to methods."""

    def __init__(self, path: str, diags: Diagnostics):
        super().__init__(visit_tokens=False)  # no terminal callbacks: skip the per-token visit
        self.path = path
        self.diags = diags

    # ------------------------------------------------------------ helpers
    def _loc(self, meta: Any) -> ir.Loc:
        if getattr(meta, "empty", False):
            return ir.Loc(self.path, 1, 1, 1, 2)
        return ir.Loc(self.path, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tloc(self, tok: Token) -> ir.Loc:
        return ir.Loc(self.path, tok.line or 1, tok.column or 1, tok.end_line or 1, tok.end_column or 1)

    def _name(self, tok: Token) -> ir.Name:
        if len(tok) > MAX_NAME:
            raise _ValueProblem(f"name longer than {MAX_NAME} characters", self._tloc(tok), "use a shorter name")
        return ir.Name(str(tok), self._tloc(tok))

    def _int(self, tok: Token) -> int:
        """An integer literal, refused (located) beyond 64 bits: Plans store integers as msgpack int64."""
        digits = str(tok).lstrip("+-")
        value = int(tok) if len(digits) <= 20 else None
        if value is None or not -(2**63) <= value < 2**63:
            raise _ValueProblem("integer out of range (a 64-bit signed integer at most)", self._tloc(tok))
        return value

    def _str(self, tok: Token) -> ir.Str:
        return ir.Str(unescape(tok[1:-1]), self._tloc(tok))

    def _regex(self, tok: Token) -> ir.Regex:
        body = str(tok)
        end = body.rindex("/")
        return ir.Regex(body[1:end].replace("\\/", "/"), body[end + 1:], self._tloc(tok))

    def _dur(self, tok: Token) -> ir.Duration:
        seconds = duration_seconds(str(tok))
        if not seconds <= MAX_DURATION:
            raise _ValueProblem(f"duration too long (at most {MAX_DURATION / 86400:g} days)", self._tloc(tok))
        return ir.Duration(seconds, str(tok), self._tloc(tok))

    # ------------------------------------------------------------ values
    def string(self, meta: Any, c: builtins.list[Token]) -> ir.Str:
        return self._str(c[0])

    def int(self, meta: Any, c: builtins.list[Token]) -> ir.Int:
        return ir.Int(self._int(c[0]), self._tloc(c[0]))

    def float(self, meta: Any, c: builtins.list[Token]) -> ir.Float:
        value = builtins.float(c[0])
        if not math.isfinite(value):
            raise _ValueProblem("number out of range", self._tloc(c[0]))
        return ir.Float(value, self._tloc(c[0]))

    def duration(self, meta: Any, c: builtins.list[Token]) -> ir.Duration:
        return self._dur(c[0])

    def regex(self, meta: Any, c: builtins.list[Token]) -> ir.Regex:
        return self._regex(c[0])

    def ref(self, meta: Any, c: builtins.list[Token]) -> ir.Ref:
        return ir.Ref(str(c[0]), self._tloc(c[0]))

    def list(self, meta: Any, c: builtins.list[Any]) -> ir.List:
        return ir.List(tuple(x for x in c if x is not None), self._loc(meta))

    # ------------------------------------------------------------ modules
    def start(self, meta: Any, c: builtins.list[Any]) -> ir.Module:
        return ir.Module(
            path=self.path,
            imports=tuple(x for x in c if isinstance(x, ir.Import)),
            templates=tuple(x for x in c if isinstance(x, ir.Template)),
            lets=tuple(x for x in c if isinstance(x, ir.Let)),
            suites=tuple(x for x in c if isinstance(x, ir.Suite)),
        )

    def import_stmt(self, meta: Any, c: builtins.list[Token]) -> ir.Import:
        return ir.Import(self._str(c[0]), self._loc(meta))

    def param(self, meta: Any, c: builtins.list[Any]) -> ir.Param:
        return ir.Param(self._name(c[0]), c[1] if len(c) > 1 else None, self._loc(meta))

    def template_def(self, meta: Any, c: builtins.list[Any]) -> ir.Template:
        name = self._name(c[0])
        params = tuple(x for x in c[1:] if isinstance(x, ir.Param))
        items = [x for x in c[1:] if x is not None and not isinstance(x, ir.Param)]
        return ir.Template(name, params, self._body(items, self._loc(meta)), self._loc(meta))

    def let_stmt(self, meta: Any, c: builtins.list[Any]) -> ir.Let:
        return ir.Let(self._name(c[0]), c[1], self._loc(meta))

    # ------------------------------------------------------------ suites
    def suite(self, meta: Any, c: builtins.list[Any]) -> ir.Suite:
        items = c[1:]

        def one(kind: str) -> Any:
            found = [x[1] for x in items if isinstance(x, tuple) and x[0] == kind]
            for extra in found[1:]:
                self.diags.error(f"`{kind}` is set twice in this suite", extra.loc,
                                 "keep one; the last would silently win otherwise")
            return found[0] if found else None

        return ir.Suite(
            name=self._str(c[0]),
            seed=one("seed"),
            clock=one("clock"),
            timeout=one("timeout"),
            settle=one("settle"),
            masks=tuple(x for x in items if isinstance(x, ir.Mask)),
            lets=tuple(x for x in items if isinstance(x, ir.Let)),
            services=tuple(x for x in items if isinstance(x, ir.Service)),
            tests=tuple(x for x in items if isinstance(x, ir.Test)),
            loc=self._loc(meta),
            internal=net.loc if (net := one("network")) else None,
        )

    def mask_regex(self, meta: Any, c: builtins.list[Token]) -> ir.Mask:
        return ir.Mask("regex", self._regex(c[0]), self._loc(meta))

    def mask_attr(self, meta: Any, c: builtins.list[Token]) -> ir.Mask:
        return ir.Mask("attr", self._str(c[0]), self._loc(meta))

    def mask_json(self, meta: Any, c: builtins.list[Token]) -> ir.Mask:
        return ir.Mask("json", self._str(c[0]), self._loc(meta))

    def seed_stmt(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Int]:
        return ("seed", ir.Int(self._int(c[0]), self._tloc(c[0])))

    def clock_stmt(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Str]:
        return ("clock", self._str(c[0]))

    def timeout_stmt(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Duration]:
        return ("timeout", self._dur(c[0]))

    def settle_stmt(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Duration]:
        return ("settle", self._dur(c[0]))

    def suite_network_stmt(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Name]:
        return ("network", ir.Name("internal", self._loc(meta)))

    # ------------------------------------------------------------ services
    def _body(self, items: builtins.list[Any], loc: ir.Loc) -> ir.ServiceBody:
        def pick(kind: str) -> tuple[Any, ...]:
            return tuple(x[1] for x in items if isinstance(x, tuple) and x[0] == kind)

        env = tuple(p for x in items if isinstance(x, tuple) and x[0] == "env" for p in x[1])
        return ir.ServiceBody(
            image=pick("image"), command=pick("command"), env=env, ports=pick("port"), volumes=pick("volume"),
            needs=tuple(n for group in pick("needs") for n in group), ready=pick("ready"),
            workdir=pick("workdir"), build=pick("build"), cpus=pick("cpus"), memory=pick("memory"),
            gpus=pick("gpus"), loc=loc, privileged=pick("privileged"), host_network=pick("host_network"),
            grants=pick("allow_host"),
        )

    def service_decl(self, meta: Any, c: builtins.list[Any]) -> ir.Service:
        loc = self._loc(meta)
        return ir.Service(self._name(c[0]), None, (), self._body(list(c[1:]), loc), loc)

    def service_from(self, meta: Any, c: builtins.list[Any]) -> ir.Service:
        loc = self._loc(meta)
        args = tuple(x for x in c[2:] if isinstance(x, ir.Arg))
        overrides = next((x for x in c[2:] if isinstance(x, list)), [])
        return ir.Service(self._name(c[0]), self._name(c[1]), args, self._body(overrides, loc), loc)

    def service_overrides(self, meta: Any, c: builtins.list[Any]) -> builtins.list[Any]:
        return list(c)

    def arg(self, meta: Any, c: builtins.list[Any]) -> ir.Arg:
        if len(c) == 2:
            return ir.Arg(str(c[0]), c[1], self._loc(meta))
        return ir.Arg(None, c[0], self._loc(meta))

    def image_stmt(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("image", c[0])

    def command_stmt(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("command", c[0])

    def workdir_stmt(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("workdir", c[0])

    def build_stmt(self, meta: Any, c: builtins.list[Any]) -> tuple[str, ir.Build]:
        opts = dict(c[1]) if len(c) > 1 and c[1] is not None else {}
        return ("build", ir.Build(c[0], opts.get("dockerfile"), opts.get("target"), opts.get("args", ()),
                                  opts.get("network"), self._loc(meta)))

    def build_opts(self, meta: Any, c: builtins.list[Any]) -> builtins.list[tuple[str, Any]]:
        return list(c)  # later options override earlier ones, like a service's items

    def build_dockerfile(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("dockerfile", c[0])

    def build_target(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("target", c[0])

    def build_args(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("args", c[0])

    def build_network(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("network", c[0])

    def _size(self, x: Any) -> Any:
        # A SIZE token (`512MiB`) is the same value as the string "512MiB"; the compiler reads both.
        return self._str_text(x) if isinstance(x, Token) else x

    def _str_text(self, tok: Token) -> ir.Str:
        return ir.Str(str(tok), self._tloc(tok))

    def cpus_stmt(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("cpus", c[0])

    def memory_stmt(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("memory", self._size(c[0]))

    def gpus_all(self, meta: Any, c: builtins.list[Token]) -> None:
        return None

    def gpus_stmt(self, meta: Any, c: builtins.list[Any]) -> tuple[str, ir.Gpus]:
        reqs = dict(c[1]) if len(c) > 1 and c[1] is not None else {}
        return ("gpus", ir.Gpus(c[0], reqs.get("memory"), reqs.get("cuda"), reqs.get("driver"), self._loc(meta)))

    def gpu_reqs(self, meta: Any, c: builtins.list[Any]) -> builtins.list[tuple[str, Any]]:
        return list(c)

    def gpu_memory(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("memory", self._size(c[0]))

    def gpu_cuda(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("cuda", c[0])

    def gpu_driver(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("driver", c[0])

    def env_stmt(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("env", c[0])

    def env_map(self, meta: Any, c: builtins.list[Any]) -> tuple[ir.EnvPair, ...]:
        return tuple(x for x in c if x is not None)

    def env_pair(self, meta: Any, c: builtins.list[Any]) -> ir.EnvPair:
        key = c[0]
        k = unescape(key[1:-1]) if key.type == "STRING" else str(key)
        return ir.EnvPair(k, c[1], self._loc(meta))

    def port_stmt(self, meta: Any, c: builtins.list[Any]) -> tuple[str, ir.Port]:
        return ("port", ir.Port(c[0], c[1] if len(c) > 1 else None, self._loc(meta)))

    def volume_mode(self, meta: Any, c: builtins.list[Token]) -> str:
        return str(c[0])

    def volume_stmt(self, meta: Any, c: builtins.list[Any]) -> tuple[str, ir.Volume]:
        ro = len(c) > 2 and c[2] == "ro"
        return ("volume", ir.Volume(c[0], c[1], ro, self._loc(meta)))

    def privileged_stmt(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Loc]:
        return ("privileged", self._loc(meta))

    def service_network_stmt(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Loc]:
        return ("host_network", self._loc(meta))

    def allow_host_stmt(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.HostGrant]:
        return ("allow_host", ir.HostGrant(tuple(self._str(t) for t in c), self._loc(meta)))

    def needs_stmt(self, meta: Any, c: builtins.list[Token]) -> tuple[str, tuple[ir.Name, ...]]:
        return ("needs", tuple(self._name(t) for t in c))

    def ready_stmt(self, meta: Any, c: builtins.list[Any]) -> tuple[str, ir.Probe]:
        probe: ir.Probe = c[0]
        within = self._dur(c[1]) if len(c) > 1 else None
        return ("ready", ir.Probe(probe.kind, probe.port, probe.path, probe.status, probe.argv, probe.pattern,
                                  within, self._loc(meta)))

    def _probe(self, meta: Any, kind: str, **kw: Any) -> ir.Probe:
        base: dict[str, Any] = dict(port=None, path=None, status=None, argv=None, pattern=None, within=None)
        base.update(kw)
        return ir.Probe(kind=kind, loc=self._loc(meta), **base)

    def probe_tcp(self, meta: Any, c: builtins.list[Token]) -> ir.Probe:
        return self._probe(meta, "tcp", port=c[0])

    def probe_http(self, meta: Any, c: builtins.list[Any]) -> ir.Probe:
        return self._probe(meta, "http", port=c[0], path=c[1], status=self._int(c[2]) if len(c) > 2 else None)

    def probe_exec(self, meta: Any, c: builtins.list[Any]) -> ir.Probe:
        return self._probe(meta, "exec", argv=c[0])

    def probe_log(self, meta: Any, c: builtins.list[Token]) -> ir.Probe:
        tok = c[0]
        return self._probe(meta, "log", pattern=self._regex(tok) if tok.type == "REGEX" else self._str(tok))

    def probe_span(self, meta: Any, c: builtins.list[Token]) -> ir.Probe:
        return self._probe(meta, "span", pattern=self._str(c[0]))

    # ------------------------------------------------------------ argv
    def argv_list(self, meta: Any, c: builtins.list[ir.List]) -> ir.Argv:
        return ir.Argv("list", c[0].items, self._loc(meta))

    def argv_split(self, meta: Any, c: builtins.list[Token]) -> ir.Argv:
        return ir.Argv("split", (self._str(c[0]),), self._loc(meta))

    def argv_sh(self, meta: Any, c: builtins.list[Any]) -> ir.Argv:
        return ir.Argv("sh", (c[0],), self._loc(meta))

    # ------------------------------------------------------------ tests
    def test(self, meta: Any, c: builtins.list[Any]) -> ir.Test:
        timeout = self._dur(c[1]) if len(c) > 1 and isinstance(c[1], Token) else None
        uses = next((x.names for x in c[1:] if isinstance(x, _Uses)), ())
        params = next((x.bindings for x in c[1:] if isinstance(x, _Params)), ())
        items = tuple(x for x in c[1:] if not isinstance(x, Token | _Uses | _Params) and x is not None)
        return ir.Test(self._str(c[0]), timeout, items, self._loc(meta), uses, params)

    def params_clause(self, meta: Any, c: builtins.list[Any]) -> _Params:
        return _Params(tuple(c))

    def param_binding(self, meta: Any, c: builtins.list[Any]) -> tuple[ir.Name, Any]:
        return (self._name(c[0]), c[1])

    def uses_clause(self, meta: Any, c: builtins.list[Token]) -> _Uses:
        return _Uses(tuple(self._name(t) for t in c))

    def step(self, meta: Any, c: builtins.list[Any]) -> ir.Step:
        name = self._name(c[0])
        rest = list(c[1:])
        after: tuple[ir.Name, ...] = ()
        if rest and isinstance(rest[0], tuple) and rest[0] and isinstance(rest[0][0], ir.Name):
            after = rest.pop(0)
        action = rest.pop(0)
        opts: dict[str, Any] = {}
        for key, val in (x for x in rest if isinstance(x, tuple)):
            if key in opts:
                self.diags.error(f"`{key}` is given twice for this step", _first_loc(val, self._loc(meta)),
                                 "keep one; the last would silently win otherwise")
            opts[key] = val
        return ir.Step(
            name=name, after=after, action=action["action"], service=action.get("service"),
            image=action.get("image"), argv=action.get("argv"), timeout=opts.get("timeout"),
            env=opts.get("env", ()), workdir=opts.get("workdir"), loc=self._loc(meta),
            method=action.get("method"), url=action.get("url"), headers=opts.get("headers", ()),
            body=opts.get("body"), json=opts.get("json"), allow=opts.get("allow", ()), tls=opts.get("tls"),
        )

    def after_clause(self, meta: Any, c: builtins.list[Token]) -> tuple[ir.Name, ...]:
        return tuple(self._name(t) for t in c)

    def exec_action(self, meta: Any, c: builtins.list[Any]) -> dict[str, Any]:
        return {"action": "exec", "service": self._name(c[0]), "argv": c[1]}

    def run_action(self, meta: Any, c: builtins.list[Any]) -> dict[str, Any]:
        return {"action": "run", "image": c[0], "argv": c[1] if len(c) > 1 else None}

    def http_action(self, meta: Any, c: builtins.list[Any]) -> dict[str, Any]:
        return {"action": "http", "method": self._name(c[0]), "url": c[1], "argv": None}

    def step_headers(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("headers", c[0])

    def step_body(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("body", c[0])

    def step_json(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("json", c[0])

    def step_allow(self, meta: Any, c: builtins.list[Token]) -> tuple[str, Any]:
        return ("allow", tuple(self._str(t) for t in c))

    def tls_ca(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("tls", ir.Tls(c[0], False, self._loc(meta)))

    def tls_insecure(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("tls", ir.Tls(None, True, self._loc(meta)))

    def json_object(self, meta: Any, c: builtins.list[Any]) -> ir.JsonObject:
        return ir.JsonObject(tuple(x for x in c if x is not None), self._loc(meta))

    def json_pair(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        key = c[0]
        return (unescape(key[1:-1]) if key.type == "STRING" else str(key), c[1])

    def step_timeout(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Duration]:
        return ("timeout", self._dur(c[0]))

    def step_env(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("env", c[0])

    def step_workdir(self, meta: Any, c: builtins.list[Any]) -> tuple[str, Any]:
        return ("workdir", c[0])

    def capture(self, meta: Any, c: builtins.list[Any]) -> ir.Capture:
        src = c[3]
        return ir.Capture(self._name(c[0]), self._name(c[1]), self._name(c[2]),
                          src if isinstance(src, ir.Regex) else None, src if isinstance(src, ir.Str) else None,
                          self._loc(meta), src[1] if isinstance(src, tuple) else None)

    def capture_regex(self, meta: Any, c: builtins.list[Token]) -> ir.Regex:
        return self._regex(c[0])

    def capture_json(self, meta: Any, c: builtins.list[Token]) -> ir.Str:
        return self._str(c[0])

    def capture_index(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Str]:
        return ("index", self._str(c[0]))

    # ------------------------------------------------------------ expectations
    def expect(self, meta: Any, c: builtins.list[Any]) -> Any:
        ev = c[1] if len(c) > 1 else None
        if ev is None:
            return c[0]
        if not isinstance(c[0], ir.Compare):
            self.diags.error("only expectations on a step's results can wait with `eventually`", ev.loc,
                             "span checks already wait for their spans (see `crc run --span-timeout`)")
            return c[0]
        return dataclasses.replace(c[0], eventually=ev)

    def eventually(self, meta: Any, c: builtins.list[Any]) -> ir.Eventually:
        got = dict(x for x in c if x is not None)
        return ir.Eventually(got.get("within"), got.get("every"), self._loc(meta))

    def eventually_within(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Duration]:
        return ("within", self._dur(c[0]))

    def eventually_every(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Duration]:
        return ("every", self._dur(c[0]))

    def expectation(self, meta: Any, c: builtins.list[Any]) -> Any:  # pragma: no cover - every branch is aliased
        return c[0]

    def field_subject(self, meta: Any, c: builtins.list[Token]) -> ir.Subject:
        return ir.Subject("field", self._name(c[0]), self._name(c[1]), None, None, self._loc(meta))

    def path_subject(self, meta: Any, c: builtins.list[Token]) -> ir.Subject:
        return ir.Subject("path", self._name(c[0]), self._name(c[1]), self._str(c[2]), None, self._loc(meta))

    def attr_subject(self, meta: Any, c: builtins.list[Token]) -> ir.Subject:
        return ir.Subject("attr", self._name(c[0]), None, self._str(c[1]), None, self._loc(meta))

    def index_subject(self, meta: Any, c: builtins.list[Token]) -> ir.Subject:
        return ir.Subject("index", self._name(c[0]), self._name(c[1]), self._str(c[2]), None, self._loc(meta))

    def count_subject(self, meta: Any, c: builtins.list[Any]) -> ir.Subject:
        target = c[0]
        if isinstance(target, ir.Name):
            return ir.Subject("count", target, None, None, None, self._loc(meta))
        return ir.Subject("count", None, None, None, target, self._loc(meta))

    def count_ref(self, meta: Any, c: builtins.list[Token]) -> ir.Name:
        return self._name(c[0])

    def count_inline(self, meta: Any, c: builtins.list[Any]) -> ir.SpanMatch:
        return c[0]

    def expect_compare(self, meta: Any, c: builtins.list[Any]) -> ir.Compare:
        return ir.Compare(c[0], str(c[1]), c[2], self._loc(meta))

    def expect_contains(self, meta: Any, c: builtins.list[Any]) -> ir.Compare:
        return ir.Compare(c[0], "contains", c[1], self._loc(meta))

    def expect_not_contains(self, meta: Any, c: builtins.list[Any]) -> ir.Compare:
        return ir.Compare(c[0], "not contains", c[1], self._loc(meta))

    def expect_match(self, meta: Any, c: builtins.list[Any]) -> ir.Compare:
        return ir.Compare(c[0], str(c[1]), self._regex(c[2]), self._loc(meta))

    def _order(self, meta: Any, c: builtins.list[Any], written: str) -> ir.Order:
        a, b = self._name(c[0]), self._name(c[1])
        lo, hi = c[2] if len(c) > 2 and c[2] is not None else (None, None)
        first, second = (a, b) if written == "before" else (b, a)
        return ir.Order(first, second, lo, hi, written, self._loc(meta))

    def expect_before(self, meta: Any, c: builtins.list[Any]) -> ir.Order:
        return self._order(meta, c, "before")

    def expect_after(self, meta: Any, c: builtins.list[Any]) -> ir.Order:
        return self._order(meta, c, "after")

    def gap_within(self, meta: Any, c: builtins.list[Token]) -> tuple[None, ir.Duration]:
        return (None, self._dur(c[0]))

    def gap_range(self, meta: Any, c: builtins.list[Token | None]) -> tuple[ir.Duration | None, ir.Duration | None]:
        return tuple(self._dur(t) if t is not None else None for t in c)  # type: ignore[return-value]

    def expect_span_contains(self, meta: Any, c: builtins.list[Token]) -> ir.Relation:
        return ir.Relation("contains", self._name(c[0]), self._name(c[1]), self._loc(meta))

    def expect_parent(self, meta: Any, c: builtins.list[Token]) -> ir.Relation:
        return ir.Relation("parent", self._name(c[0]), self._name(c[1]), self._loc(meta))

    def expect_no_span(self, meta: Any, c: builtins.list[Any]) -> ir.NoSpan:
        return ir.NoSpan(c[0], self._loc(meta))

    def expect_hermetic(self, meta: Any, c: builtins.list[Token]) -> ir.Hermetic:
        return ir.Hermetic(tuple(self._str(t) for t in c), self._loc(meta))

    # ------------------------------------------------------------ spans
    def span_decl(self, meta: Any, c: builtins.list[Any]) -> ir.SpanDecl:
        return ir.SpanDecl(self._name(c[0]), c[1], self._loc(meta))

    def span_match(self, meta: Any, c: builtins.list[Any]) -> ir.SpanMatch:
        name: ir.Str | ir.Regex | None = None
        clauses: builtins.list[tuple[str, Any]] = []
        for x in c:
            if isinstance(x, Token):
                name = self._regex(x) if x.type == "REGEX" else self._str(x)
            elif isinstance(x, list):
                clauses = x
        got: dict[str, Any] = {}
        attrs: builtins.list[ir.AttrClause] = []
        for kind, val in clauses:
            if kind == "attr":
                attrs.append(val)
                continue
            if kind in got:
                self.diags.error(f"`{kind}` appears twice in this selector", val.loc, "keep one")
            got[kind] = val
        return ir.SpanMatch(name, got.get("service"), got.get("kind"), got.get("status"), tuple(attrs),
                            got.get("parent"), got.get("ancestor"), self._loc(meta), got.get("in"))

    def selector_body(self, meta: Any, c: builtins.list[Any]) -> builtins.list[Any]:
        return list(c)

    def sel_service(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Str]:
        return ("service", self._str(c[0]))

    def sel_kind(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Name]:
        return ("kind", self._name(c[0]))

    def sel_status(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Name]:
        return ("status", self._name(c[0]))

    def sel_parent(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Name]:
        return ("parent", self._name(c[0]))

    def sel_ancestor(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Name]:
        return ("ancestor", self._name(c[0]))

    def sel_in(self, meta: Any, c: builtins.list[Token]) -> tuple[str, ir.Name]:
        return ("in", self._name(c[0]))

    def sel_attr(self, meta: Any, c: builtins.list[Any]) -> tuple[str, ir.AttrClause]:
        key = self._str(c[0])
        loc = self._loc(meta)
        if isinstance(c[1], str) and not isinstance(c[1], Token):
            return ("attr", ir.AttrClause(key, c[1], None, loc))
        op = str(c[1])
        value = self._regex(c[2]) if isinstance(c[2], Token) else c[2]
        return ("attr", ir.AttrClause(key, op, value, loc))

    def attr_presence(self, meta: Any, c: builtins.list[Token]) -> str:
        return str(c[0])
