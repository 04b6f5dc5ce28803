"""The span-check engine (crc.runtime.spancheck) on synthetic spans: selectors, every constraint kind passing
and failing, the messages a failure prints, and the relation semantics against brute-force references."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from conftest import examples
from crc.runtime import spancheck as sc
from crc.runtime.results import Verdict
from crc.runtime.spans import Span
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = 1_700_000_000_000_000_000  # an epoch in ns; spans below are placed in ms relative to it
MS = 1_000_000
_ids = itertools.count(1)


def span(name: str, start_ms: float | None = 0.0, end_ms: float | None = 1.0, *, service: str = "api",
         kind: str = "internal", status: str = "unset", attrs: dict[str, Any] | None = None,
         parent: Span | str | None = None, trace: str = "t1", span_id: str | None = None,
         resource: dict[str, Any] | None = None, status_message: str = "") -> Span:
    """A span; `None` for a time leaves the timestamp out (0), as a sender that omitted it would."""
    pid = parent.span_id if isinstance(parent, Span) else parent
    return Span(trace_id=trace, span_id=span_id or f"{next(_ids):016x}", parent_span_id=pid, name=name,
                kind=kind, status=status, status_message=status_message,
                start_ns=0 if start_ms is None else T0 + round(start_ms * MS),
                end_ns=0 if end_ms is None else T0 + round(end_ms * MS), service=service,
                attributes=dict(attrs or {}), resource=dict(resource or {}))


def sel(sid: str, name: str | None = None, **kw: Any) -> sc.Selector:
    if name is not None and "name_is_glob" not in kw:
        kw["name_is_glob"] = any(ch in name for ch in "*?[")
    return sc.Selector(id=sid, label=sid, name=name, **kw)


def one(spans: list[Span], selectors: list[sc.Selector], constraint: Any, **kw: Any) -> Verdict:
    [r] = sc.evaluate(spans, selectors, [constraint], **kw)
    assert r.id == constraint.id
    assert r.passed == (r.message == ""), "a passing check has no message, a failing one always has one"
    return r


def matched(spans: list[Span], selectors: list[sc.Selector], sid: str) -> list[str]:
    """Names of the spans the selector `sid` matches (via a count check that reports them)."""
    r = one(spans, selectors, sc.Count("c", "x:1:1", sid, min=None, max=None))
    assert r.passed
    return sorted(s.name for s in r.spans)


# ----------------------------------------------------------------------------- selectors

SPANS = [
    span("GET /orders", kind="server", attrs={"http.response.status_code": 200, "http.route": "/orders"}),
    span("GET /fail", kind="server", status="error", attrs={"http.response.status_code": 500}),
    span("redis SET", kind="client", attrs={"db.system": "redis", "server.port": 6379}),
    span("redis GET", kind="client", service="worker", attrs={"db.system": "redis", "code": "200"}),
    span("validate", attrs={"order.sku": 42, "ok": True}),
]


@pytest.mark.parametrize(("selector", "names"), [
    (sel("s", "redis SET"), ["redis SET"]),
    (sel("s", "redis *"), ["redis GET", "redis SET"]),
    (sel("s", "GET /[fo]*"), ["GET /fail", "GET /orders"]),
    (sel("s", "redis"), []),  # an exact name is not a prefix
    (sel("s", name_regex=r"^GET /o"), ["GET /orders"]),
    (sel("s", name_regex=r"SET|GET$"), ["redis GET", "redis SET"]),
    (sel("s", name_regex=r"(?i)^get /O"), ["GET /orders"]),  # the compiler inlines /.../i flags
    (sel("s", service="worker"), ["redis GET"]),
    (sel("s", "redis *", service="api"), ["redis SET"]),
    (sel("s", kind="server"), ["GET /fail", "GET /orders"]),
    (sel("s", status="error"), ["GET /fail"]),
    (sel("s", kind="server", status="unset"), ["GET /orders"]),
    (sel("s", attrs=(sc.AttrMatch("http.response.status_code", "==", 200),)), ["GET /orders"]),
    (sel("s", attrs=(sc.AttrMatch("http.response.status_code", "==", "200"),)), ["GET /orders"]),
    (sel("s", attrs=(sc.AttrMatch("code", "==", 200),)), ["redis GET"]),  # string attribute, number written
    (sel("s", attrs=(sc.AttrMatch("code", "==", 20),)), []),
    (sel("s", kind="server", attrs=(sc.AttrMatch("http.response.status_code", "!=", 200),)), ["GET /fail"]),
    (sel("s", attrs=(sc.AttrMatch("http.response.status_code", "!=", 200),)),  # no attribute: not equal
     ["GET /fail", "redis GET", "redis SET", "validate"]),
    (sel("s", attrs=(sc.AttrMatch("http.response.status_code", ">=", 500),)), ["GET /fail"]),
    (sel("s", attrs=(sc.AttrMatch("http.response.status_code", "<", 500),)), ["GET /orders"]),
    (sel("s", attrs=(sc.AttrMatch("http.response.status_code", "<=", 500),)), ["GET /fail", "GET /orders"]),
    (sel("s", attrs=(sc.AttrMatch("server.port", ">", 6000),)), ["redis SET"]),
    (sel("s", attrs=(sc.AttrMatch("http.route", "<", 5),)), []),  # text is not ordered against numbers
    (sel("s", attrs=(sc.AttrMatch("db.system", "~", "^re"),)), ["redis GET", "redis SET"]),
    (sel("s", "redis *", attrs=(sc.AttrMatch("db.system", "!~", "^re"),)), []),
    (sel("s", attrs=(sc.AttrMatch("http.route", "!~", "^/o"),)),
     ["GET /fail", "redis GET", "redis SET", "validate"]),
    (sel("s", attrs=(sc.AttrMatch("order.sku", "~", "^4"),)), ["validate"]),  # numbers match as text
    (sel("s", attrs=(sc.AttrMatch("ok", "==", True),)), ["validate"]),
    (sel("s", attrs=(sc.AttrMatch("ok", "==", "true"),)), ["validate"]),
    (sel("s", attrs=(sc.AttrMatch("ok", "==", 1),)), []),  # a boolean is not the number 1
    (sel("s", attrs=(sc.AttrMatch("db.system", "exists"),)), ["redis GET", "redis SET"]),
    (sel("s", kind="client", attrs=(sc.AttrMatch("code", "missing"),)), ["redis SET"]),
    (sel("s", attrs=(sc.AttrMatch("db.system", "exists"), sc.AttrMatch("code", "exists"))), ["redis GET"]),
])
def test_selector_clauses(selector: sc.Selector, names: list[str]) -> None:
    if names:
        assert matched(SPANS, [selector], "s") == names
    else:
        r = one(SPANS, [selector], sc.Count("c", "x:1:1", "s", min=1))
        assert not r.passed and "found 0" in r.message


def test_attribute_falls_back_to_the_resource() -> None:
    spans = [span("a", resource={"deployment.environment": "ci"}), span("b")]
    s = sel("s", attrs=(sc.AttrMatch("deployment.environment", "==", "ci"),))
    assert matched(spans, [s], "s") == ["a"]
    gone = sel("s", attrs=(sc.AttrMatch("deployment.environment", "missing"),))
    assert matched(spans, [gone], "s") == ["b"]


def test_parent_and_ancestor_clauses() -> None:
    root = span("GET /orders", 0, 10, kind="server")
    mid = span("handler", 1, 9, parent=root)
    leaf = span("redis SET", 2, 3, kind="client", parent=mid)
    direct = span("redis SET", 4, 5, kind="client", parent=root)
    other_trace = span("redis SET", 4, 5, kind="client", parent=root.span_id, trace="t2")  # same id, other trace
    spans = [root, mid, leaf, direct, other_trace]
    selectors = [sel("req", "GET /orders"), sel("child", "redis SET", parent="req"),
                 sel("desc", "redis SET", ancestor="req"), sel("under_mid", "redis *", parent="mid"),
                 sel("mid", "handler")]
    assert [s.span_id for s in one(spans, selectors, sc.Count("c", "", "child")).spans] == [direct.span_id]
    assert {s.span_id for s in one(spans, selectors, sc.Count("c", "", "desc")).spans} == \
        {leaf.span_id, direct.span_id}
    assert [s.span_id for s in one(spans, selectors, sc.Count("c", "", "under_mid")).spans] == [leaf.span_id]


def test_ancestor_walk_survives_a_loop_of_parent_ids() -> None:
    a = span("a", parent="0000000000000002", span_id="0000000000000001")
    b = span("b", parent="0000000000000001", span_id="0000000000000002")
    r = one([a, b], [sel("x", "x"), sel("s", "a", ancestor="x")], sc.Count("c", "", "s", min=1))
    assert not r.passed


def test_selectors_that_name_each_other_as_parents_match_nothing_instead_of_recursing() -> None:
    spans = [span("a"), span("b")]
    selectors = [sel("p", "a", parent="q"), sel("q", "b", parent="p")]
    r = one(spans, selectors, sc.Count("c", "", "p", min=1))
    assert not r.passed and "found 0" in r.message


# ----------------------------------------------------------------------------- counts and "nothing matched"


@pytest.mark.parametrize(("lo", "hi", "n", "passed", "want"), [
    (1, None, 2, True, ""),
    (3, None, 2, False, "expected at least 3, found 2"),
    (None, 2, 2, True, ""),
    (None, 1, 2, False, "expected at most 1, found 2"),
    (2, 2, 2, True, ""),
    (1, 1, 2, False, "expected exactly 1, found 2"),
    (3, 5, 2, False, "expected between 3 and 5, found 2"),
    (None, 0, 2, False, "expected none, found 2"),
    (0, 0, 2, False, "expected none, found 2"),
])
def test_count(lo: int | None, hi: int | None, n: int, passed: bool, want: str) -> None:
    spans = [span("redis SET", 0, 1), span("redis GET", 2, 3, status="error"), span("validate")][: n + 1]
    r = one(spans, [sel("r", "redis *")], sc.Count("c", "f.cr:3:5", "r", min=lo, max=hi))
    assert r.passed is passed
    assert want in r.message
    if not passed:  # the spans found are listed, with service, kind, duration and time
        assert '"redis SET" (api, internal, 1.0ms, at +0.0ms, status unset)' in r.message
        assert '"redis GET" (api, internal, 1.0ms, at +2.0ms, status error)' in r.message


def test_nothing_matched_suggests_close_names() -> None:
    spans = [span("redis SET"), span("redis GET"), span("validate")]
    r = one(spans, [sel("g", "redis GTE")], sc.Count("c", "", "g", min=1))
    assert not r.passed
    assert r.message.startswith("span `g`: expected at least 1, found 0; did you mean:")
    assert '"redis GET"' in r.message
    # An exact name that arrived but failed another clause says which clause, and what the spans have.
    r = one(spans, [sel("s", "redis SET", kind="server")], sc.Duration("d", "", "s", max_s=1.0))
    assert r.message == ('span `s` matched no span; 1 span(s) named "redis SET" arrived, but none has kind server '
                         "(they have: kind internal)")
    r = one(spans, [sel("s", "redis *", attrs=(sc.AttrMatch("db.system", "==", "redis"),))],
            sc.Status("d", "", "s", "ok"))
    assert 'none has attr "db.system" == \'redis\' (they have: no "db.system")' in r.message
    # What the spans have is read from the clause itself, not from its text (a key may hold a quote).
    quoted = [span("q", attrs={'a"b': "x"})]
    r = one(quoted, [sel("s", "q", attrs=(sc.AttrMatch('a"b', "==", "y"),))], sc.Count("c", "", "s", min=1))
    assert r.message.endswith('none has attr "a"b" == \'y\' (they have: "a"b" = \'x\')'), r.message
    # Unrelated names: the names that did arrive are listed.
    r = one(spans, [sel("s", "kafka publish")], sc.Count("c", "", "s", min=1))
    assert 'span names seen: "redis GET", "redis SET", "validate"' in r.message


def test_nothing_matched_because_of_the_parent() -> None:
    spans = [span("GET /orders", kind="server"), span("redis SET", parent="ffffffffffffffff")]
    selectors = [sel("req", "GET /orders"), sel("nope", "POST /orders"), sel("set", "redis SET", parent="req"),
                 sel("set2", "redis SET", parent="nope")]
    r = one(spans, selectors, sc.Count("c", "", "set", min=1))
    assert 'but none has a `req` span as its parent' in r.message
    r = one(spans, selectors, sc.Count("c", "", "set2", min=1))
    assert "but its parent `nope` matched no span" in r.message


def test_no_spans_at_all() -> None:
    for c in (sc.Count("c", "", "s", min=1), sc.Duration("c", "", "s", max_s=1), sc.Status("c", "", "s", "ok"),
              sc.Precedes("c", "", "s", "s"), sc.Contains("c", "", "s", "s"), sc.Parent("c", "", "s", "s")):
        r = one([], [sel("s", "x")], c)
        assert not r.passed and r.message.endswith("no spans arrived for this test"), r.message


@pytest.mark.parametrize("make", [
    lambda: sc.Duration("c", "", "none", max_s=10),
    lambda: sc.Status("c", "", "none", "ok"),
    lambda: sc.Attr("c", "", "none", sc.AttrMatch("k", "exists")),
    lambda: sc.Precedes("c", "", "none", "a"),
    lambda: sc.Precedes("c", "", "a", "none"),
    lambda: sc.Contains("c", "", "none", "a"),
    lambda: sc.Contains("c", "", "a", "none"),
    lambda: sc.Parent("c", "", "none", "a"),
    lambda: sc.Parent("c", "", "a", "none"),
])
def test_a_selector_matching_nothing_fails_every_check_that_uses_it(make: Any) -> None:
    r = one([span("a")], [sel("a", "a"), sel("none", "b")], make())
    assert not r.passed
    assert r.message.startswith("span `none` matched no span")


# ----------------------------------------------------------------------------- unary checks


@pytest.mark.parametrize(("dur_ms", "lo", "lo_inc", "hi", "hi_inc", "passed"), [
    (5, None, True, 0.010, True, True),
    (10, None, True, 0.010, True, True),    # <= 10ms
    (10, None, True, 0.010, False, False),  # < 10ms
    (11, None, True, 0.010, True, False),
    (4, 0.004, True, None, True, True),     # >= 4ms
    (4, 0.004, False, None, True, False),   # > 4ms
    (3, 0.004, True, None, True, False),
    (5, 0.004, True, 0.006, True, True),
])
def test_duration_bounds(dur_ms: float, lo: float | None, lo_inc: bool, hi: float | None, hi_inc: bool,
                         passed: bool) -> None:
    r = one([span("validate", 100, 100 + dur_ms)], [sel("v", "validate")],
            sc.Duration("d", "", "v", min_s=lo, max_s=hi, min_inclusive=lo_inc, max_inclusive=hi_inc))
    assert r.passed is passed
    if not passed:
        assert "span `v`: 1 of 1 span(s) do not have duration" in r.message
        assert f'"validate" (api, internal, {dur_ms:.1f}ms, at +0.0ms, status unset)' in r.message


def test_duration_holds_for_every_matched_span() -> None:
    spans = [span("work", 0, 5), span("work", 10, 60), span("work", 100, 101), span("work", None, None)]
    r = one(spans, [sel("w", "work")], sc.Duration("d", "", "w", max_s=0.010))
    assert not r.passed
    assert "2 of 4 span(s) do not have duration <= 10.0ms" in r.message
    assert '"work" (api, internal, 50.0ms, at +10.0ms, status unset)' in r.message
    assert '"work" (api, internal, no timestamps, status unset)' in r.message  # untimed never passes
    assert "5.0ms" not in r.message


def test_status_check_shows_the_status_message() -> None:
    spans = [span("GET /a", status="ok"), span("GET /b", 3, 4, status="error", status_message="boom")]
    r = one(spans, [sel("g", "GET *")], sc.Status("s", "", "g", "ok"))
    assert not r.passed
    assert "1 of 2 span(s) do not have status ok" in r.message
    assert '"GET /b" (api, internal, 1.0ms, at +3.0ms, status error)\n      status message: "boom"' in r.message
    assert one(spans[:1], [sel("g", "GET *")], sc.Status("s", "", "g", "ok")).passed


def test_attr_check_shows_the_actual_values() -> None:
    spans = [span("GET /a", attrs={"code": 200}), span("GET /b", attrs={"code": 503}), span("GET /c")]
    r = one(spans, [sel("g", "GET *")], sc.Attr("a", "", "g", sc.AttrMatch("code", "==", 200)))
    assert not r.passed
    assert "2 of 3 span(s) do not have attr \"code\" == 200" in r.message
    assert 'has "code" = 503' in r.message and 'has no "code"' in r.message
    r = one(spans[:2], [sel("g", "GET *")], sc.Attr("a", "", "g", sc.AttrMatch("code", "~", "^[25]")))
    assert r.passed
    r = one(spans[:2], [sel("g", "GET *")], sc.Attr("a", "", "g", sc.AttrMatch("code", "~", "^2")))
    assert "do not have attr \"code\" ~ /^2/" in r.message


# ----------------------------------------------------------------------------- precedes


def _precedes(spans: list[Span], lo: float | None = None, hi: float | None = None, skew: float = 0.001,
              a: str = "a", b: str = "b") -> Verdict:
    return one(spans, [sel("a", a), sel("b", b)], sc.Precedes("p", "f.cr:9:3", "a", "b", lo, hi),
               clock_skew_s=skew)


def test_precedes_pass_and_fail_message() -> None:
    assert _precedes([span("a", 0, 5), span("b", 6, 8)]).passed
    r = _precedes([span("a", 0, 5), span("b", 3, 8)])
    assert not r.passed
    assert r.message == (
        "`a` does not end before 1 of 1 `b` span(s) start:\n"
        '    "b" (api, internal, 5.0ms, at +3.0ms, status unset)\n'
        "      the first `a` to end ended at +5.0ms, 2.0ms after it started\n"
        "  `a` spans:\n"
        '    "a" (api, internal, 5.0ms, at +0.0ms, status unset)')
    assert {s.name for s in r.spans} == {"a", "b"}


def test_equal_timestamps_count_as_before() -> None:
    assert _precedes([span("a", 0, 5), span("b", 5, 8)], skew=0).passed


@pytest.mark.parametrize(("b_start_ms", "skew", "passed"), [
    (4.0, 0.001, True),          # overlaps by exactly the tolerance
    (3.999999, 0.001, False),    # 1 ns beyond it
    (4.5, 0.001, True),
    (4.999999, 0.0, False),
    (2.0, 0.003, True),
    (1.9, 0.003, False),
])
def test_clock_skew_tolerance_boundary(b_start_ms: float, skew: float, passed: bool) -> None:
    assert _precedes([span("a", 0, 5), span("b", b_start_ms, 9, service="db")], skew=skew).passed is passed


@pytest.mark.parametrize(("a_service", "b_service", "passed"), [
    ("api", "api", False),   # one service, one clock: 0.4 ms out of order is out of order
    ("api", "db", True),     # two services: within the 1 ms tolerance
    ("", "", True),          # no service name: whose clock is unknown, so the tolerance applies
])
def test_spans_of_one_service_are_ordered_exactly(a_service: str, b_service: str, passed: bool) -> None:
    spans = [span("a", 0, 5, service=a_service), span("b", 4.6, 9, service=b_service)]
    assert _precedes(spans).passed is passed
    inner = [span("o", 0, 10, service=a_service), span("i", 5, 10.4, service=b_service)]
    assert _contains(inner).passed is passed


def test_untimed_spans_fail_time_checks_and_say_so() -> None:
    r = _precedes([span("a", 0, 5), span("b", None, None)])
    assert not r.passed and "it has no timestamps" in r.message
    r = _precedes([span("a", None, None), span("b", 6, 8)])
    assert not r.passed and "no other `a` span has timestamps" in r.message
    assert '"a" (api, internal, no timestamps, status unset)' in r.message
    r = _precedes([span("a", 0, None), span("b", 6, 8)])  # a start without an end is untimed too
    assert not r.passed
    # An untimed A does not spoil a timed one that satisfies the relation.
    assert _precedes([span("a", None, None), span("a", 0, 5), span("b", 6, 8)]).passed


def test_every_b_needs_some_a() -> None:
    # Three requests; `a` ended before the 2nd and 3rd but the 1st started before any `a` ended.
    spans = [span("b", 0, 1), span("a", 1, 2), span("b", 3, 4), span("a", 5, 6), span("b", 7, 8)]
    r = _precedes(spans, skew=0)
    assert not r.passed
    assert "`a` does not end before 1 of 3 `b` span(s) start" in r.message
    assert "at +0.0ms" in r.message.split("`a` spans:")[0]
    # One early `a` is enough for every later `b`: "some", not "the nearest" or "one each".
    assert _precedes([span("a", 0, 1)] + [span("b", t, t + 1) for t in range(2, 50, 3)]).passed


@pytest.mark.parametrize(("b_start_ms", "lo", "hi", "passed", "why"), [
    (15, 0.005, None, True, ""),     # gap 5ms, at least 5ms
    (13.9, 0.005, None, False, "only 3.9ms before it started (minimum gap 5.0ms)"),
    (14, 0.005, None, True, ""),     # 4ms: within the 1ms tolerance
    (20, None, 0.010, True, ""),     # gap 10ms, at most 10ms
    (21, None, 0.010, True, ""),     # 11ms: within the tolerance
    (21.5, None, 0.010, False, "11.5ms before it started (maximum gap 10.0ms)"),
    (12, 0.0, 1.0, True, ""),        # gap 0ms..1s
    (8.5, 0.0, 1.0, False, "1.5ms after it started"),
    (1011, 0.0, 1.0, True, ""),
    (1012, 0.0, 1.0, False, "maximum gap 1.000s"),
    (12, 0.002, 0.004, True, ""),
])
def test_gap_bounds(b_start_ms: float, lo: float | None, hi: float | None, passed: bool, why: str) -> None:
    # `b` from another service than `a`: their timestamps are compared with the 1 ms tolerance.
    r = _precedes([span("a", 0, 10), span("b", b_start_ms, b_start_ms + 1, service="db")], lo, hi)
    assert r.passed is passed, r.message
    assert why in r.message


def test_gap_message_names_the_bounds() -> None:
    spans = [span("a", 0, 10), span("b", 5, 6)]
    assert "start with a gap of at least 5.0ms and at most 1.000s:" in _precedes(spans, 0.005, 1.0).message
    assert "start with a gap of at most 1.000s:" in _precedes(spans, 0.0, 1.0).message
    assert "span(s) start:\n" in _precedes(spans, 0.0, None).message  # `gap 0ms..` is plain "before"


def test_max_gap_uses_the_latest_a_before_b() -> None:
    # An early `a` is too far away, a later one is close enough: the later one satisfies "within 5ms".
    spans = [span("a", 0, 1), span("a", 50, 51), span("b", 53, 54)]
    assert _precedes(spans, None, 0.005).passed
    # ... but an `a` that ends after `b` started does not count, however close.
    spans = [span("a", 0, 1), span("a", 50, 60), span("b", 53, 54)]
    r = _precedes(spans, None, 0.005)
    assert not r.passed and "the last `a` to end before it ended at +1.0ms, 52.0ms before it started" in r.message


def test_a_span_matched_by_both_sides_does_not_precede_itself() -> None:
    # "redis *" before "redis GET": the GET is sub-millisecond, so with the skew it would "end before it starts".
    get = span("redis GET", 10, 10.2)
    r = _precedes([get], a="redis *", b="redis GET")
    assert not r.passed and "no other `a` span has timestamps" in r.message
    assert _precedes([span("redis SET", 9, 9.5), get], a="redis *", b="redis GET").passed


# ----------------------------------------------------------------------------- contains


def _contains(spans: list[Span], skew: float = 0.001, outer: str = "o", inner: str = "i") -> Verdict:
    return one(spans, [sel("o", outer), sel("i", inner)], sc.Contains("c", "", "o", "i"), clock_skew_s=skew)


@pytest.mark.parametrize(("i_start", "i_end", "skew", "passed"), [
    (2, 8, 0.0, True),
    (0, 10, 0.0, True),           # the same window: edges count as inside
    (-1, 5, 0.001, True),         # starts 1ms early: within the tolerance
    (-1.1, 5, 0.001, False),
    (5, 11, 0.001, True),         # ends 1ms late: within the tolerance
    (5, 11.1, 0.001, False),
    (5, 10.5, 0.0, False),
    (11, 12, 0.001, False),       # entirely after
])
def test_contains_window_edges(i_start: float, i_end: float, skew: float, passed: bool) -> None:
    assert _contains([span("o", 0, 10), span("i", i_start, i_end, service="db")], skew).passed is passed


def test_contains_every_inner_in_some_outer() -> None:
    spans = [span("o", 0, 10), span("o", 20, 30), span("i", 1, 2), span("i", 21, 29), span("i", 12, 13)]
    r = _contains(spans)
    assert not r.passed
    assert r.message.startswith("1 of 3 `i` span(s) lie outside every `o` span:\n")
    assert ('"i" (api, internal, 1.0ms, at +12.0ms, status unset)\n'
            "      the `o` that started before it and ended last ended at +10.0ms, 3.0ms before it ended") in r.message
    assert _contains(spans[:4]).passed
    # An outer that started before and ends late is found even when a later-starting outer ends early.
    assert _contains([span("o", 0, 100), span("o", 10, 11), span("i", 50, 60)]).passed


def test_contains_failure_messages() -> None:
    r = _contains([span("o", 10, 20), span("i", 0, 5)])
    assert "the first `o` started at +10.0ms, 10.0ms after it started" in r.message
    r = _contains([span("o", None, None), span("i", 0, 5)])
    assert "no other `o` span has timestamps" in r.message
    r = _contains([span("o", 0, 10), span("i", None, None)])
    assert "it has no timestamps" in r.message


def test_a_span_matched_by_both_sides_does_not_contain_itself() -> None:
    req = span("GET /orders", 0, 10, kind="server")
    assert not _contains([req], outer="GET *", inner="GET /orders").passed
    outer = span("GET /api", -5, 20, kind="server")
    assert _contains([outer, req], outer="GET *", inner="GET /orders").passed
    # Duplicate deliveries of one span are still the same span.
    dup = span("GET /orders", 0, 10, span_id=req.span_id)
    assert not _contains([req, dup], outer="GET *", inner="GET /orders").passed


# ----------------------------------------------------------------------------- parent


def test_parent_relation() -> None:
    req = span("GET /orders", 0, 10, kind="server")
    other = span("GET /other", 0, 10, kind="server")
    ok = span("validate", 1, 2, parent=req)
    wrong = span("validate", 3, 4, parent=other)
    orphan = span("validate", 5, 6, parent="00000000deadbeef")
    root = span("validate", 7, 8)
    selectors = [sel("req", "GET /orders"), sel("v", "validate")]
    assert one([req, other, ok], selectors, sc.Parent("p", "", "req", "v")).passed
    r = one([req, other, ok, wrong, orphan, root], selectors, sc.Parent("p", "", "req", "v"))
    assert not r.passed
    assert r.message.startswith("`req` is not the parent of 3 of 4 `v` span(s):\n")
    assert ('"validate" (api, internal, 1.0ms, at +3.0ms, status unset)\n'
            '      its parent is "GET /other" (api, server, 10.0ms, at +0.0ms, status unset)') in r.message
    assert "its parent is a parent span that never arrived" in r.message
    assert "its parent is no parent (a root span)" in r.message


def test_parent_in_another_trace_does_not_count() -> None:
    req = span("GET /orders", 0, 10, trace="t1")
    child = span("validate", 1, 2, parent=req.span_id, trace="t2")
    assert not one([req, child], [sel("r", "GET /orders"), sel("v", "validate")],
                   sc.Parent("p", "", "r", "v")).passed


# ----------------------------------------------------------------------------- hermetic


@pytest.mark.parametrize(("kind", "attrs", "hosts"), [
    ("client", {"server.address": "example.com"}, ["example.com"]),
    ("client", {"url.full": "https://Example.COM:443/x"}, ["example.com"]),
    ("producer", {"net.peer.name": "kafka.example.org"}, ["kafka.example.org"]),
    ("client", {"http.url": "http://api.internal.example/x"}, ["api.internal.example"]),
    ("client", {"http.host": "example.net:8080"}, ["example.net"]),
    ("client", {"server.address": "203.0.113.9"}, ["203.0.113.9"]),
    ("client", {"server.address": "cache"}, []),           # a suite service
    ("client", {"url.full": "http://api:8080/orders"}, []),
    ("client", {"server.address": "allowed.example"}, []),
    ("client", {"server.address": "localhost"}, []),
    ("client", {"server.address": "127.0.0.1"}, []),
    ("client", {"url.full": "http://[::1]:8080/"}, []),
    ("client", {"http.host": "[::1]:8080"}, []),
    ("client", {"server.address": "db.localhost"}, []),
    ("client", {"url.full": "http://[::1"}, []),           # malformed: no host to check, no crash
    ("server", {"server.address": "example.com"}, []),     # incoming requests are not breaches
    ("internal", {"url.full": "https://example.com/"}, []),
    ("client", {}, []),
])
def test_hermetic(kind: str, attrs: dict[str, Any], hosts: list[str]) -> None:
    spans = [span("GET /orders", kind="server"), span("GET external", 1, 2, kind=kind, attrs=attrs)]
    r = one(spans, [], sc.Hermetic("h", "", frozenset({"api", "cache", "Allowed.Example"})))
    assert r.passed is (not hosts)
    if hosts:
        assert r.message.startswith(f"not hermetic: 1 outgoing span(s) reach host(s) outside the suite "
                                    f"({', '.join(hosts)}):\n")
        assert f'"GET external" (api, {kind}, 1.0ms, at +1.0ms, status unset) -> {hosts[0]}' in r.message
        assert "allowed: allowed.example, api, cache" in r.message
        assert [s.name for s in r.spans] == ["GET external"]


def test_hermetic_lists_every_outside_host_and_caps_the_spans_shown() -> None:
    spans = [span("call", i, i + 1, kind="client", attrs={"server.address": f"h{i % 3}.example"}) for i in range(8)]
    r = one(spans, [], sc.Hermetic("h", "", frozenset()))
    assert "8 outgoing span(s)" in r.message and "(h0.example, h1.example, h2.example)" in r.message
    assert "… and 3 more" in r.message and "allowed: only the suite services" in r.message


# ----------------------------------------------------------------------------- evaluate as a whole


def test_results_come_back_in_constraint_order_and_unknown_constraints_are_errors() -> None:
    spans = [span("a", 0, 1), span("b", 2, 3)]
    cs = [sc.Precedes("3", "", "a", "b"), sc.Count("1", "", "a", min=2), sc.Status("2", "", "b", "unset")]
    rs = sc.evaluate(spans, [sel("a", "a"), sel("b", "b")], cs)
    assert [(r.id, r.passed) for r in rs] == [("3", True), ("1", False), ("2", True)]
    with pytest.raises(TypeError, match="unknown constraint"):
        sc.evaluate(spans, [], [object()])


def test_times_in_messages_are_relative_to_the_first_span() -> None:
    spans = [span("a", 1500, 1510), span("b", 1000, 1200), span("b", 2000, 2001)]
    r = _precedes(spans)
    assert '"b" (api, internal, 200.0ms, at +0.0ms, status unset)' in r.message
    assert '"a" (api, internal, 10.0ms, at +500.0ms, status unset)' in r.message
    assert "the first `a` to end ended at +510.0ms, 510.0ms after it started" in r.message


# ----------------------------------------------------------------------------- properties

NAMES = ["x", "y", "z"]


@st.composite
def random_spans(draw: st.DrawFn) -> list[Span]:
    n = draw(st.integers(0, 14))
    out = []
    for k in range(n):
        name = draw(st.sampled_from(NAMES))
        if draw(st.integers(0, 9)) == 0:
            start = end = None
        else:
            start = draw(st.integers(0, 40))
            end = start + draw(st.integers(0, 15))
        # Two services and a span with none: spans of one service compare exactly, others with the skew.
        out.append(span(name, start, end, span_id=f"{k:016x}", service=draw(st.sampled_from(["api", "db", ""]))))
    if out and draw(st.booleans()):  # a duplicate delivery of one span
        out.append(out[draw(st.integers(0, len(out) - 1))])
    return out


def _same(a: Span, b: Span) -> bool:
    return (a.trace_id, a.span_id) == (b.trace_id, b.span_id)


def _tol(a: Span, b: Span, skew: int) -> int:
    """The pair's clock tolerance: none between spans of one service, `skew` across services."""
    return 0 if a.service and a.service == b.service else skew


def _brute_precedes(a_spans: list[Span], b_spans: list[Span], lo_ns: int, hi_ns: int | None, skew: int) -> bool:
    """The ∀B ∃A definition, directly: O(n*m)."""
    if not a_spans or not b_spans:
        return False
    return all(b.timed and any(
        a.timed and not _same(a, b) and lo_ns - _tol(a, b, skew) <= b.start_ns - a.end_ns
        and (hi_ns is None or b.start_ns - a.end_ns <= hi_ns + _tol(a, b, skew)) for a in a_spans) for b in b_spans)


def _brute_contains(outer: list[Span], inner: list[Span], skew: int) -> bool:
    if not outer or not inner:
        return False
    return all(i.timed and any(
        o.timed and not _same(o, i) and o.start_ns <= i.start_ns + _tol(o, i, skew)
        and o.end_ns >= i.end_ns - _tol(o, i, skew) for o in outer) for i in inner)


# Selectors that overlap ("x" and "x|y") so a span can sit on both sides of a relation.
PATTERNS = ["x", "y", "[xy]", "*"]


@settings(max_examples=examples(1500))
@given(random_spans(), st.sampled_from(PATTERNS), st.sampled_from(PATTERNS),
       st.none() | st.integers(0, 10), st.none() | st.integers(0, 20), st.sampled_from([0, 1, 3]))
def test_precedes_equals_brute_force(spans: list[Span], pa: str, pb: str, lo_ms: int | None, hi_ms: int | None,
                                     skew_ms: int) -> None:
    if lo_ms is not None and hi_ms is not None and hi_ms < lo_ms:
        lo_ms, hi_ms = hi_ms, lo_ms
    selectors = [sel("a", pa), sel("b", pb)]
    r = one(spans, selectors, sc.Precedes("p", "", "a", "b",
                                          None if lo_ms is None else lo_ms / 1000,
                                          None if hi_ms is None else hi_ms / 1000),
            clock_skew_s=skew_ms / 1000)
    a_spans = [s for s in spans if sc.fnmatch.fnmatchcase(s.name, pa)]
    b_spans = [s for s in spans if sc.fnmatch.fnmatchcase(s.name, pb)]
    want = _brute_precedes(a_spans, b_spans, (lo_ms or 0) * MS, None if hi_ms is None else hi_ms * MS, skew_ms * MS)
    assert r.passed is want, r.message


@settings(max_examples=examples(1500))
@given(random_spans(), st.sampled_from(PATTERNS), st.sampled_from(PATTERNS), st.sampled_from([0, 1, 3]))
def test_contains_equals_brute_force(spans: list[Span], po: str, pi: str, skew_ms: int) -> None:
    r = one(spans, [sel("o", po), sel("i", pi)], sc.Contains("c", "", "o", "i"), clock_skew_s=skew_ms / 1000)
    outer = [s for s in spans if sc.fnmatch.fnmatchcase(s.name, po)]
    inner = [s for s in spans if sc.fnmatch.fnmatchcase(s.name, pi)]
    assert r.passed is _brute_contains(outer, inner, skew_ms * MS), r.message


@settings(max_examples=examples(200))
@given(random_spans(), st.sampled_from(PATTERNS))
def test_count_and_failure_counts_match_the_spans(spans: list[Span], p: str) -> None:
    """A failing relation reports exactly the B spans without a partner, and a count the number matched."""
    mine = [s for s in spans if sc.fnmatch.fnmatchcase(s.name, p)]
    r = one(spans, [sel("s", p)], sc.Count("c", "", "s", min=len(mine) + 1))
    assert not r.passed and f"found {len(mine)}" in r.message
    r = one(spans, [sel("a", "x"), sel("b", p)], sc.Precedes("p", "", "a", "b"), clock_skew_s=0)
    if not r.passed and mine and any(s.name == "x" for s in spans):
        a_spans = [s for s in spans if s.name == "x"]
        bad = [b for b in mine if not _brute_precedes(a_spans, [b], 0, None, 0)]
        assert f"does not end before {len(bad)} of {len(mine)} `b` span(s)" in r.message


def test_nothing_matched_names_the_pattern_that_did_match() -> None:
    spans = [span("redis SET", kind="client"), span("redis GET", kind="client")]
    for selector, what in ((sel("s", "redis *", kind="server"), '2 span(s) matching "redis *"'),
                           (sel("s", name_regex="^redis", kind="server"), "2 span(s) matching /^redis/"),
                           (sel("s", kind="server"), "2 span(s)")):
        r = one(spans, [selector], sc.Count("c", "", "s", min=1))
        assert r.message.endswith(f"; {what} arrived, but none has kind server (they have: kind client)"), r.message
