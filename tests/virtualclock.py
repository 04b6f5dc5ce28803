"""An asyncio event loop on a virtual clock: when nothing is ready to run, time jumps to the next timer.

Like trio's `MockClock(autojump_threshold=0)`, for asyncio (the backend crc runs on): sleeps, timeouts and
deadlines take no real time, and a test's outcome cannot depend on how fast or loaded the machine is.
Real I/O still works (it is polled first); a loop with no timer and no I/O for `STALL_S` real seconds is a
deadlock, and raises instead of hanging the test run.

Use: `anyio.run(main, backend="asyncio", backend_options={"loop_factory": VirtualClockLoop})`, or the
`anyio_backend` fixture returning ("asyncio", {"loop_factory": VirtualClockLoop}).
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

STALL_S = 30.0


class _JumpSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:  # no timer: only I/O (a thread's result) can wake the loop
            ready = super().select(STALL_S)
            if not ready:
                raise RuntimeError(f"virtual clock: nothing to run, no timer and no I/O for {STALL_S:g}s")
            return ready
        self.now += timeout
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` advances only when every task waits on a timer."""

    def __init__(self) -> None:
        self._jump = _JumpSelector()
        super().__init__(self._jump)

    def time(self) -> float:
        return self._jump.now
