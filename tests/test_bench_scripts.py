"""The engine-free benchmarks run at their smallest size (`--smoke`) and print their ratio lines.

No timing is asserted: timings belong to the benchmarks' own reports (docs/benchmarks.md). This keeps the
scripts working as the code they measure changes (a benchmark that no longer runs measures nothing).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("script", "expected"), [
    ("compile.py", "compile/parse"),
    ("spans.py", "ns/span/check"),
    ("format.py", "ratio format / parse"),
    ("html_report.py", "ratio html/json"),
    ("spans_scale.py", "us/span"),
    ("recovery.py", "ms/KB"),
    ("before_after.py", "this/base"),
    ("fuzz_throughput.py", "watchdog/none"),
])
def test_benchmark_runs_at_its_smallest_size(script: str, expected: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert expected in proc.stdout
    assert "Traceback" not in proc.stderr
