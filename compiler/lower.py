"""Lowering tests: a test's steps, captures, expectations and span selectors to nodes and edges of the Plan.

The pass's input is a test, its suite's values (`SuiteValues`) and services (`SuiteServices`); its output
(`LoweredTest`) is what ordering and analysis need of the test, so neither reads names back out of node ids."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import networkx as nx
from crc.grammar.keywords import CONSTANTS

from . import ir, lints
from .diagnostics import did_you_mean
from .evaluate import Deferred, Evaluator, Scope, SuiteValues, loc_of, plain
from .ordering import LoweredTest
from .services import Declarations, SuiteServices
from .templates import Templates
from .text import expect_text, selector_text, value_text
from .values import bound, ir_loc, plan_loc, regex

DEFAULT_EVENTUALLY_WITHIN = 10.0


DEFAULT_EVENTUALLY_EVERY = 0.2


STATUSES = CONSTANTS["status"]  # the language's words, declared once in grammar/keywords.py


SPAN_KINDS = CONSTANTS["kind"]


STEP_FIELDS = {"exit": "an exit code", "stdout": "text", "stderr": "text", "duration": "a duration",
               "json": "a JSON value of stdout"}


HTTP_FIELDS = {"status": "the response status code", "body": "the response body as text",
               "headers": 'a response header: step.headers["name"]', "duration": "a duration",
               "json": "a JSON value of the body"}


SPAN_FIELDS = {"duration": "a duration", "status": "ok, error or unset"}


COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")


TEXT_OPS = ("==", "!=", "contains", "not contains", "~", "!~")


def suite_tests(ev: Evaluator, suite: ir.Suite, values: SuiteValues) -> Iterator[ir.Test]:
    """The tests of a suite to lower, in order: parametrised ones expanded, one per combination of values;
    a second test of the same name is reported (as each is reached) and left out."""
    from .params import expand

    def render(name: ir.Str, bound: dict[str, ir.Value]) -> str | None:
        inner = Scope(dict(values.scope.values))
        for k, v in bound.items():
            inner.values[k] = ev.value(v, inner, values.tpl)
        return ev.render(name, inner, values.tpl)

    seen: dict[str, ir.Test] = {}
    for test in [t for written in suite.tests for t in expand(written, ev.diags, render, value_text)]:
        if test.name.value in seen:
            ev.diags.error(f"test \"{test.name.value}\" is declared twice in this suite", test.name.loc,
                           notes=(("first declared", seen[test.name.value].name.loc),))
            continue
        seen[test.name.value] = test
        if test.timeout is not None and test.timeout.seconds <= 0:
            ev.diags.error("a test timeout must be positive", test.timeout.loc,
                           "leave it out: the test then has the suite's time")
        yield test


def lower_test(ev: Evaluator, g: nx.MultiDiGraph, lint: lints.Lints, decls: Declarations, suite: str,
               test: ir.Test, services: SuiteServices, values: SuiteValues) -> LoweredTest:
    """The test lowering pass of one test: adds its nodes and edges to `g`."""
    return _TestLowering(ev, g, lint, decls).lower(suite, test, services.declared, services.otel_names,
                                                   Scope(dict(values.scope.values)), values.tpl)


class _TestLowering:
    """Adds one test's nodes and edges."""

    _test_steps: dict[str, ir.Step]  # the steps of the test being lowered
    _prefix: str  # its node ids' prefix, `SUITE::TEST::`
    _scope: Scope  # span attribute values may use the test's lets and captures
    _tpl: Templates

    def __init__(self, ev: Evaluator, g: nx.MultiDiGraph, lint: lints.Lints, decls: Declarations):
        self.ev = ev
        self.diags = ev.diags
        self.g = g
        self.lints = lint
        self.root = decls.root

    def lower(self, sname: str, test: ir.Test, services: Mapping[str, ir.Service], otel_names: Mapping[str, str],
              scope: Scope, tpl: Templates) -> LoweredTest:
        """Adds a test's nodes and edges; returns what test ordering needs of it."""
        tname = test.name.value
        prefix = self._prefix = f"{sname}::{tname}::"
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
                self.ev.lets([item], scope, tpl)
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
            self._span_node(f"span:{decl.name.name}", sname, tname, decl.name.name, decl.match, decl.loc,
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
                    self._span_node(f"span:#{anon}", sname, tname, f"count({selector_text(subj.count_of)})",
                                    subj.count_of, subj.loc, span_ids, otel_names, implicit_min=False)
                    self._count(sid, item)
                    observers.append(sid)
                    continue
                assert subj.target is not None
                tgt = subj.target.name
                if tgt in spans:
                    self._span_compare(span_ids[tgt], item)
                elif tgt in steps:
                    asserts += 1
                    self._step_assert(f"assert:{asserts}", sname, tname, prefix + f"step:{tgt}", item, scope, tpl)
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
                self._span_node(f"span:#{anon}", sname, tname, f"no span {selector_text(item.match)}", item.match,
                                item.loc, span_ids, otel_names, implicit_min=False)
                node = self.g.nodes[sid]
                node["constraints"].append({"id": f"{sid}/count", "check": "count", "min": 0, "max": 0,
                                            "loc": plan_loc(item.loc), "text": "no span matches",
                                            "implicit": False})
                node["no_span"] = True
                observers.append(sid)
            elif isinstance(item, ir.Hermetic):
                asserts += 1
                aid = prefix + f"assert:{asserts}"
                allow = sorted({self.ev.compile_time(a, scope, tpl, "a host") for a in item.allow} | set(services)
                               | set(otel_names.values()))
                self.g.add_node(aid, kind="assert", suite=sname, test=tname, name=f"assert:{asserts}",
                                label="hermetic", loc=plan_loc(item.loc), check="hermetic", allow=allow)
                observers.append(aid)

        for sid in step_ids:
            _exit_checks_first(self.g, sid)
        # networkx keeps nodes in insertion order: this test's are the last ones added.
        added = list(islice(reversed(self.g._node), len(self.g) - graph_size))[::-1]
        test_nodes = [n for n in added if self.g.nodes[n].get("test") == tname]
        span_nodes = [n for n in test_nodes if self.g.nodes[n]["kind"] == "span"]
        # Span checks (and hermeticity) look at spans that arrive once the test's steps ran.
        sinks = [s for s in step_ids if not any(
            k == "after" and v in step_ids for _, v, k in self.g.out_edges(s, keys=True))]
        for o in observers:
            for s in sinks:
                self.g.add_edge(s, o, key="observes", kind="observes")
        roots = [s for s in step_ids if not any(k == "after" for _, _, k in self.g.in_edges(s, keys=True))]
        mine = set(test_nodes)
        end = [n for n in test_nodes if not any(v in mine for v in self.g.successors(n))]
        # Spans found by the traces of the test's own steps are this test's whatever else runs meanwhile: such a
        # test need not run alone.
        span_observers = [o for o in observers if self.g.nodes[o]["kind"] == "span"]
        by_trace = bool(span_observers) and all(trace_scoped(self.g, o) for o in span_observers)
        spans_alone = bool(observers) and not by_trace
        for n in test.uses:
            if n.name not in services:
                self.diags.error(f"unknown service `{n.name}`", n.loc, did_you_mean(n.name, services)
                                 or "`uses` names services of this suite the test reaches")
        step_services: set[str] = set()
        texts: list[str] = []
        for nid in step_ids:
            d = self.g.nodes[nid]
            if d.get("service") in self.g:  # an unknown service is an error already
                step_services.add(self.g.nodes[d["service"]]["name"])
            # Strings rendered at run time (they use a capture) still hold `let` values: scan those too.
            late = [v for v in d.get("template_values", {}).values() if isinstance(v, str)]
            texts += [*(d.get("argv") or ()), *d.get("env", {}).values(), *late]
        return LoweredTest(f"{sname}::{tname}", sname, tname, test.timeout.seconds if test.timeout else None,
                           test.loc, test_nodes, roots, end, frozenset(step_services), tuple(texts),
                           frozenset(n.name for n in test.uses), spans_alone, by_trace, span_nodes)

    def _step(self, nid: str, sname: str, tname: str, step: ir.Step, services: Mapping[str, ir.Service],
              scope: Scope, tpl: Templates, exit_checked: set[str]) -> set[str]:
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

            more, late = http.lower(self.ev, sname, step, scope, tpl, services, lambda x: isinstance(x, Deferred),
                                    f"{step.name.name}.status" in exit_checked, Path(self.root).parent)
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
            attrs["image"] = self.ev.runtime_free(self.ev.text(step.image, scope, tpl, "an image"), step.image, "image")
        argv, _deferred = self.ev.argv(step.argv, scope, tpl) if step.argv else (None, False)
        env = {p.key: (self.ev.text(p.value, scope, tpl, f"env {p.key}") or "") for p in step.env}
        self.lints.near_miss([*((env[p.key], p.value.loc) for p in step.env), *lints.argv_texts(step.argv, argv)],
                             services)
        attrs["argv"] = argv
        attrs["env"] = dict(sorted(env.items()))
        attrs["workdir"] = self.ev.runtime_free(self.ev.text(step.workdir, scope, tpl, "a workdir"), step.workdir,
                                              "workdir") if step.workdir else None
        # Only these are templates still: everything else was rendered here and must never be rendered again
        # (a value that merely contains `{{`, from env() or fake data, is data).
        attrs["deferred_argv"] = [i for i, x in enumerate(argv or []) if isinstance(x, Deferred)]
        attrs["deferred_env"] = sorted(k for k, x in env.items() if isinstance(x, Deferred))
        late = [x for x in [*(argv or []), *env.values()] if isinstance(x, Deferred)]
        return self._add_step(nid, attrs, late, scope, tpl)

    def _add_step(self, nid: str, attrs: dict[str, Any], runtime_strings: list[str], scope: Scope,
                  tpl: Templates) -> set[str]:
        """Adds a step node whose `runtime_strings` are rendered when it runs; returns the captures they use."""
        used: set[str] = set()
        for s in runtime_strings:
            used |= tpl.names(s) & scope.captures
        attrs["deferred"] = bool(runtime_strings)
        referenced = set().union(*(tpl.names(s) for s in runtime_strings))
        attrs["template_values"] = {k: scope.values[k] for k in sorted(referenced) if k in scope.values}
        self.g.add_node(nid, **plain(attrs))
        return used

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
            self.ev.check_regex(c.regex)
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
            self.ev.check_path(c.path)
            entry.update(field="json", path=c.path.value, regex=None, key=None)
        self.g.nodes[prefix + f"step:{c.step.name}"]["captures"].append(entry)

    def _step_assert(self, name: str, sname: str, tname: str, step_id: str, c: ir.Compare, scope: Scope,
                     tpl: Templates) -> None:
        aid = self._prefix + name
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
        value = self.ev.value(c.value, scope, tpl)
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
            self.diags.error("a duration is compared with a duration", loc_of(c.value), "for example: < 2s")
            return
        if isinstance(value, dict) and set(value) == {"pattern", "flags"} and c.op not in ("~", "!~"):
            self.diags.error("a regex is matched with `~` or `!~`", c.loc)
            return
        if subj.kind == "path":
            assert subj.arg is not None
            self.ev.check_path(subj.arg)
        deferred = isinstance(value, Deferred)
        self.g.add_node(aid, **plain({
            "kind": "assert", "suite": sname, "test": tname, "name": name,
            "label": expect_text(c), "loc": plan_loc(c.loc), "check": "step", "step": step_id, "field": field,
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

    def _span_ref(self, name: ir.Name, span_ids: dict[str, str], steps: dict[str, ir.Step]) -> str | None:
        if name.name in span_ids:
            return span_ids[name.name]
        hint = did_you_mean(name.name, span_ids)
        if name.name in steps:
            hint = f"`{name.name}` is a step; span relations name spans declared with `span NAME = \"...\"`"
        self.diags.error(f"unknown span `{name.name}`", name.loc, hint)
        return None

    def _span_node(self, name: str, sname: str, tname: str, label: str, m: ir.SpanMatch, loc: ir.Loc,
                   span_ids: dict[str, str], otel_names: Mapping[str, str], *, implicit_min: bool) -> None:
        sid = self._prefix + name
        match: dict[str, Any] = {"name": None, "glob": False, "regex": None, "service": None, "kind": None,
                                 "status": None, "attrs": [], "parent": None, "ancestor": None, "trace_of": None}
        if m.trace_of is not None:
            steps = self._test_steps
            if m.trace_of.name not in steps:
                self.diags.error(f"unknown step `{m.trace_of.name}`", m.trace_of.loc,
                                 did_you_mean(m.trace_of.name, steps) or
                                 "`in STEP` names a step of this test: the span is in the trace crc started for it")
            else:
                match["trace_of"] = self._prefix + f"step:{m.trace_of.name}"
        if isinstance(m.name, ir.Str):
            match["name"] = self.ev.compile_time(m.name, self._scope, self._tpl, "a span name")
            match["glob"] = any(ch in match["name"] for ch in "*?[")
        elif isinstance(m.name, ir.Regex):
            self.ev.check_regex(m.name)
            match["regex"] = regex(m.name)
        if m.service is not None:
            known = set(otel_names.values()) | set(otel_names)
            svc = self.ev.compile_time(m.service, self._scope, self._tpl, "a service name")
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
                                 did_you_mean(m.status.name, STATUSES) or f"statuses: {', '.join(STATUSES)}")
            match["status"] = m.status.name
        for a in m.attrs:
            val: Any = None
            if isinstance(a.value, ir.Regex):
                self.ev.check_regex(a.value)
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
        self.g.nodes[sid].update(kind="span", suite=sname, test=tname, name=name, label=label,
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
                     "loc": plan_loc(c.loc), "text": expect_text(c), "implicit": False})

    def _span_compare(self, sid: str, c: ir.Compare) -> None:
        subj = c.subject
        cons = self.g.nodes[sid]["constraints"]
        entry: dict[str, Any] = {"id": f"{sid}@{c.loc.line}:{c.loc.col}", "loc": plan_loc(c.loc),
                                 "text": expect_text(c)}
        if subj.kind == "attr":
            assert subj.arg is not None
            val: Any
            if isinstance(c.value, ir.Regex):
                self.ev.check_regex(c.value)
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

    def _literal(self, v: ir.Value, sid: str) -> Any:
        """An attribute value of span selector `sid`; text that uses captures is kept as a template, and the
        lets it reads are kept on the node."""
        val, reads = self.ev.literal(v, self._scope, self._tpl)
        if reads is not None:
            if sid not in self.g:
                self.g.add_node(sid)
            self.g.nodes[sid].setdefault("template_values", {}).update(reads)
        return val

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


def trace_scoped(g: nx.MultiDiGraph, sid: str) -> bool:
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


def _exit_checks_first(g: nx.MultiDiGraph, step: str) -> None:
    """The real error first: a step's other expectations wait for those on its exit code (an http step's
    status), and are skipped when one fails instead of burying it under failures it explains."""
    checks = [v for _, v, k in g.out_edges(step, keys=True) if k == "checks"]
    first = [a for a in checks if g.nodes[a].get("field") in ("exit", "status")]
    for a in first:
        for b in checks:
            if b not in first:
                g.add_edge(a, b, key="checks", kind="checks")
