"""`expect ... eventually`: a step re-run, with its captures, until its `eventually` expectations hold.

The step's attempts are kept (each one's output, trace and captures) in its result's detail, so a recording
has every attempt and replay finds, among them, the one where the expectations first held, as the live run
did. The step's result is its last attempt's; the expectations then judge that attempt and say how many were
made.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio

from .results import PASSED

Outcome = tuple[str, str, dict[str, Any], bool]  # status, message, detail, environment problem


async def poll(once: Callable[[], Awaitable[Outcome]], holds: Callable[[], Awaitable[str | None]],
               spec: Mapping[str, Any]) -> Outcome:
    """Run `once` until its step passes and `holds()` finds no failing expectation (returns None), every
    `spec["every"]` seconds within `spec["within"]`. The result is the last attempt's, with `attempts`."""
    deadline = time.monotonic() + float(spec["within"])
    attempts: list[dict[str, Any]] = []
    started = time.monotonic()
    while True:
        status, message, detail, env = await once()
        why = (await holds()) if status == PASSED else message
        attempts.append({"status": status, "message": message, "unmet": why or "",
                         **{k: detail[k] for k in ("output", "trace", "captures", "request", "argv") if k in detail}})
        if why is None or env or time.monotonic() + float(spec["every"]) > deadline:
            break
        await anyio.sleep(float(spec["every"]))
    detail = {**detail, "attempts": attempts, "eventually": {"attempts": len(attempts), "held": why is None,
                                                             "waited_s": round(time.monotonic() - started, 3)}}
    if status != PASSED:
        message = f"{message}\n  (after {len(attempts)} attempt(s) in {detail['eventually']['waited_s']:g}s)"
    return status, message, detail, env


def summary(detail: Mapping[str, Any]) -> str:
    """How an eventually-polled step ended, for its expectations' messages ("" when it was not polled)."""
    ev = detail.get("eventually")
    if not isinstance(ev, Mapping):
        return ""
    return f" (eventually: {ev['attempts']} attempt(s) in {ev['waited_s']:g}s; the last one is shown)"


def first_held(attempts: Sequence[Mapping[str, Any]], holds: Callable[[Mapping[str, Any]], bool]) -> int:
    """The index of the attempt where the expectations first held (the live run stopped there), else the last."""
    for i, a in enumerate(attempts):
        if holds(a):
            return i
    return len(attempts) - 1
