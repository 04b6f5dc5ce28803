"""Reads a `.cr` file and everything it imports: `std/NAME` from the stdlib, other paths relative to the
importing file. Import cycles and missing files are located diagnostics.

Files are read by `source.read_source` (regular files only, size-bounded, bad UTF-8 located). An import
that resolves (symlinks included) outside the project is refused before it is opened, so no diagnostic can
show another file's lines. The project is the nearest directory above the compiled file that holds `.git`,
else that file's own directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from . import ir
from .diagnostics import Diagnostics, did_you_mean
from .literals import holds_template
from .parser import parse
from .source import MAX_IMPORT_PATH, SourceError, inside, project_root, read_source, why

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
            text = read_source(path)
        except SourceError as e:
            if e.shown is not None:
                prog.sources[path] = e.shown
            diags.error(e.message, e.loc, e.help)
            return prog
    prog.sources[path] = text
    try:
        ident, root = os.path.realpath(path), project_root(path)
    except (OSError, ValueError):  # a path the OS refuses (too long, NUL): it imports nothing relative
        ident = root = path
    prog.files[path] = ident
    prog.root = parse(text, path, diags)
    if prog.root is not None:
        _load_imports(prog.root, prog, diags, stack=[(ident, path)], done={ident}, overlay=overlay or {},
                      root=root)
    return prog


def _load_imports(mod: ir.Module, prog: Program, diags: Diagnostics, stack: list[tuple[str, str]],
                  done: set[str], overlay: Mapping[str, str], root: str) -> None:
    """Load what `mod` imports, depth first; `stack` holds (identity, shown path) of the importers."""
    for imp in mod.imports:
        target = imp.path.value
        # A path holding a template is taken as written, and `literals.check` says so: the loader still reads
        # such a file if it exists, but does not say a second time, at the same place, that it does not.
        where = Diagnostics() if holds_template(target) else diags
        if target.startswith(STD_PREFIX):
            name = target[len(STD_PREFIX):]
            key = ident = f"<std>/{name}.cr"
            text = _read_std(name)
            real = std_file(name)
            if text is None:
                where.error(f"no stdlib module `{target}`", imp.path.loc,
                            did_you_mean(name, stdlib_modules()) or
                            f"stdlib modules: {', '.join(STD_PREFIX + m for m in stdlib_modules())}")
                continue
        else:
            found = _resolve(target, mod.path, root, imp, where, overlay)
            if found is None:
                continue
            real = ident = found[0]
            key = found[1]
            try:
                text = overlay[ident] if ident in overlay else read_source(ident, key)
            except SourceError as e:
                if e.loc is not None:  # undecodable: located in the imported file
                    prog.sources[key] = e.shown or ""
                    diags.error(e.message, e.loc, e.help)
                where.error(f"cannot import `{_short(target)}`: {e.message.removeprefix(f'cannot read {key}: ')}",
                            imp.path.loc, e.help)
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
        _load_imports(sub, prog, diags, [*stack, (ident, key)], done, overlay, root)
        prog.modules.append(sub)


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _resolve(target: str, importer: str, root: str, imp: ir.Import, diags: Diagnostics,
             overlay: Mapping[str, str]) -> tuple[str, str] | None:
    """(real path, path shown) of a relative import, or None after a located error: a path the OS would
    refuse, no such file, or a file outside the project (refused before it is opened)."""
    if "\0" in target or len(target) > MAX_IMPORT_PATH:
        bad = "it holds a NUL character" if "\0" in target else f"longer than {MAX_IMPORT_PATH} characters"
        diags.error(f"cannot import `{_short(target)}`: {bad}", imp.path.loc)
        return None
    p = Path(importer).parent / target
    try:
        if p.suffix != ".cr" and not p.exists():
            p = p.with_suffix(".cr")
        ident = os.path.realpath(p)
        exists = ident in overlay or os.path.lexists(p)
    except (OSError, ValueError) as e:
        diags.error(f"cannot import `{_short(target)}`: {why(e)}", imp.path.loc)
        return None
    key = Path(os.path.normpath(p)).as_posix()  # shown in diagnostics: `d/../d/a.cr` reads `d/a.cr`
    if not exists:
        diags.error(f"cannot import `{_short(target)}`: no file {key}", imp.path.loc,
                    "import paths are relative to the importing file; `std/NAME` names a stdlib module")
        return None
    if not inside(ident, root):
        diags.error(f"cannot import `{_short(target)}`: it is outside the project ({root})", imp.path.loc,
                    "imports stay inside the project (the directory holding .git, else the compiled file's); "
                    "copy the module in, or import a stdlib module with `std/NAME`")
        return None
    return ident, key
