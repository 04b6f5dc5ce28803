"""Secrets: values read from crc's environment when a container starts, and never stored anywhere.

`{{ secret("API_TOKEN") }}` renders, at compile time, to a placeholder naming the variable (`⟦secret:API_TOKEN⟧`),
so Plans, the compile cache, `crc graph` and every report hold the name, never the value. The runtime puts the
value in only where it hands text to the engine (service env and command, step argv and env: `reveal`), and
replaces every occurrence of a revealed value in what it keeps or prints (outputs, messages, logs, spans:
`Masker`). The compiler refuses a placeholder anywhere else (an image name, an expectation, a selector): it
could never be compared or shown without giving the value away.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

OPEN, CLOSE = "⟦secret:", "⟧"
MASK = "***"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(re.escape(OPEN) + r"([A-Za-z_][A-Za-z0-9_]*)" + re.escape(CLOSE))
MIN_LENGTH = 4  # a shorter value could not be hidden without hiding ordinary text too


class SecretProblem(Exception):
    """A secret cannot be revealed: its variable is not set, or its value is too short to hide."""


def placeholder(name: str) -> str:
    """What `secret(name)` renders to at compile time."""
    return f"{OPEN}{name}{CLOSE}"


def names_in(x: Any) -> set[str]:
    """The secret names referred to anywhere in plain data."""
    found: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, str):
            if OPEN in v:
                found.update(_PLACEHOLDER.findall(v))
        elif isinstance(v, Mapping):
            for k, val in v.items():
                walk(k)
                walk(val)
        elif isinstance(v, list | tuple):
            for i in v:
                walk(i)

    walk(x)
    return found


def misplaced(kind: str, attrs: Mapping[str, Any]) -> list[str]:
    """The attributes of a node that hold a secret where the runtime would not reveal it."""
    from .schema import revealed  # where a secret may go: the schema marks what the runtime reveals

    allowed = revealed().get(kind, ())
    return sorted(k for k, v in attrs.items() if k not in allowed and names_in(v))


def reveal(text: str, environ: Mapping[str, str], masker: Masker | None = None) -> str:
    """`text` with each placeholder replaced by its variable's value (noted in `masker`, to be hidden)."""
    if OPEN not in text:
        return text

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in environ:
            raise SecretProblem(f"secret `{name}` is not set: export {name} in the environment crc runs in")
        if len(environ[name]) < MIN_LENGTH:
            raise SecretProblem(f"secret `{name}` is shorter than {MIN_LENGTH} characters: crc could not hide "
                                "it in outputs without hiding ordinary text too")
        if masker is not None:
            masker.add(environ[name])
        return environ[name]

    return _PLACEHOLDER.sub(value, text)


class Masker:
    """Replaces every revealed secret value with `***` in text and plain data (longest value first)."""

    def __init__(self, values: Iterable[str] = ()):
        self.values: set[str] = set()
        self._rx: re.Pattern[str] | None = None
        for v in values:
            self.add(v)

    def add(self, value: str) -> None:
        """Hide `value` from now on."""
        if value and value not in self.values:
            self.values.add(value)
            alts = sorted(self.values, key=lambda s: (-len(s), s))
            self._rx = re.compile("|".join(re.escape(v) for v in alts))

    def __bool__(self) -> bool:
        return self._rx is not None

    def text(self, s: str) -> str:
        """`s` with every secret value replaced."""
        return self._rx.sub(MASK, s) if self._rx is not None and s else s

    def data(self, x: Any) -> Any:
        """A copy of plain data (dicts, lists, strings) with every secret value replaced in its strings."""
        if self._rx is None:
            return x
        if isinstance(x, str):
            return self.text(x)
        if isinstance(x, dict):
            return {self.text(k) if isinstance(k, str) else k: self.data(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return type(x)(self.data(v) for v in x) if isinstance(x, tuple) else [self.data(v) for v in x]
        return x

