"""What a compile computed, by source location: for tools that explain a file (the language server).

`compile_file(..., trace=Trace())` fills it in as it compiles, errors or not, so the values shown are the
ones a run uses: the same seeded `fake.*` and `uuid()` draws, in the same order. Keys are the locations of:

- a `let`'s name: the value bound (once per suite that evaluates it: a top-level let is evaluated per suite);
- a template parameter's name: the value it was bound to, once per service made from the template;
- a string literal holding a template expression: the text it rendered to (a string rendered at run time,
  because it uses a capture, is not here);
- a service's name: its effective definition after its template, as in the Plan's service node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .ir import Loc

if TYPE_CHECKING:
    from .loader import Program


@dataclass(frozen=True, slots=True)
class Resolved:
    """One value computed at a location, and where it was computed (`suite "s"`, `service web in suite "s"`)."""

    where: str
    value: Any


@dataclass
class Trace:
    program: Program | None = None  # the file and its imports as parsed (None when reading the file failed)
    values: dict[Loc, list[Resolved]] = field(default_factory=dict)

    def note(self, loc: Loc, where: str, value: Any) -> None:
        """Record that `value` was computed at `loc`."""
        self.values.setdefault(loc, []).append(Resolved(where, value))
