"""IR printed as surface text, for the labels of nodes and the texts of constraints (`expect` lines as
written, normalized)."""

from __future__ import annotations

from . import ir
from .parser import escape


def expect_text(c: ir.Compare) -> str:
    s = c.subject
    if s.kind == "count":
        inner = s.target.name if s.target else match_text(s.count_of)
        left = f"count({inner})"
    elif s.kind == "attr":
        left = f'{s.target.name if s.target else ""}.attr["{s.arg.value if s.arg else ""}"]'
    elif s.kind == "path":
        target, fld = s.target.name if s.target else "", s.field.name if s.field else ""
        left = f'{target}.{fld}("{s.arg.value if s.arg else ""}")'
    elif s.kind == "index":
        target, fld = s.target.name if s.target else "", s.field.name if s.field else ""
        left = f'{target}.{fld}["{s.arg.value if s.arg else ""}"]'
    else:
        left = f"{s.target.name if s.target else ''}.{s.field.name if s.field else ''}"
    return f"{left} {c.op} {value_text(c.value)}"


def selector_text(m: ir.SpanMatch) -> str:
    """An inline selector as written (normalized), for the labels of anonymous span nodes."""
    clauses: list[str] = []
    if m.service is not None:
        clauses.append(f'service "{escape(m.service.value)}"')
    if m.kind is not None:
        clauses.append(f"kind {m.kind.name}")
    if m.status is not None:
        clauses.append(f"status {m.status.name}")
    for a in m.attrs:
        tail = a.op if a.value is None else f"{a.op} {value_text(a.value)}"
        clauses.append(f'attr "{escape(a.key.value)}" {tail}')
    for rel in ("parent", "ancestor"):
        ref = getattr(m, rel)
        if ref is not None:
            clauses.append(f"{rel} {ref.name}")
    if m.trace_of is not None:
        clauses.append(f"in {m.trace_of.name}")
    body = "{ " + " ".join(clauses) + " }" if clauses else ""
    name = match_text(m) if m.name is not None else ""
    return " ".join(x for x in (name, body) if x) or "{ }"


def match_text(m: ir.SpanMatch | None) -> str:
    if m is None or m.name is None:
        return "{...}"
    return f'"{m.name.value}"' if isinstance(m.name, ir.Str) else f"/{m.name.pattern}/"


def value_text(v: ir.Value) -> str:
    if isinstance(v, ir.Str):
        return f'"{escape(v.value)}"'
    if isinstance(v, ir.Regex):
        return f"/{v.pattern}/{v.flags}"
    if isinstance(v, ir.Duration):
        return v.text
    if isinstance(v, ir.Ref):
        return v.name
    if isinstance(v, ir.List):
        return "[" + ", ".join(value_text(x) for x in v.items) + "]"
    return str(v.value)
