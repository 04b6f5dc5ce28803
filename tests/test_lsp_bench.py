"""benchmarks/lsp.py runs at its smallest size and prints its table (no timing is asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_lsp_benchmark_smoke() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lsp.py"), "--smoke"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "change->diagnostics" in proc.stdout and "ratio change/compile" in proc.stdout
    assert "Traceback" not in proc.stderr
