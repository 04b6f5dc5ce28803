"""What the pytest plugin costs: in every pytest session (loaded, collecting nothing of crc's), and running
`.cr` tests through pytest instead of `crc run`.

Measured, interleaved in one run so machine noise hits both sides alike:

* session   `pytest --collect-only` of a directory holding one Python test, with the plugin loaded and with
            `-p no:crc`: what every pytest session of an environment with crc installed pays;
* run       one suite (a busybox service, T tests each running a command in it): `crc run FILE` against
            `pytest --crc FILE`, both as a user types them (a new interpreter each time). Both start the
            service once; pytest runs the tests one after another, as crc does for tests sharing a service.

Printed: medians and spreads, and the ratios plugin/no-plugin, pytest/crc, and (pytest minus the session
with nothing to run)/crc: what running the tests costs under pytest beyond its own start-up. Usage:
python benchmarks/pytest_plugin.py [--tests T] [--runs R] [--smoke]. The run part needs the Docker engine and
crc/busybox:dev; --no-docker measures the session part alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGE = "crc/busybox:dev"


def suite(tests: int) -> str:
    lines = ['suite "bench-pytest" {', f'  service box {{ image "{IMAGE}" command ["sleep", "3600"] }}']
    for i in range(tests):
        lines += [f'  test "t{i}" {{', f'    step e{i} = exec box ["echo", "{i}"]',
                  f'    expect e{i}.stdout == "{i}\\n"', "  }"]
    return "\n".join([*lines, "}", ""])


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CRC_PULL": "never"})
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return took


def show(name: str, xs: list[float]) -> float:
    med = statistics.median(xs)
    print(f"{name:<28} median {med:7.3f}s  (min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", type=int, default=10, help="tests in the suite (default 10)")
    ap.add_argument("--runs", type=int, default=5, help="runs of each side (default 5)")
    ap.add_argument("--smoke", action="store_true", help="smallest size: 2 tests, 1 run")
    ap.add_argument("--no-docker", action="store_true", help="measure the session cost only")
    a = ap.parse_args()
    tests, runs = (2, 1) if a.smoke else (a.tests, a.runs)
    py = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    with tempfile.TemporaryDirectory(prefix="crc-bench-pytest-") as tmp:
        root = Path(tmp)
        (root / "test_plain.py").write_text("def test_plain():\n    pass\n")
        (root / "bench.cr").write_text(suite(tests))
        with_plugin, without = [], []
        for _ in range(runs):
            with_plugin.append(timed([*py, "--collect-only", "test_plain.py"], root))
            without.append(timed([*py, "--collect-only", "-p", "no:crc", "test_plain.py"], root))
        a1, b1 = show("session, plugin loaded", with_plugin), show("session, -p no:crc", without)
        print(f"ratio session plugin/no-plugin: {a1 / b1:.3f}")
        if a.no_docker:
            return
        crc, pytest = [], []
        for _ in range(runs):
            crc.append(timed([sys.executable, "-m", "crc", "run", "bench.cr", "--no-progress"], root))
            pytest.append(timed([*py, "bench.cr"], root))
        a2, b2 = show(f"crc run ({tests} tests)", crc), show(f"pytest bench.cr ({tests} tests)", pytest)
        print(f"ratio run pytest/crc: {b2 / a2:.3f}")
        # pytest's own start-up (its plugins) is paid by any pytest session; what the .cr tests add is the rest.
        print(f"ratio run (pytest - empty session)/crc: {(b2 - a1) / a2:.3f}")


if __name__ == "__main__":
    main()
