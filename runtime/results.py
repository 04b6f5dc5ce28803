"""What a run produced: per-node outcomes, per-test verdicts, the run summary. Plain data both ways.

Two shapes, one per level: a `Verdict` is the outcome of one check (a step expectation, a span constraint,
a span node's checks together); a `NodeResult` is a DAG node's outcome in a run, with its timing and what it
captured. Both carry a `Cause`, so consumers (replay, reports) decide by the cause, never by message text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crc.compiler.plan import Plan

    from .spans import Span

PASSED, FAILED, SKIPPED, ERROR = "passed", "failed", "skipped", "error"


class Cause(StrEnum):
    """Why a node has the status it has, when its own data (output, spans) did not decide it alone.

    The value is what reports and recordings store. `NONE`: the node's checks decided (passed or failed).
    """

    NONE = ""
    ENVIRONMENT = "environment"  # no engine, image missing, port taken, no OTLP receiver: exit 3
    BACKEND = "backend"  # the engine refused the work (bad command, bad mount, a service never started)
    NOT_READY = "not-ready"  # a service's readiness probe did not pass
    SERVICE_DIED = "service-died"  # a service the test uses stopped while the test ran
    OOM_KILLED = "oom-killed"  # the kernel killed the step for lack of memory (its service's limit)
    RENDER = "render"  # a run-time template could not be rendered
    DEPENDENCY = "dependency"  # skipped: a node it waits for did not pass
    FAIL_FAST = "fail-fast"  # skipped or cancelled by --fail-fast after another node failed
    SUITE_TIMEOUT = "suite-timeout"
    TEST_TIMEOUT = "test-timeout"
    INTERRUPTED = "interrupted"  # the run was cancelled from outside (Ctrl-C, SIGTERM)
    CANCELLED = "cancelled"  # cancelled for a reason the scheduler was not told
    INTERNAL = "internal"  # a bug: an unexpected exception while running the node
    NO_DATA = "no-data"  # replay: nothing recorded to check this node against

    @property
    def environment(self) -> bool:
        """An error of the machine rather than the test: the run exits 3."""
        return self is Cause.ENVIRONMENT

    @property
    def rechecked(self) -> bool:
        """Whether replay recomputes a node with this cause from recorded data; the others were decided by
        something outside the node's data (the engine, a deadline, another node, Ctrl-C) and stay as recorded."""
        return self in (Cause.NONE, Cause.DEPENDENCY, Cause.RENDER, Cause.NO_DATA)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one check: a step expectation, a span constraint (`id` is its constraint id), or a
    span node's checks together; `spans` are the spans it involved (shown in reports and recordings)."""

    status: str
    message: str = ""
    cause: Cause = Cause.NONE
    spans: tuple[Span, ...] = ()
    id: str = ""

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @classmethod
    def of(cls, passed: bool, message: str = "", **kw: Any) -> Verdict:
        """PASSED with no message, or FAILED with `message`."""
        return cls(PASSED, "", **kw) if passed else cls(FAILED, message, **kw)


@dataclass(frozen=True, slots=True)
class NodeResult:
    """The outcome of one DAG node.

    `status` is passed, failed (an expectation did not hold), skipped (a dependency failed) or error (crc
    could not do the work: engine, image, timeout); `cause` says which, beyond the node's own checks.
    """

    node: str
    kind: str
    status: str
    message: str = ""
    started_ns: int = 0
    ended_ns: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    cause: Cause = Cause.NONE

    @classmethod
    def of(cls, node: str, kind: str, v: Verdict, started_ns: int = 0, ended_ns: int = 0,
           detail: dict[str, Any] | None = None) -> NodeResult:
        """A node's result from its verdict."""
        return cls(node, kind, v.status, v.message, started_ns, ended_ns, detail or {}, v.cause)

    @property
    def env_problem(self) -> bool:
        """An error of the environment (exit 3)."""
        return self.cause.environment

    @property
    def duration_s(self) -> float:
        return max(0, self.ended_ns - self.started_ns) / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "kind": self.kind, "status": self.status, "message": self.message,
                "started_ns": self.started_ns, "ended_ns": self.ended_ns, "detail": self.detail,
                "cause": self.cause.value, "env_problem": self.env_problem}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NodeResult:
        """The result of `to_dict`'s form; `TypeError` (or `ValueError`, for an unknown cause) names the field."""
        from . import plaindata as pd

        return cls(pd.text(d, "node"), pd.text(d, "kind"), pd.text(d, "status"), pd.text(d, "message", ""),
                   pd.integer(d, "started_ns", 0), pd.integer(d, "ended_ns", 0), pd.mapping(d, "detail", {}),
                   Cause(pd.text(d, "cause", "")))


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

    @classmethod
    def from_dict(cls, t: Mapping[str, Any]) -> TestResult:
        """The result of `to_dict`'s form; `TypeError` names the first field of the wrong type."""
        from . import plaindata as pd

        return cls(pd.text(t, "suite"), pd.text(t, "name"), pd.text(t, "status"), pd.number(t, "duration_s"),
                   pd.texts(t, "failures"), pd.texts(t, "nodes"), str(t.get("loc", "")),
                   tuple(sorted((str(k), str(v)) for k, v in pd.mapping(t, "logs", {}).items())))


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


# What reports, progress lines and recordings show of a node: one place reads it from the Plan.
NODE_INFO = ("kind", "label", "suite", "test", "loc")


def node_info(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A node's display info (kind, label, suite, test, loc) from its Plan attributes, its location as
    `file:line:col` text."""
    from crc.compiler.schema import loc_text

    info = {k: attrs.get(k) for k in NODE_INFO}
    info["loc"] = loc_text(info["loc"]) if isinstance(info["loc"], dict) else info["loc"]
    return info


def label_of(labels: Mapping[str, Mapping[str, Any]], node: str) -> str:
    """A node's label from display info (`labels_of`), its id when it has none."""
    return str(labels.get(node, {}).get("label") or node)


def node_name(labels: Mapping[str, Mapping[str, Any]], node: str) -> str:
    """A node as messages name it: its kind and label (`step order`)."""
    return f"{labels.get(node, {}).get('kind') or '?'} {label_of(labels, node)}"


def labels_of(plans: Iterable[Plan]) -> dict[str, dict[str, Any]]:
    """Display info of every node of `plans`, by node id."""
    return {n: node_info(d) for p in plans for n, d in p.nodes.items()}
