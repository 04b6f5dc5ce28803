"""The Plan: a DAG of service, step, assert and span nodes, plus metadata. Plain data throughout.

A Plan holds its nodes (id -> attributes) and edges ((source, target, attributes), keyed by the attribute
`kind`: two spans may be joined by `parent` and `contains` at once, so the graph is a multigraph). The runtime
reads that plain data through `node`, `nodes`, `edges` and `in_edges`; the networkx MultiDiGraph that the
compiler, `crc graph`, replay and tests use is built on first access of `graph`, so loading and running a
Plan never imports networkx (about 100 ms).

A Plan serializes to msgpack canonically (sorted keys, sorted nodes and edges), so the same source and seed
give byte-identical files, and its digest is the SHA-256 of that encoding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    import networkx as nx

    from .diagnostics import Diagnostic

FORMAT = "crc-plan"
FORMAT_VERSION = 1

NODE_KINDS = ("service", "step", "assert", "span")
EDGE_KINDS = ("needs", "after", "then", "checks", "observes", "precedes", "contains", "parent", "ancestor")

Attrs = Mapping[str, Any]
Edge = tuple[str, str, Attrs]  # (source, target, attributes); attributes["kind"] is the edge's kind and key


class PlanFormatError(Exception):
    """A file that is not a Plan this crc can read."""


class _Body:
    """A Plan's nodes and edges, sorted once (the canonical order), with the indexes and the networkx graph
    built on first use. Shared, never changed, by the Plans `dataclasses.replace` makes of one Plan."""

    __slots__ = ("_graph", "_in", "edges", "nodes")

    def __init__(self, nodes: Mapping[str, Attrs], edges: Iterable[Edge], graph: nx.MultiDiGraph | None = None):
        self.nodes: Mapping[str, Attrs] = MappingProxyType(dict(sorted(nodes.items())))
        self.edges: tuple[Edge, ...] = tuple(sorted(edges, key=lambda e: (e[0], e[1], e[2]["kind"])))
        self._graph = graph
        self._in: dict[str, tuple[tuple[str, str], ...]] | None = None

    @classmethod
    def of_graph(cls, g: nx.MultiDiGraph) -> _Body:
        # The graph is kept as it is: the compiler hands over the one it built, so nothing is rebuilt.
        return cls(dict(g.nodes(data=True)), [(u, v, d) for u, v, d in g.edges(data=True)], g)

    def in_edges(self) -> dict[str, tuple[tuple[str, str], ...]]:
        if self._in is None:
            index: dict[str, list[tuple[str, str]]] = {}
            for u, v, d in self.edges:  # sorted by source then kind, as networkx yields a loaded Plan's
                index.setdefault(v, []).append((u, d["kind"]))
            self._in = {v: tuple(es) for v, es in index.items()}
        return self._in

    def graph(self) -> nx.MultiDiGraph:
        if self._graph is None:
            import networkx as nx

            g = nx.MultiDiGraph()
            g.add_nodes_from(self.nodes.items())
            g.add_edges_from((u, v, d["kind"], d) for u, v, d in self.edges)
            self._graph = g
        return self._graph

    def __eq__(self, other: object) -> bool:  # by value (so unhashable, like the dicts it holds)
        return isinstance(other, _Body) and (self.nodes, self.edges) == (other.nodes, other.edges)


@dataclass(frozen=True, init=False)
class Plan:
    """A compiled `.cr` file.

    `meta` holds: source (path as given), source_digest, imports [[path, digest]], crc_version, suites
    [{name, seed, faker_seed, clock, timeout, settle, services, otel_services, env_reads, loc}],
    tests [{suite, name, id, timeout, loc, uses, waits}].
    """

    meta: dict[str, Any]
    _body: _Body = field(repr=False)
    # Warnings the compiler found; not part of the Plan's data (a Plan read from a file has none).
    warnings: tuple[Diagnostic, ...] = field(default=(), compare=False, repr=False)

    def __init__(self, graph: nx.MultiDiGraph | None = None, meta: dict[str, Any] | None = None,
                 warnings: tuple[Diagnostic, ...] = (), *, _body: _Body | None = None) -> None:
        """`Plan(graph, meta)` keeps `graph` as the Plan's graph; `Plan.of` and `Plan.from_data` take plain
        data. (`_body` is how `dataclasses.replace` carries the data, indexes and graph over.)"""
        if _body is None:
            if graph is None:
                raise TypeError("a Plan needs a graph; Plan.of and Plan.from_data take plain nodes and edges")
            _body = _Body.of_graph(graph)
        object.__setattr__(self, "meta", {} if meta is None else meta)
        object.__setattr__(self, "_body", _body)
        object.__setattr__(self, "warnings", warnings)

    @classmethod
    def of(cls, nodes: Mapping[str, Attrs], edges: Iterable[Edge], meta: dict[str, Any] | None = None) -> Plan:
        """A Plan of these nodes and edges, taken as they are (`from_data` checks data read from outside)."""
        return cls(meta=meta, _body=_Body(nodes, edges))

    # ---------------------------------------------------------------- reading (what the runtime uses)
    @property
    def nodes(self) -> Mapping[str, Attrs]:
        """Node id -> attributes, in id order."""
        return self._body.nodes

    @property
    def edges(self) -> tuple[Edge, ...]:
        """Every edge as (source, target, attributes), in (source, target, kind) order."""
        return self._body.edges

    def node(self, n: str) -> Attrs:
        """The attributes of node `n` (KeyError when there is none)."""
        return self._body.nodes[n]

    def in_edges(self, n: str) -> tuple[tuple[str, str], ...]:
        """The edges into `n` as (source, kind), in (source, kind) order."""
        return self._body.in_edges().get(n, ())

    @property
    def graph(self) -> nx.MultiDiGraph:
        """The Plan as a networkx MultiDiGraph (edges keyed by kind), built on first use. Treat it as read-only:
        the Plan's data is what `nodes`, `edges` and `to_data` give."""
        return self._body.graph()

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def nodes_of(self, kind: str) -> list[str]:
        return [n for n, d in self.nodes.items() if d["kind"] == kind]

    def services_of(self, test: Mapping[str, Any]) -> list[str]:
        """The service nodes a test (an entry of `meta["tests"]`) waits for: the services it uses and those no
        test uses; their failure is its failure. Plans from before tests had `waits` give every service of
        the test's suite."""
        if "waits" in test:
            return [f"{test['suite']}::service:{name}" for name in test["waits"]]
        return [n for n, d in self.nodes.items() if d["kind"] == "service" and d["suite"] == test["suite"]]

    # ---------------------------------------------------------------- the file format
    def to_data(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "meta": self.meta,
            "nodes": [[n, d] for n, d in self.nodes.items()],
            "edges": [[u, v, d] for u, v, d in self.edges],
        }

    def to_bytes(self) -> bytes:
        return canonical_bytes(self.to_data())

    @classmethod
    def from_data(cls, data: Any) -> Plan:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise PlanFormatError("not a crc Plan file")
        if data.get("version") != FORMAT_VERSION:
            raise PlanFormatError(f"Plan format version {data.get('version')} is not supported "
                                  f"(this crc reads version {FORMAT_VERSION}); recompile with `crc compile`")
        try:
            _check_structure(data)
            return cls.of({n: attrs for n, attrs in data["nodes"]}, [(u, v, attrs) for u, v, attrs in data["edges"]],
                          data["meta"])
        except (KeyError, TypeError, ValueError) as e:
            raise PlanFormatError(f"damaged Plan file: {e}") from e

    @classmethod
    def from_bytes(cls, blob: bytes) -> Plan:
        try:
            data = msgpack.unpackb(blob, raw=False, strict_map_key=False)
        except Exception as e:  # msgpack raises several unrelated types for damaged input
            raise PlanFormatError(f"damaged Plan file: {e}") from e
        return cls.from_data(data)


def _check_structure(data: dict[str, Any]) -> None:
    """Reject data that decodes but is not shaped like a Plan, so every consumer can trust the shape.

    Raises ValueError (turned into PlanFormatError by the caller) naming the first problem found."""
    meta = data.get("meta")
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise ValueError("`meta` is not a map")
    for key in ("suites", "tests", "imports"):
        if key in meta and not isinstance(meta[key], list):
            raise ValueError(f"meta `{key}` is not a list")
    for key in ("suites", "tests"):
        if not all(isinstance(x, dict) and isinstance(x.get("name"), str) for x in meta.get(key, [])):
            raise ValueError(f"meta `{key}` holds something that is not a map with a name")
    if not all(isinstance(t.get("suite"), str) for t in meta.get("tests", [])):
        raise ValueError("a test in meta `tests` names no suite")
    nodes, edges = data.get("nodes"), data.get("edges")
    if not isinstance(nodes, list) or not isinstance(edges, list):
        raise ValueError("`nodes` and `edges` must be lists")
    ids: set[str] = set()
    for item in nodes:
        if not (isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], dict)):
            raise ValueError(f"a node is not [id, attributes]: {_short(item)}")
        n, attrs = item
        if n in ids:
            raise ValueError(f"node {n!r} appears twice")
        ids.add(n)
        if not all(isinstance(k, str) for k in attrs):
            raise ValueError(f"node {n!r} has an attribute name that is not text")
        if attrs.get("kind") not in NODE_KINDS:
            raise ValueError(f"node {n!r} has no known kind")
        if not isinstance(attrs.get("suite"), str):
            raise ValueError(f"node {n!r} names no suite")
        if not isinstance(attrs.get("label", ""), str) or not isinstance(attrs.get("test"), str | None):
            raise ValueError(f"node {n!r} has a label or a test that is not text")
    keys: set[tuple[str, str, str]] = set()
    for item in edges:
        if not (isinstance(item, list | tuple) and len(item) == 3 and isinstance(item[2], dict)):
            raise ValueError(f"an edge is not [source, target, attributes]: {_short(item)}")
        u, v, attrs = item
        if attrs.get("kind") not in EDGE_KINDS:
            raise ValueError(f"edge {_short(u)} -> {_short(v)} has no known kind")
        if not all(isinstance(attrs.get(k), int | float | None) for k in ("min_gap", "max_gap")):
            raise ValueError(f"edge {_short(u)} -> {_short(v)} has a gap that is not a number")
        if u not in ids or v not in ids:
            raise ValueError(f"edge {_short(u)} -> {_short(v)} joins a node that does not exist")
        if not all(isinstance(k, str) for k in attrs):
            raise ValueError(f"edge {u!r} -> {v!r} has an attribute name that is not text")
        if (u, v, attrs["kind"]) in keys:  # edges are keyed by kind: a second one would replace the first
            raise ValueError(f"edge {u!r} -> {v!r} ({attrs['kind']}) appears twice")
        keys.add((u, v, attrs["kind"]))


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def canonical_bytes(data: Any) -> bytes:
    """msgpack with map keys sorted at every level, so equal data gives equal bytes."""
    return msgpack.packb(_canonical(data), use_bin_type=True)


def _canonical(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _canonical(x[k]) for k in sorted(x, key=str)}
    if isinstance(x, list | tuple):
        return [_canonical(v) for v in x]
    return x
