"""`crc spans`: what a run really collected, as a tree, so expectations can be written against it."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crc.clitools import EXIT_INPUT, add_command, at_least, fail, use_color


def load_spans(path: Path) -> list[dict[str, Any]]:
    """Spans from a JSON report (`crc run --json`) or a recording (`crc run --record`)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror or e}", EXIT_INPUT)
    if raw[:1] == b"{":
        try:
            data = json.loads(raw)
        except ValueError as e:
            fail(f"{path} is not valid JSON: {e}", EXIT_INPUT)
        if not isinstance(data, dict) or data.get("schema") != "crc-report":
            fail(f"{path} is not a crc JSON report", EXIT_INPUT, "write one with `crc run --json FILE`")
        return list(data.get("spans", []))
    try:
        from crc.runtime import recording
    except ImportError:
        fail(f"{path} is not a crc JSON report", EXIT_INPUT, "write one with `crc run --json FILE`")
    try:
        rec = recording.read(path)
    except recording.RecordingError as e:
        fail(f"{path}: {e}", EXIT_INPUT)
    return [s if isinstance(s, dict) else s.to_dict() for s in rec.spans]


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.1f}ms" if ns < 1e9 else f"{ns / 1e9:.3f}s"


def _matcher(grep: str) -> Any:
    rx = re.compile(grep)
    return lambda s: bool(rx.search(s["name"]) or rx.search(s.get("service", ""))
                          or any(rx.search(f"{k}={v}") for k, v in s.get("attributes", {}).items()))


def tree_order(spans: Sequence[dict[str, Any]], *, grep: str | None = None
               ) -> list[tuple[dict[str, Any], int, bool]]:
    """(span, depth, is it only context) for each span shown: children under parents, siblings in start order.

    With `grep`, only spans whose name, service or attributes match are shown, with their ancestors as context.
    """
    by_id = {(s["trace_id"], s["span_id"]): s for s in spans}
    children: dict[tuple[str, str] | None, list[dict[str, Any]]] = {}
    for s in spans:
        key = (s["trace_id"], s["parent_span_id"]) if s.get("parent_span_id") else None
        if key is not None and key not in by_id:
            key = None  # its parent never arrived: show it as a root
        children.setdefault(key, []).append(s)
    for kids in children.values():
        kids.sort(key=lambda s: (s.get("start_ns") or float("inf"), s["name"]))  # untimed last
    shown: set[tuple[str, str]] | None = None
    hit_ids: set[tuple[str, str]] = set()
    if grep:
        hits = [s for s in spans if _matcher(grep)(s)]
        shown = set()
        for s in hits:
            cur: dict[str, Any] | None = s
            while cur is not None and (cur["trace_id"], cur["span_id"]) not in shown:  # ids may loop
                shown.add((cur["trace_id"], cur["span_id"]))
                p = cur.get("parent_span_id")
                cur = by_id.get((cur["trace_id"], p)) if p else None
        hit_ids = {(s["trace_id"], s["span_id"]) for s in hits}
    rows: list[tuple[dict[str, Any], int, bool]] = []
    emitted: set[tuple[str, str]] = set()

    def walk(s: dict[str, Any], depth: int) -> None:
        key = (s["trace_id"], s["span_id"])
        if (shown is not None and key not in shown) or key in emitted:
            return
        emitted.add(key)
        rows.append((s, depth, shown is not None and key not in hit_ids))
        for c in children.get(key, []):
            walk(c, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    # Spans whose parent ids form a loop are reachable from no root: show them rather than lose them.
    for s in sorted(spans, key=lambda s: (s.get("start_ns") or float("inf"), s["name"])):
        walk(s, 0)
    return rows


def _timed(s: dict[str, Any]) -> bool:
    return bool(s.get("start_ns") and s.get("end_ns"))


def tree_lines(spans: Sequence[dict[str, Any]], *, grep: str | None = None, attrs: bool = False) -> list[str]:
    """One line per span, children indented under parents (context ancestors of `grep` hits marked `·`)."""
    t0 = min((s["start_ns"] for s in spans if s.get("start_ns")), default=0)
    lines: list[str] = []
    for s, depth, context in tree_order(spans, grep=grep):
        dur = _ms(max(0, s["end_ns"] - s["start_ns"])) if _timed(s) else "untimed"
        at = f"+{_ms(s['start_ns'] - t0)}" if _timed(s) else ""
        status = "" if s.get("status", "unset") == "unset" else f" {s['status'].upper()}"
        lines.append(f"{'·' if context else ' '}{'  ' * depth}{s['name']}  [{s.get('service') or '?'} "
                     f"{s.get('kind', '')}]  {dur} {at}{status}")
        if attrs:
            for k, v in sorted(s.get("attributes", {}).items()):
                lines.append(f" {'  ' * depth}    {k} = {v!r}")
    return lines


def waterfall_lines(spans: Sequence[dict[str, Any]], *, grep: str | None = None, width: int = 100,
                    color: bool = False) -> list[str]:
    """The tree as waterfalls: each root span and what nests under it on a time axis of its own (a trace's
    milliseconds stay visible in a run of seconds), each span's duration as a bar where it ran.

    Bars are drawn in eighths of a character; spans with status error are drawn `▓` (red with `color`);
    untimed spans say so. Each block's header gives its start from the first span and its length.
    """
    rows = tree_order(spans, grep=grep)
    if not rows:
        return []
    first = min((s["start_ns"] for s, _, _ in rows if _timed(s)), default=0)
    label_w = min(max(len(s["name"]) + 2 * d + 1 for s, d, _ in rows), max(20, width // 3))
    bar_w = max(10, width - label_w - 11)
    red, dim, reset = ("\x1b[31m", "\x1b[2m", "\x1b[0m") if color else ("", "", "")
    blocks: list[list[tuple[dict[str, Any], int, bool]]] = []
    for row in rows:
        if row[1] == 0 or not blocks:
            blocks.append([])
        blocks[-1].append(row)
    lines: list[str] = []
    for block in blocks:
        timed = [s for s, _, _ in block if _timed(s)]
        t0 = min((s["start_ns"] for s in timed), default=0)
        total = max(max((s["end_ns"] for s in timed), default=t0 + 1) - t0, 1)
        if timed:
            head, tail = f"at +{_ms(t0 - first)}", f"{_ms(total)}"
            lines.append(f"{dim}{'':<{label_w}} {'':>9} {head}{tail:>{bar_w - len(head)}}{reset}")
        for s, depth, context in block:
            label = ("·" if context else " ") + "  " * depth + s["name"]
            label = label if len(label) <= label_w else label[: label_w - 1] + "…"
            if not _timed(s):
                lines.append(f"{label:<{label_w}} {'untimed':>9}")
                continue
            a = (s["start_ns"] - t0) * bar_w * 8 // total
            b = max(a + 1, -(-(s["end_ns"] - t0) * bar_w * 8 // total))  # at least an eighth
            error = s.get("status") == "error"
            bar = _bar(a, b, "▓" if error else "█")
            lines.append(f"{label:<{label_w}} {_ms(max(0, s['end_ns'] - s['start_ns'])):>9} "
                         f"{red if error else ''}{bar}{reset if error else ''}".rstrip())
    return lines


_LEFT_EIGHTHS = " ▏▎▍▌▋▊▉"


def _bar(a: int, b: int, full: str) -> str:
    """Cells covering eighths [a, b): whole cells as `full`, a partial last cell as a left-aligned block (block
    characters fill from the left, so the start is rounded to the nearest cell)."""
    start, end = (a + 4) // 8, b // 8
    out = " " * start
    if end <= start:  # shorter than one cell
        return out + _LEFT_EIGHTHS[min(7, max(1, b - 8 * start))]
    out += full * (end - start)
    if b % 8:
        out += _LEFT_EIGHTHS[b % 8]
    return out


def register(sub: Any) -> None:
    """Adds `crc spans`."""
    p = add_command(sub, "spans", spans_cmd, "list the spans a run collected, as a tree")
    p.add_argument("report", type=Path, help="a JSON report (crc run --json) or a recording")
    p.add_argument("-g", "--grep", metavar="REGEX",
                   help="show spans whose name, service or attribute (key=value) matches this regex")
    p.add_argument("-a", "--attrs", action="store_true", help="show each span's attributes")
    p.add_argument("--json", dest="as_json", action="store_true", help="print the (filtered) spans as JSON")
    p.add_argument("-w", "--waterfall", action="store_true",
                   help="draw each span as a bar on the run's time axis (durations as bars)")
    p.add_argument("--width", type=at_least(40), metavar="COLUMNS",
                   help="width of the waterfall (default: the terminal's, else 100)")


def spans_cmd(args: argparse.Namespace) -> int:
    """List the spans a run collected: a tree with durations, so you can see what is really emitted."""
    grep: str | None = args.grep
    spans = load_spans(args.report)
    if grep is not None:
        try:
            re.compile(grep)
        except re.error as e:
            fail(f"--grep: invalid regex: {e}", EXIT_INPUT)
    if args.as_json:
        if grep:
            spans = [s for s in spans if _matcher(grep)(s)]
        json.dump(spans, sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    if args.waterfall:
        import shutil

        width = args.width or (shutil.get_terminal_size((100, 24)).columns if sys.stdout.isatty() else 100)
        color = use_color(sys.stdout)
        lines = waterfall_lines(spans, grep=grep, width=width, color=color)
    else:
        lines = tree_lines(spans, grep=grep, attrs=args.attrs)
    if not lines:
        print("no spans" + (f" match {grep!r}" if grep else " were collected"), file=sys.stderr)
        return 1 if grep else 0
    print("\n".join(lines))
    print(f"{len(spans)} span(s)", file=sys.stderr)
    return 0
