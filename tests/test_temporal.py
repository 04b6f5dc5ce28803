"""The span-time network (`compiler/temporal.py`) against brute force.

Two directions: it never rejects a set of constraints some trace satisfies (traces of one to three spans per
selector are drawn first, then constraints that hold on them), and, where every selector matches exactly
one span, it rejects exactly the sets that no trace satisfies (an exhaustive search over a grid that is
large enough to hold a solution when there is one). Each selector's feasible window (`windows`), measured from
the test's start, against the same search. Then the compiler: the example of a parent too short for its two
children is rejected with the constraints on the cycle as located notes, a cycle of `before`s is underlined
whole, and `crc graph` shows each selector's window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import CompileError
from crc.compiler.render import span_windows, to_dot, to_text, window_text
from crc.compiler.temporal import Term, Window, infeasible, ns, windows
from hypothesis import given, settings
from hypothesis import strategies as st

Trace = Mapping[str, Sequence[tuple[int, int]]]  # selector -> its spans as (start, end)
NAMES = ("a", "b", "c")


def holds(t: Term, trace: Trace) -> bool:
    """The language's definition of one constraint on a trace (relations: every B has some A)."""
    if t.kind == "duration":
        return all((t.lo is None or e - s >= t.lo) and (t.hi is None or e - s <= t.hi) for s, e in trace[t.a])
    assert t.b is not None
    if not trace[t.a] or not trace[t.b]:
        return False  # a relation fails when either side matches nothing
    if t.kind == "before":
        return all(any((t.lo or 0) <= bs - ae and (t.hi is None or bs - ae <= t.hi) for _, ae in trace[t.a])
                   for bs, _ in trace[t.b])
    return all(any(as_ <= bs and be <= ae for as_, ae in trace[t.a]) for bs, be in trace[t.b])


# ---------------------------------------------------------------- never rejects what a trace satisfies
@st.composite
def traces_and_true_terms(draw: st.DrawFn) -> tuple[Trace, list[Term]]:
    names = NAMES[:draw(st.integers(2, 3))]
    trace: dict[str, list[tuple[int, int]]] = {}
    for n in names:
        spans = draw(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 12)), min_size=1, max_size=3))
        trace[n] = [(s, s + d) for s, d in spans]
    terms: list[Term] = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["duration", "before", "contains"]))
        a = draw(st.sampled_from(names))
        if kind == "duration":
            durs = [e - s for s, e in trace[a]]
            slack_lo, slack_hi = draw(st.none() | st.integers(0, 2)), draw(st.none() | st.integers(0, 2))
            lo = None if slack_lo is None else max(0, min(durs) - slack_lo)
            hi = None if slack_hi is None else max(durs) + slack_hi
            t = Term("duration", a, lo=lo, hi=hi)
        else:
            b = draw(st.sampled_from([n for n in names if n != a]))
            lo = draw(st.integers(0, 6)) if kind == "before" else None
            hi = draw(st.none() | st.integers(0, 20)) if kind == "before" else None
            t = Term(kind, a, b, lo=lo, hi=hi)
        if holds(t, trace):
            terms.append(t)
    return trace, terms


@settings(max_examples=300, deadline=None)
@given(traces_and_true_terms())
def test_never_rejects_a_set_a_trace_satisfies(case: tuple[Trace, list[Term]]) -> None:
    trace, terms = case
    unique = [n for n, spans in trace.items() if len(spans) == 1]
    assert infeasible(terms, trace, unique) is None


# ---------------------------------------------------------------- exact where each selector matches one span
@st.composite
def unique_term_sets(draw: st.DrawFn) -> tuple[tuple[str, ...], list[Term]]:
    names = NAMES[:draw(st.integers(2, 3))]
    terms: list[Term] = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["duration", "before", "contains"]))
        a = draw(st.sampled_from(names))
        lo = draw(st.none() | st.integers(0, 3))
        hi = draw(st.none() | st.integers(0, 3))
        if kind == "duration":
            terms.append(Term("duration", a, lo=lo, hi=hi))
        else:
            b = draw(st.sampled_from([n for n in names if n != a]))
            terms.append(Term(kind, a, b, lo=lo, hi=hi) if kind == "before" else Term(kind, a, b))
    return names, terms


def satisfiable_by_search(names: Sequence[str], terms: Sequence[Term]) -> bool:
    """Exhaustive search for one span per selector, every time point in -H..0, H being the sum of the lower
    bounds. Enough: shortest distances from a virtual source give a solution whenever there is one, and no
    distance is below minus the sum of the negative weights, which are the lower bounds."""
    h = sum(t.lo or 0 for t in terms)
    points = [(n, side) for n in names for side in ("s", "e")]
    # each constraint is checked as soon as the last point it reads is placed
    def reads(t: Term) -> int:
        sels = [t.a] if t.b is None else [t.a, t.b]
        return max(points.index((s, "e")) for s in sels)
    due: dict[int, list[Term]] = {}
    for t in terms:
        due.setdefault(reads(t), []).append(t)
    value: dict[tuple[str, str], int] = {}

    def place(i: int) -> bool:
        if i == len(points):
            return True
        for v in range(-h, 1):
            value[points[i]] = v
            n, side = points[i]
            if side == "e" and v < value[(n, "s")]:
                continue
            trace = {m: [(value[(m, "s")], value[(m, "e")])] for m in names if (m, "e") in value}
            if all(holds(t, trace) for t in due.get(i, ())) and place(i + 1):
                return True
        del value[points[i]]
        return False

    return place(0)


@settings(max_examples=300, deadline=None)
@given(unique_term_sets())
def test_with_one_span_per_selector_rejects_exactly_the_unsatisfiable(case: tuple[Sequence[str], list[Term]]
                                                                         ) -> None:
    names, terms = case
    rejected = infeasible(terms, names, names)
    assert (rejected is None) == satisfiable_by_search(names, terms), terms
    if rejected is not None:
        assert rejected and all(t in terms for t in rejected)
        # the cycle alone is already unsatisfiable: what it names is the contradiction
        assert not satisfiable_by_search(names, rejected)


def test_the_witness_of_one_span_is_not_the_witness_of_another() -> None:
    """Two parents: one holds x, another holds y; no parent needs to hold both, so this is satisfiable."""
    terms = [Term("contains", "p", "x"), Term("contains", "p", "y"), Term("before", "x", "y", lo=50),
             Term("duration", "x", lo=21), Term("duration", "y", lo=21), Term("duration", "p", hi=59)]
    assert infeasible(terms, ["p", "x", "y"], ["x", "y"]) is None
    # one parent only: it must hold x, the gap and y
    cycle = infeasible(terms, ["p", "x", "y"], ["p", "x", "y"])
    assert cycle is not None and set(cycle) == set(terms)


def test_before_chains_compose_without_uniqueness() -> None:
    """Every z has a y before it, every y an x before it: the gaps add up, through any number of spans."""
    terms = [Term("before", "x", "y", lo=10), Term("before", "y", "z", lo=10), Term("contains", "p", "z"),
             Term("contains", "p", "x")]
    assert infeasible(terms, ["x", "y", "z", "p"], []) is None
    bounded = [*terms[:2], Term("before", "x", "z", hi=15)]
    assert infeasible(bounded, ["x", "y", "z"], []) is None  # another x may be the one just before z
    assert infeasible(bounded, ["x", "y", "z"], ["x"]) is not None  # one x: z is 20 after it, not 15


# ---------------------------------------------------------------- in the compiler
PARENT_TOO_SHORT = '''suite "s" {
  service api { image "img" }
  test "t" {
    step go = exec api ["true"]
    span p = "parent"
    span x = "x"
    span y = "y"
    expect count(p) == 1
    expect count(x) == 1
    expect count(y) == 1
    expect p contains x
    expect p contains y
    expect x before y gap 50ms..
    expect x.duration > 20ms
    expect y.duration > 20ms
    expect p.duration < 60ms
  }
}
'''


def test_the_parent_too_short_for_its_children_is_rejected() -> None:
    with pytest.raises(CompileError) as exc:
        compile_file("t.cr", text=PARENT_TOO_SHORT, environ={})
    (d,) = exc.value.diagnostics
    assert d.message.startswith("these span constraints cannot all hold")
    assert d.loc is not None and (d.loc.line, d.loc.col) == (11, 12)  # the first one in the source
    assert (d.loc.end_line, d.loc.end_col) == (11, 24)  # the whole constraint, end column kept
    lines = sorted(loc.line for _, loc in d.notes)
    assert lines == [12, 13, 14, 15, 16]
    assert all(loc.end_col > loc.col for _, loc in d.notes)


@pytest.mark.parametrize("edit", [
    ("expect count(p) == 1\n", ""),  # two parents may hold one child each
    ("gap 50ms..", "gap 10ms.."),  # 20 + 10 + 20 fits in 60
    ("expect p.duration < 60ms", "expect p.duration < 100ms"),
])
def test_relaxing_any_constraint_of_the_cycle_compiles(edit: tuple[str, str]) -> None:
    compile_file("t.cr", text=PARENT_TOO_SHORT.replace(*edit), environ={})


# ---------------------------------------------------------------- feasible windows
def earliest_by_search(names: Sequence[str], terms: Sequence[Term], point: tuple[str, str]) -> int | None:
    """The earliest time `point` can have in a trace of one span per selector, every span starting at or after
    the test's start (0): an exhaustive search over 0..H, H the sum of the lower bounds (the schedule that puts
    every point at its earliest lies within it)."""
    h = sum(t.lo or 0 for t in terms)
    points = [(n, side) for n in names for side in ("s", "e")]

    def fits(value: dict[tuple[str, str], int], i: int) -> bool:
        if i == len(points):
            trace = {m: [(value[(m, "s")], value[(m, "e")])] for m in names}
            return all(holds(t, trace) for t in terms)
        n, side = points[i]
        for v in ([value[points[i]]] if points[i] in value else range(h + 1)):
            if side == "e" and v < value[(n, "s")]:
                continue
            if fits({**value, points[i]: v}, i + 1):
                return True
        return False

    return next((v for v in range(h + 1) if fits({point: v}, 0)), None)


@settings(max_examples=150, deadline=None)
@given(unique_term_sets())
def test_each_window_starts_where_the_earliest_trace_does(case: tuple[Sequence[str], list[Term]]) -> None:
    names, terms = case
    terms = [t for t in terms if not (t.lo and t.lo > 2)]  # keeps the search small
    found = windows(terms, names, names)
    if found is None:
        assert infeasible(terms, names, names) is not None
        return
    for n in names:
        w = found[n]
        assert w.start[0] == earliest_by_search(names, terms, (n, "s")), (n, terms)
        assert w.end[0] == earliest_by_search(names, terms, (n, "e")), (n, terms)
        assert w.start[1] is None and w.end[1] is None  # nothing bounds how late a span may start


WINDOWS = """suite "w" {
  service a { image "x" }
  test "t" {
    step s = exec a ["true"]
    span p = "parent"
    span x = "x"
    span y = "y"
    expect count(p) == 1
    expect count(x) == 1
    expect count(y) == 1
    expect p contains x
    expect p contains y
    expect x before y gap 50ms..
    expect x.duration >= 20ms
    expect y.duration >= 20ms
    expect p.duration <= 200ms
  }
}
"""


def test_graph_shows_each_selectors_feasible_window() -> None:
    plan = compile_file("w.cr", text=WINDOWS, environ={})
    ms = 1_000_000
    assert span_windows(plan) == {
        "w::t::span:p": Window((0, None), (90 * ms, None)),  # it holds y, which ends 90ms in at the earliest
        "w::t::span:x": Window((0, None), (20 * ms, None)),
        "w::t::span:y": Window((70 * ms, None), (90 * ms, None)),  # x's 20ms, then the 50ms gap
    }
    text = to_text(plan)
    assert "y: y  >= 20ms  start ≥ 70ms, end ≥ 90ms" in text
    assert "p: parent  <= 200ms  start ≥ 0ms, end ≥ 90ms" in text
    assert '"w::t::span:y" [label="y: y\\n>= 20ms\\nstart ≥ 70ms, end ≥ 90ms"' in to_dot(plan)
    assert window_text(Window((0, 5 * ms), (1 * ms, None))) == "start 0..5ms, end ≥ 1ms"  # a bounded latest side


def test_a_cycle_of_befores_is_underlined_whole() -> None:
    """Cycle reports keep the end column of the constraint they point at (it once was parsed back from text)."""
    src = WINDOWS.replace("    expect x.duration >= 20ms\n", "    expect y before x\n")
    with pytest.raises(CompileError) as exc:
        compile_file("w.cr", text=src, environ={})
    cycle = next(d for d in exc.value.diagnostics if d.message.startswith("cycle of"))
    assert cycle.message == "cycle of precedes edges: x -> y -> x"
    # `x before y gap 50ms..` from its first character to just after its last
    assert cycle.loc is not None and (cycle.loc.line, cycle.loc.col, cycle.loc.end_line, cycle.loc.end_col) == \
        (13, 12, 13, 33)
    network = next(d for d in exc.value.diagnostics if d.message.startswith("these span constraints"))
    assert network.loc == cycle.loc and all(loc.end_col > loc.col for _, loc in network.notes)



def test_bounds_far_past_any_trace_are_clamped_not_an_overflow() -> None:
    """A crafted Plan's bound of ±1e308 s is a finite float with no integer count of nanoseconds (found by the
    fuzz harness through `crc graph`): it is clamped to ±2**62 ns, far past any trace."""
    assert ns(1e308) == 2**62 and ns(-1e308) == -(2**62)
    assert ns(1e308, strict=True, upper=True) == 2**62 - 1
    assert ns(0.02) == 20_000_000


def test_the_schema_refuses_infinite_numbers() -> None:
    from crc.compiler.schema import SchemaError, checker

    checker(float)(1.5, "x")
    checker(float)(3, "x")
    for bad in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(SchemaError, match="x is not a finite number"):
            checker(float)(bad, "x")
