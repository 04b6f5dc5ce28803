"""`crc run --shard I/N`: the split (every test in exactly one shard, deterministic, balanced as well as any
contiguous split can be, checked against brute force), the durations files it reads, and bad input (exit 2)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import RunCrc, write_files
from crc.compiler.plan import Plan
from crc.runtime.shard import (
    Shard,
    ShardError,
    keys_of,
    load_durations,
    parse_shard,
    partition,
    plan_shard,
    weights,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def make_plan(suites: dict[str, list[str]], source: str = "x.cr") -> Plan:
    """A Plan with one service per suite and one step per test (all that sharding reads)."""
    nodes: dict[str, dict[str, object]] = {}
    tests = []
    for s, names in suites.items():
        nodes[f"{s}::service:box"] = {"kind": "service", "suite": s, "label": "box", "test": None}
        for t in names:
            nodes[f"{s}::{t}::step:s"] = {"kind": "step", "suite": s, "test": t, "label": "s"}
            tests.append({"suite": s, "name": t, "id": f"{s}::{t}", "uses": [], "nodes": [f"{s}::{t}::step:s"]})
    edges = [(f"{s}::service:box", f"{s}::{t}::step:s", {"kind": "needs"}) for s, ns in suites.items() for t in ns]
    meta: Any = {"source": source}
    return Plan.of(nodes, edges, meta, [{"name": s} for s in suites], tests)  # type: ignore[list-item]


names = st.text(alphabet="abcxyz*?[]/ -", min_size=1, max_size=6)


@st.composite
def plans(draw: st.DrawFn) -> list[Plan]:
    out = []
    for i in range(draw(st.integers(1, 3))):
        suites = draw(st.dictionaries(names, st.lists(names, min_size=0, max_size=6, unique=True), max_size=3))
        out.append(make_plan(suites, f"f{i}.cr"))
    return out


def collides(ps: list[Plan]) -> bool:
    """A test named like another test's `suite/test` path: `-k` cannot tell them apart (plan_shard refuses)."""
    keys = keys_of(ps)
    paths = {f"{s}/{t}" for s, t in keys}
    return any(t in paths or s in paths for s, t in keys) or len(set(keys)) != len(keys)


@settings(max_examples=200, deadline=None)
@given(plans(), st.integers(1, 7), st.data())
def test_union_of_shards_is_every_test_exactly_once(ps: list[Plan], n: int, data: st.DataObject) -> None:
    keys = keys_of(ps)
    durations = data.draw(st.none() | st.fixed_dictionaries(
        {}, optional={k: st.floats(0, 100) for k in keys}))
    if collides(ps):
        return
    shards = [plan_shard(ps, Shard(i, n), (), durations) for i in range(1, n + 1)]
    got = [k for sp in shards for k in sp.keys]
    assert sorted(got) == sorted(keys)  # every test, none twice
    for sp in shards:  # each shard's -k patterns select exactly its tests
        if sp.keys:
            assert set(keys_of(ps, sp.select)) == set(sp.keys)
    again = [plan_shard(ps, Shard(i, n), (), durations).keys for i in range(1, n + 1)]
    assert again == [sp.keys for sp in shards]  # deterministic


def brute_force_best(costs: list[int], n: int) -> int:
    """The smallest largest-shard cost over every way to cut `costs` into n contiguous pieces."""
    k = len(costs)
    best = sum(costs)
    for cuts in itertools.combinations_with_replacement(range(k + 1), n - 1):
        bounds = (0, *cuts, k)
        best = min(best, max(sum(costs[a:b]) for a, b in itertools.pairwise(bounds)))
    return best


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 50), max_size=9), st.integers(1, 5))
def test_partition_is_optimal_contiguous_and_balanced(costs: list[int], n: int) -> None:
    ranges = partition(costs, n)
    assert len(ranges) == n
    assert [i for r in ranges for i in r] == list(range(len(costs)))  # contiguous, in order, complete
    loads = [sum(costs[i] for i in r) for r in ranges]
    if costs:
        assert max(loads) == brute_force_best(costs, n)
        # The list-scheduling bound: no shard exceeds an even share by more than one test.
        assert max(loads) <= sum(costs) / n + max(costs)
    if len(costs) >= n:
        assert all(len(r) > 0 for r in ranges)  # no idle CI job while tests remain


def test_by_count_sizes_differ_by_at_most_one() -> None:
    ps = [make_plan({"s": [f"t{i}" for i in range(10)]})]
    sizes = [len(plan_shard(ps, Shard(i, 4)).keys) for i in range(1, 5)]
    assert sum(sizes) == 10 and max(sizes) - min(sizes) <= 1, sizes


def test_durations_move_the_cut() -> None:
    """One slow test gets a shard of its own; by count it would share one."""
    ps = [make_plan({"s": ["slow", "a", "b", "c"]})]
    durations = {("s", "slow"): 30.0, ("s", "a"): 1.0, ("s", "b"): 1.0, ("s", "c"): 1.0}
    assert plan_shard(ps, Shard(1, 2), (), durations).keys == (("s", "slow"),)
    assert plan_shard(ps, Shard(2, 2), (), durations).keys == (("s", "a"), ("s", "b"), ("s", "c"))
    assert plan_shard(ps, Shard(1, 2)).keys == (("s", "slow"), ("s", "a"))


def test_unknown_tests_cost_the_mean_of_known_ones() -> None:
    keys = [("s", "a"), ("s", "new")]
    assert weights(keys, {("s", "a"): 2.0, ("s", "gone"): 9.0}) == [2_000_000, 2_000_000]
    keys.append(("s", "b"))
    assert weights(keys, {("s", "a"): 2.0, ("s", "b"): 4.0}) == [2_000_000, 3_000_000, 4_000_000]
    assert weights(keys, None) == weights(keys, {})  # no durations: by count


def test_select_applies_before_the_split() -> None:
    ps = [make_plan({"s": ["a1", "b1", "a2", "b2"]})]
    got = [plan_shard(ps, Shard(i, 2), ("a*",)).keys for i in (1, 2)]
    assert got == [(("s", "a1"),), (("s", "a2"),)]


@pytest.mark.parametrize("text,why", [("2", "is not I/N"), ("a/b", "is not I/N"), ("0/3", "between 1 and 3"),
                                      ("4/3", "between 1 and 3"), ("1/0", "at least 1"), ("-1/2", "is not I/N")])
def test_bad_specs(text: str, why: str) -> None:
    with pytest.raises(ShardError, match=why):
        parse_shard(text)
    assert parse_shard(" 2 / 5 ") == Shard(2, 5)


def test_durations_from_a_json_report_and_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "r.json"
    good.write_text(json.dumps({"schema": "crc-report", "tests": [{"suite": "s", "name": "t", "duration_s": 1.5}]}))
    assert load_durations(good) == {("s", "t"): 1.5}
    bad = {"missing.json": None, "text.json": "not json", "other.json": json.dumps({"schema": "x"}),
           "fields.json": json.dumps({"schema": "crc-report", "tests": [{"suite": "s"}]}),
           "rec.crcrec": "CRC-REC\n..."}
    for name, text in bad.items():
        p = tmp_path / name
        if text is not None:
            p.write_text(text)
        with pytest.raises(ShardError):
            load_durations(p)


SOURCE = """suite "s" {
  service box { image "crc/busybox:dev" command ["sleep", "300"] }
  test "a" { step s = exec box ["true"] }
}
"""


@pytest.mark.parametrize("args,message", [
    (["--shard", "3/2"], "between 1 and 2"),
    (["--shard", "x"], "is not I/N"),
    (["--shard", "1/2", "--shard-durations", "nope.json"], "cannot read nope.json"),
    (["--shard", "1/2", "--shard-durations", "t.cr"], "neither a JSON report nor a recording"),
    (["--shard-durations", "t.cr"], "--shard-durations needs --shard"),
])
def test_cli_bad_input_exits_2(crc: RunCrc, tmp_path: Path, args: list[str], message: str) -> None:
    write_files(tmp_path, {"t.cr": SOURCE})
    proc = crc("run", "t.cr", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_empty_shard_exits_0(crc: RunCrc, tmp_path: Path) -> None:
    """More shards than tests: the extra CI jobs have nothing to do, which is not a failure."""
    write_files(tmp_path, {"t.cr": SOURCE})
    proc = crc("run", "t.cr", "--shard", "2/2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "shard 2/2 has no test to run (1 tests over 2 shards)" in proc.stderr

