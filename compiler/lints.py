"""Lints: what the compiler already knows that is probably a mistake, reported where it was written.

Each lint has a stable code, shown as `warning[CODE]` (or `error[CODE]`), sent to editors as the LSP
diagnostic's code and listed in docs/language.md. Warnings leave a file compiling; errors fail it.

A lint warning is silenced on its own line by a comment `# crc: allow CODE[, CODE...]`, and everywhere by the
project's `lints.ignore` setting (`suppress`). An allow comment naming no lint, or silencing nothing, is itself
a warning, so that suppressions do not outlive their reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import host_access, ir
from .diagnostics import Diagnostic, Diagnostics, did_you_mean

if TYPE_CHECKING:  # networkx is imported where it is used: the config file checks codes against CODES
    import networkx as nx

HOST_NEAR_MISS = "host-near-miss"
UNDECLARED_NEED = "undeclared-need"
PROBE_PORT = "probe-port"
BIND_SOURCE = "bind-source"
UNKNOWN_LINT = "unknown-lint"
UNUSED_ALLOW = "unused-allow"
CODES = {
    HOST_NEAR_MISS: "a host in an env value, command or argv that is not a service but nearly names one (warning)",
    UNDECLARED_NEED: "a service whose env or command names another service it does not `need` (warning)",
    PROBE_PORT: "a readiness probe on a port the service does not declare, when it declares ports (warning)",
    BIND_SOURCE: "a volume whose source does not exist here: the engine would refuse the mount (warning)",
    UNKNOWN_LINT: "a `# crc: allow` comment naming a code that is not a lint (warning)",
    UNUSED_ALLOW: "a `# crc: allow CODE` comment that silences nothing on its line (warning)",
}
# What `lints.ignore` may name: every warning with a code (errors are never silenced); and what an allow
# comment may silence: those but the warnings about allow comments themselves.
IGNORABLE = frozenset({*CODES, *host_access.CODES} - {host_access.CODE})
ALLOWABLE = IGNORABLE - {UNKNOWN_LINT, UNUSED_ALLOW}


def not_ignorable(code: str, allowable: frozenset[str] = IGNORABLE) -> tuple[str, str]:
    """Why `code` cannot be ignored (or allowed), and a help text."""
    if code == host_access.CODE:
        return (f"`{code}` is an error, which is never silenced",
                "grant the access with `allow host` (see docs/language.md, host access)")
    if code in CODES:
        return f"`{code}` cannot be allowed by a comment", "ignore it in the project's config: [lints] ignore"
    return (f"`{code}` is not a lint code",
            did_you_mean(code, allowable) or f"lint codes: {', '.join(sorted(allowable))}")

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
        import networkx as nx

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


# `# crc: DIRECTIVE REST`; a reason may follow the codes after `--`.
_DIRECTIVE = re.compile(r"#\s*crc\s*:\s*([A-Za-z-]*)\s*:?(.*)")
_CODE = re.compile(r"[^\s,]+")


def suppress(diags: Diagnostics, root: ir.Module, imported: Iterable[ir.Module], ignore: Iterable[str] = ()) -> None:
    """Removes the lint warnings the project ignores (`ignore`, codes already checked by the config) and those
    allowed by a `# crc: allow CODE` comment on the line they point at; then warns about allow comments that
    name no lint, or (when the file has no error, so every lint ran) silence nothing. An allow comment for a
    code the project ignores is not unused: it takes effect again when the project stops ignoring it; nor is
    one in an imported file: whether a template's lint fires depends on the suite using it."""
    ignored = set(ignore)
    allows: dict[tuple[str, int, str], ir.Loc] = {}  # (file, line, code) -> where the comment names it
    extra: list[Diagnostic] = []
    for mod in (root, *imported):
        for c in mod.comments:
            _read_allow(c, allows, extra)
    used: set[tuple[str, int, str]] = set()
    kept: list[Diagnostic] = []
    for d in diags.items:
        if d.severity == "warning" and d.code in ALLOWABLE:
            if d.code in ignored:
                continue
            if d.loc is not None and (key := (d.loc.file, d.loc.line, d.code)) in allows:
                used.add(key)
                continue
        kept.append(d)
    if not diags.has_errors:
        for key, loc in allows.items():
            if key not in used and key[2] not in ignored and key[0] == root.path:
                extra.append(Diagnostic(f"`# crc: allow {key[2]}` silences nothing on this line", loc, "warning",
                                        "remove it (it applies to the warnings of its own line only)",
                                        code=UNUSED_ALLOW))
    diags.items[:] = kept + [d for d in extra if d.code not in ignored]


def _read_allow(c: ir.Comment, allows: dict[tuple[str, int, str], ir.Loc], out: list[Diagnostic]) -> None:
    """Records the codes a `# crc: allow ...` comment names; warns about a `crc:` comment it cannot read."""
    m = _DIRECTIVE.match(c.text)
    if m is None:
        return
    loc = c.loc

    def at(start: int, end: int) -> ir.Loc:
        return ir.Loc(loc.file, loc.line, loc.col + start, loc.line, loc.col + end)

    if m[1] != "allow":  # a misspelt `allow` is reported; other `# crc: ...` comments are prose
        if m[1] and did_you_mean(m[1].lower(), ["allow"]):
            out.append(Diagnostic(f"`crc: {m[1]}` is not a comment crc reads", at(m.start(1), m.end(1)), "warning",
                                  "did you mean `allow`? (`# crc: allow CODE` silences a lint on its line)",
                                  code=UNKNOWN_LINT))
        return
    rest, start = m[2].split("--", 1)[0], m.start(2)
    codes = list(_CODE.finditer(rest))
    if not codes:
        out.append(Diagnostic("`# crc: allow` names no lint", at(m.start(1), m.end(1)), "warning",
                              f"name the codes it silences: {', '.join(sorted(ALLOWABLE))}", code=UNKNOWN_LINT))
    for k in codes:
        code = k[0]
        where = at(start + k.start(), start + k.end())
        if code in ALLOWABLE:
            allows.setdefault((loc.file, loc.line, code), where)
        else:
            message, help = not_ignorable(code, ALLOWABLE)
            out.append(Diagnostic(message, where, "warning", help, code=UNKNOWN_LINT))


def allow_edit(line: str, comment: ir.Comment | None, code: str) -> tuple[int, int, str]:
    """How to allow `code` on a line, given its text and the comment ending it (if any): the text to put in
    place of `line[start:end]`, as (start, end, text). A code is added to an allow comment; another comment
    becomes the reason of a new one."""
    if comment is None:
        end = len(line.rstrip())
        return end, len(line), f"  # crc: allow {code}"
    start = comment.loc.col - 1
    m = _DIRECTIVE.match(comment.text)
    if m is not None and m[1] == "allow":
        codes = m[2].split("--", 1)[0]
        at = start + m.start(2) + len(codes.rstrip())
        return at, at, f", {code}" if codes.strip() else f" {code}"
    reason = comment.text[1:].strip()
    return start, start + len(comment.text), f"# crc: allow {code}" + (f" -- {reason}" if reason else "")
