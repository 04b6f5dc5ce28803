"""`expect ... eventually`: a step re-run, with its captures, until its `eventually` expectations hold.

The step's attempts are kept (each one's output, trace and captures) in its result's detail, so a recording
has every attempt and replay finds, among them, the one where the expectations first held, as the live run
did. The step's result is its last attempt's; the expectations then judge that attempt and say how many were
made.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio

from .results import PASSED

Outcome = tuple[str, str, dict[str, Any], bool]  # status, message, detail, environment problem


async def poll(once: Callable[[], Awaitable[Outcome]], holds: Callable[[], Awaitable[str | None]],
               spec: Mapping[str, Any]) -> Outcome:
    """Run `once` until its step passes and `holds()` finds no failing expectation (returns None), every
    `spec["every"]` seconds within `spec["within"]`. The result is the last attempt's, with `attempts`."""
    # The event loop's clock (monotonic on a real loop): the deadline and the sleeps read the same time.
    deadline = anyio.current_time() + float(spec["within"])
    attempts: list[dict[str, Any]] = []
    started = anyio.current_time()
    while True:
        status, message, detail, env = await once()
        why = (await holds()) if status == PASSED else message
        attempts.append({"status": status, "message": message, "unmet": why or "",
                         **{k: detail[k] for k in ("output", "trace", "captures", "request", "argv") if k in detail}})
        if why is None or env or anyio.current_time() + float(spec["every"]) > deadline:
            break
        await anyio.sleep(float(spec["every"]))
    detail = {**detail, "attempts": attempts, "eventually": {"attempts": len(attempts), "held": why is None,
                                                             "waited_s": round(anyio.current_time() - started, 3)}}
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


def stop_point(attempts: Sequence[Mapping[str, Any]], at: int, holds: Callable[[Mapping[str, Any]], bool],
               held: bool) -> tuple[str, bool]:
    """How an edited condition moves the point where polling stops, against a recording whose polling stopped
    at its last attempt (`held`: because the recorded condition held there). Returns what to say ("" when it
    does not move) and whether the recording cannot tell the outcome: the new condition holds at none of the
    attempts, where a live run would have polled on past the last recorded one."""
    n = len(attempts)
    if holds(attempts[at]) and at < n - 1:
        return (f"the `eventually` condition now holds at attempt {at + 1} of the {n} recorded: a live run would "
                f"have stopped polling there (the recorded run stopped at attempt {n}); attempt {at + 1} is "
                "checked"), False
    if not holds(attempts[at]) and held:
        return (f"the `eventually` condition holds at none of the {n} recorded attempts, but the recorded run "
                f"stopped polling after attempt {n}, where its condition held: a live run would have polled on, "
                "and the recording cannot say what it would have seen"), True
    return "", False
