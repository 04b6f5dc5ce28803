"""IR values as Plan data: locations, bounds and regexes in the schema's forms (`schema.py`); and Plan values
written back as `.cr` text, for hover and messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import ir
from .schema import Bound, Loc, Regex, regex_text


def plan_loc(loc: ir.Loc) -> Loc:
    """A source location as the Plan keeps it."""
    return {"file": loc.file, "line": loc.line, "col": loc.col, "end_line": loc.end_line, "end_col": loc.end_col}


def ir_loc(loc: Loc) -> ir.Loc:
    """A Plan location back as the IR's, for diagnostics."""
    return ir.Loc(loc["file"], loc["line"], loc["col"], loc["end_line"], loc["end_col"])


def bound(value: float, inclusive: bool) -> Bound:
    """One side of a range, in seconds."""
    return {"value": value, "inclusive": inclusive}


def regex(r: ir.Regex) -> Regex:
    """The Plan's one regex form."""
    return {"pattern": r.pattern, "flags": r.flags}


def value_text(value: Any, limit: int = 400) -> str:
    """A computed value as the `.cr` language would write it."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    elif isinstance(value, dict) and "pattern" in value:
        text = regex_text(value)  # type: ignore[arg-type]
    elif isinstance(value, list):
        text = "[" + ", ".join(value_text(v, limit) for v in value) + "]"
    elif value is None:
        text = "(no value: see the error on it)"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def probe_text(p: Mapping[str, Any]) -> str:
    """A readiness probe as written after `ready` (its `within` left out)."""
    kind = p["type"]
    if kind == "tcp":
        return f"tcp {p.get('port')}"
    if kind == "http":
        return f"http {p.get('port')} {value_text(p.get('path'))}" + (f" status {p['status']}" if p.get(
            "status") else "")
    if kind == "exec":
        return f"exec {value_text(p.get('argv'))}"
    if kind == "log":
        return f"log {regex_text(p['regex'])}" if p["regex"] else f"log {value_text(p['text'])}"
    return f"span {value_text(p.get('span'))}"
