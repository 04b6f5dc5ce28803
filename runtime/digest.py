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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from crc.compiler.plan import canonical_bytes

from . import spantree
from .masks import NONE, Masks
from .recording import Recording
from .spans import SUITE_KEY, Span

VOLATILE_ATTRS = frozenset({
    "host.name", "host.id", "host.ip", "process.pid", "process.parent_pid", "thread.id", "thread.name",
    "container.id", "container.name", "net.host.name", "net.host.ip", "net.peer.ip", "net.peer.port",
    "net.sock.peer.addr", "net.sock.peer.port", "net.sock.host.addr", "net.sock.host.port",
    "network.peer.address", "network.peer.port", "network.local.address", "network.local.port",
    "client.address", "client.port", "source.address", "source.port",
})
_PRIVATE_IP = re.compile(r"\b(?:10(?:\.\d{1,3}){3}|172\.(?:1[6-9]|2\d|3[01])(?:\.\d{1,3}){2}"
                         r"|192\.168(?:\.\d{1,3}){2})\b")


_HEX_ID = re.compile(r"[0-9a-f]+")
_MAX_ID_LENGTHS = 8  # ids inside a longer hex string are looked for at this many id lengths (real runs have 4)


def normalizer(rec: Recording) -> Callable[[str], str]:
    """Replaces what differs between two runs of the same system by placeholders.

    Linear in the text whatever the number of ids: ids (lowercase hex, as the receiver writes them) are found
    as runs of hex digits and looked up in a table; an id inside a longer run is found by looking up its
    windows at each id length, leftmost and longest first. The run id is replaced as it is."""
    ids: dict[str, str] = {}
    for r in rec.nodes:
        cid = r.detail.get("container")
        if isinstance(cid, str) and len(cid) >= 12:
            ids[cid] = ids[cid[:12]] = "<container>"
    for s in rec.spans:
        ids[s.trace_id] = "<trace>"
        ids[s.span_id] = "<span>"
    hex_ids = {k: v for k, v in ids.items() if _HEX_ID.fullmatch(k)}
    run_id = rec.run_id
    by_length: dict[int, int] = {}
    for k in hex_ids:
        by_length[len(k)] = by_length.get(len(k), 0) + 1
    lengths = sorted(sorted(by_length, key=lambda n: -by_length[n])[:_MAX_ID_LENGTHS], reverse=True)
    rx = re.compile(rf"(?<![0-9a-f])[0-9a-f]{{{min(lengths)},}}") if lengths else None

    def one_run(m: re.Match[str]) -> str:
        tok = m.group(0)
        hit = hex_ids.get(tok)
        if hit is not None:
            return hit
        out: list[str] = []
        i = last = 0
        end = len(tok) - lengths[-1]
        while i <= end:
            for n in lengths:
                v = hex_ids.get(tok[i:i + n]) if i + n <= len(tok) else None
                if v is not None:
                    out += (tok[last:i], v)
                    i = last = i + n
                    break
            else:
                i += 1
        return "".join(out) + tok[last:] if out else tok

    def norm(text: str) -> str:
        if run_id and run_id in text:
            text = text.replace(run_id, "<run>")
        if rx is not None:
            text = rx.sub(one_run, text)
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


def span_tree(spans: Sequence[Span]) -> spantree.Forest:
    """How `spans` nest (runtime/spantree.py): parents by trace id and parent span id."""
    return spantree.forest([(s.trace_id, s.span_id) for s in spans],
                           [(s.trace_id, s.parent_span_id) if s.parent_span_id else None for s in spans])


def span_forest(spans: Sequence[Span], norm: Callable[[str], str], masks: Masks = NONE) -> list[str]:
    """Spans as trees, as the sorted digests of their roots: a span's digest covers its shape, whether it
    lay in a parent loop, and its children's digests sorted (so concurrency does not reorder them). Every span
    counts, however deep or looped; the cost is linear in the spans."""
    f = span_tree(spans)
    digests = [""] * len(spans)
    for i in reversed(f.order):  # children before their parents
        shape = span_shape(spans[i], norm, masks)
        if f.loop[i]:
            shape["parent_loop"] = True
        shape["children"] = sorted(digests[c] for c in f.children[i])
        digests[i] = _hash(shape)
    return sorted(digests[r] for r in f.roots)


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
        key = s.resource.get(SUITE_KEY)
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
