"""Run options, declared once: the runner reads them, the CLI and the config file take their defaults from
them, and a recording keeps the projection that shapes what a run did (`RunOptions.recorded`).

Imports nothing heavy: `crc --help` and `crc config` read the defaults from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

# A field with `RECORDED` in its metadata is part of the recording's projection.
RECORDED = {"recorded": True}


@dataclass(frozen=True)
class RunOptions:
    """How `crc run` runs: every default lives here and nowhere else."""

    jobs: int = field(default=8, metadata=RECORDED)  # services/steps (and suites, each with its network) at once
    fail_fast: bool = field(default=False, metadata=RECORDED)
    select: tuple[str, ...] = field(default=(), metadata=RECORDED)  # `-k` expressions
    shuffle_seed: int | None = field(default=None, metadata=RECORDED)
    span_timeout: float = field(default=20.0, metadata=RECORDED)  # seconds a test waits for its spans
    clock_skew: float = field(default=0.001, metadata=RECORDED)
    allow_pull: bool = False
    pull_always: bool = False  # `--pull always`: ask the registry even for images the engine has
    # Leave containers and the network running for debugging: "none", "failed" (suites with a failed or errored
    # test) or "all". Still labelled; the lease marks them kept, so only `crc clean` removes them.
    keep: str = "none"
    log_tails: bool = False  # read every service's last log lines at teardown (for recordings)
    log_full: bool = False  # keep each service's whole log (up to LOG_FULL_MAX) for reports and `crc logs`
    stream_logs: bool = False  # hand every service's log lines to `Runner.on_log` as they come

    def recorded(self) -> RunOptions:
        """The projection a recording keeps: the recorded fields, every other one at its default."""
        return RunOptions(**{f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("recorded")})

    def to_data(self) -> dict[str, Any]:
        """The recorded fields as plain data (msgpack, JSON)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.metadata.get("recorded")}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> RunOptions:
        """Back from `to_data`; a missing field takes its default. Raises ValueError/TypeError on bad data."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.metadata.get("recorded") and f.name in data:
                values[f.name] = _typed(f.name, data[f.name])
        return cls(**values)


DEFAULTS = RunOptions()


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _typed(name: str, value: Any) -> Any:
    """A recorded value converted to its field's type (the annotation names it: see `RunOptions`)."""
    default = getattr(DEFAULTS, name)
    if value is None:
        return None
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, tuple):
        return tuple(str(x) for x in value)
    if isinstance(default, float):
        return float(value)
    return int(value)
