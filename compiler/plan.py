"""The Plan: a DAG of service, step, assert and span nodes, with its suites, tests and metadata. Plain data
throughout, every entry typed once in `schema.py` and checked against it when read from outside.

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

from .schema import (
    EDGE_KINDS,
    FORMAT,
    FORMAT_VERSION,
    NODE_KINDS,
    Meta,
    Node,
    SchemaError,
    SuiteEntry,
    TestEntry,
    checker,
    short_repr,
)
from .schema import Edge as EdgeAttrs

if TYPE_CHECKING:
    import networkx as nx

    from .diagnostics import Diagnostic

# The kinds and format constants are the schema's; importers of the Plan find them here too.
__all__ = ["EDGE_KINDS", "FORMAT", "FORMAT_VERSION", "NODE_KINDS", "Plan", "PlanFormatError",
           "canonical_bytes", "check_structure"]

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
    """A compiled `.cr` file: where it came from (`meta`), its suites and tests, its nodes and edges; every
    entry typed in `schema.py`."""

    meta: Meta
    suites: tuple[SuiteEntry, ...]
    tests: tuple[TestEntry, ...]
    _body: _Body = field(repr=False)
    # Warnings the compiler found; not part of the Plan's data (a Plan read from a file has none).
    warnings: tuple[Diagnostic, ...] = field(default=(), compare=False, repr=False)

    def __init__(self, graph: nx.MultiDiGraph | None = None, meta: Meta | None = None,
                 suites: Iterable[SuiteEntry] = (), tests: Iterable[TestEntry] = (),
                 warnings: tuple[Diagnostic, ...] = (), *, _body: _Body | None = None) -> None:
        """`Plan(graph, meta, suites, tests)` keeps `graph` as the Plan's graph; `Plan.of` and
        `Plan.from_data` take plain data. (`_body` is how `dataclasses.replace` carries the data, indexes
        and graph over.)"""
        if _body is None:
            if graph is None:
                raise TypeError("a Plan needs a graph; Plan.of and Plan.from_data take plain nodes and edges")
            _body = _Body.of_graph(graph)
        empty: Meta = {"source": "", "source_digest": "", "imports": [], "crc_version": ""}
        object.__setattr__(self, "meta", empty if meta is None else meta)
        object.__setattr__(self, "suites", tuple(suites))
        object.__setattr__(self, "tests", tuple(tests))
        object.__setattr__(self, "_body", _body)
        object.__setattr__(self, "warnings", warnings)

    @classmethod
    def of(cls, nodes: Mapping[str, Attrs], edges: Iterable[Edge], meta: Meta | None = None,
           suites: Iterable[SuiteEntry] = (), tests: Iterable[TestEntry] = ()) -> Plan:
        """A Plan of these nodes and edges, taken as they are (`from_data` checks data read from outside)."""
        return cls(meta=meta, suites=suites, tests=tests, _body=_Body(nodes, edges))

    # ---------------------------------------------------------------- reading (what the runtime uses)
    @property
    def nodes(self) -> Mapping[str, Node]:
        """Node id -> attributes, in id order."""
        return self._body.nodes  # type: ignore[return-value]  # checked against the schema when read

    @property
    def edges(self) -> tuple[Edge, ...]:
        """Every edge as (source, target, attributes), in (source, target, kind) order."""
        return self._body.edges

    def node(self, n: str) -> Node:
        """The attributes of node `n` (KeyError when there is none)."""
        return self._body.nodes[n]  # type: ignore[return-value]

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
        """The SHA-256 of the canonical encoding: equal Plans, equal digests."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def nodes_of(self, kind: str) -> list[str]:
        """The ids of the nodes of one kind, in id order."""
        return [n for n, d in self.nodes.items() if d["kind"] == kind]

    def services_of(self, test: TestEntry) -> list[str]:
        """The service nodes a test waits for: the services it uses and those no test uses; their failure is
        its failure."""
        return list(test["waits"])

    # ---------------------------------------------------------------- the file format
    def to_data(self) -> dict[str, Any]:
        """The Plan as plain data, the shape `schema.py` declares."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "meta": self.meta,
            "suites": list(self.suites),
            "tests": list(self.tests),
            "nodes": [[n, d] for n, d in self.nodes.items()],
            "edges": [[u, v, d] for u, v, d in self.edges],
        }

    def to_bytes(self) -> bytes:
        """The canonical msgpack encoding (the file format)."""
        return canonical_bytes(self.to_data())

    @classmethod
    def from_data(cls, data: Any) -> Plan:
        """A Plan of data read from outside, checked against the schema; PlanFormatError names the problem
        (another format, another version, or damage)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise PlanFormatError("not a crc Plan file")
        if data.get("version") != FORMAT_VERSION:
            raise PlanFormatError(f"this Plan has format version {data.get('version')}, and this crc reads "
                                  f"version {FORMAT_VERSION} only; compile the source again with `crc compile`")
        try:
            check_structure(data)
        except SchemaError as e:
            raise PlanFormatError(f"damaged Plan file: {e}") from e
        return cls.of({n: attrs for n, attrs in data["nodes"]}, [(u, v, attrs) for u, v, attrs in data["edges"]],
                      data["meta"], data["suites"], data["tests"])

    @classmethod
    def from_bytes(cls, blob: bytes) -> Plan:
        """A Plan read from its file format (see `from_data`)."""
        try:
            data = msgpack.unpackb(blob, raw=False, strict_map_key=False)
        except Exception as e:  # msgpack raises several unrelated types for damaged input
            raise PlanFormatError(f"damaged Plan file: {e}") from e
        return cls.from_data(data)


def check_structure(data: dict[str, Any]) -> None:
    """Reject data that decodes but is not shaped like a Plan, so every consumer can trust the shape: each
    entry against its schema type, node ids unique, edges joining existing nodes, ids referring to entries.

    Raises SchemaError naming the first problem found."""
    for key in ("meta", "suites", "tests", "nodes", "edges"):
        if key not in data:
            raise SchemaError(f"`{key}` is missing")
    checker(Meta)(data["meta"], "meta")
    checker(list[SuiteEntry])(data["suites"], "suites")
    checker(list[TestEntry])(data["tests"], "tests")
    nodes, edges = data["nodes"], data["edges"]
    if not isinstance(nodes, list) or not isinstance(edges, list):
        raise SchemaError("`nodes` and `edges` must be lists")
    check_node, check_edge = checker(Node), checker(EdgeAttrs)
    ids: set[str] = set()
    for item in nodes:
        if not (isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise SchemaError(f"a node is not [id, attributes]: {short_repr(item)}")
        n, attrs = item
        if n in ids:
            raise SchemaError(f"node {n!r} appears twice")
        ids.add(n)
        check_node(attrs, f"node {n!r}")
    keys: set[tuple[str, str, str]] = set()
    for item in edges:
        if not (isinstance(item, list | tuple) and len(item) == 3):
            raise SchemaError(f"an edge is not [source, target, attributes]: {short_repr(item)}")
        u, v, attrs = item
        if not (isinstance(u, str) and isinstance(v, str)) or u not in ids or v not in ids:
            raise SchemaError(f"edge {short_repr(u)} -> {short_repr(v)} joins a node that does not exist")
        check_edge(attrs, f"edge {u!r} -> {v!r}")
        if (u, v, attrs["kind"]) in keys:  # edges are keyed by kind: a second one would replace the first
            raise SchemaError(f"edge {u!r} -> {v!r} ({attrs['kind']}) appears twice")
        keys.add((u, v, attrs["kind"]))
    for t in data["tests"]:
        for n in (*t["nodes"], *t["waits"], *t["uses"]):
            if n not in ids:
                raise SchemaError(f"test {t['id']!r} refers to node {short_repr(n)}, which does not exist")


def canonical_bytes(data: Any) -> bytes:
    """msgpack with map keys sorted at every level, so equal data gives equal bytes."""
    return msgpack.packb(_canonical(data), use_bin_type=True)


def _canonical(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _canonical(x[k]) for k in sorted(x, key=str)}
    if isinstance(x, list | tuple):
        return [_canonical(v) for v in x]
    return x
