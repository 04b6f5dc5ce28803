"""`crc list`: the suites and tests a run would run, each with its file:line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from crc.clitools import SELECT_HELP, add_command, print_tests, settings


def register(sub: Any) -> None:
    """Adds `crc list`."""
    p = add_command(sub, "list", list_cmd, "list suites and tests with file:line")
    p.add_argument("targets", nargs="*", type=Path, metavar="TARGET",
                   help=".cr files, directories or Plan files; default: `paths` in the config, else what "
                        "`crc compile` wrote last")
    p.add_argument("-k", "--select", action="append", metavar="EXPR", help=SELECT_HELP.replace("run only", "only"))


def list_cmd(a: argparse.Namespace) -> int:
    """List the suites and tests that `crc run` with the same targets and `-k` would run, each with the
    file:line it is declared at. Nothing is started."""
    from crc.commands_run import resolve_plans

    cfg = settings()
    plans = resolve_plans(a.targets or [Path(p) for p in cfg["paths"]])
    print_tests(plans, a.select)
    return 0
