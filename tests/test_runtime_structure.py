"""Structural rules of crc's code, checked on its source: every task owned by a task group, aiodocker's
private API behind one adapter, Docker labels spelled by one helper."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT

RUNTIME = sorted((ROOT / "runtime").glob("*.py"))
SOURCES = sorted(p for d in ("crc", "runtime", "compiler") for p in (ROOT / d).rglob("*.py"))
# A task nobody owns, a future settled from a thread, gather, or a thread of our own: anyio task groups
# (`tg.start`/`start_soon`) own tasks, and threads go through `anyio.to_thread` / `anyio.from_thread`.
UNOWNED = re.compile(r"asyncio\.(gather|create_task|ensure_future|wait\b|run_coroutine_threadsafe|Future\b)"
                     r"|call_soon_threadsafe|\bcreate_task\(|\.set_result\(|\.set_exception\(|threading\.Thread\b"
                     r"|run_in_executor")
# The exceptions, each with the reason given beside it in the source.
ALLOWED = {
    # pygls owns the event loop and dispatches handlers itself: no task group spans the server's life.
    ("crc/lsp/server.py", "asyncio.ensure_future(self._check_later"),
    # pygls's loop is plain asyncio: a single-worker executor keeps the compiles in order.
    ("crc/lsp/server.py", "loop.run_in_executor(self.executor, analyze"),
    ("crc/lsp/server.py", "loop.run_in_executor(self.executor, lambda: result.index)"),
}


def _hits() -> list[tuple[str, str]]:
    return [(p.relative_to(ROOT).as_posix(), line.strip()) for p in SOURCES
            for line in p.read_text().splitlines() if UNOWNED.search(line)]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_bare_tasks_gather_or_futures_settled_from_threads(path: Path) -> None:
    rel = path.relative_to(ROOT).as_posix()
    hits = [f"{rel}:{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
            if UNOWNED.search(line) and not any(rel == f and needle in line for f, needle in ALLOWED)]
    assert hits == []


def test_every_allowed_exception_still_exists() -> None:
    """An exception whose line is gone must leave the list, or it would excuse a new one."""
    hits = _hits()
    stale = [(f, needle) for f, needle in ALLOWED if not any(f == h and needle in line for h, line in hits)]
    assert stale == []


def test_the_rule_catches_what_it_forbids() -> None:
    for line in ("asyncio.gather(a(), b())", "loop.create_task(x())", "asyncio.ensure_future(x)",
                 "loop.call_soon_threadsafe(fut.set_result, None)", "fut.set_result(None)",
                 "threading.Thread(target=load).start()", "await loop.run_in_executor(None, f)"):
        assert UNOWNED.search(line), line
    for line in ("async with anyio.create_task_group() as tg:", "await tg.start(rx.serve, host)",
                 "await anyio.to_thread.run_sync(load)", "tg.start_soon(watch)"):
        assert not UNOWNED.search(line), line


def test_the_otlp_receiver_serves_as_a_task_that_reports_its_start() -> None:
    source = (ROOT / "runtime" / "otlp.py").read_text()
    assert "task_status: TaskStatus[Endpoints]" in source and "task_status.started(ep)" in source
    runner = (ROOT / "runtime" / "runner.py").read_text()
    # Whatever the task group is called: the listener is started in one, never on its own.
    assert re.search(r"await [\w.]+\.start\(functools\.partial\(\s*self\.receiver\.serve,", runner)
    assert not re.search(r"self\.receiver\.listen\(", runner)


def test_aiodocker_internals_are_called_from_the_adapter_only() -> None:
    private = re.compile(r"\._query(_json)?\(|\._check_version\(|\bExec\(")
    hits = [f"{p.name}:{i}" for p in RUNTIME if p.name != "dockerapi.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if private.search(line)]
    assert hits == []


def test_docker_labels_are_spelled_by_the_labels_helper_only() -> None:
    spelled = re.compile(r"[\"']io\.crc\.")
    hits = [f"{p.name}:{i}" for p in RUNTIME if p.name != "backend.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if spelled.search(line)]
    assert hits == []


# Node ids (`SUITE::TEST::step:NAME`) and locations (`file:line:col`) are never split to recover what they were
# built from: the Plan carries the names and structured locations (as tests/test_compiler_passes.py keeps for
# the compiler). What is split on ":" here is not crc's own text.
SPLIT_ON_COLON = re.compile(r"""\.r?(split|partition)\(\s*["']::?["']|\.rpartition\(\s*["']::?["']""")
SPLIT_ALLOWED = {
    ("runtime/spancheck.py", 'hostport.split(":", 1)'),  # a host:port a span's attribute names
    ("runtime/otlp.py", 'peer.partition(":")'),  # gRPC's peer address (`ipv4:HOST:PORT`)
    ("runtime/otlp.py", 'rest.rsplit(":", 1)'),
    ("runtime/registry_auth.py", '.decode().partition(":")'),  # a Docker config's `user:password`
    ("crc/commands_init.py", '.split(":")[0]'),  # an image reference's tag
}


def test_no_node_id_or_location_is_split_back() -> None:
    hits = {(p.relative_to(ROOT).as_posix(), line.strip()) for p in SOURCES
            for line in p.read_text().splitlines() if SPLIT_ON_COLON.search(line)}
    unexplained = sorted(h for h in hits if not any(h[0] == f and needle in h[1] for f, needle in SPLIT_ALLOWED))
    assert unexplained == []
    stale = [(f, needle) for f, needle in SPLIT_ALLOWED if not any(f == h and needle in line for h, line in hits)]
    assert stale == []
    for line in ('step.rsplit(":", 1)[-1]', "loc.split(':')", 'node_id.split("::")', 'loc.rpartition(":")'):
        assert SPLIT_ON_COLON.search(line), line
