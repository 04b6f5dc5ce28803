"""Lowering services: a suite's services, with their templates bound, to service nodes and `needs` edges.

The pass's input is the suite, the values the evaluation pass computed for it (`SuiteValues`) and the file's
templates; its output (`SuiteServices`) is what test lowering and ordering need of the services."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from . import host_access, ir, lints, resources
from .diagnostics import did_you_mean
from .evaluate import Evaluator, Scope, SuiteValues, loc_of
from .ordering import LoweredService
from .schema import Port, Volume
from .templates import Templates
from .values import plan_loc, regex

DEFAULT_PROBE_WITHIN = 30.0


@dataclass(frozen=True, slots=True)
class Declarations:
    """What the whole program declares, read by the lowering passes: the templates by name (of the file and its
    imports), the modules' top-level lets in order, the shown paths of imported files mapped to real ones, and
    the root file's path."""

    templates: Mapping[str, ir.Template]
    module_lets: tuple[ir.Let, ...]
    files: Mapping[str, str]
    root: str


@dataclass(frozen=True, slots=True)
class SuiteServices:
    """The services pass's result for one suite: its services by name (the first of a name declared twice),
    each one's OpenTelemetry service name, and per service what test ordering needs (`LoweredService`)."""

    declared: Mapping[str, ir.Service]
    otel_names: Mapping[str, str]
    lowered: Mapping[str, LoweredService]


def lower_services(ev: Evaluator, g: nx.MultiDiGraph, lint: lints.Lints, decls: Declarations, suite: ir.Suite,
                   values: SuiteValues) -> SuiteServices:
    """The services pass of a suite: adds its service nodes and `needs` edges to `g`."""
    services: dict[str, ir.Service] = {}
    for svc in suite.services:
        if svc.name.name in services:
            ev.diags.error(f"service `{svc.name.name}` is declared twice in this suite", svc.name.loc,
                           notes=(("first declared", services[svc.name.name].name.loc),))
            continue
        services[svc.name.name] = svc
    sname = suite.name.value
    otel_names: dict[str, str] = {}
    lowered: dict[str, LoweredService] = {}
    for svc in services.values():
        otel_names[svc.name.name], lowered[svc.name.name] = _ServiceLowering(ev, svc, g, lint, decls).service(
            sname, services, values.scope, values.tpl, suite.internal)
    lint.undeclared_needs(sname, g, services)
    return SuiteServices(services, otel_names, lowered)


class _ServiceLowering:
    """Lowers one service of a suite into `g`."""

    def __init__(self, ev: Evaluator, svc: ir.Service, g: nx.MultiDiGraph, lint: lints.Lints, decls: Declarations):
        self.svc = svc
        self.suite_where = ev.where
        self.ev = ev.at(f"service {svc.name.name} in {ev.where}")  # values traced as the service's
        self.diags = ev.diags
        self.g = g
        self.lints = lint
        self.decls = decls

    def service(self, sname: str, services: dict[str, ir.Service], scope: Scope, tpl: Templates,
                internal: ir.Loc | None = None) -> tuple[str, LoweredService]:
        """Adds the service's node and its `needs` edges; returns its OTel name and what test ordering needs."""
        svc = self.svc
        bodies: list[tuple[ir.ServiceBody, Scope]] = []
        # Set when the image may have come from something already reported (an unknown template, an image
        # value that failed): `has no image` would then be a second error for the same fault.
        image_failed = False
        if svc.template is not None:
            t = self.decls.templates.get(svc.template.name)
            if t is None:
                image_failed = True
                self.diags.error(f"unknown template `{svc.template.name}`", svc.template.loc,
                                 did_you_mean(svc.template.name, self.decls.templates) or
                                 'templates come from imports such as `import "std/redis"`')
            else:
                params = self._bind(t, svc, scope, tpl)
                if self.ev.trace is not None:
                    for param in t.params:
                        if param.name.name in params:
                            self.ev.trace.note(param.name.loc, self.ev.where, params[param.name.name])
                bodies.append((t.body, Scope({**scope.values, **params})))
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
        rebase = functools.partial(resources.from_module, files=self.decls.files, root=self.decls.root)
        for body, sc in bodies:
            text = functools.partial(_text_in, self.ev, sc, tpl)
            value = functools.partial(_value_in, self.ev, sc, tpl)
            for b in body.build:
                build = resources.lower_build(b, text, self.diags, Path(self.decls.root).parent, rebase)
                image_failed = image_failed or build is None
            for v in body.cpus:
                cpus = resources.lower_cpus(v, value, self.diags)
            for v in body.memory:
                memory = resources.lower_memory(v, text, self.diags)
            for g in body.gpus:
                gpus = resources.lower_gpus(g, value, text, self.diags)
            for v in body.image:
                image = self.ev.text(v, sc, tpl, "an image")
                image_failed = image is None
            for a in body.command:
                command, _ = self.ev.argv(a, sc, tpl)
                argv_linted = lints.argv_texts(a, command)
            for v in body.workdir:
                workdir = self.ev.text(v, sc, tpl, "a workdir")
            for pair in body.env:
                env[pair.key] = self.ev.text(pair.value, sc, tpl, f"env {pair.key}") or ""
                linted[pair.key] = (env[pair.key], loc_of(pair.value))
            for p in body.ports:
                declared.append(self._port(p.container, sc, tpl))
                ports.append({"container": declared[-1], "host": self._port(p.host, sc, tpl) if p.host else None})
            for vol in body.volumes:
                source = rebase(self.ev.text(vol.source, sc, tpl, "a volume source"), vol.source)
                self.lints.bind_source(source, loc_of(vol.source), Path(self.decls.root).parent)
                volumes.append({"source": source, "target": self.ev.text(vol.target, sc, tpl, "a volume target"),
                                "read_only": vol.read_only})
                binds.append((source, loc_of(vol.source)))
            ports_written.extend(body.ports)
            needs.extend(body.needs)
            if body.ready:
                probes = [self._probe(p, sc, tpl) for p in body.ready]
                probed = [(d.get("port"), loc_of(p.port)) for d, p in zip(probes, body.ready, strict=True)]
        if image is None and build is None and not image_failed:
            self.diags.error(f"service `{svc.name.name}` has no image", svc.name.loc,
                             'add one: image "crc/busybox:dev", or build it: build "./dir"')
        self.lints.service(svc.name.name, [*linted.values(), *argv_linted], services, declared, probed)
        privileged = [loc for body, _ in bodies for loc in body.privileged]
        host_network = [loc for body, _ in bodies for loc in body.host_network]
        granted = host_access.check(
            svc.name.name, self.decls.root, binds=binds, privileged=privileged, host_network=host_network,
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
        if self.ev.trace is not None:
            self.ev.trace.note(svc.name.loc, self.suite_where, dict(self.g.nodes[nid]))
        needed: set[str] = set()
        for n in needs:
            if n.name == svc.name.name:
                self.diags.error(f"service `{n.name}` needs itself", n.loc)
            elif n.name not in services:
                self.diags.error(f"unknown service `{n.name}`", n.loc, did_you_mean(n.name, services))
            else:
                needed.add(n.name)
                self.g.add_edge(f"{sname}::service:{n.name}", nid, key="needs", kind="needs", loc=plan_loc(n.loc))
        return otel_name, LoweredService(svc.name.name, nid, frozenset(needed), (*(command or ()), *env.values()))

    def _bind(self, t: ir.Template, svc: ir.Service, scope: Scope, tpl: Templates) -> dict[str, Any]:
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
            bound[key] = self.ev.value(arg.value, scope, tpl)
        for p in t.params:
            if p.name.name not in bound:
                if p.default is None:
                    self.diags.error(f"template `{t.name.name}` needs parameter `{p.name.name}`",
                                     svc.template.loc if svc.template else svc.loc,
                                     f"pass it: {t.name.name}({p.name.name} = ...)")
                else:
                    bound[p.name.name] = self.ev.value(p.default, Scope(dict(scope.values)), tpl)
        return bound

    def _port(self, v: ir.Value | None, scope: Scope, tpl: Templates) -> int | None:
        val = self.ev.value(v, scope, tpl) if v is not None else None
        if isinstance(val, str) and val.isdigit():
            val = int(val)
        if not isinstance(val, int) or isinstance(val, bool) or not 0 < val < 65536:
            if val is not None:
                self.diags.error(f"`{val}` is not a port", loc_of(v), "ports are whole numbers from 1 to 65535")
            return None
        return val

    def _probe(self, p: ir.Probe, scope: Scope, tpl: Templates) -> dict[str, Any]:
        out: dict[str, Any] = {"type": p.kind, "within": p.within.seconds if p.within else DEFAULT_PROBE_WITHIN,
                               "loc": plan_loc(p.loc)}
        if p.within is not None and p.within.seconds <= 0:
            self.diags.error("a readiness deadline must be positive", p.within.loc)
        if p.kind in ("tcp", "http"):
            out["port"] = self._port(p.port, scope, tpl)
        if p.kind == "http":
            assert p.path is not None
            path = self.ev.text(p.path, scope, tpl, "an HTTP path") or "/"
            if not path.startswith("/"):
                self.diags.error("an HTTP probe path starts with `/`", loc_of(p.path))
            out["path"] = path
            out["status"] = p.status
        if p.kind == "exec":
            assert p.argv is not None
            out["argv"], _ = self.ev.argv(p.argv, scope, tpl)
        if p.kind == "log":
            if isinstance(p.pattern, ir.Regex):
                self.ev.check_regex(p.pattern)
                out["regex"] = regex(p.pattern)
                out["text"] = None
            else:
                assert p.pattern is not None
                out["text"] = self.ev.text(p.pattern, scope, tpl, "a log pattern") or ""
                out["regex"] = None
        if p.kind == "span":
            assert isinstance(p.pattern, ir.Str)  # the grammar takes a string here
            out["span"] = self.ev.text(p.pattern, scope, tpl, "a span name") or ""
        return out


def _text_in(ev: Evaluator, scope: Scope, tpl: Templates, v: ir.Value, what: str) -> str | None:
    return ev.text(v, scope, tpl, what)


def _value_in(ev: Evaluator, scope: Scope, tpl: Templates, v: ir.Value) -> Any:
    return ev.value(v, scope, tpl)
