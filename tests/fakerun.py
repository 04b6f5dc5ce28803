"""Run `.cr` sources with the Runner on the scriptable fake backend, on a virtual clock (no engine, no waiting).

Shared by the runner behaviour tests and the live-vs-replay equivalence tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from crc.compiler.compile import compile_file
from crc.compiler.plan import Plan
from crc.runtime.fake_backend import FakeBackend, FakeReceiver
from crc.runtime.results import RunResult
from crc.runtime.runner import Runner, RunOptions
from virtualclock import VirtualClockLoop

VIRTUAL = {"loop_factory": VirtualClockLoop}


@dataclass
class FakeRun:
    result: RunResult
    runner: Runner
    backend: FakeBackend
    plans: list[Plan]

    @property
    def nodes(self) -> dict[str, Any]:
        return self.result.nodes

    def node(self, suffix: str) -> Any:
        """The result of the one node whose id ends with `suffix`."""
        found = [r for n, r in self.result.nodes.items() if n.endswith(suffix)]
        assert len(found) == 1, (suffix, sorted(self.result.nodes))
        return found[0]

    def test(self, name: str) -> Any:
        return next(t for t in self.result.tests if t.name == name)


def compile_source(tmp_path: Path, text: str, name: str = "t.cr") -> Plan:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return compile_file(str(path))


async def run_async(plans: list[Plan], backend: FakeBackend, options: RunOptions | None = None,
                    cancel_after: float | None = None) -> FakeRun:
    """Run `plans` on `backend`; `cancel_after` (virtual seconds) cancels the run as Ctrl-C does."""
    def receiver(on_spans: Any) -> FakeReceiver:
        backend.receiver = FakeReceiver(on_spans)
        return backend.receiver

    runner = Runner(backend, options or RunOptions(), run_id="run-fake", receiver=receiver)
    runner.check_off_loop = False  # a worker thread's time is invisible to the virtual clock
    result = None
    with anyio.CancelScope() as scope:
        if cancel_after is not None:
            scope.deadline = anyio.current_time() + cancel_after
        result = await runner.run(plans)
    if result is None:
        result = runner.partial_result(plans)
    return FakeRun(result, runner, backend, plans)


def run(plans: list[Plan], backend: FakeBackend, options: RunOptions | None = None,
        cancel_after: float | None = None) -> FakeRun:
    """`run_async` in its own event loop on a virtual clock."""
    return anyio.run(run_async, plans, backend, options, cancel_after, backend="asyncio", backend_options=VIRTUAL)
