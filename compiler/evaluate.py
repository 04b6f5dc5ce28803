"""Value and template evaluation: IR values to plain data, in a scope of lets, template parameters and
capture names. Text that uses a capture stays a template (`Deferred`), rendered by the runtime."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crc.grammar.keywords import CONSTANTS as KEYWORD_CONSTANTS

from . import ir, literals
from .diagnostics import Diagnostics, did_you_mean
from .jsonpath import JsonPathError, parse_path
from .templates import TemplateProblem, Templates
from .values import regex

if TYPE_CHECKING:
    import networkx as nx

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


class Evaluator:
    """Evaluates values for the lowering passes; reports what cannot be evaluated to `diags`."""

    diags: Diagnostics
    trace: Trace | None
    where: str  # the suite (and service) being compiled, for the trace
    g: nx.MultiDiGraph
    _scope: Scope  # the test being lowered: span attribute values may use its lets and captures
    _tpl: Templates

    def _value(self, v: ir.Value, scope: Scope, tpl: Templates) -> Any:
        if isinstance(v, ir.Str):
            return self._render(v, scope, tpl)
        if isinstance(v, ir.Int | ir.Float):
            return v.value
        if isinstance(v, ir.Duration):
            return v.seconds
        if isinstance(v, ir.Regex):
            self._check_regex(v)
            return regex(v)
        if isinstance(v, ir.List):
            return [self._value(x, scope, tpl) for x in v.items]
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

    def _render(self, s: ir.Str, scope: Scope, tpl: Templates) -> str | None:
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

    def _text_in(self, scope: Scope, tpl: Templates, v: ir.Value, what: str) -> str | None:
        return self._text(v, scope, tpl, what)

    def _value_in(self, scope: Scope, tpl: Templates, v: ir.Value) -> Any:
        return self._value(v, scope, tpl)

    def _text(self, v: ir.Value, scope: Scope, tpl: Templates, what: str) -> str | None:
        val = self._value(v, scope, tpl)
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

    def _check_regex(self, r: ir.Regex) -> None:
        bad = set(r.flags) - set("imsx")
        if bad:
            self.diags.error(f"unknown regex flag(s) `{''.join(sorted(bad))}`", r.loc, "flags are i, m, s and x")
        try:
            re.compile(r.pattern)
        except re.error as e:
            self.diags.error(f"invalid regex: {e.msg}", r.loc)

    def _check_path(self, p: ir.Str) -> None:
        if literals.holds_template(p.value):
            return  # reported once, by literals.check
        try:
            parse_path(p.value)
        except JsonPathError as e:
            self.diags.error(f"bad JSON path: {e}", p.loc)

    def _argv(self, a: ir.Argv, scope: Scope, tpl: Templates) -> tuple[list[str], bool]:
        """argv elements, and whether some must be rendered at run time (they refer to captures)."""
        if a.form == "list":
            items = [self._text(x, scope, tpl, "an argv element") for x in a.items]
        elif a.form == "sh":
            script = self._text(a.items[0], scope, tpl, "a shell script")
            items = ["sh", "-c", script]
            if isinstance(script, Deferred) and (bare := unquoted_captures(script, scope.captures)):
                self.diags.warning(f"run-time value `{bare}` is interpolated into a shell script unquoted: "
                                   "whatever shell syntax it holds runs", loc_of(a.items[0]),
                                   f"quote it: {{{{ {bare} | shquote }}}}")
        else:
            raw = a.items[0]
            assert isinstance(raw, ir.Str)
            words = split_keeping_templates(raw.value, raw.loc, self.diags)
            items = [self._render(ir.Str(word, raw.loc), scope, tpl) for word in words or []]
            if words == []:  # None: it could not be split, already reported
                self.diags.error("an empty command", a.loc, 'write the program and its arguments: "ls -l"')
        if a.form == "list" and not a.items:
            self.diags.error("an empty command", a.loc, 'write the program and its arguments: ["ls", "-l"]')
        out = [x if x is not None else "" for x in items]
        return list(out), any(isinstance(x, Deferred) for x in out)

    def _lets(self, lets: list[ir.Let] | tuple[ir.Let, ...], scope: Scope, tpl: Templates) -> None:
        for let in lets:
            scope.values[let.name.name] = self._value(let.value, scope, tpl)
            if self.trace is not None:
                self.trace.note(let.name.loc, self.where, scope.values[let.name.name])

    def _compile_time(self, s: ir.Str, what: str) -> str:
        """A string that must be known before anything runs, its templates (lets, seeded values) rendered: never
        kept as the literal text `{{ ... }}`."""
        if not TEMPLATE_EXPR.search(s.value):
            return s.value
        val = self._render(s, self._scope, self._tpl)
        if isinstance(val, Deferred):
            self.diags.error(f"{what} is known when the file is compiled: it cannot use a capture", s.loc,
                             "captures may be used in span attribute values: attr \"key\" == capture")
            return s.value
        return val if val is not None else s.value

    def _literal(self, v: ir.Value, node: str | None = None) -> Any:
        """An attribute value: a literal, a `let`, or text using captures. Text that uses captures is kept as
        `{"template": TEXT}`, rendered when the test's span phase starts (the node keeps the lets it reads)."""
        if isinstance(v, ir.Str | ir.Ref) and (isinstance(v, ir.Ref) or TEMPLATE_EXPR.search(v.value)):
            if isinstance(v, ir.Ref) and v.name in CONSTANTS:
                return CONSTANTS[v.name]
            val = self._value(v, self._scope, self._tpl)
            if isinstance(val, Deferred):
                if node is not None:
                    if node not in self.g:
                        self.g.add_node(node)
                    names = self._tpl.names(val)
                    values = self.g.nodes[node].setdefault("template_values", {})
                    values.update({k: self._scope.values[k] for k in sorted(names) if k in self._scope.values})
                return {"template": str(val), "escape": False}
            if val is None or isinstance(val, str | int | float | bool):
                return val
            self.diags.error("attribute values are text, numbers, true or false", loc_of(v))
            return None
        if isinstance(v, ir.Str | ir.Int | ir.Float):
            return v.value
        if isinstance(v, ir.Duration):
            return v.seconds
        if isinstance(v, ir.Regex):
            return v.pattern
        self.diags.error("attribute values are text, numbers, true, false, lets or captures", loc_of(v),
                         '"text", 200, 1.5, true, false, a let or a capture')
        return None

    def _runtime_free(self, value: str | None, v: ir.Value, what: str) -> str | None:
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
