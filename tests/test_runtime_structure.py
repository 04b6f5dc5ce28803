"""Structural rules of the runtime, checked on its source: every task owned by a task group, aiodocker's
private API behind one adapter, Docker labels spelled by one helper."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT

RUNTIME = sorted((ROOT / "runtime").glob("*.py"))
# The OTLP receiver bridges gRPC's own server and is held to the same rule by its own tests.
OWN_RULES = {"otlp.py"}
UNOWNED = re.compile(r"asyncio\.(gather|create_task|ensure_future|wait\b|run_coroutine_threadsafe|Future\b)"
                     r"|call_soon_threadsafe|loop\.create_task|\.set_result\(")


@pytest.mark.parametrize("path", [p for p in RUNTIME if p.name not in OWN_RULES], ids=lambda p: p.name)
def test_no_bare_tasks_gather_or_futures_settled_from_threads(path: Path) -> None:
    hits = [f"{path.name}:{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
            if UNOWNED.search(line)]
    assert hits == []


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
