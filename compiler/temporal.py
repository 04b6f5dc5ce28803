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

The same network gives each selector's feasible window (`windows`): a point for the test's start, which no span
of the test starts before, and shortest paths to and from it bound when the spans can start and end.
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


_FAR = float(2**62)


def ns(seconds: float, *, strict: bool = False, upper: bool = True) -> int:
    """A bound in whole nanoseconds: strict upper bounds lose 1 ns, strict lower bounds gain 1 ns."""
    # Clamped to ±2**62 ns (146 years): a crafted Plan's bound of 1e300 s is finite but has no integer.
    value = round(max(-_FAR, min(_FAR, seconds * 1e9)))
    return value + ((-1 if upper else 1) if strict else 0)


def infeasible(terms: Sequence[Term], nonempty: Iterable[str], unique: Iterable[str]) -> list[Term] | None:
    """The constraints on a negative cycle (in cycle order, each once) when no trace can satisfy `terms`;
    None when the network is consistent.

    `nonempty`: the selectors every passing trace has a span of (a count of at least one, or a relation
    that uses them: a relation fails when either side matches nothing). `unique`: those that match exactly
    one span."""
    net = _Network(terms, set(nonempty), set(unique))
    cycle = _negative_cycle(net.edges)
    if cycle is None:
        return None
    out: list[Term] = []
    for u, v in pairwise([*cycle, cycle[0]]):
        t = net.edges[(u, v)][1]
        if t is not None and t not in out:
            out.append(t)
    return out


@dataclass(frozen=True)
class Window:
    """When the spans of a selector can start and end, in nanoseconds after the test's start: (earliest,
    latest) for each, latest None where nothing bounds it."""

    start: tuple[int, int | None]
    end: tuple[int, int | None]


def windows(terms: Sequence[Term], nonempty: Iterable[str], unique: Iterable[str]) -> dict[str, Window] | None:
    """The feasible window of every selector with an instance in the network (those of `nonempty`, and both
    sides of every relation); None when the constraints cannot all hold.

    A selector's first instance stands for any span of it, so its window holds for every span it matches."""
    net = _Network(terms, set(nonempty), set(unique))
    if _negative_cycle(net.edges) is not None:
        return None
    zero = ("#test-start",)
    edges = [(u, v, w) for (u, v), (w, _t) in net.edges.items()]
    edges += [((inst, "s"), zero, 0) for inst in net.instances]  # start - span.start <= 0
    latest = _distances(edges, zero)  # t(x) - start <= latest[x]
    earliest = _distances([(v, u, w) for u, v, w in edges], zero)  # start - t(x) <= earliest[x]
    out: dict[str, Window] = {}
    for sel, inst in net.primary.items():
        s, e = (inst, "s"), (inst, "e")
        out[sel] = Window((-earliest[s], latest.get(s)), (-earliest[e], latest.get(e)))
    return out


def _distances(edges: list[tuple[object, object, int]], source: object) -> dict[object, int]:
    """Shortest distances from `source` (Bellman–Ford; the network has no negative cycle)."""
    dist: dict[object, int] = {source: 0}
    for _ in range(len(edges) + 1):
        changed = False
        for u, v, w in edges:
            if u in dist and (v not in dist or dist[u] + w < dist[v]):
                dist[v] = dist[u] + w
                changed = True
        if not changed:
            break
    return dist


def _negative_cycle(edges: dict[tuple[object, object], tuple[int, Term | None]]) -> list[object] | None:
    """The points of a negative cycle of the network, in order, or None: Bellman–Ford from a virtual source
    joined to every point (all distances start at 0). A point relaxed in the last pass lies downstream of a
    cycle of the predecessor graph, and every cycle of that graph is negative; walking back from the point
    lands on it. (networkx's find_negative_cycle can return a cycle of weight 0.) The networks are small:
    this plain loop is also several times faster than building a graph."""
    dist = {p: 0 for e in edges for p in e}
    pred: dict[object, object] = {}
    last: object = None
    for _ in range(len(dist) + 1):
        last = None
        for (u, v), (w, _t) in edges.items():
            if dist[u] + w < dist[v]:
                dist[v] = dist[u] + w
                pred[v] = u
                last = v
        if last is None:
            return None
    for _ in range(len(dist)):
        last = pred[last]
    cycle, p = [last], pred[last]
    while p != last:
        cycle.append(p)
        p = pred[p]
    return cycle[::-1]


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
        self.instances: list[tuple[str, int]] = []
        self.primary: dict[str, tuple[str, int]] = {}  # each selector's first instance: any span of it
        for sel in sorted(nonempty):
            inst = self._instance(sel, ())
            if inst is not None:
                self.primary.setdefault(sel, inst)

    def _instance(self, sel: str, chain: tuple[str, ...]) -> tuple[str, int] | None:
        """An instance of `sel` with its durations and its relations' witnesses unfolded; None past the
        size limit."""
        if sel in self.unique and sel in self.shared:
            return self.shared[sel]
        if self.count >= MAX_INSTANCES:
            return None
        self.count += 1
        inst = (sel, self.count)
        self.instances.append(inst)
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
