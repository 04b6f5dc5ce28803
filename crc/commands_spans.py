"""`crc spans`: what a run really collected, as a tree, so expectations can be written against it."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crc.clitools import EXIT_INPUT, add_command, fail


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


def tree_lines(spans: Sequence[dict[str, Any]], *, grep: str | None = None, attrs: bool = False) -> list[str]:
    """One line per span, children indented under parents, siblings in start order.

    With `grep`, only spans whose name, service or attributes match are shown, with their ancestors for
    context (dimmed by a leading `·`).
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
    if grep:
        rx = re.compile(grep)
        hits = [s for s in spans if rx.search(s["name"]) or rx.search(s.get("service", ""))
                or any(rx.search(f"{k}={v}") for k, v in s.get("attributes", {}).items())]
        shown = set()
        for s in hits:
            cur: dict[str, Any] | None = s
            while cur is not None and (cur["trace_id"], cur["span_id"]) not in shown:  # ids may loop
                shown.add((cur["trace_id"], cur["span_id"]))
                p = cur.get("parent_span_id")
                cur = by_id.get((cur["trace_id"], p)) if p else None
        hit_ids = {(s["trace_id"], s["span_id"]) for s in hits}
    t0 = min((s["start_ns"] for s in spans if s.get("start_ns")), default=0)
    lines: list[str] = []

    emitted: set[tuple[str, str]] = set()

    def walk(s: dict[str, Any], depth: int) -> None:
        key = (s["trace_id"], s["span_id"])
        if (shown is not None and key not in shown) or key in emitted:
            return
        emitted.add(key)
        mark = "·" if shown is not None and key not in hit_ids else " "
        timed = s.get("start_ns") and s.get("end_ns")
        dur = _ms(max(0, s["end_ns"] - s["start_ns"])) if timed else "untimed"
        at = f"+{_ms(s['start_ns'] - t0)}" if timed else ""
        status = "" if s.get("status", "unset") == "unset" else f" {s['status'].upper()}"
        lines.append(f"{mark}{'  ' * depth}{s['name']}  [{s.get('service') or '?'} {s.get('kind', '')}]"
                     f"  {dur} {at}{status}")
        if attrs:
            for k, v in sorted(s.get("attributes", {}).items()):
                lines.append(f" {'  ' * depth}    {k} = {v!r}")
        for c in children.get(key, []):
            walk(c, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    # Spans whose parent ids form a loop are reachable from no root: show them rather than lose them.
    for s in sorted(spans, key=lambda s: (s.get("start_ns") or float("inf"), s["name"])):
        walk(s, 0)
    return lines


def register(sub: Any) -> None:
    """Adds `crc spans`."""
    p = add_command(sub, "spans", spans_cmd, "list the spans a run collected, as a tree")
    p.add_argument("report", type=Path, help="a JSON report (crc run --json) or a recording")
    p.add_argument("-g", "--grep", metavar="REGEX",
                   help="show spans whose name, service or attribute (key=value) matches this regex")
    p.add_argument("-a", "--attrs", action="store_true", help="show each span's attributes")
    p.add_argument("--json", dest="as_json", action="store_true", help="print the (filtered) spans as JSON")


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
            rx = re.compile(grep)
            spans = [s for s in spans if rx.search(s["name"]) or rx.search(s.get("service", ""))
                     or any(rx.search(f"{k}={v}") for k, v in s.get("attributes", {}).items())]
        json.dump(spans, sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    lines = tree_lines(spans, grep=grep, attrs=args.attrs)
    if not lines:
        print("no spans" + (f" match {grep!r}" if grep else " were collected"), file=sys.stderr)
        return 1 if grep else 0
    print("\n".join(lines))
    print(f"{len(spans)} span(s)", file=sys.stderr)
    return 0
