"""`crc replay`, `crc digest`, `crc diff`: commands on recordings, no engine needed. Also the helpers
`crc run --record/--repeat` use (`save_recording`, `run_repeated`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crc.clitools import EXIT_INPUT, add_command, at_least, compile_sources, damage, fail, settings

if TYPE_CHECKING:
    from crc.compiler.plan import Plan
    from crc.runtime.recording import Recording
    from crc.runtime.results import RunResult


def load_recording(path: Path) -> Recording:
    """Read a recording; exits 2 with the reason when it is missing, damaged, truncated or too new."""
    from crc.runtime.recording import RecordingError, read

    if not path.exists():
        fail(f"no such file: {path}", EXIT_INPUT)
    try:
        return read(path)
    except RecordingError as e:
        fail(f"{path}: {e}", EXIT_INPUT, "give a file written by `crc run --record FILE`")


def recorded_plan(rec: Recording) -> Plan:
    """The recording's Plans as one (node ids are unique across suites), for `crc graph`."""
    import networkx as nx

    from crc.compiler.plan import Plan
    from crc.compiler.schema import Meta
    from crc.runtime.recording import RecordingError

    try:
        plans = rec.plan_objects()
    except RecordingError as e:
        fail(str(e), EXIT_INPUT)
    if len(plans) == 1:
        return plans[0]
    meta: Meta = {**plans[0].meta, "source": ", ".join(p.meta["source"] for p in plans)}
    return Plan(nx.compose_all([p.graph for p in plans]), meta, [s for p in plans for s in p.suites],
                [t for p in plans for t in p.tests])


def build_recording(result: RunResult, plans: list[Plan], spans: list[dict[str, Any]], options: Any) -> Recording:
    from crc import __version__
    from crc.runtime import recording

    return recording.build(result, plans, spans, options, __version__)


def save_recording(path: Path, result: RunResult, plans: list[Plan], spans: list[dict[str, Any]],
                   options: Any, gpus: dict[str, Any] | None = None) -> Recording:
    """Write the run's recording to `path` and say so (on stderr: stdout carries the summary). `gpus`: the
    run's GPU samples, kept with it."""
    import dataclasses

    from crc.runtime.recording import write

    rec = build_recording(result, plans, spans, options)
    if gpus:
        rec = dataclasses.replace(rec, gpus=gpus)
    size = write(path, rec)
    print(f"recorded {path} ({size} bytes, {len(rec.nodes)} nodes, {len(rec.spans)} spans)", file=sys.stderr)
    return rec


def repeat_path(path: Path, i: int) -> Path:
    """Where run `i` (1-based) of `--repeat` is recorded: `r.crcrec` -> `r.1.crcrec`."""
    return path.with_name(f"{path.stem}.{i}{path.suffix}")


def parse_masks(rules: list[str] | None) -> Any:
    """The `--mask` rules of a command as one `Masks` (exit 2 naming a rule that cannot be read); without
    `--mask`, the `masks` setting (environment, then config file)."""
    from crc.runtime.masks import NONE, MaskError, Masks

    out = NONE
    for rule in settings({"masks": (rules, "--mask")})["masks"]:
        try:
            out = out | Masks.parse(rule)
        except MaskError as e:
            fail(str(e), EXIT_INPUT, "e.g. --mask '/order-[0-9a-f]{8}/' --mask 'attr order.id' --mask 'json $.id'")
    return out


def add_mask_option(p: argparse.ArgumentParser) -> None:
    """`--mask RULE`, repeatable, for the commands that compare runs."""
    p.add_argument("--mask", action="append", metavar="RULE",
                   help="ignore a volatile value when comparing runs: /REGEX/ (in outputs, captures, span names "
                        "and attribute values), 'attr KEY' (a span attribute) or 'json $.PATH' (in a step's "
                        "JSON stdout); adds to the files' `mask` rules; repeatable (default: $CRC_MASKS, one "
                        "rule a line, else `masks` in the config)")


def flaky_items(recs: list[Recording], masks: Any = None) -> list[dict[str, Any]]:
    """Items (tests, nodes, suite span forests) whose outcome or digest differs between runs."""
    from crc.runtime.digest import item_digests
    from crc.runtime.masks import NONE

    digests = [item_digests(r, masks or NONE) for r in recs]
    statuses = [{**{f"test:{t.suite}/{t.name}": t.status for t in r.tests},
                 **{f"node:{n.node}": n.status for n in r.nodes}} for r in recs]
    out = []
    for key in sorted(set().union(*digests)):
        outcomes = [s.get(key, "absent") for s in statuses]
        ds = [d.get(key, "absent") for d in digests]
        if len(set(outcomes)) > 1 or len(set(ds)) > 1:
            out.append({"item": key, "outcomes": outcomes, "distinct_digests": len(set(ds)),
                        "why": "outcome differs" if len(set(outcomes)) > 1 else "output differs"})
    return out


def run_repeated(n: int, run_once: Callable[[], tuple[RunResult, dict[str, Any], list[dict[str, Any]]]],
                 plans: list[Plan], options: Any, record: Path | None, masks: Any = None
                 ) -> tuple[int, RunResult, dict[str, Any], list[dict[str, Any]]]:
    """Run `n` times; print each run's digest and every flaky item. Exit code 1 when anything is flaky."""
    from crc.runtime.digest import digest
    from crc.runtime.masks import NONE
    from crc.runtime.report import summary_text

    recs: list[Recording] = []
    last: Any = None
    worst = 0
    for i in range(1, n + 1):
        result, labels, spans = run_once()
        last = (result, labels, spans)
        if result.interrupted:
            print(summary_text(result, labels))
            return 130, result, labels, spans
        rec = (save_recording(repeat_path(record, i), result, plans, spans, options) if record
               else build_recording(result, plans, spans, options))
        recs.append(rec)
        c = result.counts()
        print(f"run {i}/{n}: {c['passed']} passed, {c['failed'] + c['error']} failed, {c['skipped']} skipped; "
              f"digest {digest(rec, masks or NONE)[:16]}", flush=True)
        worst = max(worst, result.exit_code())
    flaky = flaky_items(recs, masks)
    result, labels, spans = last
    if flaky:
        print(f"\nflaky: {len(flaky)} item(s) differ between the {n} runs:")
        for f in flaky:
            print(f"  {f['item']}: {f['why']} (outcomes: {', '.join(f['outcomes'])}; "
                  f"{f['distinct_digests']} distinct digest(s))")
        return max(worst, 1) if worst != 3 else 3, result, labels, spans
    print(f"\nnot flaky: all {n} runs had the same verdicts and digest {digest(recs[0], masks or NONE)[:16]}")
    print(summary_text(result, labels))
    return worst, result, labels, spans


def register(sub: Any) -> None:
    """Adds `crc replay`, `crc digest` and `crc diff`."""
    p = add_command(sub, "replay", replay_cmd, "re-check a recording's expectations, no engine needed")
    p.add_argument("recording", type=Path, help="a file written by `crc run --record`")
    p.add_argument("source", type=Path, nargs="?",
                   help="an edited .cr file: check its expectations against the recorded outputs and spans")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report here")
    p.add_argument("--json", dest="json_out", type=Path, metavar="FILE", help="write the JSON report here")
    p = add_command(sub, "digest", digest_cmd, "print a recording's stable digest")
    p.add_argument("recording", type=Path, help="a file written by `crc run --record`")
    p.add_argument("--items", action="store_true",
                   help="also print the digest of every test, node and suite span forest")
    add_mask_option(p)
    p = add_command(sub, "diff", diff_cmd, "what changed between two recordings")
    add_mask_option(p)
    p.add_argument("before", type=Path, help="the first recording")
    p.add_argument("after", type=Path, help="the second recording")
    p.add_argument("--duration-threshold", type=at_least(0, float), default=0.5, metavar="FRACTION",
                   help="report a span duration shift larger than this fraction (default: 0.5 = 50%%)")
    p.add_argument("--duration-floor", type=at_least(0, float), default=5.0, metavar="MS",
                   help="ignore duration shifts smaller than this many milliseconds (default: 5)")
    p.add_argument("--json", dest="json_out", action="store_true", help="print the difference as JSON")


def replay_cmd(args: argparse.Namespace) -> int:
    """Re-check every expectation against a recording, with no container engine."""
    from crc.runtime.recording import RecordingError
    from crc.runtime.replay import NO_DATA, replay, substitute
    from crc.runtime.report import summary_text, to_json, write_json, write_junit
    from crc.runtime.results import label_of, node_name

    recording: Path = args.recording
    source: Path | None = args.source
    junit: Path | None = args.junit
    json_out: Path | None = args.json_out

    rec = load_recording(recording)
    plans = None
    if source is not None:
        if not source.exists():
            fail(f"no such file: {source}", EXIT_INPUT)
        compiled = compile_sources([source])
        if compiled is None:
            return EXIT_INPUT
        try:
            plans = substitute(rec.plan_objects(), compiled[0][1])
        except ValueError as e:
            fail(str(e), EXIT_INPUT)
        except RecordingError as e:
            fail(f"{recording}: {e}", EXIT_INPUT)
    try:
        r = replay(rec, plans)
    except RecordingError as e:
        fail(f"{recording}: {e}", EXIT_INPUT)
    except damage() as e:  # a well-formed file with a nonsense Plan
        fail(f"{recording}: damaged recording: {type(e).__name__}: {e}", EXIT_INPUT)
    seed = "none" if r.shuffle_seed is None else str(r.shuffle_seed)
    print(f"replay of run {rec.run_id} (crc {rec.crc_version}; {len(rec.nodes)} nodes, {len(rec.spans)} spans; "
          f"shuffle seed {seed})" + (f" against {source}" if source else ""))
    print(summary_text(r.result, r.labels))
    if r.changed:
        print("\nverdicts that differ from the recording:")
        for item, before, after in r.changed:
            print(f"  {label_of(r.labels, item)} ({item}): recorded {before}, now {after}")
    if r.stop_points:
        print(f"\n{len(r.stop_points)} polled step(s) would stop polling at another attempt:")
        for n, why in r.stop_points:
            lab = r.labels.get(n, {})
            print(f"  step {label_of(r.labels, n)} at {lab.get('loc')}: {why}")
    if r.no_data:
        print(f"\n{len(r.no_data)} node(s) have {NO_DATA} (not checked, not passed):")
        for n, why in r.no_data:
            print(f"  {node_name(r.labels, n)} at {r.labels.get(n, {}).get('loc')}: {why}")
    if junit:
        write_junit(junit, r.result, r.plans)
    if json_out:
        data = to_json(r.result, r.labels, r.spans)
        data["replay"] = {"recording": str(recording), "source": str(source) if source else None,
                          "shuffle_seed": r.shuffle_seed,
                          "no_data": [{"node": n, "why": w} for n, w in r.no_data],
                          "changed": [{"item": i, "recorded": b, "replayed": a} for i, b, a in r.changed],
                          "stop_points": [{"node": n, "why": w} for n, w in r.stop_points]}
        write_json(json_out, data)
    return r.result.exit_code()


def digest_cmd(args: argparse.Namespace) -> int:
    """Print a recording's stable digest (its observable behaviour, without ids, times or hosts)."""
    from crc.runtime.digest import digest, item_digests

    recording: Path = args.recording
    rec = load_recording(recording)
    masks = parse_masks(args.mask)
    try:
        value = digest(rec, masks)
        items = sorted(item_digests(rec, masks).items()) if args.items else []
    except damage() as e:
        fail(f"{recording}: damaged recording: {type(e).__name__}: {e}", EXIT_INPUT)
    print(value)
    for k, v in items:
        print(f"{v[:16]}  {k}")
    return 0


def diff_cmd(args: argparse.Namespace) -> int:
    """What changed between two recordings: verdicts, outputs, spans, timings. Exit 1 when they differ."""
    from crc.runtime.rundiff import diff

    a, b = load_recording(args.before), load_recording(args.after)
    try:
        d = diff(a, b, threshold=args.duration_threshold, floor_s=args.duration_floor / 1000,
                 masks=parse_masks(args.mask))
    except damage() as e:
        fail(f"{args.before} or {args.after}: damaged recording: {type(e).__name__}: {e}", EXIT_INPUT)
    if args.json_out:
        print(json.dumps(d.to_json(), indent=2, sort_keys=True, default=str))
    else:
        print(d.to_text())
    return 1 if d.differ else 0
