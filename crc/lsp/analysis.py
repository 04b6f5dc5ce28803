"""One compile of one document, kept for the language server's requests: diagnostics by file, the name index,
the values the compile computed, and the Plan when the file compiled.

Nothing here speaks the protocol: positions are the compiler's (1-based lines, columns in characters).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crc.compiler.diagnostics import Diagnostic
    from crc.compiler.index import Index
    from crc.compiler.plan import Plan
    from crc.compiler.trace import Trace

# The one diagnostic a module (a file without a suite) gets when checked on its own: it is meant to be imported.
NO_SUITE = "this file declares no suite"


@dataclass
class Analysis:
    path: str  # the document's real path
    text: str
    version: int | None
    diagnostics: dict[str, list[Diagnostic]] = field(default_factory=dict)  # real path -> its diagnostics
    trace: Trace | None = None
    plan: Plan | None = None
    files: dict[str, str] = field(default_factory=dict)  # shown path (as in locations) -> real path
    sources: dict[str, str] = field(default_factory=dict)  # shown path -> text

    _index: Index | None = None
    _index_lock: threading.Lock = field(default_factory=threading.Lock)  # built once, by whoever asks first
    names_from: Analysis | None = None  # when this version does not parse: the last one that did

    @property
    def parsed(self) -> bool:
        """Whether the document parsed (its imports may still have failed)."""
        return self.trace is not None and self.trace.program is not None and self.trace.program.root is not None

    @property
    def index(self) -> Index | None:
        """The name index, built on first use (diagnostics do not need it, so they are published sooner); for
        a version that does not parse, the last parsed version's."""
        if not self.parsed and self.names_from is not None:
            return self.names_from.index
        with self._index_lock:
            if self._index is None and self.trace is not None and self.trace.program is not None:
                from crc.compiler.compile import gc_paused
                from crc.compiler.index import build

                with gc_paused():
                    self._index = build(self.trace.program)
                    self._index.at(self.shown(self.path) or self.path, 1, 1)  # sorts its names for lookups
        return self._index

    @property
    def closure(self) -> set[str]:
        """Real paths of the document and of every file it imports (directly or not)."""
        return {self.path, *self.files.values()}

    def real(self, shown: str) -> str:
        """The real path of a file as the compiler's locations name it."""
        return self.files.get(shown, shown)

    def shown(self, real: str) -> str | None:
        """The name the compiler's locations give the file at real path `real`, if it is in the closure."""
        return next((k for k, v in self.files.items() if v == real), None)


def analyze(path: str, text: str, version: int | None = None, overlay: dict[str, str] | None = None) -> Analysis:
    """Compile `text` as the file at `path`, with `overlay` (real path -> text) used for imported files."""
    from crc.compiler.compile import compile_file
    from crc.compiler.diagnostics import CompileError
    from crc.compiler.trace import Trace
    from crc.config import project_lint_ignore

    trace = Trace()
    out = Analysis(path, text, version, trace=trace)
    diags: list[Diagnostic]
    try:
        # The lints the document's project ignores: its config is found from the document's directory.
        ignore = project_lint_ignore(Path(path).parent) if not path.startswith("<") else ()
        out.plan = compile_file(path, text=text, overlay=overlay, trace=trace, ignore=ignore)
        diags = list(out.plan.warnings)
    except CompileError as e:
        diags = e.diagnostics
    prog = trace.program
    if prog is not None:
        out.files = dict(prog.files)
        out.sources = dict(prog.sources)
        root = prog.root
        if root is not None and not root.suites:  # a module: checked here for itself, and through its importers
            diags = [d for d in diags if d.message != NO_SUITE]
    out.files.setdefault(path, path)
    out.sources.setdefault(path, text)
    for d in diags:
        real = out.real(d.loc.file) if d.loc is not None else path
        out.diagnostics.setdefault(os.path.realpath(real) if not real.startswith("<") else real, []).append(d)
    return out
