"""`crc run --shard I/N`: a deterministic split of a run's tests over N CI jobs, no cluster needed.

Every job compiles the same sources, lists the same tests in the same order (Plans in the order given, tests in
source order) and cuts that list into N contiguous runs of tests. Contiguous, so the tests of one suite mostly
stay together and a suite's services start in as few jobs as possible. The cut points minimise the largest
shard's cost: each test's duration in a previous JSON report or recording (`--shard-durations`), or one unit per
test without one. The split depends only on that list and those durations, so job I of N and job J of N never
disagree, and together the N shards run every test exactly once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crc.compiler.plan import Plan

TestKey = tuple[str, str]  # (suite, test)
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_UNIT_US = 1_000_000  # what one test costs when tests are split by count (costs are in microseconds)


class ShardError(Exception):
    """A shard spec or a durations file that cannot be used (exit 2)."""


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """`I/N` with 1 <= I <= N; raises ShardError saying what is wrong."""
    m = _SPEC.match(text)
    if m is None:
        raise ShardError(f"{text!r} is not I/N (e.g. 2/4: the second of four shards)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1:
        raise ShardError(f"{text!r}: the number of shards must be at least 1")
    if not 1 <= i <= n:
        raise ShardError(f"{text!r}: the shard index must be between 1 and {n}")
    return Shard(i, n)


def keys_of(plans: Sequence[Plan], select: tuple[str, ...] = ()) -> list[TestKey]:
    """The run's tests in a stable order (Plans as given, tests in source order), after `-k` selection."""
    from .runner import selected

    out: list[TestKey] = []
    for p in plans:
        chosen = {(d["suite"], d.get("test")) for n, d in p.nodes.items() if n in selected(p, select)}
        out += [(t["suite"], t["name"]) for t in p.tests if (t["suite"], t["name"]) in chosen]
    return out


def load_durations(path: Path) -> dict[TestKey, float]:
    """Each test's duration in seconds from a JSON report (`--json`) or a recording (`--record`)."""
    from .recording import RecordingError, is_recording, read

    if is_recording(path):
        try:
            rec = read(path)
        except RecordingError as e:
            raise ShardError(f"{path}: {e}") from e
        return {(t.suite, t.name): float(t.duration_s) for t in rec.tests}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ShardError(f"cannot read {path}: {e.strerror or e}") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ShardError(f"{path} is neither a JSON report nor a recording: {e}") from e
    if not isinstance(data, dict) or data.get("schema") != "crc-report":
        raise ShardError(f"{path} is not a crc JSON report (no \"schema\": \"crc-report\")")
    try:
        return {(str(t["suite"]), str(t["name"])): float(t["duration_s"]) for t in data["tests"]}
    except (KeyError, TypeError, ValueError) as e:
        raise ShardError(f"{path}: a test entry lacks suite, name or a numeric duration_s ({e})") from e


def weights(keys: Sequence[TestKey], durations: Mapping[TestKey, float] | None) -> list[int]:
    """Integer costs (microseconds): a test's measured duration; a test the file does not know (new since)
    costs the mean of the known ones; without durations every test costs the same. Never below 1, so tests
    that took no time still spread by count."""
    if not durations:
        return [_UNIT_US] * len(keys)
    known = [max(0.0, durations[k]) for k in keys if k in durations]
    mean = sum(known) / len(known) if known else 1.0
    return [max(1, round(max(0.0, durations.get(k, mean)) * 1e6)) for k in keys]


def partition(costs: Sequence[int], n: int) -> list[range]:
    """Cut `costs` into `n` contiguous ranges whose largest sum is as small as possible (ranges may be empty
    only when there are fewer items than shards)."""
    if not costs:
        return [range(0, 0)] * n
    lo, hi = max(costs), sum(costs)
    while lo < hi:  # the smallest bound a greedy left-to-right cut fits into n ranges
        mid = (lo + hi) // 2
        if _groups_needed(costs, mid) <= n:
            hi = mid
        else:
            lo = mid + 1
    return _cut(costs, lo, n)


def _groups_needed(costs: Iterable[int], bound: int) -> int:
    groups, load = 1, 0
    for c in costs:
        if load + c > bound:
            groups, load = groups + 1, 0
        load += c
    return groups


def _cut(costs: Sequence[int], bound: int, n: int) -> list[range]:
    """Ranges under `bound`, each shard aiming at an even share of what is left (so the slack is spread, not
    left to the last shard), taking more only when the rest would not fit the remaining shards; every shard
    gets a test while tests remain."""
    k, out, start = len(costs), [], 0
    for j in range(n):
        left = n - j  # shards still to fill, this one included
        if left == 1:
            out.append(range(start, k))
            break
        target = sum(costs[start:]) / left
        end, load = start, 0
        while end < k and load + costs[end] <= bound and (end == start or (
                load + costs[end] / 2 <= target and k - end - 1 >= left - 1)):
            load, end = load + costs[end], end + 1
        while end < k and load + costs[end] <= bound and _groups_needed(costs[end:], bound) > left - 1:
            load, end = load + costs[end], end + 1
        out.append(range(start, end))
        start = end
    return out


def patterns_for(keys: Iterable[TestKey]) -> tuple[str, ...]:
    """`-k` patterns selecting exactly these tests."""
    from .selection import exact

    return tuple(exact(s, t) for s, t in keys)


@dataclass(frozen=True)
class ShardPlan:
    """What one shard runs, and how the split was made (for the line `crc run` prints)."""

    shard: Shard
    keys: tuple[TestKey, ...]
    total_tests: int
    cost_s: float  # this shard's estimated cost in seconds (by durations), or its test count
    total_cost_s: float
    by_durations: bool

    @property
    def select(self) -> tuple[str, ...]:
        return patterns_for(self.keys)

    def describe(self, durations_from: Path | None) -> str:
        """One line: which tests, and how balanced."""
        how = (f"balanced by the durations in {durations_from}: ~{self.cost_s:.1f}s of {self.total_cost_s:.1f}s"
               if self.by_durations else "balanced by test count")
        return f"shard {self.shard}: {len(self.keys)} of {self.total_tests} tests ({how})"


def plan_shard(plans: Sequence[Plan], shard: Shard, select: tuple[str, ...] = (),
               durations: Mapping[TestKey, float] | None = None) -> ShardPlan:
    """The tests shard `shard` runs. Raises ShardError when test names collide so that `-k` patterns could
    not select exactly one shard's tests."""
    keys = keys_of(plans, select)
    costs = weights(keys, durations)
    ranges = partition(costs, shard.count)
    mine = ranges[shard.index - 1]
    chosen = tuple(keys[i] for i in mine)
    by_durations = bool(durations)
    scale = 1e6 if by_durations else _UNIT_US
    plan = ShardPlan(shard, chosen, len(keys), sum(costs[i] for i in mine) / scale, sum(costs) / scale,
                     by_durations)
    if chosen and set(keys_of(plans, plan.select)) != set(chosen):
        raise ShardError("test names collide with suite/test paths (a test named like `SUITE/TEST` of another "
                         "suite), so a shard cannot be selected exactly; rename the test")
    return plan


def shard_json(plan: ShardPlan, durations_from: Path | None) -> dict[str, Any]:
    """The `shard` entry of the JSON report."""
    return {"index": plan.shard.index, "count": plan.shard.count, "tests": len(plan.keys),
            "total_tests": plan.total_tests, "durations_from": str(durations_from) if durations_from else None}
