"""The stable digest of a run: its observable behaviour with everything incidental normalized away.

Included: each test's verdict; each node's status; each step's exit code, stdout, stderr, timeout flag and
captures; the span forest of each suite (service, name, kind, status, status message, attributes, event names
and attributes, and how spans nest; siblings in a canonical order).
Left out: ids (trace, span, container, run), timestamps, durations, messages (they quote timings), service
logs (they carry timestamps and pids), resource attributes (instance ids, SDK versions) and attributes that
name hosts, processes or ephemeral ports. Strings everywhere have the run id, container ids and names, span and
trace ids and private IPv4 addresses replaced by placeholders. docs/recording.md defines it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from crc.compiler.plan import canonical_bytes

from .masks import NONE, Masks
from .recording import Recording
from .spans import Span

VOLATILE_ATTRS = frozenset({
    "host.name", "host.id", "host.ip", "process.pid", "process.parent_pid", "thread.id", "thread.name",
    "container.id", "container.name", "net.host.name", "net.host.ip", "net.peer.ip", "net.peer.port",
    "net.sock.peer.addr", "net.sock.peer.port", "net.sock.host.addr", "net.sock.host.port",
    "network.peer.address", "network.peer.port", "network.local.address", "network.local.port",
    "client.address", "client.port", "source.address", "source.port",
})
_PRIVATE_IP = re.compile(r"\b(?:10(?:\.\d{1,3}){3}|172\.(?:1[6-9]|2\d|3[01])(?:\.\d{1,3}){2}"
                         r"|192\.168(?:\.\d{1,3}){2})\b")


def normalizer(rec: Recording) -> Callable[[str], str]:
    """Replaces what differs between two runs of the same system by placeholders."""
    ids: dict[str, str] = {}
    for r in rec.nodes:
        cid = r.detail.get("container")
        if isinstance(cid, str) and len(cid) >= 12:
            ids[cid] = ids[cid[:12]] = "<container>"
    for s in rec.spans:
        ids[s.trace_id] = "<trace>"
        ids[s.span_id] = "<span>"
    if rec.run_id:
        ids[rec.run_id] = "<run>"
    ids.pop("", None)
    rx = re.compile("|".join(re.escape(k) for k in sorted(ids, key=len, reverse=True))) if ids else None

    def norm(text: str) -> str:
        if rx is not None:
            text = rx.sub(lambda m: ids[m.group(0)], text)
        return _PRIVATE_IP.sub("<ip>", text)

    return norm


def _value(v: Any, norm: Callable[[str], str]) -> Any:
    if isinstance(v, str):
        return norm(v)
    if isinstance(v, list | tuple):
        return [_value(x, norm) for x in v]
    if isinstance(v, dict):
        return {str(k): _value(x, norm) for k, x in v.items()}
    return v


def span_shape(s: Span, norm: Callable[[str], str], masks: Masks = NONE) -> dict[str, Any]:
    """One span without ids or times (masked attributes as `<masked>`)."""
    return {"service": s.service, "name": norm(s.name), "kind": s.kind, "status": s.status,
            "status_message": norm(s.status_message),
            "attributes": {k: masks.attribute(k, _value(v, norm)) for k, v in sorted(s.attributes.items())
                           if k not in VOLATILE_ATTRS},
            "events": [{"name": norm(e.name), "attributes": _value(e.attributes, norm)} for e in s.events]}


def span_forest(spans: list[Span], norm: Callable[[str], str], masks: Masks = NONE) -> list[dict[str, Any]]:
    """Spans as trees (a span whose parent is absent is a root), siblings in canonical order."""
    present = {(s.trace_id, s.span_id) for s in spans}
    children: dict[tuple[str, str], list[Span]] = {}
    roots: list[Span] = []
    for s in spans:
        key = (s.trace_id, s.parent_span_id or "")
        if s.parent_span_id and key in present and key != (s.trace_id, s.span_id):
            children.setdefault(key, []).append(s)
        else:
            roots.append(s)

    def tree(s: Span, depth: int) -> dict[str, Any]:
        kids = [] if depth > 200 else [tree(c, depth + 1) for c in children.get((s.trace_id, s.span_id), [])]
        return {**span_shape(s, norm, masks), "children": sorted(kids, key=canonical_bytes)}

    return sorted((tree(r, 0) for r in roots), key=canonical_bytes)


def suite_names(rec: Recording) -> dict[str, str]:
    """Span attribution key (resource `crc.suite`) -> suite name."""
    labels = {n: d for p in rec.plans for n, d in p["nodes"]}
    out: dict[str, str] = {}
    for r in rec.nodes:
        key = r.detail.get("suite_key") or (r.detail.get("window") or {}).get("suite_key")
        if key and r.node in labels:
            out[key] = labels[r.node]["suite"]
    return out


def spans_by_suite(rec: Recording) -> dict[str, list[Span]]:
    names = suite_names(rec)
    out: dict[str, list[Span]] = {}
    for s in rec.spans:
        key = s.resource.get("crc.suite")
        out.setdefault(names.get(str(key), "(unattributed)"), []).append(s)
    return out


def masked_normalizer(rec: Recording, extra: Masks = NONE) -> tuple[Callable[[str], str], Masks]:
    """The recording's normalizer followed by its suites' mask rules and `extra` ones (`--mask`)."""
    masks = Masks.of_plans(rec.plans) | extra
    base = normalizer(rec)
    return ((lambda t: masks.text(base(t))) if masks else base), masks


def observe(rec: Recording, extra: Masks = NONE) -> dict[str, Any]:
    """Everything the digest covers, by item: `test:S/T`, `node:ID` and `spans:SUITE` (volatile values
    masked by the suites' and `extra` mask rules)."""
    norm, masks = masked_normalizer(rec, extra)
    out: dict[str, Any] = {}
    for t in rec.tests:
        out[f"test:{t.suite}/{t.name}"] = {"status": t.status}
    for r in rec.nodes:
        item: dict[str, Any] = {"kind": r.kind, "status": r.status}
        o = r.detail.get("output")
        if r.kind == "step" and isinstance(o, Mapping) and o.get("type") == "http":
            item.update(status=o.get("status"), body=norm(masks.output(str(o.get("body", "")))),
                        error=norm(str(o.get("error", ""))), timed_out=bool(o.get("timed_out")),
                        captures=_value(r.detail.get("captures", {}), norm))
        elif r.kind == "step" and isinstance(o, Mapping):
            item.update(exit_code=o.get("exit_code"), stdout=norm(masks.output(str(o.get("stdout", "")))),
                        stderr=norm(str(o.get("stderr", ""))), timed_out=bool(o.get("timed_out")),
                        argv=_value(r.detail.get("argv"), norm), captures=_value(r.detail.get("captures", {}), norm))
        if r.kind == "span":
            item["spans"] = sorted((span_shape(Span.from_dict(s), norm, masks) for s in r.detail.get("spans", [])),
                                   key=canonical_bytes)
        out[f"node:{r.node}"] = item
    for suite, spans in sorted(spans_by_suite(rec).items()):
        out[f"spans:{suite}"] = span_forest(spans, norm, masks)
    return out


def _hash(x: Any) -> str:
    return hashlib.sha256(canonical_bytes(x)).hexdigest()


def item_digests(rec: Recording, extra: Masks = NONE) -> dict[str, str]:
    """A digest per test, node and suite span forest: what flaky detection compares."""
    return {k: _hash(v) for k, v in observe(rec, extra).items()}


def digest(rec: Recording, extra: Masks = NONE) -> str:
    """The run's digest: SHA-256 over the canonical encoding of `observe(rec)`."""
    return _hash(observe(rec, extra))
