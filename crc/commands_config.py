"""`crc config`: the effective settings and where each came from."""

from __future__ import annotations

import argparse
import json
from typing import Any

from crc.clitools import add_command, settings


def register(sub: Any) -> None:
    """Adds `crc config`."""
    p = add_command(sub, "config", config_cmd, "show the effective settings and where each came from")
    p.add_argument("--json", action="store_true", help="print them as JSON")


def config_cmd(a: argparse.Namespace) -> int:
    """Show the effective settings: command line > environment (CRC_KEY) > config file > defaults.

    The config file is the first `crc.toml`, or `pyproject.toml` with a `[tool.crc]` table, found from the
    working directory upward."""
    from crc.config import SETTINGS

    cfg = settings()
    if a.json:
        print(json.dumps({"file": str(cfg.file) if cfg.file else None,
                          "settings": {k: {"value": _plain(v.value), "source": v.source}
                                       for k, v in cfg.values.items()}}, indent=2))
        return 0
    print(f"config file: {cfg.file if cfg.file else 'none (crc.toml or [tool.crc] in pyproject.toml)'}")
    width = max(len(s.key) for s in SETTINGS)
    shown = {k: as_toml(v.value) for k, v in cfg.values.items()}
    vwidth = max(len(t) for t in shown.values())
    for s in SETTINGS:
        print(f"{s.key:<{width}}  {shown[s.key]:<{vwidth}}  # {cfg.values[s.key].source}")
    return 0


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return list(value) if isinstance(value, tuple) else value


def as_toml(value: Any) -> str:
    """A value as it would be written in the config file (a table inline)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {as_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return f"{value:g}" if isinstance(value, float) else str(value)
