"""Analysis passes on the lowered graph: cycles over ordering edges, and span constraints that cannot hold
together (per span, per pair, and as one temporal network over a whole test)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx

from . import ir
from .diagnostics import Diagnostics
from .schema import Bound, Loc
from .temporal import Term, Window, infeasible, ns, windows
from .values import bound, ir_loc


def contradictions(g: nx.MultiDiGraph, diags: Diagnostics, spans: list[str]) -> None:
    """Span constraints of one test (`spans`: its span nodes) that can never hold together, found before
    anything runs: first the rules on one span or one pair (each with its own message), then, when none of
    them fired, the whole test's time constraints as one network (`temporal.py`). Sets each span node's
    `duration` window."""
    errors = len(diags.items)
    # Duration bounds per span: (value, strict) for the lower and the upper bound. A duration is never
    # negative, so the lower bound starts at an inclusive 0.
    bounds: dict[str, tuple[_Bound, _Bound]] = {}
    for sid in spans:
        node = g.nodes[sid]
        lo, hi = _Bound(0.0, False), _Bound(float("inf"), False)
        cmin, cmax = 0, float("inf")
        reported = False
        for c in node.get("constraints", []):
            if c["check"] == "duration":
                if c["min"] is not None:
                    b = _Bound(c["min"]["value"], not c["min"]["inclusive"])
                    lo = max(lo, b, key=lambda x: (x.value, x.strict))  # the tighter lower bound
                if c["max"] is not None:
                    b = _Bound(c["max"]["value"], not c["max"]["inclusive"])
                    hi = min(hi, b, key=lambda x: (x.value, not x.strict))  # the tighter upper bound
                if not reported and not _satisfiable(lo, hi):
                    reported = True  # once per span: later bounds cannot repair it
                    diags.error(f"the duration bounds of span `{node['label']}` contradict each other",
                                ir_loc(c["loc"]), "no span can be that long and that short")
            if c["check"] == "count":
                cmin = max(cmin, c["min"])
                cmax = min(cmax, float("inf") if c["max"] is None else c["max"])
                if cmin > cmax:
                    diags.error(f"the count bounds of span `{node['label']}` contradict each other",
                                ir_loc(c["loc"]))
        bounds[sid] = (lo, hi)
        node["duration"] = {"min": bound(lo.value, not lo.strict) if lo.value > 0 or lo.strict else None,
                            "max": bound(hi.value, not hi.strict) if hi.value != float("inf") else None}
    for u, v, d in [e for sid in spans for e in g.out_edges(sid, data=True)]:
        if not d.get("expected", True):
            continue
        kind = d["kind"]
        if kind == "contains" and u in bounds and v in bounds:
            # The inner span lies within the outer one, so it lasts no longer than the outer's upper bound.
            inner_min, outer_max = bounds[v][0], bounds[u][1]
            if not _satisfiable(inner_min, outer_max):
                diags.error(f"`{g.nodes[u]['label']}` cannot contain `{g.nodes[v]['label']}`: the inner "
                            f"span must last {'more than' if inner_min.strict else 'at least'} "
                            f"{inner_min.value * 1000:g}ms but the outer "
                            f"{'less than' if outer_max.strict else 'at most'} "
                            f"{outer_max.value * 1000:g}ms", ir_loc(d["loc"]))
        if kind == "precedes":
            # A ends before B starts, so neither can contain the other.
            for a, b in ((u, v), (v, u)):
                if g.has_edge(a, b, "contains"):
                    diags.error(f"`{g.nodes[u]['label']}` must end before `{g.nodes[v]['label']}` starts, "
                                "so one cannot contain the other", ir_loc(d["loc"]),
                                notes=(("the containment", ir_loc(g.edges[a, b, "contains"]["loc"])),))
    if len(diags.items) == errors:
        time_network(g, diags, spans)

def check_cycles(g: nx.MultiDiGraph, diags: Diagnostics, root: str) -> None:
    """Cycles across needs/after/precedes/parent edges: such a plan could never finish or hold.

    One cycle is reported, chosen the same way on every run: it starts at the earliest-declared node that
    lies on a cycle and is a shortest cycle through it, following successors in a fixed order."""
    ordering = nx.DiGraph()
    ordering.add_edges_from((u, v, d) for u, v, d in g.edges(data=True)
                            if d["kind"] in ("needs", "after", "precedes", "parent", "ancestor", "then"))
    on_cycle = {n for comp in nx.strongly_connected_components(ordering)
                if len(comp) > 1 or any(ordering.has_edge(n, n) for n in comp) for n in comp}
    if not on_cycle:
        return

    def order(n: str) -> tuple[str, int, int, str]:
        loc = g.nodes[n].get("loc")
        return (loc["file"], loc["line"], loc["col"], n) if loc else ("", 0, 0, n)

    start = min(on_cycle, key=order)
    cycle = _shortest_cycle(ordering, start, order)
    edges = list(zip(cycle, [*cycle[1:], cycle[0]], strict=True))
    labels = " -> ".join([*(g.nodes[n]["label"] for n in cycle), g.nodes[cycle[0]]["label"]])
    kinds = sorted({ordering.edges[e]["kind"] for e in edges})
    loc = next((ordering.edges[e].get("loc") for e in edges if ordering.edges[e].get("loc")), None)
    loc = loc or g.nodes[cycle[0]].get("loc")
    diags.error(f"cycle of {'/'.join(kinds)} edges: {labels}",
                ir_loc(loc) if loc else ir.Loc(root, 1, 1, 1, 2),
                "such a plan can never finish or hold; remove one of these edges")




def _shortest_cycle(g: nx.DiGraph, start: str, order: Any) -> list[str]:
    """The nodes of a shortest cycle through `start` (which lies on one), by a breadth-first search that visits
    successors sorted by `order`, so the answer does not depend on set or hash order."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for n in frontier:
            for m in sorted(g.successors(n), key=order):
                if m == start:
                    path = [n]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1]
                if m not in parent:
                    parent[m] = n
                    nxt.append(m)
        frontier = nxt
    raise AssertionError(f"{start} lies on no cycle")  # pragma: no cover - callers pass a node on a cycle


@dataclass(frozen=True)
class _Bound:
    """One side of a duration range: its value and whether the value itself is excluded (`<`, `>`)."""

    value: float
    strict: bool

def _satisfiable(lo: _Bound, hi: _Bound) -> bool:
    """Whether some duration d satisfies lo (d > or >= lo.value) and hi (d < or <= hi.value)."""
    return lo.value < hi.value or (lo.value == hi.value and not lo.strict and not hi.strict)



def time_network(g: nx.MultiDiGraph, diags: Diagnostics, spans: list[str]) -> None:
    """Reports the constraints of a negative cycle of the test's temporal network: located at the first of
    them in the source, the others as notes."""
    terms, nonempty, unique = _terms(g.nodes, _nx_in_edges(g), spans)
    if not any(t.kind != "duration" for t in terms):
        return  # one span's own bounds: the per-span rule has looked at them
    cycle = infeasible(terms, nonempty, unique)
    if cycle is None:
        return
    refs: list[tuple[Loc, str]] = sorted((t.ref for t in cycle), key=lambda r: _order(r[0]))  # type: ignore[misc]
    (first, first_text), rest = refs[0], refs[1:]
    diags.error(f"these span constraints cannot all hold: `{first_text}` and {len(rest)} more", ir_loc(first),
                "no trace satisfies them together; relax one of them (a selector matching several spans "
                "lets each of them hold through a different one)",
                notes=tuple((f"and `{text}`", ir_loc(loc)) for loc, text in rest))


# The edges into a node as (source, attributes): the networkx graph while compiling, a Plan's edges after.
InEdges = Callable[[str], Iterable[tuple[str, Mapping[str, Any]]]]


def _nx_in_edges(g: nx.MultiDiGraph) -> InEdges:
    return lambda v: ((u, d) for u, _, d in g.in_edges(v, data=True))


def span_windows(nodes: Mapping[str, Mapping[str, Any]], in_edges: InEdges, spans: list[str]
                 ) -> dict[str, Window]:
    """The feasible window of the test's span selectors (`spans`: its span node ids) that every passing run
    has spans of, from its temporal network; none when the network cannot hold (compiling reports that).
    `nodes` and `in_edges` read the graph, so a Plan's windows need no networkx graph."""
    terms, nonempty, unique = _terms(nodes, in_edges, spans)
    return windows(terms, nonempty, unique) or {}


def _terms(nodes: Mapping[str, Mapping[str, Any]], in_edges: InEdges, spans: list[str]
           ) -> tuple[list[Term], list[str], list[str]]:
    """The test's span constraints as network terms; the selectors every passing run has a span of; those
    matching exactly one span."""
    terms: list[Term] = []
    nonempty: list[str] = []
    unique: list[str] = []
    for sid in spans:
        node = nodes[sid]
        counts = [c for c in node["constraints"] if c["check"] == "count"]
        lo = max((c["min"] for c in counts), default=0)
        hi = min((c["max"] for c in counts if c["max"] is not None), default=None)
        if lo >= 1:
            nonempty.append(sid)
            if hi == 1:
                unique.append(sid)
        for c in node["constraints"]:
            if c["check"] == "duration":
                terms.append(Term("duration", sid, lo=_ns(c["min"], upper=False), hi=_ns(c["max"], upper=True),
                                  ref=(c["loc"], c["text"])))
    for sid in spans:
        for u, d in in_edges(sid):
            if not d.get("expected") or d["kind"] not in ("precedes", "contains") or u not in nodes:
                continue
            a, b = nodes[u]["label"], nodes[sid]["label"]
            if d["kind"] == "contains":
                terms.append(Term("contains", u, sid, ref=(d["loc"], f"{a} contains {b}")))
            else:
                text = f"{a} before {b}" + _gap_text(d["min_gap"], d["max_gap"])
                terms.append(Term("before", u, sid, lo=_ns(d["min_gap"], upper=False),
                                  hi=_ns(d["max_gap"], upper=True), ref=(d["loc"], text)))
    return terms, nonempty, unique


def _ns(b: Bound | None, *, upper: bool) -> int | None:
    return None if b is None else ns(b["value"], strict=not b["inclusive"], upper=upper)


def _gap_text(lo: Bound, hi: Bound | None) -> str:
    if not lo["value"] and hi is None:
        return ""
    low = f"{lo['value'] * 1000:g}ms" if lo["value"] else ""
    high = "" if hi is None else f"{hi['value'] * 1000:g}ms"
    return f" gap {low}..{high}"


def _order(loc: Loc) -> tuple[str, int, int]:
    return (loc["file"], loc["line"], loc["col"])
