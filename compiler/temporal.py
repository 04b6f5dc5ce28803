"""Span time constraints as one simple temporal network: infeasible sets found before anything runs.

Each span's start and end are time points; every bound is a weighted edge `u -> v` with weight `w`, read
"t(v) - t(u) <= w": a duration bound joins a span's start and end, `A before B` (with its gap) joins A's end
and B's start, `A contains B` joins both starts and both ends. The constraints can hold together exactly
when the graph has no negative cycle (Bellman–Ford finds one), and the constraints on such a cycle are the
ones that contradict each other. Times are whole nanoseconds, as OTLP carries them, so a strict bound `< D`
is the inclusive `<= D - 1ns` and the arithmetic is exact.

Relations mean "every B has some A" (∀b ∃a), so a selector's spans are not one pair of points: the A that
witnesses one B may differ from the A that witnesses another. The network is therefore built as the
constraints unfold from each span: every selector that must match a span gets one *instance* (an arbitrary
span of it); an instance of B in `A before B` or `A contains B` gets its own witness instance of A, joined to
it, whose own relations unfold in turn. A selector that matches exactly one span (`count(x) == 1`) has one
instance shared by every use, which is where constraints compose across relations. Duration bounds hold for
every span, so every instance carries them. Unfolding stops where a selector would repeat on its own chain
of witnesses, and after `MAX_INSTANCES`: dropping constraints only relaxes the network, so what it rejects
no trace can satisfy. With every selector matching exactly one span the network is exact: it rejects every
set no trace satisfies. (`parent` and `ancestor` relate spans by ids, not times, and add no edge; the 1 ms
allowance the runtime gives comparisons across services is a measurement allowance this check does not
count on.)
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

MAX_INSTANCES = 500

Kind = Literal["duration", "before", "contains"]


@dataclass(frozen=True)
class Term:
    """One constraint, in whole nanoseconds with inclusive bounds (None: unbounded).

    duration: every span of `a` lasts `lo`..`hi`. before: every span of `b` starts `lo`..`hi` after some span
    of `a` ended (`lo` at least 0). contains: every span of `b` lies within some span of `a`. `ref` is what
    a report names (the caller's handle on the constraint)."""

    kind: Kind
    a: str
    b: str | None = None
    lo: int | None = None
    hi: int | None = None
    ref: Hashable = field(default=None, compare=False)


def ns(seconds: float, *, strict: bool = False, upper: bool = True) -> int:
    """A bound in whole nanoseconds: strict upper bounds lose 1 ns, strict lower bounds gain 1 ns."""
    value = round(seconds * 1e9)
    return value + ((-1 if upper else 1) if strict else 0)


def infeasible(terms: Sequence[Term], nonempty: Iterable[str], unique: Iterable[str]) -> list[Term] | None:
    """The constraints on a negative cycle (in cycle order, each once) when no trace can satisfy `terms`;
    None when the network is consistent.

    `nonempty`: the selectors every passing trace has a span of (a count of at least one, or a relation
    that uses them: a relation fails when either side matches nothing). `unique`: those that match exactly
    one span."""
    import networkx as nx

    net = _Network(terms, set(nonempty), set(unique))
    if not _negative_cycle(net.edges):
        return None
    g = nx.DiGraph()
    for (u, v), (w, _) in net.edges.items():
        g.add_edge(u, v, weight=w)
    source = ("#source",)
    g.add_edges_from((source, n, {"weight": 0}) for n in list(g.nodes))
    try:
        cycle = nx.find_negative_cycle(g, source)
    except nx.NetworkXError:  # no negative cycle
        return None
    out: list[Term] = []
    for u, v in pairwise(cycle):
        t = net.edges[(u, v)][1]
        if t is not None and t not in out:
            out.append(t)
    return out


def _negative_cycle(edges: dict[tuple[object, object], tuple[int, Term | None]]) -> bool:
    """Whether the network has a negative cycle: Bellman–Ford from a virtual source joined to every point.
    The networks are small (a few points per selector), and most have none: this plain loop answers that
    several times faster than building a graph; the cycle itself is then found with networkx."""
    dist = {p: 0 for e in edges for p in e}
    for _ in range(len(dist)):
        changed = False
        for (u, v), (w, _t) in edges.items():
            if dist[u] + w < dist[v]:
                dist[v] = dist[u] + w
                changed = True
        if not changed:
            return False
    return True


class _Network:
    """The edges of the unfolded network: (point, point) -> (weight, the Term that gave the tightest one).
    A point is (instance, "s" | "e"); an instance is (selector, n)."""

    def __init__(self, terms: Sequence[Term], nonempty: set[str], unique: set[str]) -> None:
        self.edges: dict[tuple[object, object], tuple[int, Term | None]] = {}
        self.unique = unique
        self.durations: dict[str, list[Term]] = {}
        self.witnesses: dict[str, list[Term]] = {}  # selector B -> relations where B is the "every" side
        for t in terms:
            if t.kind == "duration":
                self.durations.setdefault(t.a, []).append(t)
            else:
                assert t.b is not None
                self.witnesses.setdefault(t.b, []).append(t)
                nonempty |= {t.a, t.b}
        self.count = 0
        self.shared: dict[str, tuple[str, int]] = {}
        for sel in sorted(nonempty):
            self._instance(sel, ())

    def _instance(self, sel: str, chain: tuple[str, ...]) -> tuple[str, int] | None:
        """An instance of `sel` with its durations and its relations' witnesses unfolded; None past the
        size limit."""
        if sel in self.unique and sel in self.shared:
            return self.shared[sel]
        if self.count >= MAX_INSTANCES:
            return None
        self.count += 1
        inst = (sel, self.count)
        if sel in self.unique:
            self.shared[sel] = inst
        s, e = (inst, "s"), (inst, "e")
        self._edge(e, s, 0, None)  # a span ends no earlier than it starts
        for t in self.durations.get(sel, ()):
            if t.hi is not None:
                self._edge(s, e, t.hi, t)  # end - start <= hi
            if t.lo is not None:
                self._edge(e, s, -t.lo, t)  # start - end <= -lo
        for t in self.witnesses.get(sel, ()):
            if t.a not in self.unique and t.a in (*chain, sel):
                continue  # a selector repeating on its own chain: stop (dropping constraints is sound)
            w = self._instance(t.a, (*chain, sel))
            if w is None:
                continue
            ws, we = (w, "s"), (w, "e")
            if t.kind == "before":
                self._edge(s, we, -(t.lo or 0), t)  # a.end - b.start <= -lo
                if t.hi is not None:
                    self._edge(we, s, t.hi, t)  # b.start - a.end <= hi
            else:  # contains
                self._edge(s, ws, 0, t)  # a.start - b.start <= 0
                self._edge(we, e, 0, t)  # b.end - a.end <= 0
        return inst

    def _edge(self, u: object, v: object, w: int, t: Term | None) -> None:
        old = self.edges.get((u, v))
        if old is None or w < old[0]:
            self.edges[(u, v)] = (w, t)
