"""Reading plain data (msgpack recordings, JSON reports) into crc's types: each field checked for its type, so a
damaged or crafted file is refused naming the field, instead of failing later deep inside a report or a check.

Every function raises `TypeError` naming the key; readers turn that into their own error (RecordingError,
ReportInputError) and exit 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Attribute values nest (OTLP arrays and key-value lists); deeper than this is refused, so that whatever
# walks a value (the digest, the canonical encoding, reports) never meets Python's recursion limit.
MAX_VALUE_DEPTH = 64

_MISSING = object()


def _get(d: Mapping[str, Any], key: str, default: Any) -> Any:
    if not isinstance(d, Mapping):
        raise TypeError(f"{key}: expected in an object, found a {type(d).__name__}")
    v = d.get(key, default)
    if v is _MISSING:
        raise TypeError(f"{key}: missing")
    return v


def text(d: Mapping[str, Any], key: str, default: Any = _MISSING) -> str:
    """`d[key]`, a string (`default` when absent, if given)."""
    v = _get(d, key, default)
    if not isinstance(v, str):
        raise TypeError(f"{key}: expected a string")
    return v


def opt_text(d: Mapping[str, Any], key: str) -> str | None:
    """`d[key]`, a string or None (absent: None)."""
    v = _get(d, key, None)
    if v is not None and not isinstance(v, str):
        raise TypeError(f"{key}: expected a string")
    return v


def integer(d: Mapping[str, Any], key: str, default: Any = _MISSING) -> int:
    """`d[key]`, a whole number (a float with no fraction is accepted, as JSON writers may give one)."""
    v = _get(d, key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not v.is_integer()):
        raise TypeError(f"{key}: expected an integer")
    return int(v)


def number(d: Mapping[str, Any], key: str, default: Any = _MISSING) -> float:
    """`d[key]`, a finite number."""
    v = _get(d, key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v or v in (float("inf"), float("-inf")):
        raise TypeError(f"{key}: expected a finite number")
    return float(v)


def mapping(d: Mapping[str, Any], key: str, default: Any = _MISSING) -> dict[str, Any]:
    """`d[key]`, a map with string keys (a copy)."""
    v = _get(d, key, default)
    if not isinstance(v, Mapping) or not all(isinstance(k, str) for k in v):
        raise TypeError(f"{key}: expected an object with string keys")
    return dict(v)


def items(d: Mapping[str, Any], key: str, default: Any = _MISSING) -> list[Any]:
    """`d[key]`, a list (or tuple)."""
    v = _get(d, key, default)
    if not isinstance(v, list | tuple):
        raise TypeError(f"{key}: expected an array")
    return list(v)


def texts(d: Mapping[str, Any], key: str, default: Any = _MISSING) -> tuple[str, ...]:
    """`d[key]`, a list of strings."""
    out = items(d, key, default)
    if not all(isinstance(x, str) for x in out):
        raise TypeError(f"{key}: expected an array of strings")
    return tuple(out)


def attributes(d: Mapping[str, Any], key: str) -> dict[str, Any]:
    """`d[key]` (absent: {}), a map of attribute values: scalars, lists and maps of them, at most
    MAX_VALUE_DEPTH deep. Checked without recursion."""
    out = mapping(d, key, {})
    todo: list[tuple[Any, int]] = [(v, 1) for v in out.values()]
    while todo:
        v, depth = todo.pop()
        if isinstance(v, str | int | float | bool) or v is None:  # bytes arrive as hex text
            continue
        if depth >= MAX_VALUE_DEPTH:
            raise TypeError(f"{key}: a value nested deeper than {MAX_VALUE_DEPTH} levels")
        if isinstance(v, list | tuple):
            todo.extend((x, depth + 1) for x in v)
        elif isinstance(v, Mapping) and all(isinstance(k, str) for k in v):
            todo.extend((x, depth + 1) for x in v.values())
        else:
            raise TypeError(f"{key}: a value that is not plain data")
    return out
