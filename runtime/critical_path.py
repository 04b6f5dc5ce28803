"""The critical path of a run: the chain of nodes that set its wall time, so users know what to speed up or split.

Definition (the classic one of project scheduling): among the chains of nodes that ran, linked by the DAG's
scheduling edges (`needs`, `after`, `checks`, `observes`, `then`: a node waits for its source to finish),
the chain whose nodes' durations add up to the most. No schedule, however parallel, can finish before it;
speeding up anything off it does not shorten the run. Ties go to the chain whose node ids, read in order, come
first, so the answer is deterministic. Nodes that did not run (skipped) are left out; span relation edges
(`precedes`, `contains`, `parent`) order spans, not work, and are left out too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .results import SKIPPED, NodeResult, label_of, node_name
from .scheduler import WAITS

Chain = tuple[str, ...]


@dataclass(frozen=True)
class CriticalPath:
    """The chain (node ids, in order), each node's duration in ns, and the run's wall time in ns."""

    nodes: Chain
    durations_ns: tuple[int, ...]
    wall_ns: int

    @property
    def total_ns(self) -> int:
        return sum(self.durations_ns)

    def to_json(self, labels: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The `critical_path` entry of the JSON report."""
        return {"duration_s": self.total_ns / 1e9, "wall_s": self.wall_ns / 1e9,
                "nodes": [{"node": n, "kind": labels.get(n, {}).get("kind"), "label": label_of(labels, n),
                           "suite": labels.get(n, {}).get("suite"), "test": labels.get(n, {}).get("test"),
                           "duration_s": d / 1e9} for n, d in zip(self.nodes, self.durations_ns, strict=True)]}

    def describe(self, labels: Mapping[str, Mapping[str, Any]]) -> str:
        """One line for the terminal summary."""
        suite = labels.get(self.nodes[0], {}).get("suite", "?")

        def one(n: str, d: int) -> str:
            lab = labels.get(n, {})
            test = f" ({lab['test']})" if lab.get("test") else ""
            return f"{node_name(labels, n)}{test} {d / 1e9:.2f}s"

        chain = " -> ".join(one(n, d) for n, d in zip(self.nodes, self.durations_ns, strict=True))
        return f"critical path ({self.total_ns / 1e9:.2f}s of {self.wall_ns / 1e9:.2f}s, suite {suite}): {chain}"


def ran(results: Mapping[str, NodeResult]) -> dict[str, int]:
    """Node -> duration (ns) of every node that ran."""
    return {n: max(0, r.ended_ns - r.started_ns) for n, r in results.items()
            if r.status != SKIPPED and r.started_ns > 0}


def scheduling_edges(edges: Iterable[tuple[str, str, Mapping[str, Any]]]) -> set[tuple[str, str]]:
    """The (source, target) pairs of edges a node waits on."""
    return {(u, v) for u, v, d in edges if d["kind"] in WAITS}


def longest_chain(durations: Mapping[str, int], edges: Iterable[tuple[str, str]]) -> Chain:
    """The chain (over `edges`, between nodes of `durations`) of largest total duration, ties to the chain
    whose ids come first. Dynamic programming over a topological order: the best chain from a node is the node
    followed by the best chain from one of its successors, and comparing two chains that start at the same
    node compares their tails, so the tie rule composes."""
    succ: dict[str, list[str]] = {n: [] for n in durations}
    indeg = dict.fromkeys(durations, 0)
    for u, v in set(edges):
        if u in durations and v in durations and u != v:
            succ[u].append(v)
            indeg[v] += 1
    order, ready = [], sorted(n for n, k in indeg.items() if k == 0)
    while ready:
        n = ready.pop()
        order.append(n)
        for v in succ[n]:
            indeg[v] -= 1
            if indeg[v] == 0:
                ready.append(v)
    best: dict[str, tuple[int, Chain]] = {}
    for n in reversed(order):  # successors first; nodes on a cycle (never in a compiled Plan) are left out
        total, tail = min([(0, ()), *(best[v] for v in succ[n] if v in best)], key=_rank)  # or stop here
        best[n] = (durations[n] + total, (n, *tail))
    if not best:
        return ()
    return min(best.values(), key=_rank)[1]


def _rank(entry: tuple[int, Chain]) -> tuple[int, Chain]:
    return -entry[0], entry[1]


def critical_path(plans: Iterable[Any], results: Mapping[str, NodeResult], wall_ns: int) -> CriticalPath | None:
    """The run's critical path (None when nothing ran)."""
    durations = ran(results)
    edges: set[tuple[str, str]] = set()
    for p in plans:
        edges |= scheduling_edges(p.edges)
    chain = longest_chain(durations, edges)
    if not chain:
        return None
    return CriticalPath(chain, tuple(durations[n] for n in chain), wall_ns)
