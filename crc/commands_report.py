"""`crc report`: reports of a finished run, drawn from its JSON report or its recording; and the HTML report
that `crc run --html` writes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crc.clitools import EXIT_ENV, EXIT_INPUT, add_command, damage, fail

if TYPE_CHECKING:
    from crc.compiler.plan import Plan
    from crc.runtime.html_report import ReportInput
    from crc.runtime.results import RunResult


def register(sub: Any) -> None:
    """Adds `crc report`."""
    p = add_command(sub, "report", report_cmd, "write a report of a finished run (JSON report or recording)")
    p.add_argument("input", type=Path, metavar="REPORT",
                   help="a JSON report (crc run --json) or a recording (crc run --record)")
    p.add_argument("--html", type=Path, metavar="FILE", required=True,
                   help="write a self-contained HTML report here (span waterfalls, DAGs, outputs, logs)")


def report_cmd(a: argparse.Namespace) -> int:
    """Write the HTML report of a finished run from its JSON report or its recording.

    From a recording the report has everything: each test's DAG and its span expectations drawn on the
    waterfall. A JSON report carries no Plan: the sources it names are compiled again when they still exist."""
    src: Path = a.input
    inp = load_input(src)
    try:
        write_html(a.html, inp)
    except damage() as e:
        from crc.runtime.recording import is_recording

        if not is_recording(src):  # a report's Plans are compiled from its sources: this is a bug, not input
            raise
        fail(f"{src}: damaged recording: its Plan cannot be drawn: {type(e).__name__}: {e}", EXIT_INPUT)
    return 0


def load_input(path: Path) -> ReportInput:
    """A report input from a recording or a JSON report; exits 2 with a located message on bad input."""
    from crc.runtime import html_report, recording

    if not path.exists():
        fail(f"no such file: {path}", EXIT_INPUT)
    if recording.is_recording(path):
        from crc.commands_replay import load_recording

        rec = load_recording(path)
        try:
            return html_report.from_recording(rec, source=str(path))
        except recording.RecordingError as e:
            fail(f"{path}: {e}", EXIT_INPUT)
        except damage() as e:  # well-formed, with a nonsense Plan
            fail(f"{path}: damaged recording: {type(e).__name__}: {e}", EXIT_INPUT)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        fail(f"{path}: cannot read it as text: {e}", EXIT_INPUT,
             "give a JSON report (crc run --json FILE) or a recording (crc run --record FILE)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}", EXIT_INPUT,
             "give a JSON report (crc run --json FILE) or a recording (crc run --record FILE)")
    try:
        return html_report.from_json(data, _plans_of(data), source=str(path))
    except html_report.ReportInputError as e:
        fail(f"{path}: {e}", EXIT_INPUT, "write one with `crc run --json FILE`")


def _plans_of(data: Any) -> list[Plan]:
    """The Plans of a JSON report's sources, when they still compile (a report without them has no DAG)."""
    if not isinstance(data, dict) or not isinstance(data.get("plans"), list):
        return []
    from crc.compiler.compile import compile_file
    from crc.compiler.diagnostics import CompileError

    plans = []
    for src in data["plans"]:
        try:
            usable = isinstance(src, str) and Path(src).is_file()
        except (OSError, ValueError):  # a name the OS refuses (too long, a NUL): not a source
            usable = False
        if usable:
            try:
                plans.append(compile_file(src))
            except CompileError:
                continue  # the source changed since the run: the report is drawn without its DAG
    return plans


def write_html(path: Path, inp: ReportInput) -> None:
    """Write the HTML report and say so on stderr (stdout carries the run's summary)."""
    from crc.runtime.html_report import write_html as write

    try:
        size = write(path, inp)
    except OSError as e:
        fail(f"cannot write {path}: {e.strerror or e}", EXIT_ENV)
    print(f"wrote {path} ({size} bytes, {len(inp.tests)} tests, {len(inp.spans)} spans)", file=sys.stderr)


def write_run_html(path: Path, result: RunResult, plans: list[Plan], spans: list[dict[str, Any]],
                   options: Any) -> None:
    """`crc run --html`: the report of the run just finished, from its recording (secrets masked)."""
    from crc.commands_replay import build_recording
    from crc.runtime.html_report import from_recording

    write_html(path, from_recording(build_recording(result, plans, spans, options), source=", ".join(result.plans)))
