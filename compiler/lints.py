"""Lints: what the compiler already knows that is probably a mistake, reported where it was written.

Each lint has a stable code, shown as `warning[CODE]` (or `error[CODE]`), sent to editors as the LSP
diagnostic's code and listed in docs/language.md. Warnings leave a file compiling; errors fail it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import networkx as nx

from . import ir
from .diagnostics import Diagnostics, did_you_mean

HOST_NEAR_MISS = "host-near-miss"
UNDECLARED_NEED = "undeclared-need"
PROBE_PORT = "probe-port"
BIND_SOURCE = "bind-source"
CODES = {
    HOST_NEAR_MISS: "a host in an env value, command or argv that is not a service but nearly names one (warning)",
    UNDECLARED_NEED: "a service whose env or command names another service it does not `need` (warning)",
    PROBE_PORT: "a readiness probe on a port the service does not declare, when it declares ports (warning)",
    BIND_SOURCE: "a volume whose source does not exist here: the engine would refuse the mount (warning)",
}

# A host in a URL (`scheme://HOST`) or written `HOST:PORT`.
_HOST_IN_TEXT = re.compile(r"[a-z][a-z0-9+.-]*://([A-Za-z0-9_-]+)|(?<![\w.:/-])([A-Za-z][A-Za-z0-9_-]*):\d{2,5}\b")
_NOT_SERVICES = frozenset({"localhost"})

Located = tuple[str, ir.Loc | None]


def hosts(text: str) -> Iterator[str]:
    """The hosts a text names: in URLs (`redis://cache:6379`) and as `host:port`."""
    for m in _HOST_IN_TEXT.finditer(text):
        yield m.group(1) or m.group(2)


def argv_texts(a: ir.Argv | None, values: list[str] | None) -> list[Located]:
    """A command's rendered elements, each with the location it was written at (a list's own element, else
    the whole string)."""
    if a is None or values is None:
        return []
    if a.form == "list" and len(a.items) == len(values):
        return [(v, x.loc) for v, x in zip(values, a.items, strict=True)]
    return [(v, a.items[0].loc if a.items else a.loc) for v in values]


class Lints:
    """The lints of one file, fed by the compiler as it lowers services and steps."""

    def __init__(self, diags: Diagnostics):
        self.diags = diags
        self._texts: dict[str, list[Located]] = {}  # per service: its env values and command elements

    def near_miss(self, texts: Iterable[Located], services: Mapping[str, Any]) -> None:
        """Warns about a host that is not a service but nearly names one (`redis://cahce:6379`)."""
        for text, loc in texts:
            for host in hosts(text):
                if host in services or host in _NOT_SERVICES:
                    continue
                hint = did_you_mean(host, services)
                if hint:
                    self.diags.warning(f"`{host}` is not a service of this suite", loc, hint, code=HOST_NEAR_MISS)

    def service(self, name: str, texts: list[Located], services: Mapping[str, Any],
                declared_ports: list[int | None], probes: Iterable[tuple[int | None, ir.Loc | None]]) -> None:
        """A service's env and command (near misses; kept for `undeclared_needs`) and its probe ports."""
        self.near_miss(texts, services)
        self._texts[name] = texts
        ports = sorted({p for p in declared_ports if p is not None})
        for port, loc in probes:
            if ports and port is not None and port not in ports:
                self.diags.warning(f"the probe checks port {port}, which service `{name}` does not declare",
                                   loc, f"its ports: {', '.join(map(str, ports))}; probe one of them, or add "
                                   f"`port {port}`", code=PROBE_PORT)

    def undeclared_needs(self, sname: str, g: nx.MultiDiGraph, services: Mapping[str, Any]) -> None:
        """Warns about a service whose env or command names another service that it does not need (directly or
        through what it needs): it may start before the other is ready. Once the suite's services are added."""
        def needed(name: str) -> set[str]:
            nid = f"{sname}::service:{name}"
            return {g.nodes[u]["name"] for u in nx.ancestors(g, nid)
                    if g.nodes[u].get("kind") == "service"} if nid in g else set()

        for name, texts in self._texts.items():
            reach = needed(name)
            warned: set[str] = set()
            for text, loc in texts:
                for other in {*hosts(text), *([text] if text in services else [])}:
                    if other in services and other != name and other not in reach and other not in warned \
                            and name not in needed(other):  # the other needs this one: `needs` would cycle
                        warned.add(other)
                        self.diags.warning(f"service `{name}` names service `{other}` but does not need it: it may "
                                           f"start before `{other}` is ready", loc,
                                           f"add `needs {other}` to service `{name}`", code=UNDECLARED_NEED)

    def bind_source(self, source: str | None, loc: ir.Loc | None, base: Path) -> None:
        """A volume's source should exist: the engine refuses to bind-mount a missing path. A warning, not an
        error: a compiled Plan may run on a machine that has it."""
        if source is None or "{{" in source:
            return
        where = base / source
        try:
            if where.exists():
                return
            full = where.resolve()
        except (OSError, ValueError):  # a path the OS refuses (a NUL, too long): nothing to say about it here
            return
        self.diags.warning(f"volume source `{source}` does not exist", loc,
                           f"create it, or fix the path (it is {full})" if not Path(source).is_absolute()
                           else "create it, or fix the path", code=BIND_SOURCE)
