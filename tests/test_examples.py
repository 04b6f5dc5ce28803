"""Every example runs against the real engine with its expected verdict: examples/failing/* must fail, and
only in the tests they name; every other example must pass."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dockerutil import docker_engine  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").rglob("*.cr") if "suite " in p.read_text())

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def expected_failures(path: Path) -> set[str]:
    """Tests a failing example names in a `# fails: "test", ...` header line."""
    m = re.search(r"^# fails: (.+)$", path.read_text(), re.M)
    return set(re.findall(r'"([^"]+)"', m.group(1))) if m else set()


def span_timeout(path: Path) -> list[str]:
    """A short span timeout for a failing example all of whose tests fail: a missing span then fails in 3 s
    instead of 20. It cannot change those verdicts (the phase waits out its timeout only while a span it
    needs is missing, and then that test fails whatever the timeout), while a test expected to pass keeps
    the default, so a loaded machine's late spans never fail it."""
    tests = set(re.findall(r'^\s*test "([^"]+)"', path.read_text(), re.M))
    return ["--span-timeout", "3"] if "failing" in path.parts and tests == expected_failures(path) else []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT / "examples")))
def test_example_verdict(example: Path, docker_engine: None, tmp_path: Path) -> None:  # noqa: F811
    report = tmp_path / "report.json"
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "crc", "run", str(example), "--no-progress", "--pull", "never",
         "--json", str(report), "--junit", str(junit), *span_timeout(example)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    data = json.loads(report.read_text())
    failed = {t["name"] for t in data["tests"] if t["status"] != "passed"}
    if "failing" in example.parts:
        want = expected_failures(example)
        assert want, f"{example} must name the tests it fails in a '# fails:' line"
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert failed == want, proc.stdout
    else:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert not failed
        assert data["tests"], "an example with no test proves nothing"
    from junitparser import JUnitXml

    xml = JUnitXml.fromfile(str(junit))
    cases = [case for suite in xml for case in suite]
    assert len(cases) == len(data["tests"])
