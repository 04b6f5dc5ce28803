"""Parametrised tests: `test "NAME" for a in [..], b in [..] { ... }` becomes one test per combination.

Each instance is a test of its own: its name shows its values (the name's `{{ a }}` rendered, else
`NAME [a=1, b="x"]`), and its body starts with `let a = VALUE` for each parameter, so the values are lets of
that test (usable in steps, expectations and templates), and seeded values drawn in it are its own.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from . import ir
from .diagnostics import Diagnostics

_TEMPLATE = re.compile(r"\{\{|\{%")


def expand(test: ir.Test, diags: Diagnostics, render: Callable[[ir.Str, dict[str, Any]], str | None],
           text_of: Callable[[ir.Value], str]) -> list[ir.Test]:
    """The instances of `test` (itself alone when it has no `for` clause)."""
    if not test.params:
        return [test]
    lists: list[tuple[ir.Name, tuple[ir.Value, ...]]] = []
    seen: set[str] = set()
    for name, values in test.params:
        if name.name in seen:
            diags.error(f"parameter `{name.name}` is given twice", name.loc)
            return []
        seen.add(name.name)
        if not isinstance(values, ir.List) or not values.items:
            diags.error(f"`for {name.name} in ...` takes a non-empty list of values", getattr(values, "loc", name.loc),
                        f"for example: for {name.name} in [1, 2, 3]")
            return []
        lists.append((name, values.items))
    out = []
    for combo in itertools.product(*(values for _, values in lists)):
        lets = tuple(ir.Let(name, value, name.loc) for (name, _), value in zip(lists, combo, strict=True))
        if _TEMPLATE.search(test.name.value):
            label = render(test.name, {let.name.name: let.value for let in lets}) or test.name.value
        else:
            shown = ", ".join(f"{let.name.name}={text_of(let.value)}" for let in lets)
            label = f"{test.name.value} [{shown}]"
        out.append(replace(test, name=replace(test.name, value=label), items=(*lets, *test.items), params=()))
    return out
