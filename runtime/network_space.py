"""How many suite networks a run's suites hold on their engine, or are creating (`Runner.network_space`).

When the engine has no subnet left, a suite waits while any of them may give one back, and fails (exit 3)
once none holds or is getting one. A run counts its own suites; in a cluster worker each suite has a runner
of its own, in a thread of its own, all on the worker's engine: they share the worker's count.
"""

from __future__ import annotations

import threading

__all__ = ["WORKER", "NetworkSpace"]


class NetworkSpace:
    """A count of networks held or being created, safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    def add(self, n: int) -> int:
        """Count `n` more (a creation started: 1; one failed or a network went: -1); the new count."""
        with self._lock:
            self._count += n
            return self._count

    @property
    def count(self) -> int:
        """Networks held or being created now."""
        return self._count


# The one of this process's cluster worker: its runners all use its engine.
WORKER = NetworkSpace()
