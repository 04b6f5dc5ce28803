"""The JSONPath subset of `.cr` expectations and captures: `$`, `.key`, `["key"]`, `[index]` (negative too).

Enough to point into an API response; no filters or wildcards, so a path names at most one value.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(
    r"""\.([A-Za-z_][A-Za-z0-9_\-]*)|\[(-?\d+)\]"""
    r"""|\[\s*"((?:[^"\\]|\\.)*)"\s*\]|\[\s*'((?:[^'\\]|\\.)*)'\s*\]"""
)


class JsonPathError(ValueError):
    pass


_MISSING = object()


def parse_path(path: str) -> tuple[str | int, ...]:
    """Split a path into keys and indexes; raises JsonPathError with the offending column."""
    if not path.startswith("$"):
        raise JsonPathError("a JSON path starts with `$`, like $.items[0].id")
    pos, out = 1, []
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if not m:
            raise JsonPathError(f"cannot read the JSON path from column {pos + 1}: `{path[pos:]}`")
        key, idx, dq, sq = m.groups()
        out.append(int(idx) if idx is not None else key if key is not None else dq if dq is not None else sq)
        pos = m.end()
    return tuple(out)


def lookup(doc: Any, path: str) -> Any:
    """The value at `path`, or raise KeyError naming the first step that is missing."""
    cur = doc
    walked = "$"
    for part in parse_path(path):
        if isinstance(part, int):
            if not isinstance(cur, list) or not -len(cur) <= part < len(cur):
                raise KeyError(f"{walked} has no index [{part}]")
            cur = cur[part]
            walked += f"[{part}]"
        else:
            if not isinstance(cur, dict) or part not in cur:
                raise KeyError(f"{walked} has no key {part!r}")
            cur = cur[part]
            walked += f".{part}"
    return cur
