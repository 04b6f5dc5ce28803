"""Strings crc takes as written: names, keys, paths. A `{{ ... }}` (or `{% ... %}`) in one is a located error,
never text kept as the literal `{{ ... }}` that a later comparison silently fails (or passes) on.

Everywhere else a string is a template, rendered when the file is compiled (or, when it uses a capture, when
the step runs): values, commands, URLs, span names, selector services and attribute values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import ir
from .diagnostics import Diagnostics

if TYPE_CHECKING:  # the loader asks `holds_template` which import paths it must not follow
    from .loader import Program

_TEMPLATE = re.compile(r"\{\{|\{%")
_WHERE_TEMPLATES_GO = ("templates are rendered in values (env values, commands, URLs, bodies, expected values), "
                       "span names and attribute values")


def holds_template(text: str) -> bool:
    """Whether a string holds what would be a template (`{{` or `{%`)."""
    return _TEMPLATE.search(text) is not None


class _Check:
    def __init__(self, diags: Diagnostics):
        self.diags = diags

    def text(self, text: str, loc: ir.Loc, what: str, help: str = "") -> None:
        if holds_template(text):
            self.diags.error(f"{what} is taken as written: crc does not render `{{{{ ... }}}}` there",
                             loc, help or f"write it out; {_WHERE_TEMPLATES_GO}")

    def string(self, s: ir.Str | None, what: str, help: str = "") -> None:
        if s is not None:
            self.text(s.value, s.loc, what, help)

    def keys(self, pairs: Iterable[ir.EnvPair], what: str) -> None:
        for p in pairs:
            self.text(p.key, p.loc, what)

    def json_keys(self, obj: ir.Value | ir.JsonObject | None) -> None:
        if isinstance(obj, ir.JsonObject):
            for key, v in obj.pairs:
                self.text(key, obj.loc, f"the JSON key `{key}`")
                self.json_keys(v)

    def body(self, b: ir.ServiceBody) -> None:
        self.keys(b.env, "an env name")
        for build in b.build:
            self.keys(build.args, "a build arg name")

    def selector(self, m: ir.SpanMatch | None) -> None:
        for a in m.attrs if m is not None else ():
            self.string(a.key, "an attribute name")

    def item(self, item: ir.TestItem) -> None:
        if isinstance(item, ir.Step):
            self.keys(item.env, "an env name")
            self.keys(item.headers, "a header name")
            for host in item.allow:
                self.string(host, "an allowed host")
            self.json_keys(item.json)
        elif isinstance(item, ir.Capture):
            self.string(item.path, "a JSON path")
            self.string(item.key, "a header name")
        elif isinstance(item, ir.SpanDecl | ir.NoSpan):
            self.selector(item.match)
        elif isinstance(item, ir.Compare):
            what = {"path": "a JSON path", "attr": "an attribute name", "index": "a header name"}
            self.string(item.subject.arg, what.get(item.subject.kind, "a name"))
            self.selector(item.subject.count_of)


def check(prog: Program, diags: Diagnostics) -> None:
    """Reports every literal-only string of the program (the root file and its imports) holding a template."""
    c = _Check(diags)
    assert prog.root is not None
    for mod in [*prog.modules, prog.root]:
        for imp in mod.imports:
            c.string(imp.path, "an import path")
        for t in mod.templates:
            c.body(t.body)
    for suite in prog.root.suites:
        c.string(suite.name, "a suite name")
        for m in suite.masks:
            if isinstance(m.value, ir.Str):
                c.string(m.value, "a masked attribute name" if m.kind == "attr" else "a masked JSON path")
        for svc in suite.services:
            c.body(svc.body)
        for test in suite.tests:
            if not test.params:
                c.string(test.name, "the name of a test without parameters",
                      "a test name is a template only in a parametrised test (`for x in [...]`)")
            for item in test.items:
                c.item(item)
