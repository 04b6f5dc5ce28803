"""The pytest plugin: `.cr` files collected only when asked for, one item per crc test, compile errors as
collection errors, crc's failure text as the item's, one start of a suite's services for all its items, and
nothing left behind. In-process on the fake backend (a conftest implements `pytest_crc_runner`), and against
the real engine through `runpytest_subprocess`."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import crc.compiler
import crc.runtime
import pytest
from conftest import ROOT
from dockerutil import docker_engine  # noqa: F401

# pytester's in-process runs drop the modules first imported during a run; a class made again by a later run
# would then not be the class that modules kept from earlier hold (isinstance fails). Importing crc's compiler
# and runtime here first keeps one copy of each for every run.
for _m in pkgutil.walk_packages(crc.runtime.__path__, "crc.runtime."):
    if _m.name != "crc.runtime.distributed":  # dask: not used by the plugin
        importlib.import_module(_m.name)
for _m in pkgutil.walk_packages(crc.compiler.__path__, "crc.compiler."):
    importlib.import_module(_m.name)
importlib.import_module("crc.pytest_plugin")


@pytest.fixture(autouse=True)
def _terminal_width(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """pytest fits its summary lines to the terminal: the runs these tests read get one width, whatever the
    terminal (or the lack of one) the outer session has. They need no asyncio plugin (it would only warn)."""
    monkeypatch.setenv("COLUMNS", "120")
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester").makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")

SUITE = '''suite "{name}" {{
  service box {{
    image "crc/busybox:dev"
    command ["sleep", "3600"]
  }}

  test "greets" {{
    step hi = exec box ["echo", "hello"]
    expect hi.stdout contains "hello"
  }}

  test "says goodbye" {{
    step bye = exec box ["echo", "hello"]
    expect bye.stdout contains "goodbye"
  }}

  test "echo {{{{ word }}}}" for word in ["a", "b"] {{
    step e = exec box ["echo", word]
    expect e.exit == 0
  }}
}}
'''

# A conftest that runs the session's crc tests on the fake backend and, when pytest unconfigures, writes down
# what the backend was asked for and what is still alive.
FAKE_CONFTEST = '''
import json
from contextlib import asynccontextmanager
from pathlib import Path

from crc.runtime.fake_backend import ExecCall, FakeBackend, FakeExec, FakeReceiver
from crc.runtime.runner import Runner

BACKENDS = []


def on_exec(call: ExecCall) -> FakeExec:
    return FakeExec(stdout=" ".join(call.argv[1:]) + "\\n")


@asynccontextmanager
async def fake(options):
    backend = FakeBackend(on_exec=on_exec)
    BACKENDS.append(backend)

    def receiver(on_spans):
        backend.receiver = FakeReceiver(on_spans)
        return backend.receiver

    yield Runner(backend, options, receiver=receiver)


def pytest_crc_runner(config, options):
    return fake(options)


def pytest_unconfigure(config):
    Path("backend.json").write_text(json.dumps(
        [{"calls": b.calls, "alive": b.alive()} for b in BACKENDS]))
'''


def _fake_project(pytester: pytest.Pytester, name: str = "plug") -> None:
    pytester.makeconftest(FAKE_CONFTEST)
    (pytester.path / "checks.cr").write_text(SUITE.format(name=name))
    (pytester.path / "lib.cr").write_text('template box() {\n  image "crc/busybox:dev"\n}\n')
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")


def _backend(pytester: pytest.Pytester) -> list[dict[str, list[object]]]:
    return json.loads((pytester.path / "backend.json").read_text())


def test_cr_files_are_collected_only_when_asked_for(pytester: pytest.Pytester) -> None:
    _fake_project(pytester)
    plain = pytester.runpytest("--collect-only", "-q")
    assert "test_plain.py::test_plain" in plain.stdout.str() and ".cr::" not in plain.stdout.str()
    ids = ["checks.cr::plug::greets", "checks.cr::plug::says goodbye", "checks.cr::plug::echo a",
           "checks.cr::plug::echo b"]
    for how in (["--crc"], ["checks.cr"], ["-o", f"crc_paths={pytester.path}"]):
        listed = pytester.runpytest("--collect-only", "-q", *how)
        out = [line for line in listed.stdout.lines if ".cr::" in line]
        assert out == ids, (how, listed.stdout.str())
    # a module (no suite) is never a test file, even when named
    assert "no tests ran" in pytester.runpytest("lib.cr").stdout.str()


def test_items_run_on_one_start_of_the_suite_and_leave_nothing(pytester: pytest.Pytester) -> None:
    _fake_project(pytester)
    result = pytester.runpytest("--crc", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
                                "--junitxml=out.xml")
    result.assert_outcomes(passed=4, failed=1)
    out = result.stdout.str()
    # crc's own failure text, as the run summary gives it: where, what, and why
    assert "- checks.cr:14:12: bye.stdout contains \"goodbye\": 'hello\\n' does not contain 'goodbye'" in out
    assert "Traceback" not in out and "raise TestFailed" not in out
    assert "FAILED checks.cr::plug::says goodbye - - checks.cr:14:12" in out
    [backend] = _backend(pytester)
    services = [c for c in backend["calls"] if c[0] == "create_container" and str(c[2]).endswith("-box")]
    assert len(services) == 1, backend["calls"]  # one service start for the suite's four items
    assert backend["alive"] == []
    cases = {c.get("name"): c for c in ET.parse(pytester.path / "out.xml").getroot().iter("testcase")}
    assert set(cases) == {"greets", "says goodbye", "echo a", "echo b", "test_plain"}
    bye = cases["says goodbye"]
    assert (bye.get("file"), bye.get("line")) == ("checks.cr", "11")  # line 12, 0-based as pytest writes it
    failure = bye.find("failure")
    assert failure is not None and "does not contain 'goodbye'" in (failure.text or "")


def test_k_and_x_select_and_stop_like_any_pytest_test(pytester: pytest.Pytester) -> None:
    _fake_project(pytester)
    picked = pytester.runpytest("--crc", "-k", "echo and not b", "-p", "no:cacheprovider")
    picked.assert_outcomes(passed=1, deselected=4)
    assert _backend(pytester)[0]["alive"] == []
    stopped = pytester.runpytest("checks.cr", "-x", "-p", "no:cacheprovider")
    stopped.assert_outcomes(passed=1, failed=1)  # the echo tests after the failure never ran
    [backend] = _backend(pytester)
    assert [c[2] for c in backend["calls"] if c[0] == "exec"] == ["echo hello", "echo hello"]
    assert backend["alive"] == []
    marked = pytester.runpytest("--crc", "-m", "not crc", "-p", "no:cacheprovider")
    marked.assert_outcomes(passed=1, deselected=4)


def test_a_compile_error_is_a_located_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FAKE_CONFTEST)
    (pytester.path / "bad.cr").write_text('suite "s" {\n  test "t" {\n    step a = exec nosuch ["true"]\n  }\n}\n')
    result = pytester.runpytest("bad.cr", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    out = result.stdout.str()
    assert "ERROR collecting bad.cr" in out
    assert "--> bad.cr:3:19" in out and "unknown service `nosuch`" in out
    assert "^^^^^^" in out and "Traceback" not in out


def test_lints_are_warnings_silenced_like_crc_check_silences_them(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FAKE_CONFTEST)
    (pytester.path / "lint.cr").write_text(
        'suite "s" {\n  service box {\n    image "crc/busybox:dev"\n    port 80\n    ready tcp 81\n'
        '    env { A: "http://bax:80/" }  # crc: allow host-near-miss\n  }\n'
        '  test "t" { step a = exec box ["true"] }\n}\n')
    out = pytester.runpytest("--collect-only", "-q", "lint.cr", "-p", "no:cacheprovider").stdout.str()
    assert "warning[probe-port]" in out and "lint.cr:5:15" in out
    assert "host-near-miss" not in out  # allowed on its line
    (pytester.path / "crc.toml").write_text('[lints]\nignore = ["probe-port"]\n')
    out = pytester.runpytest("--collect-only", "-q", "lint.cr", "-p", "no:cacheprovider").stdout.str()
    assert "lint.cr::s::t" in out and "warning[" not in out


def test_a_service_that_cannot_start_fails_each_test_with_why(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FAKE_CONFTEST.replace("FakeBackend(on_exec=on_exec)",
                                                "FakeBackend(on_exec=on_exec, images=frozenset())"))
    (pytester.path / "checks.cr").write_text(SUITE.format(name="noimage"))
    result = pytester.runpytest("checks.cr", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=4)
    out = result.stdout.str()
    # once in each item's failure section (the summary lines carry it too, as far as the width lets them)
    why = re.findall(r"^- checks\.cr:2:11: image 'crc/busybox:dev' is not present", out, re.M)
    assert len(why) == 4, out
    assert _backend(pytester)[0]["alive"] == []


def test_no_engine_or_a_bad_config_is_an_error_of_each_test_not_a_traceback(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    (pytester.path / "checks.cr").write_text(SUITE.format(name="noengine"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{pytester.path}/no-such.sock")
    result = pytester.runpytest("checks.cr", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=4)
    out = result.stdout.str()
    assert "crc: error: " in out and "no-such.sock" in out and "Traceback" not in out, out
    (pytester.path / "crc.toml").write_text("jobs = 0\n")
    result = pytester.runpytest("checks.cr", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=4)
    assert "crc: error: crc.toml:1:1: `jobs`: 0 is smaller than 1" in result.stdout.str()


def test_importing_the_plugin_costs_nothing_but_itself() -> None:
    code = ("import sys, pytest; before = set(sys.modules); import crc.pytest_plugin; "
            "print(sorted(set(sys.modules) - before))")
    new = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                    cwd=ROOT).stdout.replace("'", '"'))
    assert new == ["crc", "crc.pytest_plugin"]


def test_the_benchmark_runs_at_its_smallest_size() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pytest_plugin.py"), "--smoke", "--no-docker"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ratio session plugin/no-plugin:" in proc.stdout


def test_this_repository_collects_no_cr_file_by_accident() -> None:
    """`python -m pytest` at the root reads this pyproject.toml: its .cr files are no tests."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "examples", "tests/test_config.py"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert "test_config.py::" in proc.stdout and ".cr::" not in proc.stdout, proc.stdout + proc.stderr


# ------------------------------------------------------------------ against the real engine
@pytest.fixture
def e2e(pytester: pytest.Pytester, docker_engine: None, monkeypatch: pytest.MonkeyPatch  # noqa: F811
        ) -> Iterator[pytest.Pytester]:
    from dockerutil import crc_resources, remove_resources

    monkeypatch.setenv("CRC_PULL", "never")
    yield pytester
    left = crc_resources("pytest-e2e")
    remove_resources(left)
    assert not left


@pytest.mark.docker
def test_a_real_run_through_pytest(e2e: pytest.Pytester) -> None:
    (e2e.path / "checks.cr").write_text(SUITE.format(name="pytest-e2e"))
    result = e2e.runpytest_subprocess("--crc", "-p", "no:cacheprovider", "--junitxml=out.xml", "-v")
    result.assert_outcomes(passed=3, failed=1)
    out = result.stdout.str()
    assert "checks.cr::pytest-e2e::greets PASSED" in out and "checks.cr::pytest-e2e::echo b PASSED" in out
    assert "- checks.cr:14:12: bye.stdout contains \"goodbye\": 'hello\\n' does not contain 'goodbye'" in out
    root = ET.parse(e2e.path / "out.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"greets", "says goodbye", "echo a", "echo b"}
    failure = cases["says goodbye"].find("failure")
    assert failure is not None and "checks.cr:14:12" in (failure.text or "")
    picked = e2e.runpytest_subprocess("--crc", "-p", "no:cacheprovider", "-k", "greets or goodbye", "-x")
    picked.assert_outcomes(passed=1, failed=1, deselected=2)
    stopped = e2e.runpytest_subprocess("--crc", "-p", "no:cacheprovider", "-k", "goodbye or echo", "-x")
    stopped.assert_outcomes(failed=1, deselected=1)  # -x: the two echo tests never ran


@pytest.mark.docker
def test_ctrl_c_tears_the_suite_down(e2e: pytest.Pytester) -> None:
    """Interrupted in the middle of a step, pytest tears the suite down: no container, no network left."""
    from dockerutil import crc_resources

    (e2e.path / "hang.cr").write_text('''suite "pytest-e2e-hang" {
  service box {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
  }
  test "hangs" {
    step h = exec box ["sh", "-c", "touch /tmp/started; sleep 3600"]
    expect h.exit == 0
  }
}
''')
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "--crc", "-p", "no:cacheprovider", "hang.cr"],
                            cwd=e2e.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "CRC_PULL": "never"})
    try:
        started = False
        for _ in range(600):  # until the step runs (each look is a docker exec: no sleeping on a clock)
            ids = [r.partition(":")[2] for r in crc_resources("pytest-e2e-hang") if r.startswith("ps:")]
            if any(subprocess.run(["docker", "exec", i, "test", "-e", "/tmp/started"],
                                  capture_output=True).returncode == 0 for i in ids):
                started = True
                break
            if proc.poll() is not None:
                break
        assert started, proc.communicate(timeout=60)[0]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "KeyboardInterrupt" in out
    assert crc_resources("pytest-e2e-hang") == []
