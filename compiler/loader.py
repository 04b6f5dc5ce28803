"""Reads a `.cr` file and everything it imports: `std/NAME` from the stdlib, other paths relative to the
importing file. Import cycles and missing files are located diagnostics."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from . import ir
from .diagnostics import Diagnostics, did_you_mean
from .parser import parse

STD_PREFIX = "std/"


@dataclass
class Program:
    """A root module and its import closure, with every source text (for diagnostics and digests)."""

    root: ir.Module | None
    modules: list[ir.Module] = field(default_factory=list)  # imported modules, dependencies first
    sources: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # shown path -> real file (a stdlib module's too)


def stdlib_modules() -> list[str]:
    return sorted(p.name[:-3] for p in resources.files("crc.stdlib").iterdir() if p.name.endswith(".cr"))


def _read_std(name: str) -> str | None:
    f = resources.files("crc.stdlib").joinpath(f"{name}.cr")
    return f.read_text(encoding="utf-8") if f.is_file() else None


def std_file(name: str) -> str:
    """The real path of stdlib module `name` (as shipped with crc)."""
    return str(resources.files("crc.stdlib").joinpath(f"{name}.cr"))


def load(path: str, diags: Diagnostics, text: str | None = None,
         overlay: Mapping[str, str] | None = None) -> Program:
    """Parse `path` (or `text` under that name) and its imports; errors go to `diags`.

    `overlay` maps real paths to texts read instead of the files (an editor's unsaved buffers)."""
    prog = Program(root=None)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            diags.error(f"cannot read {path}: {e.strerror if isinstance(e, OSError) else e}", None)
            return prog
    prog.sources[path] = text
    ident = os.path.realpath(path)
    prog.files[path] = ident
    prog.root = parse(text, path, diags)
    if prog.root is not None:
        _load_imports(prog.root, prog, diags, stack=[(ident, path)], done={ident}, overlay=overlay or {})
    return prog


def _load_imports(mod: ir.Module, prog: Program, diags: Diagnostics, stack: list[tuple[str, str]],
                  done: set[str], overlay: Mapping[str, str]) -> None:
    """Load what `mod` imports, depth first; `stack` holds (identity, shown path) of the importers."""
    for imp in mod.imports:
        target = imp.path.value
        if target.startswith(STD_PREFIX):
            name = target[len(STD_PREFIX):]
            key = ident = f"<std>/{name}.cr"
            text = _read_std(name)
            real = std_file(name)
            if text is None:
                diags.error(f"no stdlib module `{target}`", imp.path.loc,
                            did_you_mean(name, stdlib_modules()) or
                            f"stdlib modules: {', '.join(STD_PREFIX + m for m in stdlib_modules())}")
                continue
        else:
            p = Path(mod.path).parent / target
            if p.suffix != ".cr":
                p = p.with_suffix(".cr") if not p.exists() else p
            ident = os.path.realpath(p)
            key = Path(os.path.normpath(p)).as_posix()  # shown in diagnostics: `d/../d/a.cr` reads `d/a.cr`
            real = ident
            try:
                text = overlay[ident] if ident in overlay else p.read_text(encoding="utf-8")
            except OSError:
                diags.error(f"cannot import `{target}`: no file {key}", imp.path.loc,
                            "import paths are relative to the importing file; `std/NAME` names a stdlib module")
                continue
        idents = [i for i, _ in stack]
        if ident in idents:
            cycle = " -> ".join([*(shown for _, shown in stack[idents.index(ident):]), key])
            diags.error(f"import cycle: {cycle}", imp.path.loc, "move the shared declarations into a third file")
            continue
        if ident in done:
            continue
        done.add(ident)
        prog.sources[key] = text
        prog.files[key] = real
        sub = parse(text, key, diags)
        if sub is None:
            continue
        _load_imports(sub, prog, diags, [*stack, (ident, key)], done, overlay)
        prog.modules.append(sub)
