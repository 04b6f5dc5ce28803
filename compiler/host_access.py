"""Host access: what a service takes of the machine it runs on, and the grants that allow it.

These give a container the host, so each needs a grant written in the service, in the compiled file itself
(a `.cr` file from a pull request cannot take the CI host without the reviewer seeing it there):

- `privileged`: `allow host "privileged"`;
- `network host`: `allow host "host-network"`;
- binding the Docker socket, or a directory that holds it: `allow host "docker-socket"`;
- binding `/`, a path under /proc, /sys or /etc, or one outside the project: `allow host "PATH"` (that path or
  one above it).

Without its grant, a located error (code `host-access`); a grant nothing needs is a warning (`unused-grant`).
The Plan keeps, on each service node, what it was granted and why: `crc check` and `crc run` list them.
The runtime checks binds again (`ungranted`) when it creates the container: a path may resolve elsewhere by then.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import ir
from .diagnostics import Diagnostics, did_you_mean
from .schema import loc_text
from .source import inside, project_root
from .values import plan_loc

CODE = "host-access"
UNUSED = "unused-grant"
CODES = {
    CODE: "a service takes host access (privileged, host network, the Docker socket, `/`, /proc, /sys, /etc or a "
          "path outside the project) that no `allow host` grants it (error)",
    UNUSED: "an `allow host` grant that nothing in its service needs (warning)",
}
PRIVILEGED, HOST_NETWORK, DOCKER_SOCKET = "privileged", "host-network", "docker-socket"
WORDS = (PRIVILEGED, HOST_NETWORK, DOCKER_SOCKET)
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
SYSTEM_DIRS = ("/proc", "/sys", "/etc")


@dataclass(frozen=True, slots=True)
class Need:
    """One piece of host access: the grant that allows it (a word, or a path a grant must cover) and what it is."""

    grant: str
    what: str
    loc: ir.Loc | None

    @property
    def is_path(self) -> bool:
        return self.grant.startswith("/")


def _sockets() -> set[str]:
    """The Docker socket's usual paths, and what they resolve to on this machine."""
    return {p for s in DOCKER_SOCKETS for p in (s, os.path.realpath(s))}


def _same_file(path: str, others: Iterable[str]) -> bool:
    """Whether `path` is one of `others` under another name (a hard link)."""
    try:
        return any(os.path.exists(o) and os.path.samefile(path, o) for o in others)
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return False


def resolve(source: str, base: str) -> str:
    """A bind source as the runtime mounts it: relative to `base` (the compiled file's directory), symlinks
    resolved (a path the OS cannot resolve, with a NUL, is taken as written: it needs the grants it names)."""
    try:
        return os.path.realpath(os.path.join(base, source))
    except ValueError:
        return os.path.normpath(os.path.join(base, source))


def bind_needs(source: str, loc: ir.Loc | None, base: str, project: str) -> list[Need]:
    """What binding host path `source` needs granted (nothing for a path inside the project)."""
    real = resolve(source, base)
    sockets = _sockets()
    if real in sockets or _same_file(real, sockets):  # the socket itself, or a hard link to it
        return [Need(DOCKER_SOCKET, f"binds the Docker socket ({real})", loc)]
    needs = []
    if any(inside(s, real) for s in sockets):
        needs.append(Need(DOCKER_SOCKET, f"binds {real}, which holds the Docker socket", loc))
    if real == "/":
        needs.append(Need("/", "binds the host's root directory /", loc))
    elif system := next((d for d in SYSTEM_DIRS if inside(real, d)), None):
        needs.append(Need(real, f"binds {real}, in the host's {system}", loc))
    elif not inside(real, project):
        needs.append(Need(real, f"binds {real}, outside the project ({project})", loc))
    return needs


def covers(grant: str, need: Need) -> bool:
    """Whether a grant allows a need: the same word, or a path at or above the needed path."""
    if need.is_path:
        return grant.startswith("/") and inside(need.grant, os.path.realpath(grant))
    return grant == need.grant


def ungranted(needs: Iterable[Need], grants: Iterable[str]) -> list[Need]:
    """The needs none of `grants` covers."""
    granted = list(grants)
    return [n for n in needs if not any(covers(g, n) for g in granted)]


def _help(need: Need) -> str:
    return f'if it should have it, grant it in the service: allow host "{need.grant}"'


def check(service: str, root: str, *, binds: Sequence[tuple[str | None, ir.Loc | None]],
          privileged: Sequence[ir.Loc], host_network: Sequence[ir.Loc], grants: Sequence[ir.HostGrant],
          ports: Sequence[ir.Port], internal: ir.Loc | None, diags: Diagnostics) -> list[dict[str, Any]]:
    """Check a service's host access against its grants; returns the grants it uses, as the Plan keeps them:
    `{"grant", "loc", "uses": [what, ...]}` in the order written."""
    base, project = os.path.dirname(os.path.abspath(root)), project_root(root)
    needs: list[Need] = []
    for at in privileged[:1]:
        needs.append(Need(PRIVILEGED, "runs privileged (every device and capability of the host)", at))
    for loc in host_network[:1]:
        needs.append(Need(HOST_NETWORK, "shares the host's network", loc))
        if internal is not None:
            diags.error(f"service `{service}` shares the host's network in a suite whose network is internal", loc,
                        "a host-network service has every route the host has: drop `network host`, or "
                        "`network internal` from the suite", notes=(("the suite's network is internal", internal),))
    for p in ports if host_network or internal is not None else ():
        if p.host is not None:  # `port N` (declared, for probes) is fine; publishing is not
            why = "shares the host's network" if host_network else "is on an internal network"
            diags.error(f"service `{service}` {why}: it publishes no ports", p.loc,
                        f"write `port {_port_text(p.container)}` without `-> HOST`: crc reaches the port "
                        + ("on 127.0.0.1" if host_network else "at the container's address"))
    for source, where in binds:
        if source is not None and "{{" not in source:
            needs.extend(bind_needs(source, where, base, project))

    written: list[tuple[ir.Str, ir.HostGrant]] = []
    for g in grants:
        if g.loc.file != root:
            diags.error("host access is granted in the compiled file only", g.loc,
                        f"write `allow host` in the service `{service}` of {root}, where a reviewer of that "
                        "file sees it", code=CODE)
            continue
        for s in g.grants:
            if s.value in WORDS or (s.value.startswith("/") and "\x00" not in s.value):
                written.append((s, g))
            else:
                diags.error(f"`{s.value}` is not a host access grant", s.loc,
                            did_you_mean(s.value, WORDS) or
                            'grants are "privileged", "host-network", "docker-socket" or an absolute host path')

    used: dict[int, list[str]] = {}
    for need in needs:
        by = next((i for i, (s, _) in enumerate(written) if covers(s.value, need)), None)
        if by is None:
            diags.error(f"service `{service}` {need.what}: host access needs a grant", need.loc, _help(need),
                        code=CODE)
        else:
            used.setdefault(by, []).append(need.what)
    out = []
    for i, (s, _) in enumerate(written):
        if i in used:
            out.append({"grant": s.value, "loc": plan_loc(s.loc), "uses": used[i]})
        else:
            diags.warning(f'grant "{s.value}" is not needed by service `{service}`', s.loc,
                          "remove it: grants should say exactly what the service takes", code=UNUSED)
    return out


def _port_text(v: ir.Int | ir.Ref) -> str:
    return str(v.value) if isinstance(v, ir.Int) else v.name


def listing(plan_nodes: Iterable[tuple[str, dict[str, Any]]]) -> list[str]:
    """One line per grant of a Plan's services, in source order: `file:line:col: host access "GRANT" for service
    `S` of suite "X": what it allows`."""
    grants = [(g, d) for _n, d in plan_nodes if d.get("kind") == "service" for g in d.get("host_access") or ()]
    grants.sort(key=lambda gd: (gd[0]["loc"]["file"], gd[0]["loc"]["line"], gd[0]["loc"]["col"]))
    return [f'{loc_text(g["loc"])}: host access "{g["grant"]}" for service `{d["name"]}` of suite "{d["suite"]}": '
            + "; ".join(g["uses"]) for g, d in grants]

