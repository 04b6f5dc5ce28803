"""What a run produced: per-node outcomes, per-test verdicts, the run summary. Plain data both ways."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PASSED, FAILED, SKIPPED, ERROR = "passed", "failed", "skipped", "error"


@dataclass(frozen=True, slots=True)
class NodeResult:
    """The outcome of one DAG node.

    `status` is passed, failed (an expectation did not hold), skipped (a dependency failed) or error (crc
    could not do the work: engine, image, timeout). `env_problem` marks errors of the environment (exit 3).
    """

    node: str
    kind: str
    status: str
    message: str = ""
    started_ns: int = 0
    ended_ns: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    env_problem: bool = False

    @property
    def duration_s(self) -> float:
        return max(0, self.ended_ns - self.started_ns) / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "kind": self.kind, "status": self.status, "message": self.message,
                "started_ns": self.started_ns, "ended_ns": self.ended_ns, "detail": self.detail,
                "env_problem": self.env_problem}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NodeResult:
        return cls(d["node"], d["kind"], d["status"], d.get("message", ""), d.get("started_ns", 0),
                   d.get("ended_ns", 0), dict(d.get("detail", {})), d.get("env_problem", False))


@dataclass(frozen=True, slots=True)
class TestResult:
    suite: str
    name: str
    status: str
    duration_s: float
    failures: tuple[str, ...]  # one message per failed node, with its location
    nodes: tuple[str, ...]
    loc: str = ""  # where the test is declared: file:line:col
    # A failed or errored test's services' last log lines: (service name, tail), in the order it uses them.
    logs: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "name": self.name, "status": self.status, "duration_s": self.duration_s,
                "failures": list(self.failures), "nodes": list(self.nodes), "loc": self.loc,
                "logs": dict(self.logs)}


@dataclass(frozen=True, slots=True)
class RunResult:
    run_id: str
    started_ns: int
    ended_ns: int
    tests: tuple[TestResult, ...]
    nodes: dict[str, NodeResult]
    plans: tuple[str, ...]  # source paths
    interrupted: bool = False

    @property
    def passed(self) -> bool:
        return not self.interrupted and all(t.status == PASSED for t in self.tests)

    @property
    def env_problem(self) -> bool:
        return any(r.env_problem for r in self.nodes.values())

    def exit_code(self) -> int:
        if self.env_problem:
            return 3
        return 0 if self.passed else 1

    def counts(self) -> dict[str, int]:
        out = {PASSED: 0, FAILED: 0, SKIPPED: 0, ERROR: 0}
        for t in self.tests:
            out[t.status] += 1
        return out


def test_verdict(statuses: list[str]) -> str:
    """A test fails if any of its nodes failed or errored; it is skipped only if nothing in it ran."""
    if any(s in (FAILED, ERROR) for s in statuses):
        return ERROR if ERROR in statuses and FAILED not in statuses else FAILED
    if statuses and all(s == SKIPPED for s in statuses):
        return SKIPPED
    return PASSED
