"""Reports of a run: live progress, the final summary, JUnit XML and the JSON report (schema in docs/)."""

from __future__ import annotations

import json
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .results import ERROR, FAILED, PASSED, SKIPPED, Cause, NodeResult, RunResult, TestResult, label_of, node_name

if TYPE_CHECKING:
    from crc.compiler.plan import Plan
    from crc.compiler.schema import Loc

JSON_SCHEMA_VERSION = 1
_MARK = {PASSED: "ok", FAILED: "FAIL", SKIPPED: "skip", ERROR: "ERROR"}
_COLOR = {PASSED: "green", FAILED: "red", SKIPPED: "yellow", ERROR: "red"}


class Progress:
    """Live progress: a rich status line on a terminal, plain lines otherwise (or with --no-progress).

    Plain mode prints one line per finished test (and per service that fails), so CI logs read top to bottom;
    `verbose` prints every node as it finishes instead.
    """

    def __init__(self, labels: Mapping[str, Mapping[str, Any]], *, live: bool, stream: TextIO | None = None,
                 verbose: bool = False):
        self.labels = labels
        self.stream = stream or sys.stdout
        self.live = live and self.stream.isatty()
        self.verbose = verbose
        self.running: dict[str, float] = {}
        self.finished = 0
        self._status: Any = None
        self._console: Any = None
        # Each test's nodes, to print the test's line when its last node finishes.
        self._left: dict[tuple[str, str], int] = {}
        self._tests: dict[tuple[str, str], list[NodeResult]] = {}
        for d in labels.values():
            if d.get("test") is not None:
                key = (str(d.get("suite", "")), str(d["test"]))
                self._left[key] = self._left.get(key, 0) + 1

    def __enter__(self) -> Progress:
        if self.live:
            from rich.console import Console

            self._console = Console(file=self.stream)
            self._status = self._console.status("starting")
            self._status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()

    def _name(self, node: str) -> str:
        d = self.labels.get(node, {})
        where = f"{d.get('suite', '')}" + (f" / {d['test']}" if d.get("test") else "")
        return f"{node_name(self.labels, node)} ({where})"

    def started(self, node: str) -> None:
        self.running[node] = time.monotonic()
        self._refresh()

    def finished_node(self, r: NodeResult) -> None:
        self.running.pop(r.node, None)
        self.finished += 1
        d = self.labels.get(r.node, {})
        if self.verbose:
            self._line(r.status, self._name(r.node), r.duration_s, r.message)
        elif d.get("test") is None:
            if r.status in (FAILED, ERROR):  # a service that failed: its tests say why only later
                self._line(r.status, self._name(r.node), r.duration_s, r.message)
        else:
            key = (str(d.get("suite", "")), str(d["test"]))
            done = self._tests.setdefault(key, [])
            done.append(r)
            if len(done) == self._left.get(key, 0):
                self._test_line(key, done)
        self._refresh()

    def _test_line(self, key: tuple[str, str], results: list[NodeResult]) -> None:
        """One line for a finished test: its verdict, name, duration and its first failure's message."""
        statuses = {r.status for r in results}
        status = next((s for s in (ERROR, FAILED, PASSED) if s in statuses), SKIPPED)
        started = [r.started_ns for r in results if r.started_ns]
        span_s = (max(r.ended_ns for r in results) - min(started)) / 1e9 if started else 0.0
        why = next((r.message for r in results if r.status == status and r.message), "")
        self._line(status, f"test {key[0]} / {key[1]}", span_s, why if status in (FAILED, ERROR) else "")

    def _line(self, status: str, name: str, duration_s: float, message: str) -> None:
        text = f"{name}  {duration_s * 1000:.0f}ms"
        first = message.splitlines()[0] if message and status in (FAILED, ERROR) else ""
        if self._console is not None:
            self._console.print(f"[{_COLOR[status]}]{_MARK[status]:>5}[/]  {text}", highlight=False)
            if first:
                self._console.print(f"       {first}", highlight=False, markup=False)
        else:
            print(f"{_MARK[status]:>5}  {text}" + (f"\n       {first}" if first else ""), file=self.stream,
                  flush=True)

    def log_line(self, service: str, line: str) -> None:
        """A service's log line, prefixed by its name (`crc run --logs`)."""
        text = f"{service} | {line}"
        if self._console is not None:
            self._console.print(text, style="cyan", highlight=False, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def note(self, line: str) -> None:
        """A line about the run's preparation (image pulls and builds), printed as it happens."""
        if self._console is not None:
            self._console.print(line, style="dim", highlight=False, markup=False)
        else:
            print(f"       {line}", file=self.stream, flush=True)

    def _refresh(self) -> None:
        if self._status is not None:
            names = ", ".join(label_of(self.labels, n) for n in list(self.running)[:4])
            more = f" +{len(self.running) - 4}" if len(self.running) > 4 else ""
            self._status.update(f"{self.finished} done, running: {names}{more}")


def summary_text(result: RunResult, labels: Mapping[str, Mapping[str, Any]]) -> str:
    """The end-of-run summary: each failed test with the failing nodes' messages, then the counts."""
    lines: list[str] = []
    for t in result.tests:
        if t.status in (FAILED, ERROR):
            lines.append(f"\n{_MARK[t.status]} {t.suite} / {t.name}")
            if why := failure_text(t):
                lines.append(why)
    c = result.counts()
    took = (result.ended_ns - result.started_ns) / 1e9
    tail = ", interrupted" if result.interrupted else ""
    lines.append(f"\n{c[PASSED]} passed, {c[FAILED] + c[ERROR]} failed, {c[SKIPPED]} skipped "
                 f"in {took:.2f}s (run {result.run_id}){tail}")
    return "\n".join(lines).lstrip("\n")


def failure_text(t: TestResult) -> str:
    """Why a test failed: each failing node's located message, then the last log lines of its services that
    the messages do not already end with. The summary prints it under the test; the pytest plugin as the
    item's failure."""
    lines: list[str] = []
    for msg in t.failures:
        for i, ln in enumerate(msg.splitlines()):
            lines.append(("  - " if i == 0 else "    ") + ln)
    for service, tail in t.logs:
        if "--- last log lines ---\n" + tail in "\n".join(t.failures):
            continue  # its failure message already ends with this very tail
        lines.append(f"  log of service `{service}` (last lines):")
        lines.extend(f"    | {ln}" for ln in (tail.splitlines() or ["(empty)"]))
    return "\n".join(lines)


def to_json(result: RunResult, labels: Mapping[str, Mapping[str, Any]], spans: list[dict[str, Any]] | None = None
            ) -> dict[str, Any]:
    """The JSON report; docs/reports.md documents every field."""
    return {
        "schema": "crc-report",
        "version": JSON_SCHEMA_VERSION,
        "run_id": result.run_id,
        "started_ns": result.started_ns,
        "ended_ns": result.ended_ns,
        "exit_code": result.exit_code(),
        "interrupted": result.interrupted,
        "plans": list(result.plans),
        "summary": result.counts(),
        "tests": [t.to_dict() for t in result.tests],
        "nodes": [{**r.to_dict(), "label": label_of(labels, n),
                   "loc": labels.get(n, {}).get("loc"), "suite": labels.get(n, {}).get("suite"),
                   "test": labels.get(n, {}).get("test")}
                  for n, r in sorted(result.nodes.items())],
        "spans": spans or [],
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_junit(path: Path, result: RunResult, plans: Iterable[Plan]) -> None:
    """JUnit XML: a testsuite per crc suite, a testcase per test (with the file and line of its declaration,
    from `plans`), failures naming the failing nodes."""
    declared: dict[tuple[str, str], Loc] = {}
    node_locs: dict[str, Loc] = {}
    for p in plans:
        declared.update(((t["suite"], t["name"]), t["loc"]) for t in p.tests)
        node_locs.update((n, d["loc"]) for n, d in p.nodes.items())
    root = ET.Element("testsuites", name="crc", tests=str(len(result.tests)),
                      time=f"{(result.ended_ns - result.started_ns) / 1e9:.3f}")
    by_suite: dict[str, list[Any]] = {}
    for t in result.tests:
        by_suite.setdefault(t.suite, []).append(t)
    total_fail = total_err = total_skip = 0
    for suite, tests in by_suite.items():
        fails = sum(t.status == FAILED for t in tests)
        errs = sum(t.status == ERROR for t in tests)
        skips = sum(t.status == SKIPPED for t in tests)
        total_fail, total_err, total_skip = total_fail + fails, total_err + errs, total_skip + skips
        ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(tests)), failures=str(fails),
                           errors=str(errs), skipped=str(skips), time=f"{sum(t.duration_s for t in tests):.3f}")
        for t in tests:
            tc = ET.SubElement(ts, "testcase", classname=suite, name=t.name, time=f"{t.duration_s:.3f}")
            loc = declared.get((t.suite, t.name)) or next((node_locs[n] for n in t.nodes if n in node_locs), None)
            if loc:
                tc.set("file", loc["file"])
                tc.set("line", str(loc["line"]))
            if t.status in (FAILED, ERROR):
                tag = "failure" if t.status == FAILED else "error"
                el = ET.SubElement(tc, tag, message=(t.failures[0].splitlines()[0] if t.failures else t.status),
                                   type=t.status)
                el.text = "\n\n".join(t.failures)
                if t.logs:  # CI systems show system-out beside the failure
                    out = ET.SubElement(tc, "system-out")
                    out.text = "\n".join(f"--- log of service {svc} (last lines) ---\n{tail}" for svc, tail in t.logs)
            elif t.status == SKIPPED:
                # A replayed node with nothing recorded to check it against says why; else a dependency failed.
                why = next((r.message for n in t.nodes if (r := result.nodes.get(n)) is not None
                            and r.cause is Cause.NO_DATA), "dependencies failed")
                ET.SubElement(tc, "skipped", message=why)
    root.set("failures", str(total_fail))
    root.set("errors", str(total_err))
    root.set("skipped", str(total_skip))
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
