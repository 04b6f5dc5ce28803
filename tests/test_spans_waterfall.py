"""`crc spans --waterfall`: durations as bars, each root span's tree on its own time axis."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from conftest import run_crc

from crc.commands_spans import waterfall_lines

MS = 1_000_000
T = 1_800_000_000_000_000_000


def span(name: str, sid: str, start_ms: float | None, dur_ms: float, parent: str | None = None,
         status: str = "unset", trace: str = "a" * 32, **attrs: Any) -> dict[str, Any]:
    start = 0 if start_ms is None else T + int(start_ms * MS)
    return {"trace_id": trace, "span_id": sid, "parent_span_id": parent, "name": name, "kind": "internal",
            "status": status, "status_message": "", "start_ns": start,
            "end_ns": 0 if start_ms is None else start + int(dur_ms * MS), "service": "api",
            "attributes": attrs, "resource": {}, "scope": "", "events": [], "links": [], "received_ns": T}


SPANS = [
    span("GET /orders", "01", 0, 40),
    span("validate", "02", 0, 10, parent="01"),
    span("redis SET", "03", 10, 20, parent="01", status="error", db="redis"),
    span("redis GET", "04", 30, 10, parent="01"),
    span("later", "05", 1000, 4, trace="b" * 32),
    span("no clock", "06", None, 0, trace="c" * 32),
]


LINE = re.compile(r"^(?P<label>.*?\S)\s+(?P<dur>\d[\d.]*m?s|untimed) ?(?P<bar>.*)$")


def bars(lines: list[str]) -> dict[str, str]:
    """Name -> the bar part of its line (after the duration column)."""
    out = {}
    for ln in lines:
        m = LINE.match(ln)
        if m and not ln.lstrip().startswith("at +"):
            out[m["label"].strip(" ·")] = m["bar"]
    return out


def test_bars_are_proportional_on_each_root_span_axis() -> None:
    # The longest label is 12 columns and the duration 9: 40-column bars, 1 ms of a 40 ms trace per column.
    lines = waterfall_lines(SPANS, width=63)
    b = bars(lines)
    assert b["GET /orders"] == "█" * 40
    assert b["validate"] == "█" * 10
    assert b["redis SET"] == " " * 10 + "▓" * 20  # status error: its own glyph
    assert b["redis GET"] == " " * 30 + "█" * 10
    assert b["later"] == "█" * 40  # a trace a second later gets its own axis, not a sliver
    assert "untimed" in next(ln for ln in lines if "no clock" in ln)
    headers = [ln for ln in lines if ln.strip().startswith("at +")]
    assert [h.split()[1] for h in headers] == ["+0.0ms", "+1.000s"]
    assert headers[0].rstrip().endswith("40.0ms")


def test_short_spans_still_show_and_colour_is_optional() -> None:
    spans = [span("root", "01", 0, 1000), span("blip", "02", 500, 0.01, parent="01", status="error")]
    lines = waterfall_lines(spans, width=72, color=True)
    blip = next(ln for ln in lines if "blip" in ln)
    assert "\x1b[31m" in blip and blip.rstrip("\x1b[0m").endswith("▏")  # one eighth of a cell, red
    assert all("\x1b" not in ln for ln in waterfall_lines(spans, width=72))


def test_cli_waterfall_with_grep(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"schema": "crc-report", "version": 1, "spans": SPANS}), encoding="utf-8")
    proc = run_crc("spans", report, "--waterfall", "--width", "72", "--grep", "db=redis")
    assert proc.returncode == 0, proc.stderr
    names = [m["label"].strip() for ln in proc.stdout.splitlines() if (m := LINE.match(ln))
             and not ln.lstrip().startswith("at +")]
    assert names == ["·GET /orders", "redis SET"]  # the hit and its ancestor, as context
    proc = run_crc("spans", report, "-w", "--width", "10")
    assert proc.returncode == 2 and "smaller than 40" in proc.stderr
