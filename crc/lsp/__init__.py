"""The language server for `.cr` files (`crc lsp`): diagnostics as you type, hover, go to definition and
references, completion, outline and formatting. Importing this package costs nothing: the server and the
compiler load when the command runs."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Adds `crc lsp`."""
    from crc.clitools import add_command

    add_command(sub, "lsp", lsp_cmd, "run the language server (LSP over stdio) for editors")


def lsp_cmd(a: argparse.Namespace) -> int:
    """Run the language server for .cr files over standard input and output, until the editor closes it.

    Editors start it themselves: see docs/editors.md for VS Code, Neovim and Helix."""
    from .server import main

    return main()
