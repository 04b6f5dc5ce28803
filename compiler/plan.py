"""The Plan: one networkx DAG of service, step, assert and span nodes, plus metadata. Plain data throughout.

The graph is a MultiDiGraph because two spans may be joined by `parent` and `contains` at once.

A Plan serializes to msgpack canonically (sorted keys, sorted nodes and edges), so the same source and seed
give byte-identical files, and its digest is the SHA-256 of that encoding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
import networkx as nx

if TYPE_CHECKING:
    from .diagnostics import Diagnostic

FORMAT = "crc-plan"
FORMAT_VERSION = 1

NODE_KINDS = ("service", "step", "assert", "span")
EDGE_KINDS = ("needs", "after", "then", "checks", "observes", "precedes", "contains", "parent", "ancestor")


class PlanFormatError(Exception):
    """A file that is not a Plan this crc can read."""


@dataclass(frozen=True)
class Plan:
    """A compiled `.cr` file.

    `meta` holds: source (path as given), source_digest, imports [[path, digest]], crc_version, suites
    [{name, seed, faker_seed, clock, timeout, settle}], tests [{suite, name, id, timeout, loc}].
    """

    graph: nx.MultiDiGraph
    meta: dict[str, Any] = field(default_factory=dict)
    # Warnings the compiler found; not part of the Plan's data (a Plan read from a file has none).
    warnings: tuple[Diagnostic, ...] = field(default=(), compare=False, repr=False)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def nodes_of(self, kind: str) -> list[str]:
        return [n for n, d in self.graph.nodes(data=True) if d["kind"] == kind]

    def services_of(self, test: Mapping[str, Any]) -> list[str]:
        """The service nodes a test (an entry of `meta["tests"]`) uses: it waits for them, and their failure
        is its failure. Plans compiled before tests had `uses` give every service of the test's suite."""
        if "uses" in test:
            return [f"{test['suite']}::service:{name}" for name in test["uses"]]
        return [n for n, d in self.graph.nodes(data=True) if d["kind"] == "service" and d["suite"] == test["suite"]]

    def to_data(self) -> dict[str, Any]:
        g = self.graph
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "meta": self.meta,
            "nodes": [[n, g.nodes[n]] for n in sorted(g.nodes)],
            "edges": [[u, v, g.edges[u, v, k]] for u, v, k in sorted(g.edges(keys=True))],
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
            g = nx.MultiDiGraph()
            for n, attrs in data["nodes"]:
                g.add_node(n, **attrs)
            for u, v, attrs in data["edges"]:
                g.add_edge(u, v, key=attrs["kind"], **attrs)
            return cls(g, data["meta"])
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
        if not all(isinstance(x, dict) for x in meta.get(key, [])):
            raise ValueError(f"meta `{key}` holds something that is not a map")
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
        if attrs.get("kind") not in NODE_KINDS:
            raise ValueError(f"node {n!r} has no known kind")
        if not isinstance(attrs.get("suite"), str):
            raise ValueError(f"node {n!r} names no suite")
    for item in edges:
        if not (isinstance(item, list | tuple) and len(item) == 3 and isinstance(item[2], dict)):
            raise ValueError(f"an edge is not [source, target, attributes]: {_short(item)}")
        u, v, attrs = item
        if attrs.get("kind") not in EDGE_KINDS:
            raise ValueError(f"edge {_short(u)} -> {_short(v)} has no known kind")
        if u not in ids or v not in ids:
            raise ValueError(f"edge {_short(u)} -> {_short(v)} joins a node that does not exist")


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
