"""Span expectations evaluated on a set of collected spans.

Pure logic, no I/O: `evaluate(spans, selectors, constraints)` returns one `Verdict` per constraint.

Semantics (documented in docs/language.md, "Span expectations"):

* A selector that matches no span fails every constraint that uses it; nothing passes vacuously.
* Unary checks (duration, status, attribute) hold for *every* span the selector matched.
* Relations hold for *every* span on the right-hand side, each with *some* partner on the left
  ("∀B ∃A"): `A before B` means every B has an A that ended no later than B started; `A contains B`
  means every B lies inside the window of some A; `A parent of B` means every B's parent is an A.
* Equal timestamps count as "before". Two spans of one service (one SDK, one clock, one precision) are
  compared exactly; spans of different services with a tolerance (`clock_skew_s`, default 1 ms), so SDKs
  that round their timestamps differently are not failed on rounding. Spans without timestamps never
  satisfy a time-based check and the message says so.

Matching indexes spans by name once, so cost grows with the spans a selector matches, not with the
product of spans and selectors; relations sort once and bisect.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .matching import search
from .options import DEFAULTS
from .results import FAILED, PASSED, Verdict
from .spans import Span


@dataclass(frozen=True, slots=True)
class AttrMatch:
    """One attribute clause: `op` is a comparison, `~`/`!~` (regex) or `exists`/`missing`."""

    key: str
    op: str
    value: Any = None

    def test(self, attrs: Mapping[str, Any]) -> bool:
        """Whether the clause holds for these attributes."""
        present = self.key in attrs
        return self._holds(present, attrs[self.key] if present else None)

    def test_span(self, s: Span) -> bool:
        """Whether the clause holds for a span: its own attributes first, then its resource's (like `Span.attr`)."""
        if self.key in s.attributes:
            return self._holds(True, s.attributes[self.key])
        if self.key in s.resource:
            return self._holds(True, s.resource[self.key])
        return self._holds(False, None)

    def _holds(self, present: bool, actual: Any) -> bool:
        if self.op == "exists":
            return present
        if self.op == "missing":
            return not present
        if not present:
            return self.op == "!=" or self.op == "!~"
        if self.op in ("~", "!~"):
            found = search(str(self.value), _text(actual)) is not None
            return found if self.op == "~" else not found
        if self.op == "==":
            return _equal(actual, self.value)
        if self.op == "!=":
            return not _equal(actual, self.value)
        if isinstance(actual, bool) or isinstance(self.value, bool):
            return False  # true < 2 is a mistake, not a comparison
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
    traces: frozenset[str] | None = None  # `in STEP`: the trace ids crc started for that step (None: any)
    trace_label: str = ""  # the step, for messages

    def names(self, known: Iterable[str]) -> list[str] | None:
        """The span names this selector can match among `known`; None means any name."""
        if self.name_regex is not None:
            return [n for n in known if search(self.name_regex, n)]
        if self.name is None:
            return None
        if self.name_is_glob:
            return [n for n in known if fnmatch.fnmatchcase(n, self.name)]
        return [self.name]

    def own_match(self, s: Span) -> bool:
        """Every clause except the name and the parent/ancestor relations."""
        if self.traces is not None and s.trace_id not in self.traces:
            return False
        if self.service is not None and s.service != self.service:
            return False
        if self.kind is not None and s.kind != self.kind:
            return False
        if self.status is not None and s.status != self.status:
            return False
        return all(a.test_span(s) for a in self.attrs)

    def clauses(self) -> list[tuple[str, Any, Any]]:
        """(description, test, what a span has there) for each clause `own_match` checks, to explain why
        spans did not match."""
        out: list[tuple[str, Any, Any]] = []
        if self.traces is not None:
            traces = self.traces
            out.append((f"in {self.trace_label} (its trace)", lambda s: s.trace_id in traces,
                        lambda s: f"trace {s.trace_id}"))
        if self.service is not None:
            out.append((f'service "{self.service}"', lambda s: s.service == self.service,
                        lambda s: f'service "{s.service}"'))
        if self.kind is not None:
            out.append((f"kind {self.kind}", lambda s: s.kind == self.kind, lambda s: f"kind {s.kind}"))
        if self.status is not None:
            out.append((f"status {self.status}", lambda s: s.status == self.status, lambda s: f"status {s.status}"))
        for a in self.attrs:
            out.append((a.describe(), a.test_span, lambda s, key=a.key: _attr_text(s, key)))
        return out


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


def _verdict(cid: str, passed: bool, message: str, spans: Sequence[Span] = ()) -> Verdict:
    """One constraint's verdict (`id` is the constraint's id)."""
    return Verdict(PASSED if passed else FAILED, message, spans=tuple(spans), id=cid)


# ----------------------------------------------------------------------------- describing spans

_SHOWN = 5


def _fmt_s(seconds: float) -> str:
    if abs(seconds) < 1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.3f}s"


def _same(a: Span, b: Span) -> bool:
    """The same span (a retried export can deliver one span twice, as two equal objects)."""
    return a is b or (a.span_id == b.span_id and a.trace_id == b.trace_id)


def _clock(s: Span) -> Any:
    """Whose clock stamped a span: its service's (spans with no service name each count as their own)."""
    return s.service or ("", s.trace_id, s.span_id)


def _same_clock(a: Span, b: Span) -> bool:
    return _clock(a) == _clock(b)


def _tolerance(a: Span, b: Span, skew: int) -> int:
    """The clock tolerance between two spans: none within one service, `skew` across services."""
    return 0 if _same_clock(a, b) else skew


class _Describer:
    """Renders spans as `"name" (service, kind, 12.3ms, at +0.153s, status ok)` relative to the first span."""

    def __init__(self, spans: Sequence[Span]):
        starts = [s.start_ns for s in spans if s.start_ns]
        self.t0 = min(starts) if starts else 0

    def at(self, t_ns: int) -> str:
        return f"+{_fmt_s((t_ns - self.t0) / 1e9)}"

    def one(self, s: Span) -> str:
        parts = [s.service or "no service", s.kind]
        if s.timed:
            parts.append(_fmt_s(s.duration_ns / 1e9))
            parts.append(f"at {self.at(s.start_ns)}")
        else:
            parts.append("no timestamps")
        parts.append(f"status {s.status}")
        return f'"{s.name}" ({", ".join(parts)})'

    def many(self, spans: Sequence[Span], limit: int = _SHOWN) -> str:
        lines = [f"    {self.one(s)}" for s in spans[:limit]]
        if len(spans) > limit:
            lines.append(f"    … and {len(spans) - limit} more")
        return "\n".join(lines)

    def explained(self, bad: Sequence[tuple[Span, str]], total: int) -> str:
        """Each span with the reason it failed (when there is more to say) on an indented line below it."""
        lines = [f"    {self.one(s)}\n      {why}" if why else f"    {self.one(s)}" for s, why in bad[:_SHOWN]]
        if total > _SHOWN:
            lines.append(f"    … and {total - _SHOWN} more")
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
        self._busy: set[str] = set()

    def named(self, sel: Selector) -> list[Span]:
        """Spans whose name the selector accepts, before any other clause."""
        names = sel.names(self.by_name)
        if names is None:
            return list(self.spans)
        return [s for n in names for s in self.by_name.get(n, ())]

    def matched(self, sid: str) -> list[Span]:
        got = self._matched.get(sid)
        if got is not None:
            return got
        sel = self.selectors.get(sid)
        if sel is None or sid in self._busy:  # unknown, or a parent/ancestor cycle: nothing can match
            return []
        self._busy.add(sid)
        try:
            names = sel.names(self.by_name)
            pool: Iterable[Span] = self.spans if names is None else (
                s for n in names for s in self.by_name.get(n, ()))
            plain = sel.service is None and sel.kind is None and sel.status is None and not sel.attrs \
                and sel.traces is None
            out = list(pool) if plain else [s for s in pool if sel.own_match(s)]
            if sel.parent is not None:
                parents = self.ids(sel.parent)
                out = [s for s in out if s.parent_span_id and (s.trace_id, s.parent_span_id) in parents]
            if sel.ancestor is not None:
                ancestors = self.ids(sel.ancestor)
                has = self._ancestry(ancestors)
                out = [s for s in out if has(s)]
        finally:
            self._busy.discard(sid)
        self._matched[sid] = out
        return out

    def ids(self, sid: str) -> set[tuple[str, str]]:
        got = self._ids.get(sid)
        if got is None:
            got = self._ids[sid] = {(s.trace_id, s.span_id) for s in self.matched(sid)}
        return got

    def _ancestry(self, ancestors: set[tuple[str, str]]) -> Callable[[Span], bool]:
        """Whether a span has one of `ancestors` above it, at any depth: each span's answer is kept, so asking
        for every span costs time linear in the spans (parent ids that loop end the walk: every span of the
        loop was checked on the way)."""
        memo: dict[tuple[str, str], bool] = {}

        def has(s: Span) -> bool:
            walked: list[tuple[str, str]] = []
            on_walk: set[tuple[str, str]] = set()
            cur: Span | None = s
            found = False
            while cur is not None:
                key = (cur.trace_id, cur.span_id)
                own = self.by_id.get(key) is cur  # spans sharing an id: only the one parents resolve to is kept
                if own and key in memo:
                    found = memo[key]
                    break
                if key in on_walk or not cur.parent_span_id:
                    break
                if own:
                    walked.append(key)
                    on_walk.add(key)
                up = (cur.trace_id, cur.parent_span_id)
                if up in ancestors:
                    found = True
                    break
                cur = self.by_id.get(up)
            for key in walked:
                memo[key] = found
            return found

        return has


def evaluate(spans: Sequence[Span], selectors: Sequence[Selector], constraints: Sequence[Any], *,
             clock_skew_s: float = DEFAULTS.clock_skew) -> list[Verdict]:
    """Check every constraint against `spans`; results come back in the order of `constraints`."""
    idx = _Index(spans, selectors)
    desc = _Describer(spans)
    skew = round(clock_skew_s * 1e9)
    return [_check(c, idx, desc, skew) for c in constraints]


def matches(spans: Sequence[Span], selectors: Sequence[Selector]) -> dict[str, list[Span]]:
    """The spans each selector stands for (its parent/ancestor clauses included), for reports that draw them."""
    idx = _Index(spans, selectors)
    return {sel.id: idx.matched(sel.id) for sel in selectors}


def _label(idx: _Index, sid: str) -> str:
    sel = idx.selectors.get(sid)
    return sel.label if sel else sid


def _nothing(idx: _Index, sid: str, cid: str) -> Verdict:
    return _verdict(cid, False, f"span `{_label(idx, sid)}` matched no span{_nearby(idx, sid)}")


def _nearby(idx: _Index, sid: str) -> str:
    """Why a selector matched nothing: which clause ruled out the spans that had its name, or the names seen."""
    if not idx.spans:
        return "; no spans arrived for this test"
    sel = idx.selectors.get(sid)
    if sel is None:
        return ""
    named = idx.named(sel)
    if named:
        if sel.name_regex is not None:
            what = f"{len(named)} span(s) matching /{sel.name_regex}/"
        elif sel.name is None:
            what = f"{len(named)} span(s)"
        else:
            what = f'{len(named)} span(s) {"matching" if sel.name_is_glob else "named"} "{sel.name}"'
        for text, test, has in sel.clauses():
            if not any(test(s) for s in named):
                seen = sorted({has(s) for s in named})
                values = ", ".join(seen[:5]) + (", …" if len(seen) > 5 else "")
                return f"; {what} arrived, but none has {text} (they have: {values})"
        for rel, ref in (("parent", sel.parent), ("ancestor", sel.ancestor)):
            if ref is None:
                continue
            if not idx.matched(ref):
                return f"; {what} arrived, but its {rel} `{_label(idx, ref)}` matched no span"
            own = [s for s in named if sel.own_match(s)]
            if own:
                return f"; {what} arrived, but none has a `{_label(idx, ref)}` span as its {rel}"
        return f"; {what} arrived, but none matches all its clauses at once"
    names = sorted(idx.by_name)
    from difflib import get_close_matches

    close = get_close_matches(sel.name, names, n=3, cutoff=0.5) if sel.name else []
    shown: list[str] = close or names[:8]
    more = "" if close or len(names) <= 8 else f", … ({len(names)} names)"
    prefix = "did you mean" if close else "span names seen"
    return f"; {prefix}: " + ", ".join(f'"{n}"' for n in shown) + more


def _attr_text(s: Span, key: str) -> str:
    if key in s.attributes:
        return f'"{key}" = {s.attributes[key]!r}'
    if key in s.resource:
        return f'"{key}" = {s.resource[key]!r} (resource)'
    return f'no "{key}"'


def _count_text(c: Count) -> str:
    if c.min is not None and c.max is not None and c.min == c.max:
        return "none" if c.max == 0 else f"exactly {c.min}"
    if c.max is None:
        return f"at least {c.min}"
    if not c.min:  # None or 0: no lower bound
        return "none" if c.max == 0 else f"at most {c.max}"
    return f"between {c.min} and {c.max}"


def _check(c: Any, idx: _Index, desc: _Describer, skew: int) -> Verdict:
    if isinstance(c, Count):
        got = idx.matched(c.selector)
        n = len(got)
        ok = (c.min is None or n >= c.min) and (c.max is None or n <= c.max)
        if ok:
            return _verdict(c.id, True, "", tuple(got[:_SHOWN]))
        msg = f"span `{_label(idx, c.selector)}`: expected {_count_text(c)}, found {n}"
        if n == 0:
            msg += _nearby(idx, c.selector)
        else:
            msg += ":\n" + desc.many(got)
        return _verdict(c.id, False, msg, tuple(got[:_SHOWN]))
    if isinstance(c, Duration | Status | Attr):
        got = idx.matched(c.selector)
        if not got:
            return _nothing(idx, c.selector, c.id)
        bad = [s for s in got if not _unary_ok(c, s)]
        if not bad:
            return _verdict(c.id, True, "", tuple(got[:_SHOWN]))
        what = _unary_text(c)
        head = f"span `{_label(idx, c.selector)}`: {len(bad)} of {len(got)} span(s) do not have {what}:\n"
        if isinstance(c, Attr):
            body = desc.explained([(s, f"has {_attr_text(s, c.match.key)}") for s in bad[:_SHOWN]], len(bad))
        elif isinstance(c, Status):
            body = desc.explained([(s, f'status message: "{s.status_message}"' if s.status_message else "")
                                   for s in bad[:_SHOWN]], len(bad))
        else:
            body = desc.many(bad)
        return _verdict(c.id, False, head + body, tuple(bad[:_SHOWN]))
    if isinstance(c, Precedes):
        return _precedes(c, idx, desc, skew)
    if isinstance(c, Contains):
        return _contains(c, idx, desc, skew)
    if isinstance(c, Parent):
        parents = idx.matched(c.parent)
        children = idx.matched(c.child)
        if not parents:
            return _nothing(idx, c.parent, c.id)
        if not children:
            return _nothing(idx, c.child, c.id)
        ids = idx.ids(c.parent)
        bad = [s for s in children if not s.parent_span_id or (s.trace_id, s.parent_span_id) not in ids]
        if not bad:
            return _verdict(c.id, True, "", tuple(children[:_SHOWN]))
        lines = []
        for s in bad[:_SHOWN]:
            p = idx.by_id.get((s.trace_id, s.parent_span_id or ""))
            actual = desc.one(p) if p else ("no parent (a root span)" if not s.parent_span_id
                                           else "a parent span that never arrived")
            lines.append(f"    {desc.one(s)}\n      its parent is {actual}")
        if len(bad) > _SHOWN:
            lines.append(f"    … and {len(bad) - _SHOWN} more")
        return _verdict(c.id, False, f"`{_label(idx, c.parent)}` is not the parent of {len(bad)} of "
                           f"{len(children)} `{_label(idx, c.child)}` span(s):\n" + "\n".join(lines),
                           tuple(bad[:_SHOWN]))
    if isinstance(c, Hermetic):
        return _hermetic(c, idx, desc)
    raise TypeError(f"unknown constraint {type(c).__name__}")


def _unary_ok(c: Duration | Status | Attr, s: Span) -> bool:
    if isinstance(c, Status):
        return s.status == c.status
    if isinstance(c, Attr):
        return c.match.test_span(s)
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


def _gap_text(lo: float | None, hi: float | None) -> str:
    parts = []
    if lo:
        parts.append(f"at least {_fmt_s(lo)}")
    if hi is not None:
        parts.append(f"at most {_fmt_s(hi)}")
    return " with a gap of " + " and ".join(parts) if parts else ""


def _precedes(c: Precedes, idx: _Index, desc: _Describer, skew: int) -> Verdict:
    before, after = idx.matched(c.before), idx.matched(c.after)
    if not before:
        return _nothing(idx, c.before, c.id)
    if not after:
        return _nothing(idx, c.after, c.id)
    a_timed = sorted((s for s in before if s.timed), key=lambda s: s.end_ns)
    ends = [s.end_ns for s in a_timed]
    lo_gap = round((c.min_gap_s or 0.0) * 1e9)
    hi_gap = None if c.max_gap_s is None else round(c.max_gap_s * 1e9)
    a_label = _label(idx, c.before)
    bad: list[tuple[Span, int]] = []  # each failing B with the index of its nearest miss (-2: untimed)
    for b in after:
        if not b.timed:
            bad.append((b, -2))
            continue
        if _some_a_before(b, a_timed, ends, lo_gap, hi_gap, skew):
            continue
        # The nearest miss, for the message: the latest A (not B itself) ending within the widest tolerance.
        i = bisect_right(ends, b.start_ns - lo_gap + skew) - 1
        while i >= 0 and _same(a_timed[i], b):
            i -= 1
        bad.append((b, i))
    if not bad:
        return _verdict(c.id, True, "", tuple(before[:1] + after[:1]))
    # Reasons only for the spans shown: working one out is linear in the `before` spans.
    shown = [(b, "it has no timestamps" if i == -2 else _precedes_why(b, a_timed, i, a_label, lo_gap, hi_gap, desc))
             for b, i in bad[:_SHOWN]]
    msg = (f"`{a_label}` does not end before {len(bad)} of {len(after)} `{_label(idx, c.after)}` span(s) "
           f"start{_gap_text(c.min_gap_s, c.max_gap_s)}:\n" + desc.explained(shown, len(bad))
           + f"\n  `{a_label}` spans:\n" + desc.many(sorted(before, key=lambda s: s.start_ns)))
    return _verdict(c.id, False, msg, tuple([s for s, _ in bad[:_SHOWN]] + before[:_SHOWN]))


def _some_a_before(b: Span, a_timed: list[Span], ends: list[int], lo_gap: int, hi_gap: int | None, skew: int
                   ) -> bool:
    """Whether some A (not B itself, `a_timed` sorted by end) ends in [b.start - hi_gap - t, b.start - lo_gap + t],
    t being the pair's tolerance. Only spans within `skew` of a bound need their own tolerance: the scans below
    stay inside those bands, so the check costs a bisection plus the spans of two `skew`-wide bands."""
    exact = b.start_ns - lo_gap
    low = None if hi_gap is None else b.start_ns - hi_gap
    # Ends at or before the exact bound: the latest such A is the best for the upper bound on the gap.
    i = bisect_right(ends, exact) - 1
    while i >= 0 and _same(a_timed[i], b):
        i -= 1
    if i >= 0:
        if low is None or ends[i] >= low:
            return True
        # It ended too early by the exact measure; across services, up to `skew` too early is fine.
        k = i
        while k >= 0 and ends[k] >= low - skew:
            a = a_timed[k]
            if not _same(a, b) and ends[k] >= low - _tolerance(a, b, skew):
                return True
            k -= 1
    # Ends just after the exact bound: only spans of another service, within the tolerance.
    j = bisect_right(ends, exact + skew) - 1
    while j >= 0 and ends[j] > exact:
        a = a_timed[j]
        if (not _same(a, b) and ends[j] <= exact + _tolerance(a, b, skew)
                and (low is None or ends[j] >= low - skew)):
            return True
        j -= 1
    return False


def _precedes_why(b: Span, a_timed: list[Span], i: int, a_label: str, lo_gap: int, hi_gap: int | None,
                  desc: _Describer) -> str:
    first = next((a for a in a_timed if not _same(a, b)), None)
    if first is None:
        return f"no other `{a_label}` span has timestamps"
    if i < 0:  # every A ended too late: the earliest end is the nearest miss
        a = first
        gap = b.start_ns - a.end_ns
        if gap < 0:
            return f"the first `{a_label}` to end ended at {desc.at(a.end_ns)}, {_fmt_s(-gap / 1e9)} after it started"
        return (f"the first `{a_label}` to end ended at {desc.at(a.end_ns)}, only {_fmt_s(gap / 1e9)} before it "
                f"started (minimum gap {_fmt_s(lo_gap / 1e9)})")
    a = a_timed[i]
    gap = b.start_ns - a.end_ns
    return (f"the last `{a_label}` to end before it ended at {desc.at(a.end_ns)}, {_fmt_s(gap / 1e9)} before it "
            f"started (maximum gap {_fmt_s((hi_gap or 0) / 1e9)})")


def _contains(c: Contains, idx: _Index, desc: _Describer, skew: int) -> Verdict:
    outer, inner = idx.matched(c.outer), idx.matched(c.inner)
    if not outer:
        return _nothing(idx, c.outer, c.id)
    if not inner:
        return _nothing(idx, c.inner, c.id)
    o_timed = sorted((s for s in outer if s.timed), key=lambda s: s.start_ns)
    starts = [s.start_ns for s in o_timed]
    # Per prefix of the outers sorted by start: the latest-ending span apart from the inner span itself (an
    # inner span matched by both selectors must not contain itself), and apart from the inner span's clock
    # (outers of another service may hold an inner span up to `skew` outside them).
    by_span = _latest_ending(o_timed, _same)
    by_clock = _latest_ending(o_timed, _same_clock)
    o_label = _label(idx, c.outer)
    bad: list[tuple[Span, Span | None]] = []  # each failing inner span with its nearest miss
    for s in inner:
        if not s.timed:
            bad.append((s, None))
            continue
        # Exactly inside some outer (not itself), whatever its service?
        cand = _latest_unlike(by_span, bisect_right(starts, s.start_ns) - 1, s, _same)
        if cand is not None and cand.end_ns >= s.end_ns:
            continue
        # Inside within the tolerance, an outer of another service (so never itself)?
        j = bisect_right(starts, s.start_ns + skew) - 1
        other = _latest_unlike(by_clock, j, s, _same_clock)
        if other is not None and other.end_ns >= s.end_ns - skew:
            continue
        bad.append((s, _latest_unlike(by_span, j, s, _same)))  # the nearest miss, for the message
    if not bad:
        return _verdict(c.id, True, "", tuple(outer[:1] + inner[:1]))
    shown: list[tuple[Span, str]] = []
    for s, cand in bad[:_SHOWN]:
        if not s.timed:
            why = "it has no timestamps"
        elif cand is not None:
            why = (f"the `{o_label}` that started before it and ended last ended at {desc.at(cand.end_ns)}, "
                   f"{_fmt_s((s.end_ns - cand.end_ns) / 1e9)} before it ended")
        else:
            first = next((o for o in o_timed if not _same(o, s)), None)
            why = (f"no other `{o_label}` span has timestamps" if first is None else
                   f"the first `{o_label}` started at {desc.at(first.start_ns)}, "
                   f"{_fmt_s((first.start_ns - s.start_ns) / 1e9)} after it started")
        shown.append((s, why))
    msg = (f"{len(bad)} of {len(inner)} `{_label(idx, c.inner)}` span(s) lie outside every "
           f"`{o_label}` span:\n" + desc.explained(shown, len(bad))
           + f"\n  `{o_label}` spans:\n" + desc.many(o_timed or outer))
    return _verdict(c.id, False, msg, tuple([s for s, _ in bad[:_SHOWN]] + outer[:_SHOWN]))


Alike = Callable[[Span, Span], bool]


def _latest_ending(spans: list[Span], alike: Alike) -> list[tuple[Span, Span | None]]:
    """For each prefix of `spans`: its latest-ending span, and the latest-ending one not `alike` that one."""
    out: list[tuple[Span, Span | None]] = []
    b1: Span | None = None
    b2: Span | None = None
    for s in spans:
        if b1 is None or alike(s, b1):
            if b1 is None or s.end_ns > b1.end_ns:
                b1 = s
        elif s.end_ns > b1.end_ns:
            b1, b2 = s, b1
        elif b2 is None or s.end_ns > b2.end_ns:
            b2 = s
        out.append((b1, b2))
    return out


def _latest_unlike(prefixes: list[tuple[Span, Span | None]], i: int, s: Span, alike: Alike) -> Span | None:
    """The latest-ending span of prefix `i` (none when i < 0) that is not `alike` `s`."""
    if i < 0:
        return None
    first, second = prefixes[i]
    return second if alike(first, s) else first


_HOST_KEYS = ("server.address", "net.peer.name", "net.sock.peer.name", "peer.service", "http.host")
_URL_KEYS = ("url.full", "http.url")


def hosts_of(s: Span) -> set[str]:
    """The remote hosts an outgoing span names, from the semantic-convention attributes."""
    out: set[str] = set()
    for k in _HOST_KEYS:
        v = s.attributes.get(k)
        if isinstance(v, str) and v:
            out.add(_strip_port(v) if k == "http.host" else v)
    for k in _URL_KEYS:
        v = s.attributes.get(k)
        if isinstance(v, str) and v:
            try:
                host = urlsplit(v).hostname
            except ValueError:  # a malformed URL (bad port, bracket) names no host we can check
                host = None
            if host:
                out.add(host)
    return {h.lower().rstrip(".").strip("[]") for h in out}


def _strip_port(hostport: str) -> str:
    """`host:port` -> host, keeping IPv6 literals (`[::1]:80`, `::1`) whole."""
    if hostport.startswith("["):
        return hostport[1:].split("]", 1)[0]
    if hostport.count(":") == 1:
        return hostport.split(":", 1)[0]
    return hostport


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hermetic(c: Hermetic, idx: _Index, desc: _Describer) -> Verdict:
    allowed = {h.lower() for h in c.allowed_hosts}
    breaches: list[tuple[Span, list[str]]] = []
    for s in idx.spans:
        if s.kind not in ("client", "producer"):
            continue
        outside = sorted(h for h in hosts_of(s) if h not in allowed and not _loopback(h))
        if outside:
            breaches.append((s, outside))
    if not breaches:
        return _verdict(c.id, True, "")
    hosts = sorted({h for _, hs in breaches for h in hs})
    lines = [f"    {desc.one(s)} -> {', '.join(hs)}" for s, hs in breaches[:_SHOWN]]
    if len(breaches) > _SHOWN:
        lines.append(f"    … and {len(breaches) - _SHOWN} more")
    return _verdict(c.id, False, f"not hermetic: {len(breaches)} outgoing span(s) reach host(s) outside the "
                       f"suite ({', '.join(hosts)}):\n" + "\n".join(lines)
                       + f"\n  allowed: {', '.join(sorted(allowed)) or 'only the suite services'}",
                       tuple(s for s, _ in breaches[:_SHOWN]))


__all__ = ["Attr", "AttrMatch", "Constraint", "Contains", "Count", "Duration", "Hermetic",
           "Parent", "Precedes", "Selector", "Status", "evaluate", "hosts_of"]
