"""The digest, `crc diff` and `crc spans` read every span, however deep or looped, in time linear in the spans:
one forest (runtime/spantree.py) without recursion, ids normalized by a table lookup instead of an
alternation of every id. Timing is benchmarks/spans_scale.py's; these tests check what is computed."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from conftest import run_crc
from crc.runtime import spancheck as sc
from crc.runtime.digest import digest, normalizer
from crc.runtime.recording import Recording
from crc.runtime.rundiff import diff
from crc.runtime.runner import RunOptions
from crc.runtime.spans import Span
from crc.runtime.spantree import forest
from hypothesis import given, settings
from hypothesis import strategies as st

from crc.commands_spans import MAX_INDENT, tree_lines


def span(sid: str, parent: str | None, name: str = "op", trace: str = "a" * 32, start: int = 0) -> Span:
    return Span(trace, sid, parent, name, "internal", "unset", "", start, start + 10 if start else 0, "api")


def chain(n: int, trace: str = "a" * 32) -> list[Span]:
    """n spans, each the parent of the next."""
    return [span(f"{i:016x}", f"{i - 1:016x}" if i else None, f"level {i}", trace, 1000 + i) for i in range(n)]


def rec(spans: list[Span], run_id: str = "20260101000000-abcdef") -> Recording:
    return Recording("test", run_id, 0, 1, False, 0, RunOptions().recorded(), (), (), (), tuple(spans))


# ------------------------------------------------------------------------------------------ the forest


def test_a_chain_of_a_hundred_thousand_is_one_tree_without_recursion() -> None:
    f = forest([(s.trace_id, s.span_id) for s in chain(100_000)],
               [(s.trace_id, s.parent_span_id) if s.parent_span_id else None for s in chain(100_000)])
    assert f.roots == [0] and f.depth[-1] == 99_999 and not any(f.loop)
    assert f.order == list(range(100_000))


def test_loops_become_marked_roots_and_what_hangs_below_them_stays() -> None:
    keys = ["a", "b", "c", "self", "d", "dup", "dup"]
    parents = ["b", "a", "a", "self", None, "d", "d"]  # a<->b loop, c under a; self its own parent
    f = forest(keys, parents)
    assert [f.loop[i] for i in range(7)] == [True, True, False, True, False, False, False]
    assert sorted(f.roots) == [0, 1, 3, 4]
    assert f.parent[2] == 0 and f.depth[2] == 1
    assert f.children[4] == [5, 6], "spans sharing an id are all kept"


# ------------------------------------------------------------------------------------------ the normalizer


def _alternation(ids: dict[str, str]) -> re.Pattern[str]:
    """The former normalizer: one alternation of every id, longest first (quadratic in the spans)."""
    return re.compile("|".join(re.escape(k) for k in sorted(ids, key=len, reverse=True)))


HEX = st.text("0123456789abcdef", min_size=12, max_size=12)


@settings(max_examples=300)
@given(traces=st.lists(st.text("0123456789abcdef", min_size=32, max_size=32), min_size=1, max_size=4),
       spans=st.lists(st.text("0123456789abcdef", min_size=16, max_size=16), min_size=1, max_size=6),
       noise=st.lists(st.text("0123456789abcdefg -:/", max_size=20), max_size=6),
       picks=st.lists(st.integers(0, 30), min_size=1, max_size=12))
def test_the_normalizer_finds_what_an_alternation_of_every_id_finds(
        traces: list[str], spans: list[str], noise: list[str], picks: list[int]) -> None:
    ss = [span(s, None, trace=traces[i % len(traces)]) for i, s in enumerate(spans)]
    ids = {s.trace_id: "<trace>" for s in ss} | {s.span_id: "<span>" for s in ss}
    pieces = [*ids, *noise, *(k[3:] + k[:5] for k in ids)]  # ids, noise, ids glued into longer hex
    text = "".join(pieces[p % len(pieces)] for p in picks)
    rx = _alternation(ids)
    assert normalizer(rec(ss))(text) == rx.sub(lambda m: ids[m.group(0)], text)


def test_the_run_id_and_container_ids_are_replaced() -> None:
    norm = normalizer(rec([span("1" * 16, None)], run_id="20260101000000-abcdef"))
    assert norm("run 20260101000000-abcdef on 10.1.2.3 span 1111111111111111!") == "run <run> on <ip> span <span>!"


# ------------------------------------------------------------------------------------------ the digest


def test_no_span_is_left_out_of_the_digest_however_deep() -> None:
    spans = chain(3000)
    deeper = [*spans[:-1], replace(spans[-1], name="changed")]
    assert digest(rec(spans)) != digest(rec(deeper)), "the 3000th level counts"


def test_spans_in_parent_loops_count_in_the_digest() -> None:
    loop = [span("1" * 16, "2" * 16, "x"), span("2" * 16, "1" * 16, "y"), span("3" * 16, "3" * 16, "z")]
    assert digest(rec(loop)) != digest(rec([*loop[:2], replace(loop[2], name="w")]))
    assert digest(rec(loop)) != digest(rec([loop[0], replace(loop[1], name="w"), loop[2]]))
    assert digest(rec(loop)) != digest(rec([replace(s, parent_span_id=None) for s in loop])), "the loop is seen"


def test_the_digest_ignores_span_order_and_ids() -> None:
    spans = chain(500)
    other = [replace(s, trace_id="b" * 32, span_id="f" + s.span_id[1:],
                     parent_span_id=s.parent_span_id and "f" + s.parent_span_id[1:]) for s in spans]
    assert digest(rec(spans)) == digest(rec(list(reversed(other))))


# ------------------------------------------------------------------------------------------ crc diff


def test_diff_of_deep_chains_names_the_deep_span_with_its_path_elided() -> None:
    spans = chain(5000)
    d = diff(rec(spans), rec([*spans[:-1], replace(spans[-1], name="changed")]))
    assert d.differ
    removed, added = d.spans_removed[0]["path"], d.spans_added[0]["path"]
    assert removed.startswith("(unattributed) > api:level 0 > api:level 1 >") and removed.endswith("api:level 4999")
    assert "… 4960 levels …" in removed and added.endswith("api:level 4998 > api:changed")
    assert not diff(rec(spans), rec(list(reversed(spans)))).differ


def test_diff_marks_spans_of_a_parent_loop() -> None:
    loop = [span("1" * 16, "2" * 16, "x"), span("2" * 16, "1" * 16, "y")]
    d = diff(rec([]), rec(loop))
    assert [a["path"] for a in d.spans_added] == ["(unattributed) > api:x (in a parent loop)",
                                                  "(unattributed) > api:y (in a parent loop)"]


# ------------------------------------------------------------------------------------------ span checks


def test_an_ancestor_is_found_at_any_depth() -> None:
    spans = chain(20_000)
    sels = [sc.Selector("deep", "deep", name="level 19999", ancestor="top"), sc.Selector("top", "top", name="level 0")]
    assert [v.passed for v in sc.evaluate(spans, sels, [sc.Count("c", "", "deep", min=1)])] == [True]


def test_ancestors_through_loops_and_shared_ids_are_what_a_walk_up_finds() -> None:
    # x2 shares x's id (parents resolve to the last of them, x) and hangs under root; x and y form a loop.
    spans = [span("1" * 16, "4" * 16, "x2"), span("1" * 16, "2" * 16, "x"), span("2" * 16, "1" * 16, "y"),
             span("3" * 16, "1" * 16, "z"), span("4" * 16, None, "root")]
    sels = [sc.Selector("z", "z", name="z", ancestor="a"), sc.Selector("x2", "x2", name="x2", ancestor="a"),
            sc.Selector("a", "a", name="y")]
    assert [v.passed for v in sc.evaluate(spans, sels, [sc.Count("c1", "", "z", min=1),
                                                         sc.Count("c2", "", "x2", min=1)])] == [True, False]


# ------------------------------------------------------------------------------------------ crc spans


def test_crc_spans_shows_every_level_of_a_deep_chain() -> None:
    lines = tree_lines([s.to_dict() for s in chain(3000)])
    assert len(lines) == 3000
    assert lines[MAX_INDENT].startswith(" " + "  " * MAX_INDENT + "level 40")
    assert lines[-1].startswith(" " + "  " * MAX_INDENT + "[depth 2999] level 2999")


def test_crc_spans_shows_parent_loops_marked_after_the_rest() -> None:
    spans = [span("1" * 16, "2" * 16, "x", start=5), span("2" * 16, "1" * 16, "y", start=6),
             span("4" * 16, "1" * 16, "below x", start=7), span("5" * 16, None, "root", start=9)]
    names = [ln.split("  [")[0] for ln in tree_lines([s.to_dict() for s in spans])]
    assert names == [" root", " x (in a parent loop)", "   below x", " y (in a parent loop)"]
    grep = [ln.split("  [")[0] for ln in tree_lines([s.to_dict() for s in spans], grep="below")]
    assert grep == ["·x (in a parent loop)", "   below x"]


def test_crc_spans_refuses_a_damaged_report_naming_the_field(tmp_path: Path) -> None:
    good = span("1" * 16, None, start=5).to_dict()
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"schema": "crc-report", "spans": [good, {**good, "start_ns": "soon"}]}))
    proc = run_crc("spans", p)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{p}: spans[1].start_ns: expected an integer" in proc.stderr


def test_the_waterfall_stays_on_its_axis_whatever_the_times() -> None:
    """Found by the fuzzer: an end long before its start drew a bar of 10^18 cells."""
    from crc.commands_spans import waterfall_lines

    spans = [span("1" * 16, None, "a", start=5), {**span("2" * 16, "1" * 16, "b", start=2**62).to_dict(), "end_ns": 7}]
    lines = waterfall_lines([spans[0].to_dict(), spans[1]], width=60)
    assert len(lines) == 3 and all(len(ln) <= 61 for ln in lines)  # the last cell may hold a partial block


def test_a_waterfall_block_starting_ages_after_the_first_keeps_its_header() -> None:
    """Found by the fuzzer: a block header ("at +<start>") wider than the bar area gave a negative format width
    (ValueError: Sign not allowed in string format specifier) in `crc spans -w`."""
    from crc.commands_spans import waterfall_lines

    roots = [span("1" * 16, None, "a", start=1).to_dict(), span("2" * 16, None, "b", start=2**62).to_dict()]
    lines = waterfall_lines(roots, width=20)  # a bar area of 10 cells: "at +4611686018.428s" is wider
    assert len(lines) == 4 and lines[2].lstrip().startswith("at +") and "b" in lines[3], lines


def test_a_recording_with_an_infinite_time_is_damaged() -> None:
    """Found by the fuzzer: `int(inf)` escaped as OverflowError."""
    import pytest
    from crc.runtime.recording import RecordingError

    data = rec([span("1" * 16, None)]).to_data()
    data["run"]["started_ns"] = float("inf")
    with pytest.raises(RecordingError, match="started_ns: expected an integer"):
        Recording.from_data(data)
