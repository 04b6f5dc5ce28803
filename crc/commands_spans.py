"""`crc spans`: what a run really collected, as a tree, so expectations can be written against it."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from crc.clitools import EXIT_INPUT, add_command, at_least, fail, use_color


def load_spans(path: Path) -> list[dict[str, Any]]:
    """Spans from a JSON report (`crc run --json`) or a recording (`crc run --record`), each field checked."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror or e}", EXIT_INPUT)
    if raw[:1] == b"{":
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as e:
            fail(f"{path} is not valid JSON: {e}", EXIT_INPUT)
        if not isinstance(data, dict) or data.get("schema") != "crc-report":
            fail(f"{path} is not a crc JSON report", EXIT_INPUT, "write one with `crc run --json FILE`")
        spans = data.get("spans", [])
        if not isinstance(spans, list):
            fail(f"{path}: spans: expected a list", EXIT_INPUT)
        from crc.runtime.spans import Span

        out = []
        for i, s in enumerate(spans):
            try:
                out.append(Span.from_dict(s).to_dict())
            except (TypeError, ValueError) as e:
                fail(f"{path}: spans[{i}].{e}", EXIT_INPUT, "write the report with `crc run --json FILE`")
        return out
    try:
        from crc.runtime import recording
    except ImportError:
        fail(f"{path} is not a crc JSON report", EXIT_INPUT, "write one with `crc run --json FILE`")
    try:
        rec = recording.read(path)
    except recording.RecordingError as e:
        fail(f"{path}: {e}", EXIT_INPUT)
    return [s.to_dict() for s in rec.spans]


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.1f}ms" if ns < 1e9 else f"{ns / 1e9:.3f}s"


def _matcher(grep: str) -> Any:
    rx = re.compile(grep)
    return lambda s: bool(rx.search(s["name"]) or rx.search(s.get("service", ""))
                          or any(rx.search(f"{k}={v}") for k, v in s.get("attributes", {}).items()))


MAX_INDENT = 40  # deeper spans are indented no further and say their depth


def tree_order(spans: Sequence[dict[str, Any]], *, grep: str | None = None) -> list[Row]:
    """A row for each span shown: children under parents, siblings in start order; linear in the spans and
    without recursion, however deep they nest (runtime/spantree.py).

    No span is left out: spans whose parent ids form a loop are shown as roots, after the others, marked.
    With `grep`, only spans whose name, service or attributes match are shown, with their ancestors as context.
    """
    from crc.runtime.spantree import forest

    f = forest([(s["trace_id"], s["span_id"]) for s in spans],
               [(s["trace_id"], s["parent_span_id"]) if s.get("parent_span_id") else None for s in spans])

    def when(i: int) -> tuple[Any, ...]:
        return (spans[i].get("start_ns") or float("inf"), spans[i]["name"])  # untimed last

    shown: list[bool] | None = None
    hit = [False] * len(spans)
    if grep:
        match = _matcher(grep)
        shown = [False] * len(spans)
        for i, s in enumerate(spans):
            if match(s):
                hit[i] = True
                j = i
                while j >= 0 and not shown[j]:  # the ancestors, once each (no loop is left to follow)
                    shown[j] = True
                    j = f.parent[j]
    rows: list[Row] = []
    todo = sorted(f.roots, key=lambda i: (f.loop[i], *when(i)), reverse=True)
    while todo:
        i = todo.pop()
        if shown is not None and not shown[i]:
            continue
        rows.append(Row(spans[i], f.depth[i], shown is not None and not hit[i], f.loop[i]))
        todo.extend(sorted(f.children[i], key=when, reverse=True))
    return rows


class Row(NamedTuple):
    """A span as shown: its depth, whether it is only context for a `--grep` hit, whether its parent ids loop."""

    span: dict[str, Any]
    depth: int
    context: bool
    loop: bool


def _label(s: dict[str, Any], depth: int, context: bool, loop: bool) -> str:
    """`·` for context, indentation (no deeper than MAX_INDENT: then the depth is written), the name, marks."""
    deep = f"[depth {depth}] " if depth > MAX_INDENT else ""
    return (f"{'·' if context else ' '}{'  ' * min(depth, MAX_INDENT)}{deep}{s['name']}"
            + (" (in a parent loop)" if loop else ""))


def _timed(s: dict[str, Any]) -> bool:
    return bool(s.get("start_ns") and s.get("end_ns"))


def tree_lines(spans: Sequence[dict[str, Any]], *, grep: str | None = None, attrs: bool = False) -> list[str]:
    """One line per span, children indented under parents (context ancestors of `grep` hits marked `·`)."""
    t0 = min((s["start_ns"] for s in spans if s.get("start_ns")), default=0)
    lines: list[str] = []
    for s, depth, context, loop in tree_order(spans, grep=grep):
        dur = _ms(max(0, s["end_ns"] - s["start_ns"])) if _timed(s) else "untimed"
        at = f"+{_ms(s['start_ns'] - t0)}" if _timed(s) else ""
        status = "" if s.get("status", "unset") == "unset" else f" {s['status'].upper()}"
        lines.append(f"{_label(s, depth, context, loop)}  [{s.get('service') or '?'} "
                     f"{s.get('kind', '')}]  {dur} {at}{status}")
        if attrs:
            for k, v in sorted(s.get("attributes", {}).items()):
                lines.append(f" {'  ' * min(depth, MAX_INDENT)}    {k} = {v!r}")
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
    first = min((r.span["start_ns"] for r in rows if _timed(r.span)), default=0)
    label_w = min(max(len(_label(*r)) for r in rows), max(20, width // 3))
    bar_w = max(10, width - label_w - 11)
    red, dim, reset = ("\x1b[31m", "\x1b[2m", "\x1b[0m") if color else ("", "", "")
    blocks: list[list[Row]] = []
    for row in rows:
        if row.depth == 0 or not blocks:
            blocks.append([])
        blocks[-1].append(row)
    lines: list[str] = []
    for block in blocks:
        timed = [r.span for r in block if _timed(r.span)]
        t0 = min((s["start_ns"] for s in timed), default=0)
        total = max(max((s["end_ns"] for s in timed), default=t0 + 1) - t0, 1)
        if timed:
            head, tail = f"at +{_ms(t0 - first)}", f"{_ms(total)}"
            lines.append(f"{dim}{'':<{label_w}} {'':>9} {head}{tail:>{max(0, bar_w - len(head))}}{reset}")
        for s, depth, context, loop in block:
            label = _label(s, depth, context, loop)
            label = label if len(label) <= label_w else label[: label_w - 1] + "…"
            if not _timed(s):
                lines.append(f"{label:<{label_w}} {'untimed':>9}")
                continue
            # Within the axis whatever the times say (an end before its start, times far apart).
            a = min(max((s["start_ns"] - t0) * bar_w * 8 // total, 0), bar_w * 8 - 1)
            b = min(max(a + 1, -(-(s["end_ns"] - t0) * bar_w * 8 // total)), bar_w * 8)  # at least an eighth
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
