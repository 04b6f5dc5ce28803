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
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import networkx as nx

from crc import __version__

from . import ir, lints, literals, secrets
from .analysis import check_cycles, contradictions
from .diagnostics import CompileError, Diagnostics, sorted_diagnostics
from .evaluate import Evaluator, evaluate_suite
from .jsonpath import JsonPathError, parse_path
from .loader import Program, load
from .lower import lower_test, suite_tests
from .ordering import LoweredTest, order
from .plan import Plan
from .schema import Meta, RegexMask, SuiteEntry, TestEntry, ValueMask
from .services import Declarations, lower_services
from .trace import Trace
from .values import ir_loc, plan_loc

DEFAULT_SUITE_TIMEOUT = 600.0
DEFAULT_SETTLE = 0.2


def compile_file(path: str, *, text: str | None = None, environ: Mapping[str, str] | None = None,
                 overlay: Mapping[str, str] | None = None, trace: Trace | None = None,
                 ignore: Collection[str] = ()) -> Plan:
    """Compile one `.cr` file into a Plan; raises CompileError carrying every diagnostic found.

    Warnings of a file that compiles travel on `Plan.warnings` (they are not part of the Plan's data); lint
    warnings whose code is in `ignore`, or allowed by a `# crc: allow CODE` comment, are left out.
    `overlay` maps real paths of imported files to texts used instead of the files (unsaved editor buffers);
    `trace` is filled with the parsed program and the values computed at each location (see trace.py)."""
    with gc_paused():
        return _compile_file(path, text, environ, overlay, trace, ignore)


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
                  overlay: Mapping[str, str] | None, trace: Trace | None, ignore: Collection[str]) -> Plan:
    diags = Diagnostics()
    prog = load(path, diags, text, overlay)
    if trace is not None:
        trace.program = prog
    if prog.root is None:
        diags.raise_if_errors()
        raise CompileError(list(diags.items))
    literals.check(prog, diags)
    plan = _build(prog, diags, environ, trace)
    lints.suppress(diags, prog.root, prog.modules, ignore)
    diags.raise_if_errors()
    return replace(plan, warnings=tuple(sorted_diagnostics(diags.items)))


def sources_of(path: str) -> dict[str, str]:
    """The source texts behind a file's diagnostics (the file and what it imports)."""
    return load(path, Diagnostics()).sources


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _declarations(prog: Program, diags: Diagnostics) -> Declarations:
    """What the program declares for every suite: templates (of the file and its imports) and top-level lets."""
    assert prog.root is not None
    templates: dict[str, ir.Template] = {}
    module_lets: list[ir.Let] = []
    for mod in [*prog.modules, prog.root]:
        for t in mod.templates:
            if t.name.name in templates:
                first = templates[t.name.name]
                diags.error(f"template `{t.name.name}` is defined twice", t.name.loc,
                            notes=(("first defined", first.name.loc),))
            templates[t.name.name] = t
        module_lets.extend(mod.lets)
        if mod is not prog.root and mod.suites:
            diags.warning("suites in an imported file are not run by the importer", mod.suites[0].loc)
    return Declarations(templates, tuple(module_lets), prog.files, prog.root.path)


def _build(prog: Program, diags: Diagnostics, environ: Mapping[str, str] | None, trace: Trace | None) -> Plan:
    """The passes over a whole program: every suite (see `_suite`), then the checks of the whole graph."""
    root = prog.root
    assert root is not None
    decls = _declarations(prog, diags)
    ev = Evaluator(diags, trace)
    lint = lints.Lints(diags)
    g = nx.MultiDiGraph()
    suites_meta: list[SuiteEntry] = []
    tests_meta: list[TestEntry] = []
    seen: dict[str, ir.Suite] = {}
    for suite in root.suites:
        if suite.name.value in seen:
            diags.error(f"suite \"{suite.name.value}\" is declared twice in this file", suite.name.loc,
                        notes=(("first declared", seen[suite.name.value].name.loc),))
            continue
        seen[suite.name.value] = suite
        s_meta, t_meta = _suite(ev.at(f'suite "{suite.name.value}"'), g, lint, decls, suite, environ)
        suites_meta.append(s_meta)
        tests_meta.extend(t_meta)
    if not root.suites:
        diags.error("this file declares no suite", ir.Loc(root.path, 1, 1, 1, 2), 'add one: suite "name" { ... }')
    check_cycles(g, diags, root.path)
    meta: Meta = {
        "source": root.path,
        "source_digest": _digest(prog.sources[root.path]),
        "imports": [{"path": m.path, "digest": _digest(prog.sources[m.path])} for m in prog.modules],
        "crc_version": __version__,
    }
    _check_secrets(g, prog, diags)
    return Plan(g, meta, suites_meta, tests_meta)


def _suite(ev: Evaluator, g: nx.MultiDiGraph, lint: lints.Lints, decls: Declarations, suite: ir.Suite,
           environ: Mapping[str, str] | None) -> tuple[SuiteEntry, list[TestEntry]]:
    """The passes over one suite, in order; each takes what the ones before it produced."""
    sname = suite.name.value
    values = evaluate_suite(ev, suite, decls.module_lets, environ)
    if suite.timeout is not None and suite.timeout.seconds <= 0:
        ev.diags.error("a suite timeout must be positive", suite.timeout.loc, "leave it out for the default of 10m")
    services = lower_services(ev, g, lint, decls, suite, values)
    lowered: list[LoweredTest] = []
    for test in suite_tests(ev, suite, values):
        t = lower_test(ev, g, lint, decls, sname, test, services, values)
        contradictions(g, ev.diags, t.spans)
        lowered.append(t)
    tests_meta = order(g, lowered, services.lowered)
    if not suite.tests:
        ev.diags.warning(f"suite \"{sname}\" has no test", suite.name.loc)
    otel_names = services.otel_names
    suite_meta: SuiteEntry = {
        "name": sname, "seed": values.seed, "faker_seed": values.tpl.faker_seed, "clock": values.clock,
        "timeout": suite.timeout.seconds if suite.timeout else DEFAULT_SUITE_TIMEOUT,
        "settle": suite.settle.seconds if suite.settle else DEFAULT_SETTLE,
        "services": [f"{sname}::service:{n}" for n in sorted(services.declared)],
        "otel_services": [otel_names[k] for k in sorted(otel_names)],
        "env_reads": dict(sorted(values.tpl.env_reads.items())), "loc": plan_loc(suite.loc),
        "tests": [t["id"] for t in tests_meta],
        "masks": [_mask(ev, m) for m in suite.masks],
        "network": "internal" if suite.internal else "bridge",
    }
    return suite_meta, tests_meta


def _check_secrets(g: nx.MultiDiGraph, prog: Program, diags: Diagnostics) -> None:
    """A secret may go only where the runtime reveals it (env values and commands): anywhere else it
    would be compared or shown as its placeholder, or give its value away."""
    if not any("secret" in text for text in prog.sources.values()):
        return  # no template calls secret(): no placeholder to look for
    for _n, attrs in g.nodes(data=True):
        if attrs.get("loc") and (where := secrets.misplaced(attrs["kind"], attrs)):
            what = {"assert": "an expectation", "span": "a span selector"}.get(attrs["kind"], f"a {attrs['kind']}")
            diags.error(f"secret() used in the {', '.join(where)} of {what}",
                        ir_loc(attrs["loc"]),
                        "a secret can only be used in env values and commands (service env and command, "
                        "step argv and env): it is read when the container starts and never stored")


def _mask(ev: Evaluator, m: ir.Mask) -> RegexMask | ValueMask:
    """A mask rule as the runtime reads it (`crc.runtime.masks`)."""
    if isinstance(m.value, ir.Regex):
        ev.check_regex(m.value)
        return {"kind": "regex", "pattern": m.value.pattern, "flags": m.value.flags}
    if m.kind == "json" and not literals.holds_template(m.value.value):
        try:
            parse_path(m.value.value)
        except JsonPathError as e:
            ev.diags.error(str(e), m.value.loc)
    if m.kind == "json":
        return {"kind": "json", "value": m.value.value}
    return {"kind": "attr", "value": m.value.value}


def plan_path_for(source: str, out_dir: str | Path = ".crc") -> Path:
    """Where `crc compile` writes the Plan of `source` by default."""
    p = Path(source)
    rel = p.with_suffix(".plan")
    if rel.is_absolute():
        rel = Path(*rel.parts[1:])
    return Path(out_dir) / rel
