"""The same measurements in two checkouts of crc, alternated in one run: CPU time of compiling the file
benchmarks/compile.py generates, of writing the HTML report of benchmarks/html_report.py's synthetic recording,
of importing what `crc run` imports, and the wall time of `crc --help`.

On a shared, loaded machine wall times of separate runs drift by tens of percent; CPU time (process_time) of
the same work, measured alternately in each checkout, is what changes when the code does. Each checkout runs
the work with its own interpreter and its own sources (`BASE/.venv/bin/python` for the other one), with
bytecode caching on, as users have it.

Usage: python benchmarks/before_after.py --base DIR [--tests N] [--rounds R] [--smoke]
(`--smoke` compares this checkout with itself, on a small file.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COMPILE = """
import importlib.util, statistics, sys, tempfile, time
from pathlib import Path
spec = importlib.util.spec_from_file_location("bc", "benchmarks/compile.py")
bc = importlib.util.module_from_spec(spec); spec.loader.exec_module(bc)
from crc.compiler.compile import compile_file
f = Path(tempfile.mkdtemp()) / "gen.cr"; f.write_text(bc.generate({tests}))
compile_file(str(f))
ts = []
for _ in range(3):
    t = time.process_time(); compile_file(str(f)); ts.append(time.process_time() - t)
print(statistics.median(ts))
"""
HTML = """
import importlib.util, statistics, sys, tempfile, time
from pathlib import Path
spec = importlib.util.spec_from_file_location("bh", "benchmarks/html_report.py")
bh = importlib.util.module_from_spec(spec); sys.modules["bh"] = bh; spec.loader.exec_module(bh)
from crc.runtime import recording
from crc.runtime.html_report import from_recording, write_html
work = Path(tempfile.mkdtemp())
p = work / "r.crcrec"; recording.write(p, bh.synthetic_recording({tests} // 10, 50, work))
ts = []
for _ in range(3):
    t = time.process_time()
    write_html(work / "r.html", from_recording(recording.read(p)))
    ts.append(time.process_time() - t)
print(statistics.median(ts))
"""
IMPORTS = """
import time
t = time.process_time()
import crc.cli, crc.commands_run, crc.runtime.runner, crc.runtime.replay, crc.compiler.plan
print(time.process_time() - t)
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def measure(tree: Path, code: str) -> float:
    python = tree / ".venv" / "bin" / "python"
    out = subprocess.run([str(python), "-c", code], cwd=tree, env=_env(), capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def help_time(tree: Path) -> float:
    import time

    t = time.perf_counter()
    subprocess.run([str(tree / ".venv" / "bin" / "crc"), "--help"], env=_env(), capture_output=True, check=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, help="the other checkout (with its own .venv)")
    ap.add_argument("--tests", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="this checkout against itself, 20 tests, one round")
    a = ap.parse_args()
    if a.smoke:
        a.base, a.tests, a.rounds = ROOT, 20, 1
    if a.base is None:
        ap.error("--base DIR is required (or --smoke)")
    trees = {"base": a.base.resolve(), "this": ROOT}
    work = {"compile": COMPILE.format(tests=a.tests), "html report": HTML.format(tests=a.tests),
            "run-path imports": IMPORTS}
    for tree in trees.values():  # warm the bytecode caches
        measure(tree, IMPORTS)
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(a.rounds):
        for what, code in work.items():
            for name, tree in trees.items():
                results.setdefault((what, name), []).append(measure(tree, code))
        for _ in range(10):
            for name, tree in trees.items():
                results.setdefault(("crc --help (wall)", name), []).append(help_time(tree))
    print(f"base {trees['base']} vs this {trees['this']}: medians, {a.rounds} alternated round(s)")
    for what in [*work, "crc --help (wall)"]:
        base, this = (statistics.median(results[(what, n)]) for n in ("base", "this"))
        print(f"  {what:<20} base {base * 1000:7.0f} ms   this {this * 1000:7.0f} ms   this/base {this / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
