"""`crc logs`: a service's log as a run kept it, from a JSON report or a recording."""

from __future__ import annotations

import argparse
import fnmatch
import json
from pathlib import Path
from typing import Any

from crc.clitools import EXIT_INPUT, add_command, fail


def register(sub: Any) -> None:
    p = add_command(sub, "logs", logs_cmd, "print services' logs from a JSON report or a recording")
    p.add_argument("source", type=Path, metavar="FILE", help="a JSON report (--json) or a recording (--record)")
    p.add_argument("services", nargs="*", metavar="SERVICE",
                   help="service names or globs, optionally as SUITE/SERVICE (default: every service)")


def service_logs(path: Path) -> list[tuple[str, str, str, bool]]:
    """(suite, service, log, whole) for every service node of a report or recording; `whole` is False when
    only the last lines were kept (runs without --json or --record keep those of failed tests' services)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror or e}", EXIT_INPUT)
    nodes: list[dict[str, Any]]
    if raw[:1] == b"{":
        try:
            data = json.loads(raw)
        except ValueError as e:
            fail(f"{path} is not valid JSON: {e}", EXIT_INPUT)
        if not isinstance(data, dict) or data.get("schema") != "crc-report" or not isinstance(data.get("nodes"), list):
            fail(f"{path} is not a crc JSON report", EXIT_INPUT, "write one with `crc run --json FILE`")
        nodes = [n for n in data["nodes"] if isinstance(n, dict)]
    else:
        from crc.runtime import recording

        try:
            rec = recording.read(path)
        except recording.RecordingError as e:
            fail(f"{path}: {e}", EXIT_INPUT)
        names = {n: attrs for p in rec.plans for n, attrs in p["nodes"]}
        nodes = [{**r.to_dict(), "suite": names.get(r.node, {}).get("suite"),
                  "label": names.get(r.node, {}).get("name", r.node)} for r in rec.nodes]
    out = []
    for n in nodes:
        detail: dict[str, Any] = n["detail"] if isinstance(n.get("detail"), dict) else {}
        if n.get("kind") != "service":
            continue
        log, whole = detail.get("log"), True
        if not isinstance(log, str):
            log, whole = detail.get("log_tail"), False
        out.append((str(n.get("suite")), str(n.get("label")), log if isinstance(log, str) else "", whole))
    return out


def logs_cmd(a: argparse.Namespace) -> int:
    """Print each chosen service's log, with a header naming it when there are several."""
    found = service_logs(a.source)
    if not found:
        fail(f"{a.source} has no service", EXIT_INPUT)
    chosen = found
    if a.services:
        chosen = [x for x in found if any(fnmatch.fnmatchcase(x[1], pat) or fnmatch.fnmatchcase(f"{x[0]}/{x[1]}", pat)
                                          for pat in a.services)]
        if not chosen:
            from crc.compiler.diagnostics import did_you_mean

            names = sorted({x[1] for x in found})
            fail(f"no service matches {' '.join(a.services)} in {a.source}", EXIT_INPUT,
                 did_you_mean(a.services[0], names) or f"services: {', '.join(names)}")
    for suite, name, log, whole in chosen:
        if len(chosen) > 1:
            print(f"==> {suite}/{name}" + ("" if whole else " (last lines only)") + " <==")
        elif not whole:
            print("(last lines only: `crc run --json` or `--record` keeps whole logs)")
        print(log.rstrip("\n") if log else "(no log was kept for this service)")
    return 0
