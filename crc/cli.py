"""The `crc` command line. Heavy modules are imported inside commands so `crc --help` stays fast.

Exit codes: 0 all passed, 1 some test failed, 2 bad input, 3 environment. The commands live in the
`commands_*` modules, each adding its subcommands in `register`; what they share is in `crc.clitools`.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence

from crc import __version__
from crc.clitools import EXIT_INPUT, CrcParser, Handler

# Each of these modules adds its subcommands in `register(sub)`; `crc --help` lists them in this order.
# A new command module is one more name here.
COMMAND_MODULES = ("crc.commands_compile", "crc.commands_run", "crc.commands_fmt", "crc.commands_replay",
                   "crc.commands_spans", "crc.commands_report", "crc.commands_doctor", "crc.commands_logs",
                   "crc.commands_list", "crc.commands_config", "crc.commands_init", "crc.lsp",
                   "crc.commands_dev")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The whole command line and its commands by name: every command module adds its subcommands."""
    from importlib import import_module

    parser = CrcParser(
        prog="crc", description="Cleanroom: hermetic integration tests written in .cr files.", allow_abbrev=False,
        epilog="Exit codes: 0 all passed, 1 a test failed, 2 bad input, 3 environment (engine, image).")
    parser.add_argument("--version", action="version", version=f"crc {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        import_module(name).register(sub)
    return parser, dict(sub.choices)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: usage errors exit 2, never a traceback for bad input."""
    # Imports and compiling make hundreds of thousands of objects and no garbage cycles worth collecting:
    # the cyclic GC stays off until `crc run` starts its event loop (commands_run.execute turns it back on).
    gc.disable()
    parser, commands = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((i for i, w in enumerate(words) if not w.startswith("-")), None)
    if command is not None and words[command] in commands:
        parser.parse_args(words[:command])  # options before the command: --help, --version, or an error
        # Options may come between a command's arguments (`crc run a.cr -j 2 b.cr`), as users expect.
        args = commands[words[command]].parse_intermixed_args(words[command + 1:])
    else:
        args = parser.parse_args(words)  # help, version, or an unknown command: argparse says which
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:  # `crc` alone
        parser.print_help()
        raise SystemExit(EXIT_INPUT)
    try:
        code = handler(args)
    except KeyboardInterrupt:
        print("crc: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code or 0)
