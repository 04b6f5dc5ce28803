"""`crc run` end to end on the real engine: scheduling, services, steps, failures, cleanup, reports.

Each test writes a small `.cr` file, runs the real CLI in a subprocess and reads its JSON report, so what is
checked is what a user sees. No timing limits here: only orderings and overlaps, which hold on a slow box.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from dockerutil import ROOT, crc, docker_engine, remove_resources, run_json  # noqa: F401
from dockerutil import crc_resources as all_crc_resources

pytestmark = [pytest.mark.docker]

BUSYBOX = "crc/busybox:dev"
BOX = f'service box {{ image "{BUSYBOX}" command ["sleep", "300"] }}'  # an idle service to exec into
# Suites get this run's tag in their names, so resource checks see only this test's containers and networks,
# whatever else runs on the engine.
TAG = {"tag": ""}


def crc_resources() -> list[str]:
    return all_crc_resources(TAG["tag"])


def write(tmp_path: Path, text: str, name: str = "t.cr") -> Path:
    p = tmp_path / name
    p.write_text(re.sub(r'suite "([^"]+)"', lambda m: f'suite "{m.group(1)} {TAG["tag"]}"', text))
    return p


def nodes(report: dict[str, Any], kind: str | None = None) -> dict[str, dict[str, Any]]:
    return {n["label"]: n for n in report["nodes"] if kind is None or n["kind"] == kind}


@pytest.fixture
def state(tmp_path: Path) -> dict[str, str]:
    """A private state dir, so lease files of one test never meet another's."""
    d = tmp_path / "state"
    d.mkdir()
    return {"CRC_STATE_DIR": str(d)}


@pytest.fixture(autouse=True)
def no_leftovers(docker_engine: None) -> Any:  # noqa: F811
    TAG["tag"] = "t" + secrets.token_hex(4)
    yield
    left = crc_resources()
    remove_resources(left)
    assert not left, f"crc left resources behind: {left}"


def test_independent_services_start_concurrently(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "par" {{
  service a {{ image "{BUSYBOX}" command ["sh", "-c", "sleep 1; touch /ready; sleep 300"] ready exec ["test", "-e", "/ready"] within 20s }}
  service b {{ image "{BUSYBOX}" command ["sh", "-c", "sleep 1; touch /ready; sleep 300"] ready exec ["test", "-e", "/ready"] within 20s }}
  test "t" {{ step s = exec a ["true"] }}
}}
""")
    proc, rep = run_json(src, env=state)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    svc = nodes(rep, "service")
    a, b = svc["a"], svc["b"]
    # Each takes >= 1 s to become ready; run one after the other they could not overlap.
    assert a["started_ns"] < b["ended_ns"] and b["started_ns"] < a["ended_ns"], (a, b)


def test_needs_orders_service_start_after_readiness(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "order" {{
  service db {{ image "{BUSYBOX}" command ["sh", "-c", "sleep 1; touch /ready; sleep 300"] ready exec ["test", "-e", "/ready"] within 20s }}
  service app {{ image "{BUSYBOX}" command ["sleep", "300"] needs db }}
  test "t" {{ step s = exec app ["true"] }}
}}
""")
    proc, rep = run_json(src, env=state)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    svc = nodes(rep, "service")
    assert svc["app"]["started_ns"] >= svc["db"]["ended_ns"]


def test_steps_run_in_order_and_captures_feed_later_steps(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "cap" {{
  {BOX}
  test "t" {{
    step make = exec box ["sh", "-c", "echo token=abc123"]
    capture tok = make.stdout ~ /token=(\\w+)/
    step use = exec box ["echo", "got {{{{ tok }}}}"]
    expect use.stdout == "got abc123\\n"
  }}
}}
""")
    proc, rep = run_json(src, env=state)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = nodes(rep, "step")
    assert steps["use"]["started_ns"] >= steps["make"]["ended_ns"]


def test_readiness_failure_reports_state_and_log_tail(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "dies" {{
  service bad {{ image "{BUSYBOX}" command ["sh", "-c", "echo booting; echo 'fatal: no config' >&2; exit 7"] ready tcp 8080 within 10s }}
  test "t" {{ step s = exec bad ["true"] }}
}}
""")
    proc, rep = run_json(src, env=state)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    msg = nodes(rep, "service")["bad"]["message"]
    assert "exited with code 7" in msg, msg
    assert "fatal: no config" in msg, msg
    assert rep["tests"][0]["status"] != "passed"
    step = nodes(rep, "step")["s"]
    assert step["status"] == "skipped" and "bad" in step["message"]


def test_readiness_deadline_names_the_probe(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "slow" {{
  service never {{ image "{BUSYBOX}" command ["sleep", "300"] ready exec ["false"] within 1s }}
  test "t" {{ step s = exec never ["true"] }}
}}
""")
    proc, rep = run_json(src, env=state)
    assert proc.returncode == 1
    msg = nodes(rep, "service")["never"]["message"]
    assert "not ready" in msg or "within" in msg, msg


def test_step_timeout_kills_the_command(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "timeouts" {{
  {BOX}
  test "exec" {{ step hang = exec box ["sleep", "120"] timeout 1s }}
  test "oneoff" {{ step hang2 = run "{BUSYBOX}" ["sleep", "120"] timeout 1s }}
}}
""")
    t0 = time.monotonic()
    proc, rep = run_json(src, env=state)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stdout + proc.stderr
    steps = nodes(rep, "step")
    for name in ("hang", "hang2"):
        assert "timed out" in steps[name]["message"] or steps[name]["detail"].get("timed_out"), steps[name]
        assert steps[name]["status"] in ("failed", "error")
    # Not a timing limit: 120 s sleeps that were not killed would keep the run alive for minutes.
    assert elapsed < 100


def test_service_dying_during_a_test_fails_it(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "crash" {{
  service flaky {{ image "{BUSYBOX}" command ["sh", "-c", "touch /up; sleep 2; echo 'panic: out of cheese' >&2; exit 3"] ready exec ["test", "-e", "/up"] within 10s }}
  {BOX}
  test "t" uses flaky {{ step wait = run "{BUSYBOX}" ["sleep", "8"] }}
  test "elsewhere" {{ step wait = exec box ["sleep", "8"] }}
}}
""")
    proc, rep = run_json(src, env=state)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    tests = {t["name"]: t for t in rep["tests"]}
    assert tests["t"]["status"] == "failed"
    text = json.dumps(tests["t"])
    assert "exit" in text and "3" in text
    assert "out of cheese" in text
    # A test that does not use the dead service is not failed by it.
    assert tests["elsewhere"]["status"] == "passed", tests["elsewhere"]


def test_argv_is_not_a_shell_but_sh_is(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "argv" {{
  {BOX}
  test "t" {{
    step plain = exec box ["echo", "$HOME; echo no"]
    expect plain.stdout == "$HOME; echo no\\n"
    step shell = exec box sh "echo a; echo b"
    expect shell.stdout == "a\\nb\\n"
    step split = exec box "echo 'one two' three"
    expect split.stdout == "one two three\\n"
  }}
}}
""")
    proc, _ = run_json(src, env=state)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_failed_expectation_message_has_expected_actual_and_diff(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "msg" {{
  {BOX}
  test "t" {{
    step s = exec box ["sh", "-c", "printf 'a\\nb\\nc\\n'; exit 4"]
    expect s.exit == 4
    expect s.stdout == "a\\nB\\nc\\n"
  }}
}}
""")
    proc, rep = run_json(src, env=state)
    assert proc.returncode == 1
    asserts = {n["label"]: n for n in rep["nodes"] if n["kind"] == "assert"}
    assert asserts["s.exit == 4"]["status"] == "passed"
    failed = [n for n in asserts.values() if n["status"] == "failed"]
    assert len(failed) == 1
    assert "-B" in failed[0]["message"] and "+b" in failed[0]["message"], failed[0]["message"]
    assert f"{src}:7:" in rep["tests"][0]["failures"][0] or "t.cr:7:" in rep["tests"][0]["failures"][0]


def test_missing_image_is_an_environment_problem(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, """
suite "noimg" {
  service ghost { image "crc/does-not-exist:never" }
  test "t" { step s = exec ghost ["true"] }
}
""")
    proc, _ = run_json(src, env=state)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "crc/does-not-exist:never" in out
    assert "Traceback" not in out


def test_no_engine_exits_3_naming_docker_host(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "s" {{
  service box {{ image "{BUSYBOX}" }}
  test "t" {{ step s = exec box ["true"] }}
}}
""")
    proc = crc("run", str(src), "--no-progress", env={**state, "DOCKER_HOST": f"unix://{tmp_path}/nope.sock"})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "DOCKER_HOST" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_select_runs_only_matching_tests(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "sel" {{
  {BOX}
  test "alpha" {{ step a = exec box ["true"] }}
  test "beta" {{ step b = exec box ["false"] }}
}}
""")
    proc, rep = run_json(src, "--select", "alpha", env=state)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [t["name"] for t in rep["tests"]] == ["alpha"]
    proc, rep = run_json(src, env=state)
    assert proc.returncode == 1
    assert {t["name"]: t["status"] for t in rep["tests"]} == {"alpha": "passed", "beta": "failed"}


def test_fail_fast_skips_what_has_not_started(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "ff" {{
  {BOX}
  test "first" {{ step a = exec box ["false"] }}
  test "second" {{ step b = exec box ["true"] }}
}}
""")
    proc, rep = run_json(src, "--fail-fast", env=state)
    assert proc.returncode == 1
    status = {t["name"]: t["status"] for t in rep["tests"]}
    assert status["first"] == "failed" and status["second"] == "skipped", status


def test_compile_then_run_with_no_argument_recompiles_changed_sources(tmp_path: Path, state: dict[str, str]
                                                                     ) -> None:
    src = write(tmp_path, f"""
suite "cr" {{
  {BOX}
  test "t" {{ step a = exec box ["echo", "one"]  expect a.stdout == "one\\n" }}
}}
""")
    assert crc("compile", "t.cr", cwd=tmp_path, env=state).returncode == 0
    proc = crc("run", "--no-progress", "--pull", "never", cwd=tmp_path, env=state)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    src.write_text(src.read_text().replace('"one\\n"', '"two\\n"'))
    proc = crc("run", "--no-progress", "--pull", "never", cwd=tmp_path, env=state)
    assert proc.returncode == 1, proc.stdout + proc.stderr


def test_junit_is_readable_and_names_the_failing_node(tmp_path: Path, state: dict[str, str]) -> None:
    from junitparser import Failure, JUnitXml

    src = write(tmp_path, f"""
suite "ju" {{
  {BOX}
  test "good" {{ step a = exec box ["true"] }}
  test "bad" {{ step b = exec box ["echo", "x"]  expect b.stdout contains "y" }}
}}
""")
    junit = tmp_path / "j.xml"
    proc = crc("run", str(src), "--no-progress", "--pull", "never", "--junit", str(junit), env=state)
    assert proc.returncode == 1
    cases = {c.name: c for s in JUnitXml.fromfile(str(junit)) for c in s}
    assert set(cases) == {"good", "bad"}
    assert not cases["good"].result
    fails = [r for r in cases["bad"].result if isinstance(r, Failure)]
    assert fails and 'b.stdout contains "y"' in (fails[0].message or "") + (fails[0].text or "")


def _popen_run(src: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "crc", "run", str(src), "--no-progress", "--pull", "never"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **env}, start_new_session=True)


def _wait_for_resources(n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len([r for r in crc_resources() if r.startswith("ps:")]) >= n:
            return
        time.sleep(0.2)
    raise AssertionError("the run never started its containers")


LONG = f"""
suite "long" {{
  {BOX}
  test "t" {{ step hang = exec box ["sleep", "300"] }}
}}
"""


def test_ctrl_c_cancels_and_cleans_up(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, LONG)
    proc = _popen_run(src, state)
    try:
        _wait_for_resources(1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    assert not crc_resources(), crc_resources()


def test_sigkilled_run_is_reaped_by_crc_clean(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, LONG)
    proc = _popen_run(src, state)
    try:
        _wait_for_resources(1)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    left = crc_resources()
    assert left, "a SIGKILLed run leaves its containers until reaped"
    # Something crc did not create must survive `crc clean`.
    # On no network: the engine's default bridge is not to be relied on (it has vanished on this kind of host).
    made = subprocess.run(["docker", "run", "-d", "--rm", "--network", "none", "--label", "io.crc.test=bystander",
                           BUSYBOX, "sleep", "60"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    bystander = made.stdout.strip()
    try:
        dry = crc("clean", "--dry-run", env=state)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert crc_resources() == left, "--dry-run removes nothing"
        proc2 = crc("clean", env=state)
        assert proc2.returncode == 0, proc2.stdout + proc2.stderr
        assert not crc_resources()
        alive = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", bystander],
                               capture_output=True, text=True)
        assert alive.stdout.strip() == "true"
    finally:
        subprocess.run(["docker", "rm", "-f", bystander], capture_output=True)


def test_next_run_reaps_a_killed_run(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, LONG)
    proc = _popen_run(src, state)
    try:
        _wait_for_resources(1)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    killed = set(crc_resources())
    assert killed
    quick = write(tmp_path, f"""
suite "q" {{
  {BOX}
  test "t" {{ step a = exec box ["true"] }}
}}
""", "q.cr")
    proc2, _ = run_json(quick, env=state)
    assert proc2.returncode == 0, proc2.stdout + proc2.stderr
    assert not (killed & set(crc_resources()))


def test_jobs_bound_serializes_suites(tmp_path: Path, state: dict[str, str]) -> None:
    body = "\n".join(f"""
suite "s{i}" {{
  {BOX}
  test "t" {{ step a = exec box ["sleep", "0.5"] }}
}}""" for i in range(3))
    src = write(tmp_path, body)
    proc, rep = run_json(src, "-j", "1", env=state)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spans = sorted((n["started_ns"], n["ended_ns"]) for n in rep["nodes"] if n["kind"] == "step")
    # With one job, no two steps overlap.
    for (_, e1), (s2, _) in pairwise(spans):
        assert s2 >= e1
    proc, rep = run_json(src, "-j", "8", env=state)
    assert proc.returncode == 0
    spans = sorted((n["started_ns"], n["ended_ns"]) for n in rep["nodes"] if n["kind"] == "step")
    assert any(s2 < e1 for (_, e1), (s2, _) in pairwise(spans)), "-j 8 runs suites at once"


def test_fail_fast_stops_other_suites_too(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "breaks" {{
  {BOX}
  test "first" {{ step a = exec box ["false"] }}
}}
suite "slow" {{
  {BOX}
  test "waits" {{ step w = exec box ["sleep", "3"] }}
  test "later" {{ step l = exec box ["true"] }}
}}
""")
    proc, rep = run_json(src, "--fail-fast", env=state)
    assert proc.returncode == 1
    status = {t["name"]: t["status"] for t in rep["tests"]}
    assert status["first"] == "failed"
    assert status["later"] == "skipped", status


def test_test_timeout_is_enforced(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "tt" {{
  {BOX}
  test "slow" timeout 2s {{
    step a = exec box ["sleep", "1"]
    step b after a = exec box ["sleep", "60"]
  }}
}}
""")
    proc, rep = run_json(src, env=state)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    steps = nodes(rep, "step")
    assert steps["a"]["status"] == "passed"
    assert steps["b"]["status"] == "error" and "timeout (2s)" in steps["b"]["message"], steps["b"]


def test_values_are_rendered_once(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "once" {{
  {BOX}
  test "t" {{
    step lit = exec box ["echo", "{{% raw %}}{{{{ x }}}}{{% endraw %}}"]
    expect lit.stdout == "{{% raw %}}{{{{ x }}}}{{% endraw %}}\\n"
    step make = exec box ["echo", "v1"]
    capture v = make.stdout ~ /(v\\d)/
    step both = exec box ["echo", "{{{{ v }}}}", "{{% raw %}}{{{{ v }}}}{{% endraw %}}"]
    expect both.stdout == "v1 {{% raw %}}{{{{ v }}}}{{% endraw %}}\\n"
  }}
}}
""")
    proc, rep = run_json(src, env=state)
    assert proc.returncode == 0, proc.stdout + proc.stderr + json.dumps(rep.get("nodes"), indent=1)[:3000]


def test_tests_with_disjoint_services_run_concurrently_and_shared_ones_in_order(tmp_path: Path,
                                                                                 state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "order" {{
  service a {{ image "{BUSYBOX}" command ["sleep", "300"] }}
  service b {{ image "{BUSYBOX}" command ["sleep", "300"] }}
  service slow {{ image "{BUSYBOX}" command ["sh", "-c", "sleep 10; touch /ready; sleep 300"] ready exec ["test", "-e", "/ready"] within 60s }}
  test "on a" {{ step s = exec a ["sleep", "3"] }}
  test "on b" {{ step s = exec b ["sleep", "3"] }}
  test "a again" {{ step s = exec a ["true"] }}
  test "b names slow" {{ step s = exec b ["echo", "http://slow:80/"] }}
}}
""")
    proc, rep = run_json(src, env=state)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = {n["test"]: n for n in rep["nodes"] if n["kind"] == "step"}
    on_a, on_b, again, names = steps["on a"], steps["on b"], steps["a again"], steps["b names slow"]
    slow = nodes(rep, "service")["slow"]
    # Disjoint services: the two 3 s steps overlap, neither waited for the slow service (10 s).
    assert on_a["started_ns"] < on_b["ended_ns"] and on_b["started_ns"] < on_a["ended_ns"], (on_a, on_b)
    assert on_a["ended_ns"] < slow["ended_ns"] and on_b["ended_ns"] < slow["ended_ns"]
    # A shared service: source order.
    assert again["started_ns"] >= on_a["ended_ns"]
    # Naming a service as a hostname waits for it (and for the earlier test on b).
    assert names["started_ns"] >= slow["ended_ns"] and names["started_ns"] >= on_b["ended_ns"]
