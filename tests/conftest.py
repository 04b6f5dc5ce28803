"""Shared test helpers: run the `crc` command line as a subprocess, and the repository paths.

Kept small on purpose: only what several test files need.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ("pytester",)  # the crc pytest plugin's tests (test_pytest_plugin.py)

# Hypothesis profiles: "dev" (the default) runs a fifth of each property test's examples, so the suite stays
# quick at a desk; "ci" runs them all and is chosen by .ci/test (CRC_HYPOTHESIS_PROFILE=ci). Neither has a
# deadline: a loaded machine must not turn a slow example into a failure.
HYPOTHESIS_PROFILE = os.environ.get("CRC_HYPOTHESIS_PROFILE", "dev")
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile(HYPOTHESIS_PROFILE)


def examples(full: int) -> int:
    """How many examples a property test runs: `full` in the "ci" profile, a fifth of it (at least 10) else."""
    return full if HYPOTHESIS_PROFILE == "ci" else max(10, full // 5)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def crc_command() -> list[str]:
    """How to start crc: `python -m crc` when crc/__main__.py exists, else the `crc` script."""
    if (ROOT / "crc" / "__main__.py").exists():
        return [sys.executable, "-m", "crc"]
    beside = Path(sys.executable).parent / "crc"
    found = str(beside) if beside.exists() else shutil.which("crc")
    if found is None:  # pragma: no cover - the package is installed for the tests
        raise RuntimeError("cannot find the crc command: install the package (pip install -e .)")
    return [found]


def run_crc(*args: str | os.PathLike[str], cwd: str | os.PathLike[str] | None = None,
            env: Mapping[str, str] | None = None, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `crc ARGS...` and capture its output (text). `env` replaces the environment when given."""
    return subprocess.run([*crc_command(), *map(str, args)], cwd=cwd, env=dict(env) if env is not None else None,
                          capture_output=True, text=True, timeout=timeout, input=input)


RunCrc = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def crc() -> RunCrc:
    """`crc("check", path, cwd=...)` runs the command line in a subprocess."""
    return run_crc


def write_files(base: Path, files: Mapping[str, str]) -> dict[str, Path]:
    """Write `{relative path: text}` under `base`; returns the paths by name."""
    out = {}
    for name, text in files.items():
        p = base / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        out[name] = p
    return out


def example_files() -> Sequence[Path]:
    """Every `.cr` file under examples/ that declares a suite."""
    return sorted(p for p in EXAMPLES.rglob("*.cr") if "suite " in p.read_text(encoding="utf-8"))


def _every_compiled_plan_fits_the_schema() -> None:
    """Every Plan any test compiles is checked against the schema (the check a Plan read from a file passes),
    so a node shape the compiler emits but `compiler/schema.py` does not declare fails the test that made it
    rather than a later `crc run PLAN`."""
    from crc.compiler import compile as compile_module
    from crc.compiler.plan import check_structure

    compile_one = compile_module._compile_file

    def checked(*args, **kwargs):  # type: ignore[no-untyped-def]
        plan = compile_one(*args, **kwargs)
        check_structure(plan.to_data())
        return plan

    compile_module._compile_file = checked


_every_compiled_plan_fits_the_schema()
