"""Regex matching with a deadline, for every pattern a `.cr` file or a recording supplies.

Python's `re` cannot be interrupted: a pattern that backtracks catastrophically (`/^(a+)+$/` on `aaaa…a!`)
blocks the event loop, so no test timeout, suite timeout or Ctrl-C can end it. Patterns are matched here
with the `regex` package (the same syntax as `re`, compiled in its `re`-compatible VERSION0 mode), whose
matcher gives up after `MATCH_TIMEOUT`; the engine checks the clock every so many steps, so a match may
overrun that by a few times, never without bound. A pattern that gave up on a text is not tried again on
texts as long or longer in the same process, so checking many spans against it costs one timeout.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import regex

__all__ = ["MATCH_TIMEOUT", "RegexTimeout", "flags_of", "search", "search_regex"]

MATCH_TIMEOUT = 0.5
_FLAGS = {"i": re.I, "m": re.M, "s": re.S, "x": re.X}
_given_up: dict[tuple[str, int], int] = {}  # (pattern, flags) -> the shortest text it gave up on


class RegexTimeout(Exception):
    """A pattern that took too long; the message says which and what to do."""

    def __init__(self, pattern: str, length: int) -> None:
        shown = pattern if len(pattern) <= 60 else pattern[:57] + "..."
        super().__init__(f"regex /{shown}/ gave up after {MATCH_TIMEOUT:g}s on {length} characters "
                         "(it backtracks too much: avoid nested repeats like (a+)+)")


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str, flags: int) -> Any:
    return regex.compile(pattern, int(flags) | int(regex.VERSION0))


def search(pattern: str, text: str, flags: int = 0) -> Any:
    """`re.search(pattern, text, flags)` that raises RegexTimeout instead of running without bound.

    `flags` are `re` flags (their values are the same in `regex`)."""
    key = (pattern, flags)
    if len(text) >= _given_up.get(key, len(text) + 1):
        raise RegexTimeout(pattern, len(text))
    try:
        return _compiled(pattern, flags).search(text, timeout=MATCH_TIMEOUT)
    except TimeoutError:
        _given_up[key] = min(len(text), _given_up.get(key, len(text)))
        raise RegexTimeout(pattern, len(text)) from None


def flags_of(letters: str) -> int:
    """The `re` flags of a `.cr` regex's letters (`/x/is`); the compiler admits only `imsx`."""
    out = 0
    for f in letters:
        out |= _FLAGS.get(f, 0)
    return out


def search_regex(rx: Mapping[str, str], text: str) -> Any:
    """`search` with a regex in the Plan's form (`{"pattern", "flags"}`), the one form every reader takes."""
    return search(rx["pattern"], text, flags_of(rx["flags"]))


def search_bytes(rx: Mapping[str, str], data: Any, size: int) -> Any:
    """`search_regex` over bytes (`data`: bytes or an mmap of `size` bytes, a spilled stream): the pattern
    matches the UTF-8 bytes (so `.`, `\\w` and `i` work on bytes, ASCII-wise). The deadline grows with the
    size: MATCH_TIMEOUT per 8 MiB, so a stream far past the in-memory bound is read whole, never without bound.
    Raises RegexTimeout past it, ValueError when the pattern has no bytes form."""
    pattern, flags = rx["pattern"], flags_of(rx["flags"])
    try:
        compiled = _compiled_bytes(pattern, flags)
    except (regex.error, UnicodeEncodeError) as e:
        raise ValueError(f"regex /{pattern}/ cannot be matched on bytes: {e}") from None
    try:
        return compiled.search(data, timeout=MATCH_TIMEOUT * max(1.0, size / (8 << 20)))
    except TimeoutError:
        raise RegexTimeout(pattern, size) from None


@functools.lru_cache(maxsize=64)
def _compiled_bytes(pattern: str, flags: int) -> Any:
    return regex.compile(pattern.encode(), int(flags) | int(regex.VERSION0))
