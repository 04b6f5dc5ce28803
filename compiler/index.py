"""A name index of a parsed program: every declaration, and every use of a name resolved to its declaration.

Built from the IR of a file and its imports (`loader.Program`), with the language's scoping rules: top-level
`let`s and templates of every module are visible everywhere; a suite's lets and services within the suite; a
test's steps, spans and captures within the test (expectations may name what is declared below them); a
test's lets from their declaration on; a template's parameters within its body. Names used inside template
expressions (`"{{ customer }}"`) count as uses. Tools (the language server) ask it what is at a position,
where that is declared, and where it is used.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ir
from .loader import STD_PREFIX, Program

# Kinds of symbols, as the index names them.
KINDS = ("import", "template", "param", "let", "suite", "service", "test", "step", "capture", "span")
_EXPR = re.compile(r"\{\{.*?\}\}|\{%.*?%\}")
_IDENT = re.compile(r"(?<![\w.'\"])[A-Za-z_]\w*")


@dataclass(frozen=True, slots=True, eq=False)
class Symbol:
    """A declaration: `loc` is its name's location, `decl` the whole declaration's, `node` its IR node.

    For an import, `name` is the path as written and `target` the shown path of the module it loads."""

    name: str
    kind: str
    loc: ir.Loc
    decl: ir.Loc
    node: Any
    owner: Symbol | None = None  # the suite, test or template declaring it; None at the top level
    target: str | None = None

    @property
    def container(self) -> str:
        """Where it is declared, in words: `suite "s"`, `test "t" in suite "s"`, `template redis`."""
        o = self.owner
        if o is None:
            return ""
        text = f'{o.kind} "{o.name}"' if o.kind in ("suite", "test") else f"{o.kind} {o.name}"
        return f"{text} in {o.container}" if o.owner is not None else text


@dataclass(frozen=True, slots=True)
class Use:
    """A name written at `loc` that refers to `symbol`."""

    loc: ir.Loc
    symbol: Symbol


@dataclass
class Index:
    symbols: list[Symbol] = field(default_factory=list)
    uses: list[Use] = field(default_factory=list)
    _by_file: dict[str, list[tuple[tuple[int, int], tuple[int, int], Symbol, bool]]] = field(default_factory=dict)
    _starts: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def at(self, file: str, line: int, col: int) -> tuple[Symbol, bool] | None:
        """The symbol declared or used at a 1-based position (a cursor just after a name counts), and whether
        it is the declaration itself."""
        spans = self._spans(file)
        starts = self._starts[file]
        # Names never overlap, so the candidate is the last one starting at or before the position.
        i = bisect.bisect_right(starts, (line, col)) - 1
        if i >= 0 and (line, col) <= spans[i][1]:
            return spans[i][2], spans[i][3]
        return None

    def uses_of(self, sym: Symbol) -> list[ir.Loc]:
        """Every location that names `sym` (its declaration excluded), in source order."""
        return sorted((u.loc for u in self.uses if u.symbol is sym), key=lambda loc: (loc.file, loc.line, loc.col))

    def declared_in(self, file: str) -> list[Symbol]:
        return [s for s in self.symbols if s.loc.file == file]

    def _spans(self, file: str) -> list[tuple[tuple[int, int], tuple[int, int], Symbol, bool]]:
        if file not in self._by_file:
            rows = [((s.loc.line, s.loc.col), (s.loc.end_line, s.loc.end_col), s, True)
                    for s in self.symbols if s.loc.file == file]
            rows += [((u.loc.line, u.loc.col), (u.loc.end_line, u.loc.end_col), u.symbol, False)
                     for u in self.uses if u.loc.file == file]
            rows.sort(key=lambda r: (r[0], r[1]))
            self._by_file[file] = rows
            self._starts[file] = [r[0] for r in rows]
        return self._by_file[file]


class _Scope:
    """A chain of name tables; a lookup walks outwards."""

    def __init__(self, parent: _Scope | None = None):
        self.parent = parent
        self.names: dict[str, Symbol] = {}

    def find(self, name: str, kinds: Iterable[str]) -> Symbol | None:
        kinds = tuple(kinds)
        scope: _Scope | None = self
        while scope is not None:
            sym = scope.names.get(name)
            if sym is not None and sym.kind in kinds:
                return sym
            scope = scope.parent
        return None


VALUE_KINDS = ("let", "param", "capture")


def build(prog: Program) -> Index:
    """The index of `prog` (its root module and every module it imports)."""
    return _Builder(prog).run()


class _Builder:
    def __init__(self, prog: Program):
        self.prog = prog
        self.idx = Index()
        self.top = _Scope()
        self.templates: dict[str, Symbol] = {}
        self.lines: dict[str, list[str]] = {}  # file -> its lines, split once

    def run(self) -> Index:
        mods = [*self.prog.modules, *([self.prog.root] if self.prog.root is not None else [])]
        for mod in mods:  # declarations first: a module may use what is declared below, or in another module
            for imp in mod.imports:
                target = _import_target(mod, imp, self.prog)
                self._declare(imp.path.value, "import", imp.path.loc, imp.loc, imp, None, None, target)
            for t in mod.templates:
                self.templates[t.name.name] = self._declare(t.name.name, "template", t.name.loc, t.loc, t, None)
            for let in mod.lets:
                self._declare(let.name.name, "let", let.name.loc, let.loc, let, self.top)
        for mod in mods:
            for let in mod.lets:
                self._value(let.value, self.top)
            for t in mod.templates:
                self._template(t, self.templates[t.name.name])
            for suite in mod.suites:
                self._suite(suite)
        return self.idx

    # ------------------------------------------------------------ helpers
    def _declare(self, name: str, kind: str, loc: ir.Loc, decl: ir.Loc, node: Any, scope: _Scope | None,
                 owner: Symbol | None = None, target: str | None = None) -> Symbol:
        sym = Symbol(name, kind, loc, decl, node, owner, target)
        self.idx.symbols.append(sym)
        if scope is not None and name not in scope.names:  # a second declaration is an error the compiler reports
            scope.names[name] = sym
        return sym

    def _use(self, name: ir.Name | ir.Ref, scope: _Scope, kinds: Iterable[str]) -> None:
        sym = scope.find(name.name, kinds)
        if sym is not None:
            self.idx.uses.append(Use(name.loc, sym))

    def _value(self, v: ir.Value | None, scope: _Scope) -> None:
        if v is None:
            return
        if isinstance(v, ir.Ref):
            self._use(v, scope, VALUE_KINDS)
        elif isinstance(v, ir.List):
            for x in v.items:
                self._value(x, scope)
        elif isinstance(v, ir.Str) and ("{{" in v.value or "{%" in v.value):
            for name, loc in self._template_names(v.loc):
                sym = scope.find(name, VALUE_KINDS)
                if sym is not None:
                    self.idx.uses.append(Use(loc, sym))

    def _template_names(self, loc: ir.Loc) -> Iterator[tuple[str, ir.Loc]]:
        """Names inside the template expressions of the string literal at `loc`, located in the source."""
        if loc.line != loc.end_line:
            return
        if loc.file not in self.lines:
            self.lines[loc.file] = self.prog.sources.get(loc.file, "").split("\n")
        lines = self.lines[loc.file]
        line = lines[loc.line - 1] if 0 < loc.line <= len(lines) else ""
        raw = line[loc.col - 1: loc.end_col - 1]
        for m in _EXPR.finditer(raw):
            body = _blank_quoted(m.group(0))
            for n in _IDENT.finditer(body):
                col = loc.col + m.start() + n.start()
                yield n.group(0), ir.Loc(loc.file, loc.line, col, loc.line, col + len(n.group(0)))

    def _argv(self, a: ir.Argv | None, scope: _Scope) -> None:
        if a is not None:
            for x in a.items:
                self._value(x, scope)

    # ------------------------------------------------------------ declarations
    def _template(self, t: ir.Template, where: Symbol) -> None:
        scope = _Scope(self.top)
        for p in t.params:
            self._value(p.default, self.top)
            self._declare(p.name.name, "param", p.name.loc, p.loc, p, scope, where)
        self._body(t.body, scope, None)

    def _body(self, body: ir.ServiceBody, scope: _Scope, services: _Scope | None) -> None:
        for v in (*body.image, *body.workdir, *body.cpus, *body.memory):
            self._value(v, scope)
        for b in body.build:
            for part in (b.context, b.dockerfile, b.target, *(pair.value for pair in b.args)):
                self._value(part, scope)
        for g in body.gpus:
            for part in (g.request, g.memory, g.cuda, g.driver):
                self._value(part, scope)
        for a in body.command:
            self._argv(a, scope)
        for pair in body.env:
            self._value(pair.value, scope)
        for port in body.ports:
            self._value(port.container, scope)
            self._value(port.host, scope)
        for vol in body.volumes:
            self._value(vol.source, scope)
            self._value(vol.target, scope)
        for probe in body.ready:
            self._value(probe.port, scope)
            self._value(probe.path, scope)
            self._value(probe.pattern, scope)
            self._argv(probe.argv, scope)
        if services is not None:
            for n in body.needs:
                self._use(n, services, ("service",))

    def _suite(self, suite: ir.Suite) -> None:
        where = self._declare(suite.name.value, "suite", suite.name.loc, suite.loc, suite, None)
        scope = _Scope(self.top)
        for let in suite.lets:
            self._declare(let.name.name, "let", let.name.loc, let.loc, let, scope, where)
        for svc in suite.services:
            self._declare(svc.name.name, "service", svc.name.loc, svc.loc, svc, scope, where)
        for let in suite.lets:
            self._value(let.value, scope)
        for svc in suite.services:
            self._service(svc, scope)
        for test in suite.tests:
            self._test(test, scope, where)

    def _service(self, svc: ir.Service, scope: _Scope) -> None:
        if svc.template is not None:
            tsym = self.templates.get(svc.template.name)
            if tsym is not None:
                self.idx.uses.append(Use(svc.template.loc, tsym))
                params = {p.name.name: p for p in tsym.node.params}
                for arg in svc.args:
                    if arg.name is not None and arg.name in params:
                        psym = next((s for s in self.idx.symbols if s.node is params[arg.name]), None)
                        if psym is not None:
                            loc = ir.Loc(arg.loc.file, arg.loc.line, arg.loc.col, arg.loc.line,
                                         arg.loc.col + len(arg.name))
                            self.idx.uses.append(Use(loc, psym))
            for arg in svc.args:
                self._value(arg.value, scope)
        self._body(svc.body, scope, scope)

    def _test(self, test: ir.Test, suite: _Scope, where: Symbol) -> None:
        scope = _Scope(suite)
        twhere = self._declare(test.name.value, "test", test.name.loc, test.loc, test, None, where)
        kinds = {ir.Step: "step", ir.SpanDecl: "span", ir.Capture: "capture"}
        for item in test.items:
            kind = kinds.get(type(item))
            if kind is not None:
                assert isinstance(item, ir.Step | ir.SpanDecl | ir.Capture)
                self._declare(item.name.name, kind, item.name.loc, item.loc, item, scope, twhere)
        for n in test.uses:
            self._use(n, suite, ("service",))
        for item in test.items:
            if isinstance(item, ir.Let):
                self._value(item.value, scope)  # before its own name is visible
                self._declare(item.name.name, "let", item.name.loc, item.loc, item, scope, twhere)
            elif isinstance(item, ir.Step):
                for n in item.after:
                    self._use(n, scope, ("step",))
                if item.service is not None:
                    self._use(item.service, scope, ("service",))
                self._value(item.image, scope)
                self._argv(item.argv, scope)
                for pair in (*item.env, *item.headers):
                    self._value(pair.value, scope)
                self._value(item.workdir, scope)
                self._value(item.url, scope)
                self._value(item.body, scope)
                self._json(item.json, scope)
            elif isinstance(item, ir.Capture):
                self._use(item.step, scope, ("step",))
            elif isinstance(item, ir.SpanDecl):
                self._match(item.match, scope)
            elif isinstance(item, ir.Compare):
                s = item.subject
                if s.target is not None:
                    self._use(s.target, scope, ("step", "span"))
                if s.count_of is not None:
                    self._match(s.count_of, scope)
                self._value(item.value, scope)
            elif isinstance(item, ir.Order):
                self._use(item.first, scope, ("span",))
                self._use(item.second, scope, ("span",))
            elif isinstance(item, ir.Relation):
                self._use(item.outer, scope, ("span",))
                self._use(item.inner, scope, ("span",))
            elif isinstance(item, ir.NoSpan):
                self._match(item.match, scope)

    def _json(self, v: ir.Value | ir.JsonObject | None, scope: _Scope) -> None:
        if isinstance(v, ir.JsonObject):
            for _, item in v.pairs:
                self._json(item, scope)
        else:
            self._value(v, scope)

    def _match(self, m: ir.SpanMatch, scope: _Scope) -> None:
        for ref in (m.parent, m.ancestor):
            if ref is not None:
                self._use(ref, scope, ("span",))
        if m.trace_of is not None:
            self._use(m.trace_of, scope, ("step",))
        if m.service is not None:
            sym = scope.find(m.service.value, ("service",))
            if sym is not None:
                self.idx.uses.append(Use(m.service.loc, sym))


def _import_target(mod: ir.Module, imp: ir.Import, prog: Program) -> str | None:
    """The shown path the loader gave the module `imp` loads, when it was loaded."""
    target = imp.path.value
    if target.startswith(STD_PREFIX):
        key = f"<std>/{target[len(STD_PREFIX):]}.cr"
    else:
        p = Path(mod.path).parent / target
        if p.suffix != ".cr" and not p.exists():
            p = p.with_suffix(".cr")
        key = Path(os.path.normpath(p)).as_posix()
    return key if key in prog.sources else None


def _blank_quoted(expr: str) -> str:
    """`expr` with the insides of its quoted strings blanked (same length), so words in them are not names."""
    return re.sub(r"'[^']*'|\"[^\"]*\"|\\\"[^\"]*?\\\"", lambda m: " " * len(m.group(0)), expr)


def visible_names(index: Index, file: str, line: int, col: int) -> dict[str, Symbol]:
    """The names declared around a position, by name: top-level lets and templates, then what the suite,
    template or test around the position declares (a test's lets only above the position)."""
    out: dict[str, Symbol] = {}
    for sym in index.symbols:
        if sym.owner is None:
            if sym.kind in ("let", "template"):
                out.setdefault(sym.name, sym)
            continue
        o: Symbol | None = sym.owner
        if sym.loc.file != file or o is None or not _inside(o.decl, line, col):
            continue
        if sym.kind == "let" and o.kind == "test" and (sym.loc.line, sym.loc.col) > (line, col):
            continue
        out[sym.name] = sym
    return out


def _inside(loc: ir.Loc, line: int, col: int) -> bool:
    return (loc.line, loc.col) <= (line, col) <= (loc.end_line, loc.end_col)
