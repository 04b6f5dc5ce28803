"""IR -> Plan: the compiler's entry and its suite pass, which runs the other passes in order.

The passes, each a module with one job: `evaluate` (values and templates), `services` (services and their
templates), `lower` (a test's steps, expectations and span selectors), `ordering` (which services each test
uses, and the edges that order tests), `analysis` (cycles, contradictions, the span time network) and `text`
(IR printed as text for labels). Lowering records what later passes need, so no pass reads names or locations
back out of node ids or strings.

Node ids read `SUITE::service:NAME`, `SUITE::TEST::step:NAME`, `SUITE::TEST::assert:N`,
`SUITE::TEST::span:NAME` (anonymous selectors: `span:#N`). Every node carries `kind`, `suite`, `test`,
`name`, `label` (for display) and `loc` (a structured location, see schema.py).
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import networkx as nx

from crc import __version__

from . import ir, lints, literals, secrets
from .analysis import check_cycles
from .diagnostics import CompileError, Diagnostics, sorted_diagnostics
from .evaluate import Scope
from .jsonpath import JsonPathError, parse_path
from .loader import Program, load
from .lower import TestLowering
from .ordering import LoweredService, LoweredTest, order
from .plan import Plan
from .schema import Meta, RegexMask, SuiteEntry, TestEntry, ValueMask
from .templates import DEFAULT_CLOCK, DEFAULT_SEED, Templates
from .text import value_text
from .trace import Trace
from .values import ir_loc, plan_loc

DEFAULT_SUITE_TIMEOUT = 600.0
DEFAULT_SETTLE = 0.2


def compile_file(path: str, *, text: str | None = None, environ: Mapping[str, str] | None = None,
                 overlay: Mapping[str, str] | None = None, trace: Trace | None = None) -> Plan:
    """Compile one `.cr` file into a Plan; raises CompileError carrying every diagnostic found.

    Warnings of a file that compiles travel on `Plan.warnings` (they are not part of the Plan's data).
    `overlay` maps real paths of imported files to texts used instead of the files (unsaved editor buffers);
    `trace` is filled with the parsed program and the values computed at each location (see trace.py)."""
    with gc_paused():
        return _compile_file(path, text, environ, overlay, trace)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Compiling allocates many small acyclic objects (tokens, tree nodes, IR, graph attributes): the cyclic
    collector finds nothing to free but runs often enough to cost ~40% of compile time. Paused, then restored.
    (The language server pauses it the same way while it builds its name index.)"""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _compile_file(path: str, text: str | None, environ: Mapping[str, str] | None,
                  overlay: Mapping[str, str] | None, trace: Trace | None) -> Plan:
    diags = Diagnostics()
    prog = load(path, diags, text, overlay)
    if trace is not None:
        trace.program = prog
    if prog.root is None:
        diags.raise_if_errors()
        raise CompileError(list(diags.items))
    literals.check(prog, diags)
    plan = _Compiler(prog, diags, environ, trace).build()
    diags.raise_if_errors()
    return replace(plan, warnings=tuple(sorted_diagnostics(diags.items)))


def sources_of(path: str) -> dict[str, str]:
    """The source texts behind a file's diagnostics (the file and what it imports)."""
    return load(path, Diagnostics()).sources


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class _Compiler(TestLowering):
    def __init__(self, prog: Program, diags: Diagnostics, environ: Mapping[str, str] | None,
                 trace: Trace | None = None):
        assert prog.root is not None
        self.trace = trace
        self.where = ""  # the suite (and service) being compiled, for the trace
        self.prog = prog
        self.root = prog.root
        self.diags = diags
        self.lints = lints.Lints(diags)
        self.environ = environ
        self.g = nx.MultiDiGraph()
        self._test_steps: dict[str, ir.Step] = {}  # the steps of the test being compiled
        self.templates: dict[str, ir.Template] = {}
        self.module_lets: list[ir.Let] = []
        for mod in [*prog.modules, self.root]:
            for t in mod.templates:
                if t.name.name in self.templates:
                    first = self.templates[t.name.name]
                    diags.error(f"template `{t.name.name}` is defined twice", t.name.loc,
                                notes=(("first defined", first.name.loc),))
                self.templates[t.name.name] = t
            self.module_lets.extend(mod.lets)
            if mod is not self.root and mod.suites:
                diags.warning("suites in an imported file are not run by the importer", mod.suites[0].loc)

    # ------------------------------------------------------------ entry
    def build(self) -> Plan:
        suites_meta: list[SuiteEntry] = []
        tests_meta: list[TestEntry] = []
        seen: dict[str, ir.Suite] = {}
        for suite in self.root.suites:
            if suite.name.value in seen:
                self.diags.error(f"suite \"{suite.name.value}\" is declared twice in this file", suite.name.loc,
                                 notes=(("first declared", seen[suite.name.value].name.loc),))
                continue
            seen[suite.name.value] = suite
            s_meta, t_meta = self._suite(suite)
            suites_meta.append(s_meta)
            tests_meta.extend(t_meta)
        if not self.root.suites:
            self.diags.error("this file declares no suite", ir.Loc(self.root.path, 1, 1, 1, 2),
                             'add one: suite "name" { ... }')
        check_cycles(self.g, self.diags, self.root.path)
        meta: Meta = {
            "source": self.root.path,
            "source_digest": _digest(self.prog.sources[self.root.path]),
            "imports": [{"path": m.path, "digest": _digest(self.prog.sources[m.path])} for m in self.prog.modules],
            "crc_version": __version__,
        }
        self._check_secrets()
        return Plan(self.g, meta, suites_meta, tests_meta)

    def _check_secrets(self) -> None:
        """A secret may go only where the runtime reveals it (env values and commands): anywhere else it
        would be compared or shown as its placeholder, or give its value away."""
        if not any("secret" in text for text in self.prog.sources.values()):
            return  # no template calls secret(): no placeholder to look for
        for _n, attrs in self.g.nodes(data=True):
            if attrs.get("loc") and (where := secrets.misplaced(attrs["kind"], attrs)):
                what = {"assert": "an expectation", "span": "a span selector"}.get(attrs["kind"], f"a {attrs['kind']}")
                self.diags.error(f"secret() used in the {', '.join(where)} of {what}",
                                 ir_loc(attrs["loc"]),
                                 "a secret can only be used in env values and commands (service env and command, "
                                 "step argv and env): it is read when the container starts and never stored")

    # ------------------------------------------------------------ suites
    def _suite(self, suite: ir.Suite) -> tuple[SuiteEntry, list[TestEntry]]:
        sname = suite.name.value
        self.where = f'suite "{sname}"'
        seed = suite.seed.value if suite.seed else DEFAULT_SEED
        clock = suite.clock.value if suite.clock else DEFAULT_CLOCK
        try:
            tpl = Templates(seed=seed, suite=sname, clock=clock, environ=self.environ)
        except ValueError:
            assert suite.clock is not None
            self.diags.error(f"cannot read the clock `{clock}`", suite.clock.loc,
                             'write an ISO-8601 instant like "2025-01-01T00:00:00Z"')
            tpl = Templates(seed=seed, suite=sname, clock=DEFAULT_CLOCK, environ=self.environ)
        scope = Scope({})
        self._lets(self.module_lets, scope, tpl)
        self._lets(suite.lets, scope, tpl)
        if suite.timeout is not None and suite.timeout.seconds <= 0:
            self.diags.error("a suite timeout must be positive", suite.timeout.loc,
                             "leave it out for the default of 10m")

        services: dict[str, ir.Service] = {}
        for svc in suite.services:
            if svc.name.name in services:
                self.diags.error(f"service `{svc.name.name}` is declared twice in this suite", svc.name.loc,
                                 notes=(("first declared", services[svc.name.name].name.loc),))
                continue
            services[svc.name.name] = svc
        otel_names: dict[str, str] = {}
        lowered_services: dict[str, LoweredService] = {}
        for svc in services.values():
            otel_names[svc.name.name], lowered_services[svc.name.name] = self._service(sname, svc, services, scope,
                                                                                       tpl, suite.internal)
        self.lints.undeclared_needs(sname, self.g, services)

        lowered: list[LoweredTest] = []
        seen_tests: dict[str, ir.Test] = {}
        for test in self._instances(suite.tests, scope, tpl):
            if test.name.value in seen_tests:
                self.diags.error(f"test \"{test.name.value}\" is declared twice in this suite", test.name.loc,
                                 notes=(("first declared", seen_tests[test.name.value].name.loc),))
                continue
            seen_tests[test.name.value] = test
            if test.timeout is not None and test.timeout.seconds <= 0:
                self.diags.error("a test timeout must be positive", test.timeout.loc,
                                 "leave it out: the test then has the suite's time")
            lowered.append(self._test(sname, test, services, otel_names, Scope(dict(scope.values)), tpl))
        tests_meta = order(self.g, lowered, lowered_services)
        if not suite.tests:
            self.diags.warning(f"suite \"{sname}\" has no test", suite.name.loc)
        suite_meta: SuiteEntry = {
            "name": sname, "seed": seed, "faker_seed": tpl.faker_seed, "clock": clock,
            "timeout": suite.timeout.seconds if suite.timeout else DEFAULT_SUITE_TIMEOUT,
            "settle": suite.settle.seconds if suite.settle else DEFAULT_SETTLE,
            "services": [f"{sname}::service:{n}" for n in sorted(services)],
            "otel_services": [otel_names[k] for k in sorted(otel_names)],
            "env_reads": dict(sorted(tpl.env_reads.items())), "loc": plan_loc(suite.loc),
            "tests": [t["id"] for t in tests_meta],
            "masks": [self._mask(m) for m in suite.masks],
            "network": "internal" if suite.internal else "bridge",
        }
        return suite_meta, tests_meta

    def _mask(self, m: ir.Mask) -> RegexMask | ValueMask:
        """A mask rule as the runtime reads it (`crc.runtime.masks`)."""
        if isinstance(m.value, ir.Regex):
            self._check_regex(m.value)
            return {"kind": "regex", "pattern": m.value.pattern, "flags": m.value.flags}
        if m.kind == "json" and not literals.holds_template(m.value.value):
            try:
                parse_path(m.value.value)
            except JsonPathError as e:
                self.diags.error(str(e), m.value.loc)
        if m.kind == "json":
            return {"kind": "json", "value": m.value.value}
        return {"kind": "attr", "value": m.value.value}

    def _instances(self, tests: tuple[ir.Test, ...], scope: Scope, tpl: Templates) -> list[ir.Test]:
        """Tests with their parametrised ones expanded, one per combination of values."""
        from .params import expand

        def render(name: ir.Str, values: dict[str, ir.Value]) -> str | None:
            inner = Scope(dict(scope.values))
            for k, v in values.items():
                inner.values[k] = self._value(v, inner, tpl)
            return self._render(name, inner, tpl)

        return [t for test in tests for t in expand(test, self.diags, render, value_text)]


def plan_path_for(source: str, out_dir: str | Path = ".crc") -> Path:
    """Where `crc compile` writes the Plan of `source` by default."""
    p = Path(source)
    rel = p.with_suffix(".plan")
    if rel.is_absolute():
        rel = Path(*rel.parts[1:])
    return Path(out_dir) / rel
