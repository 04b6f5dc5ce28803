"""Value and template evaluation: IR values to plain data, in a scope of lets, template parameters and
capture names. Text that uses a capture stays a template (`Deferred`), rendered by the runtime."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from crc.grammar.keywords import CONSTANTS as KEYWORD_CONSTANTS

from . import ir, literals
from .diagnostics import Diagnostics, did_you_mean
from .jsonpath import JsonPathError, parse_path
from .templates import DEFAULT_CLOCK, DEFAULT_SEED, TemplateProblem, Templates
from .values import regex

if TYPE_CHECKING:
    from .trace import Trace

CONSTANTS: dict[str, Any] = dict(zip(KEYWORD_CONSTANTS["boolean"], (True, False), strict=True))  # true, false


TEMPLATE_EXPR = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)


class Deferred(str):
    """A string template that refers to captures: rendered by the runtime once the captures exist."""

    __slots__ = ()


@dataclass
class Scope:
    """Names visible to values: lets and template parameters (already evaluated) and capture names."""

    values: dict[str, Any]
    captures: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SuiteValues:
    """The evaluation pass's result for one suite: its seed and clock, the templates (seeded values, `env()`
    reads) every later value of the suite is rendered with, and the scope of its lets (the file's and the
    suite's, evaluated in order)."""

    seed: int
    clock: str
    tpl: Templates
    scope: Scope


def evaluate_suite(ev: Evaluator, suite: ir.Suite, module_lets: Sequence[ir.Let],
                   environ: Mapping[str, str] | None) -> SuiteValues:
    """The evaluation pass of a suite: its templates and its lets' values."""
    sname = suite.name.value
    seed = suite.seed.value if suite.seed else DEFAULT_SEED
    clock = suite.clock.value if suite.clock else DEFAULT_CLOCK
    try:
        tpl = Templates(seed=seed, suite=sname, clock=clock, environ=environ)
    except ValueError:
        assert suite.clock is not None
        ev.diags.error(f"cannot read the clock `{clock}`", suite.clock.loc,
                       'write an ISO-8601 instant like "2025-01-01T00:00:00Z"')
        tpl = Templates(seed=seed, suite=sname, clock=DEFAULT_CLOCK, environ=environ)
    scope = Scope({})
    ev.lets(module_lets, scope, tpl)
    ev.lets(suite.lets, scope, tpl)
    return SuiteValues(seed, clock, tpl, scope)


@dataclass(frozen=True, slots=True)
class Evaluator:
    """Evaluates values for the lowering passes; reports what cannot be evaluated to `diags` (the one sink every
    pass shares). `where` names the suite (and service) being compiled, for the trace."""

    diags: Diagnostics
    trace: Trace | None = None
    where: str = ""

    def at(self, where: str) -> Evaluator:
        """The same evaluator, tracing values as computed in `where`."""
        return replace(self, where=where)

    def value(self, v: ir.Value, scope: Scope, tpl: Templates) -> Any:
        """An IR value as plain data (text that uses a capture stays `Deferred`); None when it cannot be
        evaluated (reported)."""
        if isinstance(v, ir.Str):
            return self.render(v, scope, tpl)
        if isinstance(v, ir.Int | ir.Float):
            return v.value
        if isinstance(v, ir.Duration):
            return v.seconds
        if isinstance(v, ir.Regex):
            self.check_regex(v)
            return regex(v)
        if isinstance(v, ir.List):
            return [self.value(x, scope, tpl) for x in v.items]
        if isinstance(v, ir.Ref):
            if v.name in scope.values:
                return scope.values[v.name]
            if v.name in CONSTANTS:
                return CONSTANTS[v.name]
            if v.name in scope.captures:
                return Deferred("{{ " + v.name + " }}")
            self.diags.error(f"unknown name `{v.name}`", v.loc,
                             did_you_mean(v.name, [*scope.values, *scope.captures, *CONSTANTS])
                             or "names refer to `let` values, template parameters or captures")
            return None
        raise AssertionError(v)  # pragma: no cover

    def render(self, s: ir.Str, scope: Scope, tpl: Templates) -> str | None:
        """A string with its templates rendered, or kept as a `Deferred` template when it uses a capture."""
        try:
            names = tpl.names(s.value)
            if names & scope.captures:
                extra = names - scope.captures - set(scope.values) - {"sha256", "secret"}
                if extra:
                    self.diags.error(f"a template that uses a capture can only use lets and captures, not "
                                     f"{', '.join(sorted(extra))}", s.loc,
                                     "compute the value in a `let` first and use the let here")
                    return None
                return Deferred(s.value)
            out = tpl.render(s.value, scope.values)
            if self.trace is not None and names:
                self.trace.note(s.loc, self.where, out)
            return out
        except TemplateProblem as e:
            self.diags.error(e.message, s.loc, e.hint)
            return None

    def text(self, v: ir.Value, scope: Scope, tpl: Templates, what: str) -> str | None:
        """A value that must be text (a number is taken as its text); `what` names it in the error."""
        val = self.value(v, scope, tpl)
        if isinstance(val, bool) or val is None:
            if val is not None:
                self.diags.error(f"{what} must be text, not a boolean", loc_of(v))
            return None
        if isinstance(val, int | float):
            return str(val)
        if not isinstance(val, str):
            self.diags.error(f"{what} must be text", loc_of(v))
            return None
        return val

    def check_regex(self, r: ir.Regex) -> None:
        """Reports unknown flags and a pattern Python cannot compile."""
        bad = set(r.flags) - set("imsx")
        if bad:
            self.diags.error(f"unknown regex flag(s) `{''.join(sorted(bad))}`", r.loc, "flags are i, m, s and x")
        try:
            re.compile(r.pattern)
        except re.error as e:
            self.diags.error(f"invalid regex: {e.msg}", r.loc)

    def check_path(self, p: ir.Str) -> None:
        """Reports a JSON path that cannot be parsed."""
        if literals.holds_template(p.value):
            return  # reported once, by literals.check
        try:
            parse_path(p.value)
        except JsonPathError as e:
            self.diags.error(f"bad JSON path: {e}", p.loc)

    def argv(self, a: ir.Argv, scope: Scope, tpl: Templates) -> tuple[list[str], bool]:
        """argv elements, and whether some must be rendered at run time (they refer to captures)."""
        if a.form == "list":
            items = [self.text(x, scope, tpl, "an argv element") for x in a.items]
        elif a.form == "sh":
            script = self.text(a.items[0], scope, tpl, "a shell script")
            items = ["sh", "-c", script]
            if isinstance(script, Deferred) and (bare := unquoted_captures(script, scope.captures)):
                self.diags.warning(f"run-time value `{bare}` is interpolated into a shell script unquoted: "
                                   "whatever shell syntax it holds runs", loc_of(a.items[0]),
                                   f"quote it: {{{{ {bare} | shquote }}}}")
        else:
            raw = a.items[0]
            assert isinstance(raw, ir.Str)
            words = split_keeping_templates(raw.value, raw.loc, self.diags)
            items = [self.render(ir.Str(word, raw.loc), scope, tpl) for word in words or []]
            if words == []:  # None: it could not be split, already reported
                self.diags.error("an empty command", a.loc, 'write the program and its arguments: "ls -l"')
        if a.form == "list" and not a.items:
            self.diags.error("an empty command", a.loc, 'write the program and its arguments: ["ls", "-l"]')
        out = [x if x is not None else "" for x in items]
        return list(out), any(isinstance(x, Deferred) for x in out)

    def lets(self, lets: Sequence[ir.Let], scope: Scope, tpl: Templates) -> None:
        """Evaluates `lets` in order into `scope`."""
        for let in lets:
            scope.values[let.name.name] = self.value(let.value, scope, tpl)
            if self.trace is not None:
                self.trace.note(let.name.loc, self.where, scope.values[let.name.name])

    def compile_time(self, s: ir.Str, scope: Scope, tpl: Templates, what: str) -> str:
        """A string that must be known before anything runs, its templates (lets, seeded values) rendered: never
        kept as the literal text `{{ ... }}`."""
        if not TEMPLATE_EXPR.search(s.value):
            return s.value
        val = self.render(s, scope, tpl)
        if isinstance(val, Deferred):
            self.diags.error(f"{what} is known when the file is compiled: it cannot use a capture", s.loc,
                             "captures may be used in span attribute values: attr \"key\" == capture")
            return s.value
        return val if val is not None else s.value

    def literal(self, v: ir.Value, scope: Scope, tpl: Templates) -> tuple[Any, dict[str, Any] | None]:
        """An attribute value: a literal, a `let`, or text using captures, and for the latter the lets it reads
        (None for any other value). Text that uses captures is kept as `{"template": TEXT}`, rendered when the
        test's span phase starts (the node keeps the lets it reads)."""
        if isinstance(v, ir.Str | ir.Ref) and (isinstance(v, ir.Ref) or TEMPLATE_EXPR.search(v.value)):
            if isinstance(v, ir.Ref) and v.name in CONSTANTS:
                return CONSTANTS[v.name], None
            val = self.value(v, scope, tpl)
            if isinstance(val, Deferred):
                names = tpl.names(val)
                reads = {k: scope.values[k] for k in sorted(names) if k in scope.values}
                return {"template": str(val), "escape": False}, reads
            if val is None or isinstance(val, str | int | float | bool):
                return val, None
            self.diags.error("attribute values are text, numbers, true or false", loc_of(v))
            return None, None
        if isinstance(v, ir.Str | ir.Int | ir.Float):
            return v.value, None
        if isinstance(v, ir.Duration):
            return v.seconds, None
        if isinstance(v, ir.Regex):
            return v.pattern, None
        self.diags.error("attribute values are text, numbers, true, false, lets or captures", loc_of(v),
                         '"text", 200, 1.5, true, false, a let or a capture')
        return None, None

    def runtime_free(self, value: str | None, v: ir.Value, what: str) -> str | None:
        """`value`, unless it refers to a capture: the runtime renders captures in a step's argv and env only."""
        if not isinstance(value, Deferred):
            return value
        self.diags.error(f"a capture cannot be used in a step's {what}", loc_of(v),
                         "captures are allowed in argv and env only; pass the value there (for example "
                         "`sh \"cd {{ dir }} && ...\"`)" if what == "workdir" else
                         "captures are allowed in argv and env only; the image must be known before the test runs")
        return None


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def unquoted_captures(script: str, captures: frozenset[str]) -> str | None:
    """The first capture a `sh` script's template interpolates without the `shquote` filter, if any."""
    for m in TEMPLATE_EXPR.finditer(script):
        expr = m.group(0)
        if expr.startswith("{{") and "shquote" not in expr:
            used = [w for w in _WORD.findall(expr) if w in captures]
            if used:
                return used[0]
    return None


def split_keeping_templates(text: str, loc: ir.Loc, diags: Diagnostics) -> list[str] | None:
    """Split like a shell would, but keep each `{{ ... }}` whole so a templated value is never re-split.

    None when the text cannot be split (an open quote): that is reported here."""
    holes: list[str] = []

    def hole(m: re.Match[str]) -> str:
        holes.append(m.group(0))
        return f"\x00{len(holes) - 1}\x00"

    try:
        words = shlex.split(TEMPLATE_EXPR.sub(hole, text))
    except ValueError as e:
        diags.error(f"cannot split this command: {e}", loc, "close the quote, or write the argv as a list")
        return None
    return [re.sub(r"\x00(\d+)\x00", lambda m: holes[int(m.group(1))], w) for w in words]


def plain(x: Any) -> Any:
    """Strip str subclasses (deferred markers) so the Plan holds plain data only."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [plain(v) for v in x]
    if isinstance(x, str):
        return str(x)
    return x


def loc_of(v: Any) -> ir.Loc | None:
    return getattr(v, "loc", None)
