"""Span expectations evaluated on a set of collected spans.

Pure logic, no I/O: `evaluate(spans, selectors, constraints)` returns one `CheckResult` per constraint.

Semantics (documented in docs/language.md, "Span expectations"):

* A selector that matches no span fails every constraint that uses it; nothing passes vacuously.
* Unary checks (duration, status, attribute) hold for *every* span the selector matched.
* Relations hold for *every* span on the right-hand side, each with *some* partner on the left
  ("∀B ∃A"): `A before B` means every B has an A that ended no later than B started; `A contains B`
  means every B lies inside the window of some A; `A parent of B` means every B's parent is an A.
* Timestamps are compared with a tolerance (`clock_skew_s`, default 1 ms), so equal timestamps count
  as "before" and spans from different containers (which read the same host clock) are not failed on
  rounding. Spans without timestamps never satisfy a time-based check and the message says so.

Matching indexes spans by name once, so cost grows with the spans a selector matches, not with the
product of spans and selectors; relations sort once and bisect.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from .spans import Span


@dataclass(frozen=True, slots=True)
class AttrMatch:
    """One attribute clause: `op` is a comparison, `~`/`!~` (regex) or `exists`/`missing`."""

    key: str
    op: str
    value: Any = None

    def test(self, attrs: Mapping[str, Any]) -> bool:
        present = self.key in attrs
        if self.op == "exists":
            return present
        if self.op == "missing":
            return not present
        if not present:
            return self.op == "!=" or self.op == "!~"
        actual = attrs[self.key]
        if self.op in ("~", "!~"):
            found = _regex(str(self.value)).search(_text(actual)) is not None
            return found if self.op == "~" else not found
        if self.op == "==":
            return _equal(actual, self.value)
        if self.op == "!=":
            return not _equal(actual, self.value)
        try:
            a, b = float(actual), float(self.value)
        except (TypeError, ValueError):
            return False
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}.get(self.op, False)

    def describe(self) -> str:
        if self.op in ("exists", "missing"):
            return f'attr "{self.key}" {self.op}'
        shown = f"/{self.value}/" if self.op in ("~", "!~") else repr(self.value)
        return f'attr "{self.key}" {self.op} {shown}'


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _equal(actual: Any, expected: Any) -> bool:
    # OTLP carries ints and strings distinctly, but users write `200` for "200" too: compare as data
    # first, then by text so a string attribute equals the number written in the file.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected or _text(actual) == _text(expected)
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return float(actual) == float(expected)
    return actual == expected or _text(actual) == _text(expected)


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@dataclass(frozen=True, slots=True)
class Selector:
    """Which spans a span node stands for. `parent`/`ancestor` name other selectors' ids."""

    id: str
    label: str
    name: str | None = None
    name_is_glob: bool = False
    name_regex: str | None = None
    service: str | None = None
    kind: str | None = None
    status: str | None = None
    attrs: tuple[AttrMatch, ...] = ()
    parent: str | None = None
    ancestor: str | None = None

    def names(self, known: Iterable[str]) -> list[str] | None:
        """The span names this selector can match among `known`; None means any name."""
        if self.name_regex is not None:
            rx = _regex(self.name_regex)
            return [n for n in known if rx.search(n)]
        if self.name is None:
            return None
        if self.name_is_glob:
            return [n for n in known if fnmatch.fnmatchcase(n, self.name)]
        return [self.name]

    def own_match(self, s: Span) -> bool:
        """Every clause except the name and the parent/ancestor relations."""
        if self.service is not None and s.service != self.service:
            return False
        if self.kind is not None and s.kind != self.kind:
            return False
        if self.status is not None and s.status != self.status:
            return False
        return all(a.test(s.attributes) for a in self.attrs)


# ----------------------------------------------------------------------------- constraints


@dataclass(frozen=True, slots=True)
class Count:
    id: str
    where: str
    selector: str
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True, slots=True)
class Duration:
    id: str
    where: str
    selector: str
    min_s: float | None = None
    max_s: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True


@dataclass(frozen=True, slots=True)
class Status:
    id: str
    where: str
    selector: str
    status: str


@dataclass(frozen=True, slots=True)
class Attr:
    id: str
    where: str
    selector: str
    match: AttrMatch


@dataclass(frozen=True, slots=True)
class Precedes:
    """Every `after` span starts no earlier than some `before` span ended, with the gap in bounds."""

    id: str
    where: str
    before: str
    after: str
    min_gap_s: float | None = None
    max_gap_s: float | None = None


@dataclass(frozen=True, slots=True)
class Contains:
    id: str
    where: str
    outer: str
    inner: str


@dataclass(frozen=True, slots=True)
class Parent:
    id: str
    where: str
    parent: str
    child: str


@dataclass(frozen=True, slots=True)
class Hermetic:
    """No outgoing (client/producer) span names a host outside `allowed_hosts` or loopback."""

    id: str
    where: str
    allowed_hosts: frozenset[str]


Constraint = Count | Duration | Status | Attr | Precedes | Contains | Parent | Hermetic


@dataclass(frozen=True, slots=True)
class CheckResult:
    constraint_id: str
    passed: bool
    message: str
    spans: tuple[Span, ...] = field(default=())


# ----------------------------------------------------------------------------- describing spans

_SHOWN = 5


def _fmt_s(seconds: float) -> str:
    if abs(seconds) < 1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.3f}s"


class _Describer:
    """Renders spans as `"name" (service, kind, 12.3ms, at +0.153s, status ok)` relative to the first span."""

    def __init__(self, spans: Sequence[Span]):
        starts = [s.start_ns for s in spans if s.start_ns]
        self.t0 = min(starts) if starts else 0

    def one(self, s: Span) -> str:
        parts = [s.service or "no service", s.kind]
        if s.timed:
            parts.append(_fmt_s(s.duration_ns / 1e9))
            parts.append(f"at +{_fmt_s((s.start_ns - self.t0) / 1e9)}")
        else:
            parts.append("no timestamps")
        parts.append(f"status {s.status}")
        return f'"{s.name}" ({", ".join(parts)})'

    def many(self, spans: Sequence[Span], limit: int = _SHOWN) -> str:
        lines = [f"    {self.one(s)}" for s in spans[:limit]]
        if len(spans) > limit:
            lines.append(f"    … and {len(spans) - limit} more")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- evaluation


class _Index:
    """Spans indexed once per evaluation: by name, and by (trace, span id) for parent lookups."""

    def __init__(self, spans: Sequence[Span], selectors: Sequence[Selector]):
        self.spans = spans
        self.by_name: dict[str, list[Span]] = {}
        self.by_id: dict[tuple[str, str], Span] = {}
        for s in spans:
            self.by_name.setdefault(s.name, []).append(s)
            self.by_id[(s.trace_id, s.span_id)] = s
        self.selectors = {s.id: s for s in selectors}
        self._matched: dict[str, list[Span]] = {}
        self._ids: dict[str, set[tuple[str, str]]] = {}

    def matched(self, sid: str) -> list[Span]:
        got = self._matched.get(sid)
        if got is not None:
            return got
        sel = self.selectors[sid]
        names = sel.names(self.by_name)
        if names is None:
            pool: Iterable[Span] = self.spans
        else:
            pool = (s for n in names for s in self.by_name.get(n, ()))
        out = [s for s in pool if sel.own_match(s)]
        if sel.parent is not None:
            parents = self.ids(sel.parent)
            out = [s for s in out if s.parent_span_id and (s.trace_id, s.parent_span_id) in parents]
        if sel.ancestor is not None:
            ancestors = self.ids(sel.ancestor)
            out = [s for s in out if self._has_ancestor(s, ancestors)]
        self._matched[sid] = out
        return out

    def ids(self, sid: str) -> set[tuple[str, str]]:
        got = self._ids.get(sid)
        if got is None:
            got = self._ids[sid] = {(s.trace_id, s.span_id) for s in self.matched(sid)}
        return got

    def _has_ancestor(self, s: Span, ancestors: set[tuple[str, str]]) -> bool:
        seen = 0
        cur: Span | None = s
        while cur is not None and cur.parent_span_id and seen < 1000:  # bounded: ids can form loops
            key = (cur.trace_id, cur.parent_span_id)
            if key in ancestors:
                return True
            cur = self.by_id.get(key)
            seen += 1
        return False


def evaluate(spans: Sequence[Span], selectors: Sequence[Selector], constraints: Sequence[Any], *,
             clock_skew_s: float = 0.001) -> list[CheckResult]:
    """Check every constraint against `spans`; results come back in the order of `constraints`."""
    idx = _Index(spans, selectors)
    desc = _Describer(spans)
    skew = int(clock_skew_s * 1e9)
    return [_check(c, idx, desc, skew) for c in constraints]


def _label(idx: _Index, sid: str) -> str:
    sel = idx.selectors.get(sid)
    return sel.label if sel else sid


def _nothing(idx: _Index, sid: str, desc: _Describer, cid: str) -> CheckResult:
    return CheckResult(cid, False, f"span `{_label(idx, sid)}` matched no span{_nearby(idx, sid)}")


def _nearby(idx: _Index, sid: str) -> str:
    """When a selector matched nothing, the names that did arrive help the most."""
    if not idx.spans:
        return "; no spans arrived for this test"
    sel = idx.selectors.get(sid)
    names = sorted(idx.by_name)
    if sel is not None and sel.name and not sel.name_is_glob and sel.name in idx.by_name:
        return f'; spans named "{sel.name}" arrived but did not match its other clauses'
    from difflib import get_close_matches

    close = get_close_matches(sel.name, names, n=3, cutoff=0.5) if sel and sel.name else []
    shown = close or names[:8]
    more = "" if close or len(names) <= 8 else f", … ({len(names)} names)"
    prefix = "did you mean" if close else "span names seen"
    return f"; {prefix}: " + ", ".join(f'"{n}"' for n in shown) + more


def _check(c: Any, idx: _Index, desc: _Describer, skew: int) -> CheckResult:
    if isinstance(c, Count):
        got = idx.matched(c.selector)
        n = len(got)
        ok = (c.min is None or n >= c.min) and (c.max is None or n <= c.max)
        if ok:
            return CheckResult(c.id, True, "", tuple(got[:_SHOWN]))
        if c.min is not None and c.max is not None and c.min == c.max:
            want = f"exactly {c.min}"
        elif c.max is None:
            want = f"at least {c.min}"
        elif c.min is None:
            want = f"at most {c.max}"
        else:
            want = f"between {c.min} and {c.max}"
        msg = f"span `{_label(idx, c.selector)}`: expected {want}, found {n}"
        if n == 0:
            msg += _nearby(idx, c.selector)
        else:
            msg += ":\n" + desc.many(got)
        return CheckResult(c.id, False, msg, tuple(got[:_SHOWN]))
    if isinstance(c, Duration | Status | Attr):
        got = idx.matched(c.selector)
        if not got:
            return _nothing(idx, c.selector, desc, c.id)
        bad = [s for s in got if not _unary_ok(c, s)]
        if not bad:
            return CheckResult(c.id, True, "", tuple(got[:_SHOWN]))
        what = _unary_text(c)
        return CheckResult(c.id, False, f"span `{_label(idx, c.selector)}`: {len(bad)} of {len(got)} span(s) "
                           f"do not have {what}:\n" + desc.many(bad), tuple(bad[:_SHOWN]))
    if isinstance(c, Precedes):
        return _precedes(c, idx, desc, skew)
    if isinstance(c, Contains):
        return _contains(c, idx, desc, skew)
    if isinstance(c, Parent):
        parents = idx.matched(c.parent)
        children = idx.matched(c.child)
        if not parents:
            return _nothing(idx, c.parent, desc, c.id)
        if not children:
            return _nothing(idx, c.child, desc, c.id)
        ids = idx.ids(c.parent)
        bad = [s for s in children if not s.parent_span_id or (s.trace_id, s.parent_span_id) not in ids]
        if not bad:
            return CheckResult(c.id, True, "", tuple(children[:_SHOWN]))
        lines = []
        for s in bad[:_SHOWN]:
            p = idx.by_id.get((s.trace_id, s.parent_span_id or ""))
            actual = desc.one(p) if p else ("no parent (a root span)" if not s.parent_span_id
                                           else "a parent span that never arrived")
            lines.append(f"    {desc.one(s)}\n      its parent is {actual}")
        return CheckResult(c.id, False, f"`{_label(idx, c.parent)}` is not the parent of {len(bad)} of "
                           f"{len(children)} `{_label(idx, c.child)}` span(s):\n" + "\n".join(lines),
                           tuple(bad[:_SHOWN]))
    if isinstance(c, Hermetic):
        return _hermetic(c, idx, desc)
    raise TypeError(f"unknown constraint {type(c).__name__}")


def _unary_ok(c: Duration | Status | Attr, s: Span) -> bool:
    if isinstance(c, Status):
        return s.status == c.status
    if isinstance(c, Attr):
        return c.match.test(s.attributes)
    if not s.timed:
        return False
    d = s.duration_ns / 1e9
    if c.min_s is not None and (d < c.min_s if c.min_inclusive else d <= c.min_s):
        return False
    return not (c.max_s is not None and (d > c.max_s if c.max_inclusive else d >= c.max_s))


def _unary_text(c: Duration | Status | Attr) -> str:
    if isinstance(c, Status):
        return f"status {c.status}"
    if isinstance(c, Attr):
        return c.match.describe()
    bounds = []
    if c.min_s is not None:
        bounds.append(f"{'>=' if c.min_inclusive else '>'} {_fmt_s(c.min_s)}")
    if c.max_s is not None:
        bounds.append(f"{'<=' if c.max_inclusive else '<'} {_fmt_s(c.max_s)}")
    return "duration " + " and ".join(bounds)


def _timed(spans: Sequence[Span]) -> tuple[list[Span], list[Span]]:
    timed = [s for s in spans if s.timed]
    return timed, [s for s in spans if not s.timed]


def _precedes(c: Precedes, idx: _Index, desc: _Describer, skew: int) -> CheckResult:
    before, after = idx.matched(c.before), idx.matched(c.after)
    if not before:
        return _nothing(idx, c.before, desc, c.id)
    if not after:
        return _nothing(idx, c.after, desc, c.id)
    a_timed, _ = _timed(before)
    ends = sorted(s.end_ns for s in a_timed)
    lo_gap = int((c.min_gap_s or 0.0) * 1e9)
    hi_gap = None if c.max_gap_s is None else int(c.max_gap_s * 1e9)
    bad: list[Span] = []
    for b in after:
        if not b.timed:
            bad.append(b)
            continue
        # Some A ends in [b.start - hi_gap - skew, b.start - lo_gap + skew].
        latest = b.start_ns - lo_gap + skew
        earliest = None if hi_gap is None else b.start_ns - hi_gap - skew
        i = bisect_right(ends, latest)
        if i == 0 or (earliest is not None and ends[i - 1] < earliest):
            bad.append(b)
    if not bad:
        return CheckResult(c.id, True, "", tuple(before[:1] + after[:1]))
    gap = ""
    if c.min_gap_s is not None or c.max_gap_s is not None:
        gap = " with a gap of " + (f"at least {_fmt_s(c.min_gap_s)}" if c.min_gap_s else "") + \
            (" and " if c.min_gap_s and c.max_gap_s is not None else "") + \
            (f"at most {_fmt_s(c.max_gap_s)}" if c.max_gap_s is not None else "")
    msg = (f"`{_label(idx, c.before)}` does not end before {len(bad)} of {len(after)} "
           f"`{_label(idx, c.after)}` span(s) start{gap}:\n" + desc.many(bad)
           + f"\n  `{_label(idx, c.before)}` spans:\n" + desc.many(sorted(before, key=lambda s: s.start_ns)))
    return CheckResult(c.id, False, msg, tuple(bad[:_SHOWN] + before[:_SHOWN]))


def _contains(c: Contains, idx: _Index, desc: _Describer, skew: int) -> CheckResult:
    outer, inner = idx.matched(c.outer), idx.matched(c.inner)
    if not outer:
        return _nothing(idx, c.outer, desc, c.id)
    if not inner:
        return _nothing(idx, c.inner, desc, c.id)
    o_timed = sorted(_timed(outer)[0], key=lambda s: s.start_ns)
    starts = [s.start_ns for s in o_timed]
    best_end: list[int] = []  # prefix maximum of end times over outers sorted by start
    m = -1
    for s in o_timed:
        m = max(m, s.end_ns)
        best_end.append(m)
    bad: list[Span] = []
    for s in inner:
        if not s.timed:
            bad.append(s)
            continue
        i = bisect_right(starts, s.start_ns + skew)
        if i == 0 or best_end[i - 1] < s.end_ns - skew:
            bad.append(s)
    if not bad:
        return CheckResult(c.id, True, "", tuple(outer[:1] + inner[:1]))
    msg = (f"{len(bad)} of {len(inner)} `{_label(idx, c.inner)}` span(s) lie outside every "
           f"`{_label(idx, c.outer)}` span:\n" + desc.many(bad)
           + f"\n  `{_label(idx, c.outer)}` spans:\n" + desc.many(o_timed))
    return CheckResult(c.id, False, msg, tuple(bad[:_SHOWN] + outer[:_SHOWN]))


_HOST_KEYS = ("server.address", "net.peer.name", "net.sock.peer.name", "peer.service", "http.host")
_URL_KEYS = ("url.full", "http.url")


def hosts_of(s: Span) -> set[str]:
    """The remote hosts an outgoing span names, from the semantic-convention attributes."""
    out: set[str] = set()
    for k in _HOST_KEYS:
        v = s.attributes.get(k)
        if isinstance(v, str) and v:
            out.add(v.split(":")[0] if k == "http.host" else v)
    for k in _URL_KEYS:
        v = s.attributes.get(k)
        if isinstance(v, str) and v:
            host = urlsplit(v).hostname
            if host:
                out.add(host)
    return {h.lower().rstrip(".") for h in out}


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hermetic(c: Hermetic, idx: _Index, desc: _Describer) -> CheckResult:
    allowed = {h.lower() for h in c.allowed_hosts}
    breaches: list[tuple[Span, list[str]]] = []
    for s in idx.spans:
        if s.kind not in ("client", "producer"):
            continue
        outside = sorted(h for h in hosts_of(s) if h not in allowed and not _loopback(h))
        if outside:
            breaches.append((s, outside))
    if not breaches:
        return CheckResult(c.id, True, "")
    hosts = sorted({h for _, hs in breaches for h in hs})
    lines = [f"    {desc.one(s)} -> {', '.join(hs)}" for s, hs in breaches[:_SHOWN]]
    if len(breaches) > _SHOWN:
        lines.append(f"    … and {len(breaches) - _SHOWN} more")
    return CheckResult(c.id, False, f"not hermetic: {len(breaches)} outgoing span(s) reach host(s) outside the "
                       f"suite ({', '.join(hosts)}):\n" + "\n".join(lines)
                       + f"\n  allowed: {', '.join(sorted(allowed)) or 'only the suite services'}",
                       tuple(s for s, _ in breaches[:_SHOWN]))


__all__ = ["Attr", "AttrMatch", "CheckResult", "Constraint", "Contains", "Count", "Duration", "Hermetic",
           "Parent", "Precedes", "Selector", "Status", "evaluate", "hosts_of"]
