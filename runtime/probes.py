"""Readiness probes: tcp, http, exec, log and span, each bounded by its `within` deadline.

A probe stops early, with the container's state, when the service exits: nobody waits out a deadline for a
container that is already dead.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio

from .backend import Backend, BackendError, EngineUnavailable
from .matching import RegexTimeout, search_regex
from .spans import Span

POLL_FIRST = 0.01
# A TCP/HTTP attempt is one connect from the host: cheap, so poll often (readiness is seen within ~20 ms).
# An exec attempt costs the engine three API calls and a process, so it backs off further.
POLL_MAX = {"tcp": 0.02, "http": 0.02, "exec": 0.05}


async def wait_ready(backend: Backend, container: str, probe: Mapping[str, Any], *, exited: anyio.Event,
                     spans: Callable[[], Sequence[Span]], receiver: Any, service: str) -> tuple[bool, str]:
    """(True, "") once the probe passes; (False, why) at the deadline or when the container exits."""
    kind = probe["type"]
    within = float(probe["within"])
    outcome: list[tuple[bool, str]] = []
    last: list[str] = []  # what the latest failed attempt said; the deadline cancels the poll, not this
    fatal: list[EngineUnavailable] = []

    async def attempt() -> None:
        try:
            await attempt_once()
        except EngineUnavailable as e:
            fatal.append(e)  # raised after the task group (not wrapped in a group): the run cannot go on
        except BackendError as e:
            outcome.append((False, f"last attempt: {e}"))

    async def attempt_once() -> None:
        if kind == "log":
            outcome.append(await _log(backend, container, probe))
        elif kind == "span":
            name = probe["span"]
            ok = await receiver.wait_for(lambda _: any(s.name == name and s.service == service for s in spans()),
                                         timeout=None)
            outcome.append((ok, ""))
        else:
            outcome.append(await _poll(backend, container, probe, last))

    async with anyio.create_task_group() as tg:

        async def deadline() -> None:
            await anyio.sleep(within)
            tg.cancel_scope.cancel()

        async def died() -> None:
            await exited.wait()
            await anyio.sleep(0.05)  # a last log line may still be on its way
            tg.cancel_scope.cancel()

        async def run() -> None:
            await attempt()
            tg.cancel_scope.cancel()

        tg.start_soon(deadline)
        tg.start_soon(died)
        tg.start_soon(run)
    if fatal:
        raise fatal[0]
    if outcome and outcome[0][0]:
        return True, ""
    if exited.is_set():
        return False, f"the container exited while `ready {kind}` waited"
    detail = outcome[0][1] if outcome and outcome[0][1] else (last[-1] if last else "")
    from crc.compiler.values import probe_text  # only for this message: it imports the compiler's IR

    return False, f"`ready {probe_text(probe)}` did not pass within {within:g}s" + (f" ({detail})" if detail else "")


async def _poll(backend: Backend, container: str, probe: Mapping[str, Any], last: list[str]) -> tuple[bool, str]:
    """tcp/http/exec: try, back off a little, try again; the caller's deadline ends it."""
    delay = POLL_FIRST
    addr: str | None = None
    while True:
        try:
            if probe["type"] == "exec":
                res = await backend.exec(container, probe["argv"], timeout=max(1.0, float(probe["within"])))
                if res.exit_code == 0:
                    return True, ""
                out = (res.stderr or res.stdout or b"").decode("utf-8", "replace").strip().splitlines()
                last[:] = [f"last attempt: exit code {res.exit_code}" + (f": {out[-1][:200]}" if out else "")]
            else:
                if addr is None:
                    addr = await backend.address(container)
                ok, why = await (_tcp(addr, probe["port"]) if probe["type"] == "tcp" else _http(addr, probe))
                if ok:
                    return True, ""
                last[:] = [why]
        except BackendError as e:
            last[:] = [f"last attempt: {e}"]
        await anyio.sleep(delay)
        delay = min(POLL_MAX.get(probe["type"], 0.05), delay * 1.5)


async def _tcp(host: str, port: int) -> tuple[bool, str]:
    try:
        with anyio.fail_after(1.0):
            stream = await anyio.connect_tcp(host, port)
        await stream.aclose()
        return True, ""
    except (OSError, TimeoutError) as e:
        return False, f"last attempt: {e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__}"


async def _http(host: str, probe: Mapping[str, Any]) -> tuple[bool, str]:
    """A minimal HTTP/1.1 GET: readiness needs the status line only."""
    try:
        with anyio.fail_after(2.0):
            stream = await anyio.connect_tcp(host, probe["port"])
            async with stream:
                req = f"GET {probe['path']} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                await stream.send(req.encode())
                head = b""
                while b"\r\n" not in head and len(head) < 4096:
                    head += await stream.receive()
    except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError) as e:
        return False, f"last attempt: {type(e).__name__}"
    m = re.match(rb"HTTP/\d(?:\.\d)? (\d{3})", head)
    if not m:
        return False, "last attempt: not an HTTP response"
    status = int(m.group(1))
    want = probe.get("status")
    ok = status == want if want else 200 <= status < 400
    return ok, f"last status {status}"


async def _log(backend: Backend, container: str, probe: Mapping[str, Any]) -> tuple[bool, str]:
    """Follow the log stream once (no re-reading) until the pattern shows up."""
    if probe["regex"]:
        rx = probe["regex"]
        hit: Callable[[str], bool] = lambda text: search_regex(rx, text) is not None  # noqa: E731
    else:
        hit = lambda text: probe["text"] in text  # noqa: E731
    seen = ""
    started = time.time_ns()
    async for _stream, chunk in backend.stream_logs(container, since_ns=None):
        seen += chunk.decode("utf-8", "replace")
        # Match line by line, keeping an unfinished last line for the next chunk.
        *lines, seen = seen.split("\n")
        try:
            if any(hit(ln) for ln in lines) or hit(seen):
                return True, ""
        except RegexTimeout as e:
            return False, str(e)
    del started
    return False, "the log ended without the pattern"
