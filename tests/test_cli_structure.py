"""The CLI's shape: run options declared once, and no import cycle among crc/'s modules."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

import networkx as nx
from crc.runtime.options import DEFAULTS, RunOptions

from crc.cli import COMMAND_MODULES, build_parser

CRC = Path(__file__).resolve().parents[1] / "crc"


def _module(path: Path) -> str:
    rel = path.relative_to(CRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _crc_imports(path: Path, modules: set[str]) -> set[str]:
    """The crc/ modules a file imports (at any depth in the file: lazy imports count too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module in modules:
                out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names} & modules
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names} & modules
    return out


def test_crc_package_has_no_import_cycle() -> None:
    files = {_module(p): p for p in CRC.rglob("*.py")}
    g = nx.DiGraph()
    for name, p in files.items():
        g.add_node(name)
        g.add_edges_from((name, m) for m in _crc_imports(p, set(files)) if m not in (name, "crc"))
    g.add_edges_from(("crc.cli", m) for m in COMMAND_MODULES)  # imported by name
    assert list(nx.simple_cycles(g)) == []
    assert not {m for m in g.successors("crc.clitools") if m.startswith("crc.commands_")}  # helpers import no command


def test_cli_defaults_come_from_run_options() -> None:
    _, commands = build_parser()
    for command in ("run", "dev"):
        text = " ".join(commands[command].format_help().split())
        assert f"else {DEFAULTS.jobs})" in text
        assert f"else {DEFAULTS.span_timeout:g})" in text


def test_run_and_dev_share_their_run_options() -> None:
    _, commands = build_parser()

    def shared(command: str) -> dict[str, tuple[str | None, object]]:
        return {a.dest: (a.help, a.choices) for a in commands[command]._actions
                if a.dest in ("jobs", "span_timeout", "pull")}

    assert len(shared("run")) == 3 and shared("run") == shared("dev")


def test_run_option_defaults_are_written_nowhere_else() -> None:
    """A numeric default of RunOptions spelled as a literal next to its name elsewhere is a second source."""
    root = CRC.parent
    sources = [p for d in ("crc", "runtime", "compiler") for p in (root / d).rglob("*.py")
               if p.name != "options.py"]
    for f in fields(RunOptions):
        default = f.default
        if isinstance(default, bool) or not isinstance(default, int | float):
            continue
        pattern = re.compile(rf"{f.name}\w*\s*(:[^=\n]*)?=\s*{re.escape(repr(default))}\b")
        for p in sources:
            hit = pattern.search(p.read_text(encoding="utf-8"))
            assert hit is None, f"{p.relative_to(root)}: {hit.group(0) if hit else ''}"


def test_docs_show_the_run_option_defaults() -> None:
    cli = (CRC.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    assert f"`jobs` in the config, else {DEFAULTS.jobs} |" in cli
    assert f"`span_timeout` in the config, else {DEFAULTS.span_timeout:g} |" in cli


def test_recording_keeps_a_projection_of_the_options() -> None:
    o = RunOptions(jobs=3, fail_fast=True, select=("a",), shuffle_seed=9, span_timeout=1.5,
                   allow_pull=True, pull_always=True, keep="all", log_tails=True)
    p = o.recorded()
    assert (p.jobs, p.fail_fast, p.select, p.shuffle_seed, p.span_timeout) == (3, True, ("a",), 9, 1.5)
    assert (p.allow_pull, p.pull_always, p.keep, p.log_tails) == (False, False, "none", False)
    data = o.to_data()
    assert set(data) == {f.name for f in fields(RunOptions) if f.metadata.get("recorded")}
    assert data["select"] == ["a"]
    assert RunOptions.from_data(data) == p
    assert RunOptions.from_data({}) == DEFAULTS
