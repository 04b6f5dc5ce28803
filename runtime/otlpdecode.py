"""OTLP trace payloads -> `crc.runtime.spans.Span`: decoding and normalization, with no I/O.

Pure functions of a request body, so every payload shape is testable without a socket; the receiver
(`crc.runtime.otlp`) only serves, and calls `decode_spans` once per request. protobuf is imported inside the
functions: importing this module stays cheap.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .spans import Span, SpanEvent, SpanLink

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = ["JSON_TYPE", "PROTOBUF_TYPES", "PayloadError", "UnsupportedContentType", "decode_json",
           "decode_protobuf", "decode_spans", "normalize"]

PROTOBUF_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
JSON_TYPE = "application/json"

_KINDS: dict[int, str] = {
    0: "unspecified",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}
_STATUSES: dict[int, str] = {0: "unset", 1: "ok", 2: "error"}


class PayloadError(ValueError):
    """A payload that is not a valid OTLP trace export request."""


class UnsupportedContentType(PayloadError):
    """A body in an encoding OTLP does not define (HTTP answers it 415, not 400)."""


def decode_spans(body: bytes, content_type: str, received_ns: int,
                 stamp: Mapping[str, str] | None = None) -> list[Span]:
    """One OTLP export request body, protobuf or JSON by `content_type`, as `Span`s (see `normalize`).

    Raises `UnsupportedContentType` for another content type and `PayloadError` for a malformed body.
    """
    if content_type == JSON_TYPE:
        request = decode_json(body)
    elif content_type in PROTOBUF_TYPES:
        request = decode_protobuf(body)
    else:
        raise UnsupportedContentType(f"unsupported Content-Type {content_type!r}")
    return normalize(request, received_ns, stamp)


# ---------------------------------------------------------------------------------------------------------
# Normalization (the hot path: keep per-span work to attribute reads and one Span construction)


def _any_value(v: Any) -> Any:
    """AnyValue -> plain Python. Ordered by how often each kind appears in real instrumentation."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "bool_value":
        return v.bool_value
    if which == "double_value":
        return v.double_value
    if which == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return v.bytes_value.hex()
    return None  # an empty AnyValue is legal OTLP and means "no value"


def _attributes(kvs: Any) -> dict[str, Any]:
    """KeyValue list -> dict. Scalars are inlined: a call per attribute is measurable at ~100k spans/s."""
    out: dict[str, Any] = {}
    if not kvs:
        return out
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        if which == "string_value":
            out[kv.key] = v.string_value
        elif which == "int_value":
            out[kv.key] = v.int_value
        elif which == "bool_value":
            out[kv.key] = v.bool_value
        elif which == "double_value":
            out[kv.key] = v.double_value
        else:
            out[kv.key] = _any_value(v)
    return out


def normalize(request: ExportTraceServiceRequest, received_ns: int,
              stamp: Mapping[str, str] | None = None) -> list[Span]:
    """Turn one decoded export request into `Span`s, in payload order, all stamped with `received_ns`;
    `stamp` overrides resource attributes (the listener's `crc.run`/`crc.suite`, whatever the sender said)."""
    out: list[Span] = []
    append = out.append
    kinds = _KINDS
    statuses = _STATUSES
    for rs in request.resource_spans:
        resource = _attributes(rs.resource.attributes)
        if stamp:
            resource.update(stamp)
        service = resource.get("service.name", "")
        if not isinstance(service, str):
            service = str(service)
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for sp in ss.spans:
                parent = sp.parent_span_id
                status = sp.status
                events: tuple[SpanEvent, ...] = ()
                links: tuple[SpanLink, ...] = ()
                if sp.events:
                    events = tuple(
                        SpanEvent(e.name, e.time_unix_nano, _attributes(e.attributes)) for e in sp.events
                    )
                if sp.links:
                    links = tuple(
                        SpanLink(ln.trace_id.hex(), ln.span_id.hex(), _attributes(ln.attributes))
                        for ln in sp.links
                    )
                append(
                    Span(
                        sp.trace_id.hex(),
                        sp.span_id.hex(),
                        parent.hex() if parent else None,
                        sp.name,
                        kinds.get(sp.kind, "unspecified"),
                        statuses.get(status.code, "unset"),
                        status.message,
                        sp.start_time_unix_nano,
                        sp.end_time_unix_nano,
                        service,
                        _attributes(sp.attributes),
                        # Each span gets its own copy: Span is frozen but dicts are not, and one consumer
                        # mutating a shared resource dict would silently change every sibling span.
                        dict(resource),
                        scope,
                        events,
                        links,
                        received_ns,
                    )
                )
    return out


# ---------------------------------------------------------------------------------------------------------
# Decoding


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    """Parse a binary `ExportTraceServiceRequest`; raises `PayloadError` when it is not one."""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise PayloadError(f"malformed protobuf ExportTraceServiceRequest: {exc}") from exc
    return req


_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


def _fix_id(obj: dict[str, Any], key: str) -> None:
    """OTLP/JSON spells ids in hex, proto3 JSON (what json_format reads) in base64: convert hex ids.

    Padded base64 of an 8- or 16-byte id always contains '=', so a hex-looking string is never a valid
    base64 id; that lets us also accept `MessageToJson` output, which keeps base64 ids. Anything else is
    refused here, because json_format's base64 decoder silently drops characters it does not know.
    """
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        return
    if _HEX.fullmatch(value):
        obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
        return
    try:
        base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise PayloadError(f"malformed OTLP/JSON: {key} {value!r} is neither hex nor base64") from exc


def _dicts(value: Any) -> Iterable[dict[str, Any]]:
    if isinstance(value, list):
        return (x for x in value if isinstance(x, dict))
    return ()


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON export request (hex ids, camelCase or snake_case keys, enum names or ints)."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"malformed JSON: {exc}") from exc
    except RecursionError as exc:  # nested AnyValues (or any JSON) deeper than the parser recurses
        raise PayloadError("malformed OTLP/JSON: nested too deeply") from exc
    if not isinstance(doc, dict):
        raise PayloadError("malformed OTLP/JSON: the top level must be an object")
    for rs in _dicts(doc.get("resourceSpans", doc.get("resource_spans"))):
        for ss in _dicts(rs.get("scopeSpans", rs.get("scope_spans"))):
            for sp in _dicts(ss.get("spans")):
                for key in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"):
                    _fix_id(sp, key)
                for ln in _dicts(sp.get("links")):
                    for key in ("traceId", "trace_id", "spanId", "span_id"):
                        _fix_id(ln, key)
    req = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(doc, req, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError,
            OverflowError) as exc:
        raise PayloadError(f"malformed OTLP/JSON: {exc}") from exc
    return req
