"""W3C trace context for steps: every step runs in a trace crc starts for it.

An http step sends the context as the `traceparent` header; exec and run steps get it in their environment
(`TRACEPARENT`, the OpenTelemetry environment carrier), so the spans the system emits on the step's behalf
join the step's trace. Span selectors written `{ in STEP }` match that trace, and crc's own exported trace
has a span with exactly these ids for the step.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The trace crc started for one step run: ids in lowercase hex, as spans carry them."""

    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits: the step's own span, parent of what the system does for it

    @property
    def traceparent(self) -> str:
        """The W3C `traceparent` value (version 00, sampled)."""
        return f"00-{self.trace_id}-{self.span_id}-01"

    def env(self) -> dict[str, str]:
        """The environment carrier for a process started by the step."""
        return {"TRACEPARENT": self.traceparent}

    def to_dict(self) -> dict[str, str]:
        return {"trace_id": self.trace_id, "span_id": self.span_id}

    @classmethod
    def from_dict(cls, d: Any) -> TraceContext | None:
        """The context recorded in a step result's detail, or None when it has none."""
        if isinstance(d, dict) and isinstance(d.get("trace_id"), str) and isinstance(d.get("span_id"), str):
            return cls(d["trace_id"], d["span_id"])
        return None


def new() -> TraceContext:
    """A fresh context; ids are random and never all zeros (which W3C reserves as invalid)."""
    trace_id = secrets.token_hex(16)
    span_id = secrets.token_hex(8)
    while int(trace_id, 16) == 0:  # pragma: no cover - one chance in 2**128
        trace_id = secrets.token_hex(16)
    while int(span_id, 16) == 0:  # pragma: no cover - one chance in 2**64
        span_id = secrets.token_hex(8)
    return TraceContext(trace_id, span_id)


def parse(traceparent: str) -> TraceContext | None:
    """The context of a `traceparent` value, or None when it is not one."""
    parts = traceparent.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        if int(parts[1], 16) == 0 or int(parts[2], 16) == 0:
            return None
    except ValueError:
        return None
    return TraceContext(parts[1].lower(), parts[2].lower())
