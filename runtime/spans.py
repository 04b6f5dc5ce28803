"""The normalized span model every part of crc works on.

OTLP payloads (protobuf or JSON, HTTP or gRPC) are normalized into `Span` exactly once, in the receiver;
checks, reports and recordings only ever see this shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Attribute values are plain data: str, bool, int, float, or lists of those.
AttrValue = Any

# The resource attributes that attribute a span to its run and suite: the receiver stamps them on what it
# hears, and a service's SDK is given them in OTEL_RESOURCE_ATTRIBUTES.
RUN_KEY = "crc.run"
SUITE_KEY = "crc.suite"


def stamp(run_id: str, suite_key: str) -> dict[str, str]:
    """The resource attributes of the spans of suite `suite_key` in run `run_id`."""
    return {RUN_KEY: run_id, SUITE_KEY: suite_key}


def stamp_text(run_id: str, suite_key: str) -> str:
    """`stamp` in OTEL_RESOURCE_ATTRIBUTES' form (`k=v,k=v`)."""
    return ",".join(f"{k}={v}" for k, v in stamp(run_id, suite_key).items())


def in_suite(s: Span, run_id: str, suite_key: object) -> bool:
    """True when span `s` was attributed to suite `suite_key` of run `run_id`."""
    return s.resource.get(SUITE_KEY) == suite_key and s.resource.get(RUN_KEY) == run_id


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: dict[str, AttrValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SpanLink:
    trace_id: str
    span_id: str
    attributes: dict[str, AttrValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Span:
    """One finished span. Ids are lowercase hex; times are Unix epoch nanoseconds.

    `start_ns`/`end_ns` are 0 when the sender left them out; checks that need time treat such spans as
    untimed and say so. `service` is the resource's `service.name` ("" when absent).
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str  # "internal" | "server" | "client" | "producer" | "consumer" | "unspecified"
    status: str  # "unset" | "ok" | "error"
    status_message: str
    start_ns: int
    end_ns: int
    service: str
    attributes: dict[str, AttrValue] = field(default_factory=dict)
    resource: dict[str, AttrValue] = field(default_factory=dict)
    scope: str = ""
    events: tuple[SpanEvent, ...] = ()
    links: tuple[SpanLink, ...] = ()
    received_ns: int = 0  # crc's clock when the receiver got it; attribution to tests uses this

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns) if self.start_ns and self.end_ns else 0

    @property
    def timed(self) -> bool:
        return bool(self.start_ns and self.end_ns)

    def attr(self, key: str) -> AttrValue | None:
        """Span attribute, falling back to the resource attribute of the same key."""
        if key in self.attributes:
            return self.attributes[key]
        return self.resource.get(key)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form used by JSON reports and msgpack recordings."""
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "status_message": self.status_message,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "service": self.service,
            "attributes": dict(self.attributes),
            "resource": dict(self.resource),
            "scope": self.scope,
            "events": [{"name": e.name, "time_ns": e.time_ns, "attributes": dict(e.attributes)}
                       for e in self.events],
            "links": [{"trace_id": ln.trace_id, "span_id": ln.span_id, "attributes": dict(ln.attributes)}
                      for ln in self.links],
            "received_ns": self.received_ns,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Span:
        """The span of `to_dict`'s form; `TypeError` names the first field of the wrong type."""
        fast = _plain_span(d)
        if fast is not None:
            return fast
        from . import plaindata as pd

        return cls(
            trace_id=pd.text(d, "trace_id"),
            span_id=pd.text(d, "span_id"),
            parent_span_id=pd.opt_text(d, "parent_span_id"),
            name=pd.text(d, "name"),
            kind=pd.text(d, "kind", "unspecified"),
            status=pd.text(d, "status", "unset"),
            status_message=pd.text(d, "status_message", ""),
            start_ns=pd.integer(d, "start_ns", 0),
            end_ns=pd.integer(d, "end_ns", 0),
            service=pd.text(d, "service", ""),
            attributes=pd.attributes(d, "attributes"),
            resource=pd.attributes(d, "resource"),
            scope=pd.text(d, "scope", ""),
            events=tuple(SpanEvent(pd.text(e, "name"), pd.integer(e, "time_ns"), pd.attributes(e, "attributes"))
                         for e in pd.items(d, "events", ())),
            links=tuple(SpanLink(pd.text(x, "trace_id"), pd.text(x, "span_id"), pd.attributes(x, "attributes"))
                        for x in pd.items(d, "links", ())),
            received_ns=pd.integer(d, "received_ns", 0),
        )


_SCALARS = frozenset([str, int, float, bool, type(None)])
_SEQUENCES = (list, tuple)


def _flat(m: Any) -> bool:
    """A map of text keys to scalar values (as `plaindata.attributes` accepts, nothing nested)."""
    return type(m) is dict and all(type(k) is str and type(v) in _SCALARS for k, v in m.items())


def _plain_span(d: Any) -> Span | None:
    """The span of `d` built at once when every field has exactly the type `to_dict` gives and its attributes
    are flat, as nearly every recorded span is; None sends `d` through `from_dict`'s field-by-field checks,
    which accept the same spans and name what is wrong with the others. (Reading a recording is mostly this.)"""
    if type(d) is not dict:
        return None
    get = d.get
    events, links = get("events", ()), get("links", ())
    if type(events) not in _SEQUENCES or events or type(links) not in _SEQUENCES or links:
        return None
    trace_id, span_id, parent, name = get("trace_id"), get("span_id"), get("parent_span_id"), get("name")
    kind, status, message = get("kind", "unspecified"), get("status", "unset"), get("status_message", "")
    service, scope = get("service", ""), get("scope", "")
    start, end, received = get("start_ns", 0), get("end_ns", 0), get("received_ns", 0)
    attributes, resource = get("attributes", {}), get("resource", {})
    if not (type(trace_id) is str and type(span_id) is str and type(name) is str and type(kind) is str
            and type(status) is str and type(message) is str and type(service) is str and type(scope) is str
            and (parent is None or type(parent) is str) and type(start) is int and type(end) is int
            and type(received) is int and _flat(attributes) and _flat(resource)):
        return None
    return Span(trace_id, span_id, parent, name, kind, status, message, start, end, service, dict(attributes),
                dict(resource), scope, (), (), received)
