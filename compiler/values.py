"""IR values as Plan data: locations, bounds and regexes in the schema's forms (`schema.py`)."""

from __future__ import annotations

from . import ir
from .schema import Bound, Loc, Regex


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
