"""Test ordering: which services each test uses, and the edges that order a suite's tests.

Lowering records what this pass needs (`LoweredService`, `LoweredTest`), so nothing here reads names back out
of node ids. Tests that share a service run one after another, in source order (`then` edges, which wait without
propagating failure); tests whose services are disjoint run concurrently. A test that checks spans by time, or
uses no service, also holds the whole suite, so it never overlaps another test.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx

from . import ir
from .schema import TestEntry
from .values import plan_loc

SUITE_KEY = "#suite"  # held by tests that must run alone


@dataclass(frozen=True, slots=True)
class LoweredService:
    """A service as ordering sees it: the services it `needs`, and the texts (command, env values) that may
    name others as hosts."""

    name: str
    id: str
    needs: frozenset[str]
    texts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LoweredTest:
    """A lowered test: its nodes, first steps (`roots`) and end nodes, the services its steps run in or reach
    (`step_services`), the texts its steps send (argv, env, run-time values) that may name services as hosts,
    the services its `uses` clause names, whether its span checks make it run alone, whether its spans are
    found by its steps' traces, and its span selectors' nodes (what analysis checks)."""

    id: str
    suite: str
    name: str
    timeout: float | None
    loc: ir.Loc
    nodes: list[str]
    roots: list[str]
    ends: list[str]
    step_services: frozenset[str]
    texts: tuple[str, ...]
    uses_clause: frozenset[str]
    spans_alone: bool
    by_trace: bool
    spans: list[str]


def mentions(services: Iterable[str]) -> Callable[[str], set[str]]:
    """Finds service names used as hostnames in a text: whole words, not parts of longer names, in any case
    (hostnames are case-insensitive); gives the services' names as declared."""
    declared = list(services)
    names = {n.lower(): n for n in declared}
    alternatives = "|".join(re.escape(n) for n in sorted(declared, key=len, reverse=True)) or "(?!)"
    rx = re.compile(rf"(?<![A-Za-z0-9_\-])({alternatives})(?![A-Za-z0-9_\-])", re.IGNORECASE)
    return lambda text: {names[m.group(1).lower()] for m in rx.finditer(text)}


def uses(t: LoweredTest, services: Mapping[str, LoweredService], mention: Callable[[str], set[str]]) -> list[str]:
    """The services a test waits for and holds: those its steps run in, those its commands name (a hostname
    such as `http://api:8080/`), those in its `uses` clause, and everything these need or name in their own
    command and env.

    A test that checks spans by time uses every service: it must run alone, and any service may emit what it
    expects."""
    if t.spans_alone:
        return sorted(services)
    used = {n for n in t.uses_clause | t.step_services if n in services}
    for text in t.texts:
        used |= mention(text)
    todo = list(used)
    while todo:  # what the used services need or name in their command and env, transitively
        svc = services[todo.pop()]
        reached = {n for n in svc.needs if n in services}
        for text in svc.texts:
            reached |= mention(text)
        for name in sorted(reached - used):
            used.add(name)
            todo.append(name)
    return sorted(used)


def order(g: nx.MultiDiGraph, tests: Sequence[LoweredTest], services: Mapping[str, LoweredService]
          ) -> list[TestEntry]:
    """Adds the `then` edges between a suite's tests and the `needs` edges from the services each waits for to
    its first steps; returns the tests' entries."""
    mention = mentions(services)
    used = [uses(t, services, mention) for t in tests]
    # A service no test uses is reached in a way no command shows (a host in a config file): every test
    # waits for it and fails with it, but it orders no test.
    unused = set(services).difference(*used)
    last: dict[str, list[str]] = {}  # per key, the end nodes of the last test that held it
    entries: list[TestEntry] = []
    for t, u in zip(tests, used, strict=True):
        keys = [*u, *([SUITE_KEY] if t.spans_alone or not u else [])]
        before: list[list[str]] = []
        for key in keys:
            if key in last and last[key] not in before:
                before.append(last[key])
        for ends in before:
            for s in ends:
                for r in t.roots:
                    g.add_edge(s, r, key="then", kind="then")
        if t.ends:
            for key in keys:
                last[key] = t.ends
        waits = sorted(set(u) | unused)
        for name in waits:
            for r in t.roots:
                g.add_edge(services[name].id, r, key="needs", kind="needs", loc=None)
        entries.append({"id": t.id, "suite": t.suite, "name": t.name, "timeout": t.timeout, "loc": plan_loc(t.loc),
                        "nodes": t.nodes, "uses": [services[n].id for n in u],
                        "waits": [services[n].id for n in waits], "by_trace": t.by_trace})
    return entries
