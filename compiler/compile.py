"""IR -> Plan: resolves imports, templates and seeds, checks meaning, and builds the DAG.

Node ids read `SUITE::service:NAME`, `SUITE::TEST::step:NAME`, `SUITE::TEST::assert:N`,
`SUITE::TEST::span:NAME` (anonymous selectors: `span:#N`). Every node carries `kind`, `suite`, `test`,
`name`, `label` (for display) and `loc` ("file:line:col").
"""

from __future__ import annotations

import functools
import gc
import hashlib
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

import networkx as nx

from crc import __version__

from . import host_access, ir, lints, literals, resources, secrets
from .analysis import check_cycles, contradictions
from .diagnostics import CompileError, Diagnostics, did_you_mean, sorted_diagnostics
from .jsonpath import JsonPathError, parse_path
from .loader import Program, load
from .parser import escape
from .plan import Plan
from .schema import Meta, Port, RegexMask, SuiteEntry, TestEntry, ValueMask, Volume
from .templates import DEFAULT_CLOCK, DEFAULT_SEED, TemplateProblem, Templates
from .trace import Trace
from .values import bound, ir_loc, plan_loc, regex

DEFAULT_SUITE_TIMEOUT = 600.0
DEFAULT_PROBE_WITHIN = 30.0
DEFAULT_SETTLE = 0.2
DEFAULT_EVENTUALLY_WITHIN = 10.0
DEFAULT_EVENTUALLY_EVERY = 0.2
STATUSES = ("ok", "error", "unset")
SPAN_KINDS = ("server", "client", "internal", "producer", "consumer")
STEP_FIELDS = {"exit": "an exit code", "stdout": "text", "stderr": "text", "duration": "a duration",
               "json": "a JSON value of stdout"}
HTTP_FIELDS = {"status": "the response status code", "body": "the response body as text",
               "headers": 'a response header: step.headers["name"]', "duration": "a duration",
               "json": "a JSON value of the body"}
SPAN_FIELDS = {"duration": "a duration", "status": "ok, error or unset"}
COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
TEXT_OPS = ("==", "!=", "contains", "not contains", "~", "!~")
CONSTANTS: dict[str, Any] = {"true": True, "false": False}
_TEMPLATE_EXPR = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)


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


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _unquoted_captures(script: str, captures: frozenset[str]) -> str | None:
    """The first capture a `sh` script's template interpolates without the `shquote` filter, if any."""
    for m in _TEMPLATE_EXPR.finditer(script):
        expr = m.group(0)
        if expr.startswith("{{") and "shquote" not in expr:
            used = [w for w in _WORD.findall(expr) if w in captures]
            if used:
                return used[0]
    return None


class _Deferred(str):
    """A string template that refers to captures: rendered by the runtime once the captures exist."""

    __slots__ = ()


@dataclass
class _Scope:
    """Names visible to values: lets and template parameters (already evaluated) and capture names."""

    values: dict[str, Any]
    captures: frozenset[str] = frozenset()


class _Compiler:
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
        self.by_trace: set[str] = set()  # ids of tests whose spans are found by their steps' traces
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

    # ------------------------------------------------------------ values
    def _value(self, v: ir.Value, scope: _Scope, tpl: Templates) -> Any:
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
                return _Deferred("{{ " + v.name + " }}")
            self.diags.error(f"unknown name `{v.name}`", v.loc,
                             did_you_mean(v.name, [*scope.values, *scope.captures, *CONSTANTS])
                             or "names refer to `let` values, template parameters or captures")
            return None
        raise AssertionError(v)  # pragma: no cover

    def _render(self, s: ir.Str, scope: _Scope, tpl: Templates) -> str | None:
        try:
            names = tpl.names(s.value)
            if names & scope.captures:
                extra = names - scope.captures - set(scope.values) - {"sha256", "secret"}
                if extra:
                    self.diags.error(f"a template that uses a capture can only use lets and captures, not "
                                     f"{', '.join(sorted(extra))}", s.loc,
                                     "compute the value in a `let` first and use the let here")
                    return None
                return _Deferred(s.value)
            out = tpl.render(s.value, scope.values)
            if self.trace is not None and names:
                self.trace.note(s.loc, self.where, out)
            return out
        except TemplateProblem as e:
            self.diags.error(e.message, s.loc, e.hint)
            return None

    def _text_in(self, scope: _Scope, tpl: Templates, v: ir.Value, what: str) -> str | None:
        return self._text(v, scope, tpl, what)

    def _value_in(self, scope: _Scope, tpl: Templates, v: ir.Value) -> Any:
        return self._value(v, scope, tpl)

    def _text(self, v: ir.Value, scope: _Scope, tpl: Templates, what: str) -> str | None:
        val = self._value(v, scope, tpl)
        if isinstance(val, bool) or val is None:
            if val is not None:
                self.diags.error(f"{what} must be text, not a boolean", _loc_of(v))
            return None
        if isinstance(val, int | float):
            return str(val)
        if not isinstance(val, str):
            self.diags.error(f"{what} must be text", _loc_of(v))
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

    def _argv(self, a: ir.Argv, scope: _Scope, tpl: Templates) -> tuple[list[str], bool]:
        """argv elements, and whether some must be rendered at run time (they refer to captures)."""
        if a.form == "list":
            items = [self._text(x, scope, tpl, "an argv element") for x in a.items]
        elif a.form == "sh":
            script = self._text(a.items[0], scope, tpl, "a shell script")
            items = ["sh", "-c", script]
            if isinstance(script, _Deferred) and (bare := _unquoted_captures(script, scope.captures)):
                self.diags.warning(f"run-time value `{bare}` is interpolated into a shell script unquoted: "
                                   "whatever shell syntax it holds runs", _loc_of(a.items[0]),
                                   f"quote it: {{{{ {bare} | shquote }}}}")
        else:
            raw = a.items[0]
            assert isinstance(raw, ir.Str)
            words = _split_keeping_templates(raw.value, raw.loc, self.diags)
            items = [self._render(ir.Str(word, raw.loc), scope, tpl) for word in words or []]
            if words == []:  # None: it could not be split, already reported
                self.diags.error("an empty command", a.loc, 'write the program and its arguments: "ls -l"')
        if a.form == "list" and not a.items:
            self.diags.error("an empty command", a.loc, 'write the program and its arguments: ["ls", "-l"]')
        out = [x if x is not None else "" for x in items]
        return list(out), any(isinstance(x, _Deferred) for x in out)

    def _lets(self, lets: list[ir.Let] | tuple[ir.Let, ...], scope: _Scope, tpl: Templates) -> None:
        for let in lets:
            scope.values[let.name.name] = self._value(let.value, scope, tpl)
            if self.trace is not None:
                self.trace.note(let.name.loc, self.where, scope.values[let.name.name])

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
        scope = _Scope({})
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
        for svc in services.values():
            otel_names[svc.name.name] = self._service(sname, svc, services, scope, tpl, suite.internal)
        self.lints.undeclared_needs(sname, self.g, services)

        tests_meta: list[TestEntry] = []
        seen_tests: dict[str, ir.Test] = {}
        added: list[tuple[ir.Test, list[str], list[str], list[str], bool, list[str]]] = []
        mentions = _mentions(services)
        for test in self._instances(suite.tests, scope, tpl):
            if test.name.value in seen_tests:
                self.diags.error(f"test \"{test.name.value}\" is declared twice in this suite", test.name.loc,
                                 notes=(("first declared", seen_tests[test.name.value].name.loc),))
                continue
            seen_tests[test.name.value] = test
            if test.timeout is not None and test.timeout.seconds <= 0:
                self.diags.error("a test timeout must be positive", test.timeout.loc,
                                 "leave it out: the test then has the suite's time")
            added.append((test, *self._test(sname, test, services, otel_names, _Scope(dict(scope.values)), tpl,
                                            mentions)))
        # A service no test uses is reached in a way no command shows (a host in a config file): every test
        # waits for it and fails with it, but it orders no test.
        unused = set(services).difference(*(uses for _, _, _, uses, _, _ in added))
        # Tests that share a service run one after another, in source order; tests whose services are disjoint
        # run concurrently. A test that checks spans, or uses no service, also holds "#suite", so a span test
        # never overlaps another test. `last` holds, per key, the end nodes of the last test that held it.
        last: dict[str, list[str]] = {}
        for test, roots, sinks, uses, spans_checked, nodes in added:
            keys = [*uses, *(["#suite"] if spans_checked or not uses else [])]
            before: list[list[str]] = []
            for key in keys:
                if key in last and last[key] not in before:
                    before.append(last[key])
            # `then` waits without propagating failure: a failed test does not skip the next one.
            for ends in before:
                for s in ends:
                    for r in roots:
                        self.g.add_edge(s, r, key="then", kind="then")
            if sinks:
                for key in keys:
                    last[key] = sinks
            waits = sorted(set(uses) | unused)
            for svc_name in waits:
                for r in roots:
                    self.g.add_edge(f"{sname}::service:{svc_name}", r, key="needs", kind="needs", loc=None)
            tests_meta.append({"id": f"{sname}::{test.name.value}", "suite": sname, "name": test.name.value,
                               "timeout": test.timeout.seconds if test.timeout else None,
                               "loc": plan_loc(test.loc), "nodes": nodes,
                               "uses": [f"{sname}::service:{n}" for n in uses],
                               "waits": [f"{sname}::service:{n}" for n in waits],
                               "by_trace": f"{sname}::{test.name.value}" in self.by_trace})
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

    def _instances(self, tests: tuple[ir.Test, ...], scope: _Scope, tpl: Templates) -> list[ir.Test]:
        """Tests with their parametrised ones expanded, one per combination of values."""
        from .params import expand

        def render(name: ir.Str, values: dict[str, ir.Value]) -> str | None:
            inner = _Scope(dict(scope.values))
            for k, v in values.items():
                inner.values[k] = self._value(v, inner, tpl)
            return self._render(name, inner, tpl)

        return [t for test in tests for t in expand(test, self.diags, render, _value_text)]

    # ------------------------------------------------------------ services
    def _service(self, sname: str, svc: ir.Service, services: dict[str, ir.Service], scope: _Scope,
                 tpl: Templates, internal: ir.Loc | None = None) -> str:
        suite_where, self.where = self.where, f"service {svc.name.name} in {self.where}"
        bodies: list[tuple[ir.ServiceBody, _Scope]] = []
        # Set when the image may have come from something already reported (an unknown template, an image
        # value that failed): `has no image` would then be a second error for the same fault.
        image_failed = False
        if svc.template is not None:
            t = self.templates.get(svc.template.name)
            if t is None:
                image_failed = True
                self.diags.error(f"unknown template `{svc.template.name}`", svc.template.loc,
                                 did_you_mean(svc.template.name, self.templates) or
                                 'templates come from imports such as `import "std/redis"`')
            else:
                params = self._bind(t, svc, scope, tpl)
                if self.trace is not None:
                    for param in t.params:
                        if param.name.name in params:
                            self.trace.note(param.name.loc, self.where, params[param.name.name])
                bodies.append((t.body, _Scope({**scope.values, **params})))
        bodies.append((svc.body, scope))

        image: Any = None
        command: list[str] | None = None
        workdir: str | None = None
        env: dict[str, str] = {}
        ports: list[Port] = []
        volumes: list[Volume] = []
        needs: list[ir.Name] = []
        probes: list[dict[str, Any]] = []
        build: dict[str, Any] | None = None
        cpus: float | None = None
        memory: int | None = None
        gpus: dict[str, Any] | None = None
        linted: dict[str, lints.Located] = {}  # env values and command elements, where they were written
        argv_linted: list[lints.Located] = []
        declared: list[int | None] = []
        probed: list[tuple[int | None, ir.Loc | None]] = []
        binds: list[tuple[str | None, ir.Loc | None]] = []
        ports_written: list[ir.Port] = []
        rebase = functools.partial(resources.from_module, files=self.prog.files, root=self.root.path)
        for body, sc in bodies:
            text = functools.partial(self._text_in, sc, tpl)
            value = functools.partial(self._value_in, sc, tpl)
            for b in body.build:
                build = resources.lower_build(b, text, self.diags, Path(self.root.path).parent, rebase)
                image_failed = image_failed or build is None
            for v in body.cpus:
                cpus = resources.lower_cpus(v, value, self.diags)
            for v in body.memory:
                memory = resources.lower_memory(v, text, self.diags)
            for g in body.gpus:
                gpus = resources.lower_gpus(g, value, text, self.diags)
            for v in body.image:
                image = self._text(v, sc, tpl, "an image")
                image_failed = image is None
            for a in body.command:
                command, _ = self._argv(a, sc, tpl)
                argv_linted = lints.argv_texts(a, command)
            for v in body.workdir:
                workdir = self._text(v, sc, tpl, "a workdir")
            for pair in body.env:
                env[pair.key] = self._text(pair.value, sc, tpl, f"env {pair.key}") or ""
                linted[pair.key] = (env[pair.key], _loc_of(pair.value))
            for p in body.ports:
                declared.append(self._port(p.container, sc, tpl))
                ports.append({"container": declared[-1], "host": self._port(p.host, sc, tpl) if p.host else None})
            for vol in body.volumes:
                source = rebase(self._text(vol.source, sc, tpl, "a volume source"), vol.source)
                self.lints.bind_source(source, _loc_of(vol.source), Path(self.root.path).parent)
                volumes.append({"source": source, "target": self._text(vol.target, sc, tpl, "a volume target"),
                                "read_only": vol.read_only})
                binds.append((source, _loc_of(vol.source)))
            ports_written.extend(body.ports)
            needs.extend(body.needs)
            if body.ready:
                probes = [self._probe(p, sc, tpl) for p in body.ready]
                probed = [(d.get("port"), _loc_of(p.port)) for d, p in zip(probes, body.ready, strict=True)]
        if image is None and build is None and not image_failed:
            self.diags.error(f"service `{svc.name.name}` has no image", svc.name.loc,
                             'add one: image "crc/busybox:dev", or build it: build "./dir"')
        self.lints.service(svc.name.name, [*linted.values(), *argv_linted], services, declared, probed)
        privileged = [loc for body, _ in bodies for loc in body.privileged]
        host_network = [loc for body, _ in bodies for loc in body.host_network]
        granted = host_access.check(
            svc.name.name, self.root.path, binds=binds, privileged=privileged, host_network=host_network,
            grants=[g for body, _ in bodies for g in body.grants], ports=ports_written, internal=internal,
            diags=self.diags)
        otel_name = env.get("OTEL_SERVICE_NAME", svc.name.name)
        nid = f"{sname}::service:{svc.name.name}"
        self.g.add_node(nid, kind="service", suite=sname, test=None, name=svc.name.name, label=svc.name.name,
                        loc=plan_loc(svc.name.loc), image=image, command=command, env=dict(sorted(env.items())),
                        ports=ports, volumes=volumes, workdir=workdir, probes=probes,
                        template=svc.template.name if svc.template else None, otel_name=otel_name,
                        build=build, cpus=cpus, memory=memory, gpus=gpus, privileged=bool(privileged),
                        network="host" if host_network else None, host_access=granted)
        self.where = suite_where
        if self.trace is not None:
            self.trace.note(svc.name.loc, self.where, dict(self.g.nodes[nid]))
        for n in needs:
            if n.name == svc.name.name:
                self.diags.error(f"service `{n.name}` needs itself", n.loc)
            elif n.name not in services:
                self.diags.error(f"unknown service `{n.name}`", n.loc, did_you_mean(n.name, services))
            else:
                self.g.add_edge(f"{sname}::service:{n.name}", nid, key="needs", kind="needs", loc=plan_loc(n.loc))
        return otel_name

    def _bind(self, t: ir.Template, svc: ir.Service, scope: _Scope, tpl: Templates) -> dict[str, Any]:
        names = [p.name.name for p in t.params]
        bound: dict[str, Any] = {}
        positional = True
        for i, arg in enumerate(svc.args):
            if arg.name is None:
                if not positional:
                    self.diags.error("a positional argument after a named one", arg.loc)
                    continue
                if i >= len(names):
                    self.diags.error(f"template `{t.name.name}` takes {len(names)} argument(s)", arg.loc)
                    continue
                key = names[i]
            else:
                positional = False
                key = arg.name
                if key not in names:
                    self.diags.error(f"template `{t.name.name}` has no parameter `{key}`", arg.loc,
                                     did_you_mean(key, names) or f"parameters: {', '.join(names) or 'none'}")
                    continue
            if key in bound:
                self.diags.error(f"parameter `{key}` is given twice", arg.loc)
            bound[key] = self._value(arg.value, scope, tpl)
        for p in t.params:
            if p.name.name not in bound:
                if p.default is None:
                    self.diags.error(f"template `{t.name.name}` needs parameter `{p.name.name}`",
                                     svc.template.loc if svc.template else svc.loc,
                                     f"pass it: {t.name.name}({p.name.name} = ...)")
                else:
                    bound[p.name.name] = self._value(p.default, _Scope(dict(scope.values)), tpl)
        return bound

    def _port(self, v: ir.Value | None, scope: _Scope, tpl: Templates) -> int | None:
        val = self._value(v, scope, tpl) if v is not None else None
        if isinstance(val, str) and val.isdigit():
            val = int(val)
        if not isinstance(val, int) or isinstance(val, bool) or not 0 < val < 65536:
            if val is not None:
                self.diags.error(f"`{val}` is not a port", _loc_of(v), "ports are whole numbers from 1 to 65535")
            return None
        return val

    def _probe(self, p: ir.Probe, scope: _Scope, tpl: Templates) -> dict[str, Any]:
        out: dict[str, Any] = {"type": p.kind, "within": p.within.seconds if p.within else DEFAULT_PROBE_WITHIN,
                               "loc": plan_loc(p.loc)}
        if p.within is not None and p.within.seconds <= 0:
            self.diags.error("a readiness deadline must be positive", p.within.loc)
        if p.kind in ("tcp", "http"):
            out["port"] = self._port(p.port, scope, tpl)
        if p.kind == "http":
            assert p.path is not None
            path = self._text(p.path, scope, tpl, "an HTTP path") or "/"
            if not path.startswith("/"):
                self.diags.error("an HTTP probe path starts with `/`", _loc_of(p.path))
            out["path"] = path
            out["status"] = p.status
        if p.kind == "exec":
            assert p.argv is not None
            out["argv"], _ = self._argv(p.argv, scope, tpl)
        if p.kind == "log":
            if isinstance(p.pattern, ir.Regex):
                self._check_regex(p.pattern)
                out["regex"] = regex(p.pattern)
                out["text"] = None
            else:
                assert p.pattern is not None
                out["text"] = self._text(p.pattern, scope, tpl, "a log pattern") or ""
                out["regex"] = None
        if p.kind == "span":
            assert isinstance(p.pattern, ir.Str)  # the grammar takes a string here
            out["span"] = self._text(p.pattern, scope, tpl, "a span name") or ""
        return out

    # ------------------------------------------------------------ tests
    def _test(self, sname: str, test: ir.Test, services: dict[str, ir.Service], otel_names: dict[str, str],
              scope: _Scope, tpl: Templates, mentions: Callable[[str], set[str]]
              ) -> tuple[list[str], list[str], list[str], bool, list[str]]:
        """Adds a test's nodes; returns its first steps, its end nodes, the services it uses (sorted),
        whether it checks spans, and its nodes."""
        tname = test.name.value
        prefix = f"{sname}::{tname}::"
        graph_size = len(self.g)  # nodes added from here on are this test's (kept cheap: no full-graph scans)
        steps: dict[str, ir.Step] = {}
        spans: dict[str, ir.SpanDecl] = {}
        captures: dict[str, ir.Capture] = {}
        # First pass: declarations, so expectations may refer to names declared below them.
        for item in test.items:
            if isinstance(item, ir.Step | ir.SpanDecl | ir.Capture):
                name = item.name
                prev = steps.get(name.name) or spans.get(name.name) or captures.get(name.name)
                if prev is not None:
                    self.diags.error(f"`{name.name}` is declared twice in this test", name.loc,
                                     notes=(("first declared", prev.name.loc),))
                    continue
                if name.name in services:
                    self.diags.warning(f"`{name.name}` shadows the service of the same name in this test",
                                       name.loc)
                if isinstance(item, ir.Step):
                    steps[name.name] = item
                elif isinstance(item, ir.SpanDecl):
                    spans[name.name] = item
                else:
                    captures[name.name] = item
        scope.captures = frozenset(captures)
        capture_step = {c.name.name: c.step.name for c in captures.values()}
        self._test_steps = steps
        self._scope, self._tpl = scope, tpl  # span attribute values may use the test's lets and captures

        # Steps, in source order; a step without `after` follows the previous one.
        prev_step: str | None = None
        step_ids: list[str] = []
        exit_checked: set[str] = set()  # "STEP.exit" or "STEP.status": the implicit check is the user's
        for item in test.items:
            if isinstance(item, ir.Compare) and item.subject.kind == "field" and item.subject.field and \
                    item.subject.field.name in ("exit", "status") and item.subject.target:
                exit_checked.add(f"{item.subject.target.name}.{item.subject.field.name}")
        for item in test.items:
            if isinstance(item, ir.Let):
                self._lets([item], scope, tpl)
            elif isinstance(item, ir.Step) and steps.get(item.name.name) is item:
                nid = prefix + f"step:{item.name.name}"
                used = self._step(nid, sname, tname, item, services, scope, tpl, exit_checked)
                deps = [a.name for a in item.after] if item.after else ([prev_step] if prev_step else [])
                for a in item.after:
                    if a.name == item.name.name:
                        self.diags.error(f"step `{a.name}` cannot run after itself", a.loc)
                    elif a.name not in steps:
                        self.diags.error(f"unknown step `{a.name}`", a.loc, did_you_mean(a.name, steps))
                for d in deps:
                    if d in steps and d != item.name.name:
                        self.g.add_edge(prefix + f"step:{d}", nid, key="after", kind="after", capture=None)
                # A step that uses a capture waits for the step that captures it.
                for cname in sorted(used & set(capture_step)):
                    src = capture_step[cname]
                    if src == item.name.name:
                        self.diags.error(f"step `{src}` uses the capture `{cname}`, which is read from its own "
                                         "output", item.name.loc, "a capture can only be used by later steps",
                                         notes=(("captured", captures[cname].loc),))
                    elif src in steps:
                        self.g.add_edge(prefix + f"step:{src}", nid, key="after", kind="after", capture=cname)
                prev_step = item.name.name
                step_ids.append(nid)
        if not steps:
            self.diags.error(f"test \"{tname}\" has no step", test.name.loc,
                             "add one: step check = exec SERVICE [\"true\"]")

        # Captures attach to the step whose output they read.
        for c in captures.values():
            self._capture(prefix, c, steps)

        # Span selectors.
        span_ids: dict[str, str] = {}
        for decl in spans.values():
            sid = prefix + f"span:{decl.name.name}"
            span_ids[decl.name.name] = sid
        anon = 0
        for decl in spans.values():
            self._span_node(span_ids[decl.name.name], sname, tname, decl.name.name, decl.match, decl.loc,
                            span_ids, otel_names, implicit_min=True)

        asserts = 0
        observers: list[str] = list(span_ids.values())
        for item in test.items:
            if isinstance(item, ir.Compare):
                subj = item.subject
                if item.eventually is not None and not (subj.target is not None and subj.target.name in steps):
                    self.diags.error("only expectations on a step's results can wait with `eventually`",
                                     item.eventually.loc,
                                     "span checks already wait for their spans (see `crc run --span-timeout`)")
                if subj.kind == "count":
                    if subj.target is not None:
                        ref = self._span_ref(subj.target, span_ids, steps)
                        if ref:
                            self._count(ref, item)
                        continue
                    anon += 1
                    sid = prefix + f"span:#{anon}"
                    assert subj.count_of is not None
                    self._span_node(sid, sname, tname, f"count({_selector_text(subj.count_of)})", subj.count_of,
                                    subj.loc, span_ids, otel_names, implicit_min=False)
                    self._count(sid, item)
                    observers.append(sid)
                    continue
                assert subj.target is not None
                tgt = subj.target.name
                if tgt in spans:
                    self._span_compare(span_ids[tgt], item)
                elif tgt in steps:
                    asserts += 1
                    aid = prefix + f"assert:{asserts}"
                    self._step_assert(aid, sname, tname, prefix + f"step:{tgt}", item, scope, tpl)
                else:
                    self.diags.error(f"unknown step or span `{tgt}`", subj.target.loc,
                                     did_you_mean(tgt, [*steps, *spans]) or
                                     ("captures are values; use them in templates: \"{{ " + tgt + " }}\""
                                      if tgt in captures else None))
            elif isinstance(item, ir.Order):
                first, second = (self._span_ref(item.first, span_ids, steps),
                                 self._span_ref(item.second, span_ids, steps))
                lo = item.min_gap.seconds if item.min_gap else 0.0
                hi = item.max_gap.seconds if item.max_gap else None
                if hi is not None and lo > hi:
                    assert item.min_gap is not None
                    self.diags.error(f"the gap can never hold: at least {item.min_gap.text} but at most "
                                     f"{item.max_gap.text if item.max_gap else ''}", item.min_gap.loc)
                if first and second:
                    if first == second:
                        self.diags.error(f"span `{item.first.name}` cannot be {item.written} itself", item.loc)
                    else:
                        self._edge(first, second, "precedes", item.loc, min_gap=bound(lo, True),
                                   max_gap=None if hi is None else bound(hi, True),
                                   written=item.written)
            elif isinstance(item, ir.Relation):
                outer, inner = (self._span_ref(item.outer, span_ids, steps),
                                self._span_ref(item.inner, span_ids, steps))
                if outer and inner:
                    if outer == inner:
                        self.diags.error(f"span `{item.outer.name}` cannot {item.kind} itself", item.loc)
                    else:
                        self._edge(outer, inner, item.kind, item.loc)
            elif isinstance(item, ir.NoSpan):
                anon += 1
                sid = prefix + f"span:#{anon}"
                self._span_node(sid, sname, tname, f"no span {_selector_text(item.match)}", item.match, item.loc,
                                span_ids, otel_names, implicit_min=False)
                node = self.g.nodes[sid]
                node["constraints"].append({"id": f"{sid}/count", "check": "count", "min": 0, "max": 0,
                                            "loc": plan_loc(item.loc), "text": "no span matches",
                                            "implicit": False})
                node["no_span"] = True
                observers.append(sid)
            elif isinstance(item, ir.Hermetic):
                asserts += 1
                aid = prefix + f"assert:{asserts}"
                allow = sorted({self._compile_time(a, "a host") for a in item.allow} | set(services)
                               | set(otel_names.values()))
                self.g.add_node(aid, kind="assert", suite=sname, test=tname, name=f"assert:{asserts}",
                                label="hermetic", loc=plan_loc(item.loc), check="hermetic", allow=allow)
                observers.append(aid)

        for sid in step_ids:
            _exit_checks_first(self.g, sid)
        # networkx keeps nodes in insertion order: this test's are the last ones added.
        added = list(islice(reversed(self.g._node), len(self.g) - graph_size))[::-1]
        test_nodes = [n for n in added if n.startswith(prefix)]
        contradictions(self.g, self.diags, [n for n in test_nodes if n.startswith(prefix + "span:")])
        # Span checks (and hermeticity) look at spans that arrive once the test's steps ran.
        sinks = [s for s in step_ids if not any(
            k == "after" and v in step_ids for _, v, k in self.g.out_edges(s, keys=True))]
        for o in observers:
            for s in sinks:
                self.g.add_edge(s, o, key="observes", kind="observes")
        roots = [s for s in step_ids if not any(k == "after" for _, _, k in self.g.in_edges(s, keys=True))]
        end = [n for n in test_nodes if not any(v.startswith(prefix) for v in self.g.successors(n))]
        # Spans found by the traces of the test's own steps are this test's whatever else runs meanwhile: such a
        # test need not run alone.
        span_observers = [o for o in observers if self.g.nodes[o]["kind"] == "span"]
        by_trace = bool(span_observers) and all(_trace_scoped(self.g, o) for o in span_observers)
        if by_trace:
            self.by_trace.add(f"{sname}::{tname}")
        spans_alone = bool(observers) and not by_trace
        uses = self._uses(sname, test, step_ids, services, mentions, spans_checked=spans_alone)
        return roots, end, uses, spans_alone, test_nodes

    def _uses(self, sname: str, test: ir.Test, step_ids: list[str], services: dict[str, ir.Service],
              mentions: Callable[[str], set[str]], *, spans_checked: bool) -> list[str]:
        """The services a test waits for and holds: those its steps run in, those its commands name (a
        hostname such as `http://api:8080/`), those in its `uses` clause, and everything these need or name
        in their own command and env.

        A test that checks spans uses every service: spans are attributed to a test by time, so it must run
        alone, and any service may emit what it expects."""
        for n in test.uses:
            if n.name not in services:
                self.diags.error(f"unknown service `{n.name}`", n.loc, did_you_mean(n.name, services)
                                 or "`uses` names services of this suite the test reaches")
        if spans_checked:
            return sorted(services)
        used = {n.name for n in test.uses if n.name in services}
        for nid in step_ids:
            d = self.g.nodes[nid]
            if d.get("service") and d["service"].rsplit(":", 1)[1] in services:  # unknown: already an error
                used.add(d["service"].rsplit(":", 1)[1])
            # Strings rendered at run time (they use a capture) still hold `let` values: scan those too.
            late = [v for v in d.get("template_values", {}).values() if isinstance(v, str)]
            for text in [*(d.get("argv") or ()), *d.get("env", {}).values(), *late]:
                used |= mentions(text)
        todo = list(used)
        while todo:  # what the used services need or name in their command and env, transitively
            node = f"{sname}::service:{todo.pop()}"
            reached = {u.rsplit(":", 1)[1] for u, _, k in self.g.in_edges(node, keys=True)
                       if k == "needs" and self.g.nodes[u].get("kind") == "service"}
            d = self.g.nodes[node]
            for text in [*(d.get("command") or ()), *(d.get("env") or {}).values()]:
                reached |= mentions(text)
            for name in sorted(reached - used):
                used.add(name)
                todo.append(name)
        return sorted(used)

    def _step(self, nid: str, sname: str, tname: str, step: ir.Step, services: dict[str, ir.Service],
              scope: _Scope, tpl: Templates, exit_checked: set[str]) -> set[str]:
        """Adds the step node; returns the capture names its templates use."""
        attrs: dict[str, Any] = {"kind": "step", "suite": sname, "test": tname, "name": step.name.name,
                                 "label": step.name.name, "loc": plan_loc(step.loc), "action": step.action,
                                 "timeout": step.timeout.seconds if step.timeout else None,
                                 "implicit_exit": f"{step.name.name}.exit" not in exit_checked, "captures": [],
                                 "eventually": None}
        if step.timeout is not None and step.timeout.seconds <= 0:
            self.diags.error("a step timeout must be positive", step.timeout.loc)
        if step.action == "http":
            from . import http

            more, late = http.lower(self, sname, step, scope, tpl, services, lambda x: isinstance(x, _Deferred),
                                    f"{step.name.name}.status" in exit_checked, Path(self.root.path).parent)
            attrs.update(more)
            return self._add_step(nid, attrs, late, scope, tpl)
        if step.allow or step.headers or step.body is not None or step.json is not None or step.tls is not None:
            opt = "allow" if step.allow else "headers" if step.headers else "body" if step.body else \
                "tls" if step.tls else "json"
            self.diags.error(f"`{opt}` is an option of http steps", step.loc,
                             "exec and run steps take timeout, env and workdir")
        if step.action == "exec":
            assert step.service is not None
            if step.service.name not in services:
                self.diags.error(f"unknown service `{step.service.name}`", step.service.loc,
                                 did_you_mean(step.service.name, services) or
                                 "exec runs a command in a service of this suite; `run` starts a new container")
            attrs["service"] = f"{sname}::service:{step.service.name}"
            attrs["image"] = None
        else:
            assert step.image is not None
            attrs["service"] = None
            attrs["image"] = self._runtime_free(self._text(step.image, scope, tpl, "an image"), step.image, "image")
        argv, _deferred = self._argv(step.argv, scope, tpl) if step.argv else (None, False)
        env = {p.key: (self._text(p.value, scope, tpl, f"env {p.key}") or "") for p in step.env}
        self.lints.near_miss([*((env[p.key], p.value.loc) for p in step.env), *lints.argv_texts(step.argv, argv)],
                             services)
        attrs["argv"] = argv
        attrs["env"] = dict(sorted(env.items()))
        attrs["workdir"] = self._runtime_free(self._text(step.workdir, scope, tpl, "a workdir"), step.workdir,
                                              "workdir") if step.workdir else None
        # Only these are templates still: everything else was rendered here and must never be rendered again
        # (a value that merely contains `{{`, from env() or fake data, is data).
        attrs["deferred_argv"] = [i for i, x in enumerate(argv or []) if isinstance(x, _Deferred)]
        attrs["deferred_env"] = sorted(k for k, x in env.items() if isinstance(x, _Deferred))
        late = [x for x in [*(argv or []), *env.values()] if isinstance(x, _Deferred)]
        return self._add_step(nid, attrs, late, scope, tpl)

    def _add_step(self, nid: str, attrs: dict[str, Any], runtime_strings: list[str], scope: _Scope,
                  tpl: Templates) -> set[str]:
        """Adds a step node whose `runtime_strings` are rendered when it runs; returns the captures they use."""
        used: set[str] = set()
        for s in runtime_strings:
            used |= tpl.names(s) & scope.captures
        attrs["deferred"] = bool(runtime_strings)
        referenced = set().union(*(tpl.names(s) for s in runtime_strings))
        attrs["template_values"] = {k: scope.values[k] for k in sorted(referenced) if k in scope.values}
        self.g.add_node(nid, **_plain(attrs))
        return used

    def _runtime_free(self, value: str | None, v: ir.Value, what: str) -> str | None:
        """`value`, unless it refers to a capture: the runtime renders captures in a step's argv and env only."""
        if not isinstance(value, _Deferred):
            return value
        self.diags.error(f"a capture cannot be used in a step's {what}", _loc_of(v),
                         "captures are allowed in argv and env only; pass the value there (for example "
                         "`sh \"cd {{ dir }} && ...\"`)" if what == "workdir" else
                         "captures are allowed in argv and env only; the image must be known before the test runs")
        return None

    def _capture(self, prefix: str, c: ir.Capture, steps: dict[str, ir.Step]) -> None:
        if c.step.name not in steps:
            self.diags.error(f"unknown step `{c.step.name}`", c.step.loc, did_you_mean(c.step.name, steps))
            return
        field = c.field.name
        entry: dict[str, Any] = {"name": c.name.name, "loc": plan_loc(c.loc)}
        streams = ("body",) if steps[c.step.name].action == "http" else ("stdout", "stderr")
        if c.regex is not None:
            if field not in streams:
                self.diags.error(f"a regex capture reads {' or '.join(streams)}, not `{field}`", c.field.loc,
                                 did_you_mean(field, streams))
            self._check_regex(c.regex)
            entry.update(field=field, regex=regex(c.regex), path=None, key=None)
        elif c.key is not None:
            if field != "headers" or steps[c.step.name].action != "http":
                self.diags.error(f"`{field}[...]` cannot be captured", c.field.loc,
                                 'an http step\'s response headers are read as step.headers["name"]')
            entry.update(field="headers", key=c.key.value, regex=None, path=None)
        else:
            assert c.path is not None
            if field != "json":
                self.diags.error(f"a path capture reads `json`, not `{field}`", c.field.loc,
                                 f'write: capture {c.name.name} = {c.step.name}.json("{c.path.value}")')
            self._check_path(c.path)
            entry.update(field="json", path=c.path.value, regex=None, key=None)
        self.g.nodes[prefix + f"step:{c.step.name}"]["captures"].append(entry)

    def _check_path(self, p: ir.Str) -> None:
        if literals.holds_template(p.value):
            return  # reported once, by literals.check
        try:
            parse_path(p.value)
        except JsonPathError as e:
            self.diags.error(f"bad JSON path: {e}", p.loc)

    def _step_assert(self, aid: str, sname: str, tname: str, step_id: str, c: ir.Compare, scope: _Scope,
                     tpl: Templates) -> None:
        subj = c.subject
        assert subj.field is not None or subj.kind == "attr"
        if subj.kind == "attr":
            self.diags.error("`.attr[...]` reads span attributes; this is a step", subj.loc,
                             "declare a span selector and expect on it")
            return
        assert subj.field is not None
        field = subj.field.name
        is_http = self.g.nodes[step_id].get("action") == "http"
        fields = HTTP_FIELDS if is_http else STEP_FIELDS
        listed = ('status, body, headers["name"], duration, json("$.path")' if is_http
                  else 'exit, stdout, stderr, duration, json("$.path")')
        if subj.kind == "path" and field != "json":
            self.diags.error(f"`{field}(...)` is not a step field", subj.field.loc,
                             f'a JSON path reads {"the body" if is_http else "stdout"} as JSON: step.json("$.key")')
            return
        if subj.kind == "index" and (field != "headers" or not is_http):
            self.diags.error(f"`{field}[...]` is not a step field", subj.field.loc,
                             'an http step\'s response headers are read as step.headers["name"]' if is_http
                             else f"step fields: {listed}")
            return
        if subj.kind == "field" and (field not in fields or field in ("json", "headers")):
            self.diags.error(f"{'an http' if is_http else 'a'} step has no field `{field}`", subj.field.loc,
                             did_you_mean(field, fields) or f"step fields: {listed}")
            return
        value = self._value(c.value, scope, tpl)
        if field == "status" and (c.op not in COMPARISONS or not isinstance(value, int) or isinstance(value, bool)):
            self.diags.error("the status code is compared with a number", c.loc,
                             "for example: expect step.status == 200")
            return
        if field == "exit" and (c.op not in COMPARISONS or not isinstance(value, int) or isinstance(value, bool)):
            self.diags.error("the exit code is compared with a number", c.loc,
                             "for example: expect step.exit == 0")
            return
        if field in ("stdout", "stderr", "body", "headers") and c.op not in TEXT_OPS:
            self.diags.error(f"`{c.op}` does not compare text", c.loc, "use ==, !=, contains, ~ or !~")
            return
        if field == "duration" and (c.op not in COMPARISONS or not isinstance(c.value, ir.Duration)):
            self.diags.error("a duration is compared with a duration", _loc_of(c.value), "for example: < 2s")
            return
        if isinstance(value, dict) and set(value) == {"pattern", "flags"} and c.op not in ("~", "!~"):
            self.diags.error("a regex is matched with `~` or `!~`", c.loc)
            return
        if subj.kind == "path":
            assert subj.arg is not None
            self._check_path(subj.arg)
        deferred = isinstance(value, _Deferred)
        self.g.add_node(aid, **_plain({
            "kind": "assert", "suite": sname, "test": tname, "name": aid.rsplit("::", 1)[1],
            "label": _expect_text(c), "loc": plan_loc(c.loc), "check": "step", "step": step_id, "field": field,
            "path": subj.arg.value if subj.arg and subj.kind == "path" else None,
            "key": subj.arg.value if subj.arg and subj.kind == "index" else None, "op": c.op, "value": value,
            "deferred": deferred,
            "template_values": {k: v for k, v in scope.values.items() if k in tpl.names(value)}
            if deferred else {},
            "eventually": False,
        }))
        self.g.add_edge(step_id, aid, key="checks", kind="checks")
        if c.eventually is not None:
            self._eventually(step_id, aid, c.eventually)

    def _eventually(self, step_id: str, aid: str, ev: ir.Eventually) -> None:
        """Marks the step to be re-run until this expectation (and its other `eventually` ones) hold."""
        within = ev.within.seconds if ev.within else DEFAULT_EVENTUALLY_WITHIN
        every = ev.every.seconds if ev.every else DEFAULT_EVENTUALLY_EVERY
        for d in (ev.within, ev.every):
            if d is not None and d.seconds <= 0:
                self.diags.error("`eventually` waits a positive time", d.loc)
        if ev.every is not None and every > within:
            self.diags.error(f"polling every {ev.every.text} within {within:g}s leaves no second attempt",
                             ev.every.loc, "poll more often than the deadline")
        node = self.g.nodes[step_id]
        prev = node.get("eventually")
        if prev:  # several: all must hold at once; the longest deadline and the shortest interval
            within, every = max(within, prev["within"]), min(every, prev["every"])
        node["eventually"] = {"within": within, "every": every, "asserts": [*(prev or {}).get("asserts", []), aid]}
        self.g.nodes[aid]["eventually"] = True

    # ------------------------------------------------------------ spans
    def _span_ref(self, name: ir.Name, span_ids: dict[str, str], steps: dict[str, ir.Step]) -> str | None:
        if name.name in span_ids:
            return span_ids[name.name]
        hint = did_you_mean(name.name, span_ids)
        if name.name in steps:
            hint = f"`{name.name}` is a step; span relations name spans declared with `span NAME = \"...\"`"
        self.diags.error(f"unknown span `{name.name}`", name.loc, hint)
        return None

    def _span_node(self, sid: str, sname: str, tname: str, label: str, m: ir.SpanMatch, loc: ir.Loc,
                   span_ids: dict[str, str], otel_names: dict[str, str], *, implicit_min: bool) -> None:
        match: dict[str, Any] = {"name": None, "glob": False, "regex": None, "service": None, "kind": None,
                                 "status": None, "attrs": [], "parent": None, "ancestor": None, "trace_of": None}
        if m.trace_of is not None:
            steps = self._test_steps
            if m.trace_of.name not in steps:
                self.diags.error(f"unknown step `{m.trace_of.name}`", m.trace_of.loc,
                                 did_you_mean(m.trace_of.name, steps) or
                                 "`in STEP` names a step of this test: the span is in the trace crc started for it")
            else:
                match["trace_of"] = sid.rsplit("::", 1)[0] + f"::step:{m.trace_of.name}"
        if isinstance(m.name, ir.Str):
            match["name"] = self._compile_time(m.name, "a span name")
            match["glob"] = any(ch in match["name"] for ch in "*?[")
        elif isinstance(m.name, ir.Regex):
            self._check_regex(m.name)
            match["regex"] = regex(m.name)
        if m.service is not None:
            known = set(otel_names.values()) | set(otel_names)
            svc = self._compile_time(m.service, "a service name")
            if svc not in known:
                self.diags.error(f"no service `{svc}` in this suite", m.service.loc,
                                 did_you_mean(svc, known) or f"services: {', '.join(sorted(known)) or 'none'}")
            match["service"] = otel_names.get(svc, svc)
        if m.kind is not None:
            if m.kind.name not in SPAN_KINDS:
                self.diags.error(f"unknown span kind `{m.kind.name}`", m.kind.loc,
                                 did_you_mean(m.kind.name, SPAN_KINDS) or f"kinds: {', '.join(SPAN_KINDS)}")
            match["kind"] = m.kind.name
        if m.status is not None:
            if m.status.name not in STATUSES:
                self.diags.error(f"unknown span status `{m.status.name}`", m.status.loc,
                                 did_you_mean(m.status.name, STATUSES) or "statuses: ok, error, unset")
            match["status"] = m.status.name
        for a in m.attrs:
            val: Any = None
            if isinstance(a.value, ir.Regex):
                self._check_regex(a.value)
                val = regex(a.value)
            elif a.value is not None:
                val = self._literal(a.value, sid)
            match["attrs"].append({"key": a.key.value, "op": a.op, "value": val})
        for rel in ("parent", "ancestor"):
            ref: ir.Name | None = getattr(m, rel)
            if ref is not None:
                if ref.name not in span_ids:
                    self.diags.error(f"unknown span `{ref.name}`", ref.loc, did_you_mean(ref.name, span_ids))
                elif span_ids[ref.name] == sid:
                    self.diags.error(f"a span cannot be its own {rel}", ref.loc)
                else:
                    match[rel] = span_ids[ref.name]
                    self.g.add_edge(span_ids[ref.name], sid, key=rel, kind=rel, selector=True, expected=False,
                                    loc=plan_loc(ref.loc))
        constraints: list[dict[str, Any]] = []
        if implicit_min:
            constraints.append({"id": f"{sid}/exists", "check": "count", "min": 1, "max": None,
                                "loc": plan_loc(loc), "text": f"span `{label}` exists", "implicit": True})
        if not self.g.has_node(sid):
            self.g.add_node(sid)
        self.g.nodes[sid].update(kind="span", suite=sname, test=tname, name=sid.rsplit("::", 1)[1], label=label,
                                 loc=plan_loc(loc), match=match, constraints=constraints, no_span=False,
                                 duration={"min": None, "max": None})
        self.g.nodes[sid].setdefault("template_values", {})

    def _count(self, sid: str, c: ir.Compare) -> None:
        value = c.value
        if c.op not in COMPARISONS or c.op == "!=" or not isinstance(value, ir.Int) or value.value < 0:
            self.diags.error("a count is compared with ==, <, <=, > or >= and a whole number", c.loc)
            return
        cons = self.g.nodes[sid]["constraints"]
        # An explicit count replaces the implicit "at least one".
        cons[:] = [x for x in cons if not x.get("implicit")]
        v = value.value
        lo = {"==": v, ">=": v, ">": v + 1}.get(c.op, 0)
        hi = {"==": v, "<=": v, "<": v - 1}.get(c.op)
        cons.append({"id": f"{sid}@{c.loc.line}:{c.loc.col}", "check": "count", "min": lo, "max": hi,
                     "loc": plan_loc(c.loc), "text": _expect_text(c), "implicit": False})

    def _span_compare(self, sid: str, c: ir.Compare) -> None:
        subj = c.subject
        cons = self.g.nodes[sid]["constraints"]
        entry: dict[str, Any] = {"id": f"{sid}@{c.loc.line}:{c.loc.col}", "loc": plan_loc(c.loc),
                                 "text": _expect_text(c)}
        if subj.kind == "attr":
            assert subj.arg is not None
            val: Any
            if isinstance(c.value, ir.Regex):
                self._check_regex(c.value)
                val = regex(c.value)
            else:
                val = self._literal(c.value, sid)
            op = {"contains": "~", "not contains": "!~"}.get(c.op, c.op)
            if c.op in ("contains", "not contains"):
                # Text that uses captures is escaped once rendered; a literal is escaped now.
                val = {**val, "escape": True} if isinstance(val, dict) else {"pattern": re.escape(str(val)),
                                                                             "flags": ""}
            entry.update(check="attr", key=subj.arg.value, op=op, value=val)
        elif subj.kind == "path":
            self.diags.error("a span has no JSON fields", subj.loc, 'read attributes with span.attr["key"]')
            return
        else:
            assert subj.field is not None
            field = subj.field.name
            if field not in SPAN_FIELDS:
                self.diags.error(f"a span has no field `{field}`", subj.field.loc,
                                 did_you_mean(field, SPAN_FIELDS) or "span fields: duration, status, attr[\"key\"]; "
                                 "name and kind are matched in the selector")
                return
            if field == "duration":
                if not isinstance(c.value, ir.Duration) or c.op not in ("<", "<=", ">", ">="):
                    self.diags.error("a span duration is bounded with <, <=, > or >= and a duration", c.loc,
                                     "for example: expect post.duration < 250ms")
                    return
                if c.value.seconds < 0:
                    self.diags.error("a duration cannot be negative", c.value.loc)
                b = bound(c.value.seconds, c.op in ("<=", ">="))
                entry.update(check="duration", min=b if c.op in (">", ">=") else None,
                             max=b if c.op in ("<", "<=") else None)
            elif field == "status":
                if not isinstance(c.value, ir.Ref) or c.value.name not in STATUSES or c.op not in ("==", "!="):
                    self.diags.error("a span status is compared with == or != and ok, error or unset", c.loc,
                                     did_you_mean(c.value.name, STATUSES) if isinstance(c.value, ir.Ref) else None)
                    return
                entry.update(check="status", op=c.op, value=c.value.name)
        cons.append(entry)

    def _compile_time(self, s: ir.Str, what: str) -> str:
        """A string that must be known before anything runs, its templates (lets, seeded values) rendered: never
        kept as the literal text `{{ ... }}`."""
        if not _TEMPLATE_EXPR.search(s.value):
            return s.value
        val = self._render(s, self._scope, self._tpl)
        if isinstance(val, _Deferred):
            self.diags.error(f"{what} is known when the file is compiled: it cannot use a capture", s.loc,
                             "captures may be used in span attribute values: attr \"key\" == capture")
            return s.value
        return val if val is not None else s.value

    def _literal(self, v: ir.Value, node: str | None = None) -> Any:
        """An attribute value: a literal, a `let`, or text using captures. Text that uses captures is kept as
        `{"template": TEXT}`, rendered when the test's span phase starts (the node keeps the lets it reads)."""
        if isinstance(v, ir.Str | ir.Ref) and (isinstance(v, ir.Ref) or _TEMPLATE_EXPR.search(v.value)):
            if isinstance(v, ir.Ref) and v.name in CONSTANTS:
                return CONSTANTS[v.name]
            val = self._value(v, self._scope, self._tpl)
            if isinstance(val, _Deferred):
                if node is not None:
                    if node not in self.g:
                        self.g.add_node(node)
                    names = self._tpl.names(val)
                    values = self.g.nodes[node].setdefault("template_values", {})
                    values.update({k: self._scope.values[k] for k in sorted(names) if k in self._scope.values})
                return {"template": str(val), "escape": False}
            if val is None or isinstance(val, str | int | float | bool):
                return val
            self.diags.error("attribute values are text, numbers, true or false", _loc_of(v))
            return None
        if isinstance(v, ir.Str | ir.Int | ir.Float):
            return v.value
        if isinstance(v, ir.Duration):
            return v.seconds
        if isinstance(v, ir.Regex):
            return v.pattern
        self.diags.error("attribute values are text, numbers, true, false, lets or captures", _loc_of(v),
                         '"text", 200, 1.5, true, false, a let or a capture')
        return None

    def _edge(self, a: str, b: str, kind: str, loc: ir.Loc, **attrs: Any) -> None:
        if self.g.has_edge(a, b, kind):
            edge = self.g.edges[a, b, kind]
            if edge["expected"]:
                self.diags.error(f"this `{kind}` expectation is stated twice", loc,
                                 notes=(("the other one", ir_loc(edge["loc"])),))
                return
        elif kind == "parent":
            attrs["selector"] = False  # drawn by the expectation alone
        # A selector's `parent` clause may already have drawn this edge; the expectation is added to it.
        self.g.add_edge(a, b, key=kind, kind=kind, loc=plan_loc(loc), expected=True, **attrs)


def _exit_checks_first(g: nx.MultiDiGraph, step: str) -> None:
    """The real error first: a step's other expectations wait for those on its exit code (an http step's
    status), and are skipped when one fails instead of burying it under failures it explains."""
    checks = [v for _, v, k in g.out_edges(step, keys=True) if k == "checks"]
    first = [a for a in checks if g.nodes[a].get("field") in ("exit", "status")]
    for a in first:
        for b in checks:
            if b not in first:
                g.add_edge(a, b, key="checks", kind="checks")


def _trace_scoped(g: nx.MultiDiGraph, sid: str) -> bool:
    """Whether a span selector only matches spans of its test's step traces: it says `in STEP`, or its parent
    or ancestor selector does (a span's descendants share its trace)."""
    seen: set[str] = set()
    while sid not in seen:
        seen.add(sid)
        m = g.nodes[sid]["match"]
        if m.get("trace_of"):
            return True
        nxt = m.get("parent") or m.get("ancestor")
        if not nxt:
            return False
        sid = nxt
    return False


def _mentions(services: Mapping[str, Any]) -> Callable[[str], set[str]]:
    """Finds service names used as hostnames in a text: whole words, not parts of longer names, in any case
    (hostnames are case-insensitive); gives the services' names as declared."""
    names = {n.lower(): n for n in services}
    alternatives = "|".join(re.escape(n) for n in sorted(services, key=len, reverse=True)) or "(?!)"
    rx = re.compile(rf"(?<![A-Za-z0-9_\-])({alternatives})(?![A-Za-z0-9_\-])", re.IGNORECASE)
    return lambda text: {names[m.group(1).lower()] for m in rx.finditer(text)}


def _split_keeping_templates(text: str, loc: ir.Loc, diags: Diagnostics) -> list[str] | None:
    """Split like a shell would, but keep each `{{ ... }}` whole so a templated value is never re-split.

    None when the text cannot be split (an open quote): that is reported here."""
    holes: list[str] = []

    def hole(m: re.Match[str]) -> str:
        holes.append(m.group(0))
        return f"\x00{len(holes) - 1}\x00"

    try:
        words = shlex.split(_TEMPLATE_EXPR.sub(hole, text))
    except ValueError as e:
        diags.error(f"cannot split this command: {e}", loc, "close the quote, or write the argv as a list")
        return None
    return [re.sub(r"\x00(\d+)\x00", lambda m: holes[int(m.group(1))], w) for w in words]


def _plain(x: Any) -> Any:
    """Strip str subclasses (deferred markers) so the Plan holds plain data only."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, str):
        return str(x)
    return x


def _expect_text(c: ir.Compare) -> str:
    s = c.subject
    if s.kind == "count":
        inner = s.target.name if s.target else _match_text(s.count_of)
        left = f"count({inner})"
    elif s.kind == "attr":
        left = f'{s.target.name if s.target else ""}.attr["{s.arg.value if s.arg else ""}"]'
    elif s.kind == "path":
        target, fld = s.target.name if s.target else "", s.field.name if s.field else ""
        left = f'{target}.{fld}("{s.arg.value if s.arg else ""}")'
    elif s.kind == "index":
        target, fld = s.target.name if s.target else "", s.field.name if s.field else ""
        left = f'{target}.{fld}["{s.arg.value if s.arg else ""}"]'
    else:
        left = f"{s.target.name if s.target else ''}.{s.field.name if s.field else ''}"
    return f"{left} {c.op} {_value_text(c.value)}"


def _selector_text(m: ir.SpanMatch) -> str:
    """An inline selector as written (normalized), for the labels of anonymous span nodes."""
    clauses: list[str] = []
    if m.service is not None:
        clauses.append(f'service "{escape(m.service.value)}"')
    if m.kind is not None:
        clauses.append(f"kind {m.kind.name}")
    if m.status is not None:
        clauses.append(f"status {m.status.name}")
    for a in m.attrs:
        tail = a.op if a.value is None else f"{a.op} {_value_text(a.value)}"
        clauses.append(f'attr "{escape(a.key.value)}" {tail}')
    for rel in ("parent", "ancestor"):
        ref = getattr(m, rel)
        if ref is not None:
            clauses.append(f"{rel} {ref.name}")
    if m.trace_of is not None:
        clauses.append(f"in {m.trace_of.name}")
    body = "{ " + " ".join(clauses) + " }" if clauses else ""
    name = _match_text(m) if m.name is not None else ""
    return " ".join(x for x in (name, body) if x) or "{ }"


def _match_text(m: ir.SpanMatch | None) -> str:
    if m is None or m.name is None:
        return "{...}"
    return f'"{m.name.value}"' if isinstance(m.name, ir.Str) else f"/{m.name.pattern}/"


def _value_text(v: ir.Value) -> str:
    if isinstance(v, ir.Str):
        return f'"{escape(v.value)}"'
    if isinstance(v, ir.Regex):
        return f"/{v.pattern}/{v.flags}"
    if isinstance(v, ir.Duration):
        return v.text
    if isinstance(v, ir.Ref):
        return v.name
    if isinstance(v, ir.List):
        return "[" + ", ".join(_value_text(x) for x in v.items) + "]"
    return str(v.value)


def _loc_of(v: Any) -> ir.Loc | None:
    return getattr(v, "loc", None)




def plan_path_for(source: str, out_dir: str | Path = ".crc") -> Path:
    """Where `crc compile` writes the Plan of `source` by default."""
    p = Path(source)
    rel = p.with_suffix(".plan")
    if rel.is_absolute():
        rel = Path(*rel.parts[1:])
    return Path(out_dir) / rel
