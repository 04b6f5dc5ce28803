"""The runner's behaviour on the scriptable fake backend, in-process on a virtual clock: timeouts, captures,
dying services, readiness, fail-fast, interruption and teardown order, each in milliseconds of CPU and
whatever the machine's load. The Docker tests (test_run.py) keep the backend contract and end-to-end runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from crc.runtime import verdicts
from crc.runtime.backend import Labels
from crc.runtime.fake_backend import ExecCall, FakeBackend, FakeExec, FakeService, FakeSpan
from crc.runtime.results import ERROR, FAILED, PASSED, SKIPPED, Cause
from crc.runtime.runner import RunOptions
from fakerun import compile_source, run

BOX = """
  service box {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
  }
"""


def suite(body: str, name: str = "s", head: str = "") -> str:
    return f'suite "{name}" {{\n{head}{BOX}{body}\n}}\n'


def by_argv(table: dict[str, FakeExec]):  # type: ignore[no-untyped-def]
    """An exec script answering by the command's first word; anything else exits 0 silently."""
    def on_exec(call: ExecCall) -> FakeExec:
        return table.get(call.argv[0] if call.argv else "", FakeExec())
    return on_exec


@pytest.fixture(autouse=True)
def _cpu_budget():  # type: ignore[no-untyped-def]
    """Each of these tests stays under a second of CPU, whatever the virtual time it spans."""
    t0 = time.process_time()
    yield
    assert time.process_time() - t0 < 1.0


def test_a_step_past_its_timeout_is_killed_and_its_expectations_fail(tmp_path: Path) -> None:
    plan = compile_source(tmp_path, suite('''
  test "t" {
    step slow = exec box ["slow"] timeout 2s
    expect slow.stdout == "x"
  }'''))
    r = run([plan], FakeBackend(on_exec=by_argv({"slow": FakeExec(delay=3600, stdout="x")})))
    step = r.node("step:slow")
    assert (step.status, step.message, step.cause) == (FAILED, "step `slow` timed out after 2s and was killed",
                                                       Cause.NONE)
    assert step.detail["output"]["timed_out"] and step.detail["output"]["duration_s"] == 2.0
    assert r.test("t").status == FAILED
    assert r.backend.alive() == []


def test_captures_feed_later_steps_and_a_failed_capture_fails_its_step(tmp_path: Path) -> None:
    plan = compile_source(tmp_path, suite('''
  test "t" {
    step first = exec box ["first"]
    capture id = first.stdout ~ /id=(\\w+)/
    step second = exec box ["second", "{{ id }}"]
    expect second.stdout == "got abc"
    step third = exec box ["third"]
    capture nope = third.stdout ~ /never/
  }'''))
    seen: list[tuple[str, ...]] = []

    def on_exec(call: ExecCall) -> FakeExec:
        seen.append(call.argv)
        return {"first": FakeExec(stdout="id=abc"), "second": FakeExec(stdout="got " + call.argv[-1])}.get(
            call.argv[0], FakeExec(stdout="nothing"))

    r = run([plan], FakeBackend(on_exec=on_exec))
    assert ("second", "abc") in seen
    assert r.node("step:first").detail["captures"] == {"id": "abc"}
    assert r.node("step:second").status == PASSED
    third = r.node("step:third")
    assert third.status == FAILED and third.message.startswith("capture nope: /never/ does not match stdout")


def test_a_service_dying_during_a_step_fails_it_with_the_exit_and_log_tail(tmp_path: Path) -> None:
    plan = compile_source(tmp_path, suite('''
  test "t" {
    step long = exec box ["long"]
    step next after long = exec box ["next"]
  }'''))
    backend = FakeBackend(on_exec=by_argv({"long": FakeExec(delay=10)}),
                          services={"box": FakeService(dies_after=5, exit_code=3, log="boom: out of cheese")})
    r = run([plan], backend)
    long = r.node("step:long")
    assert long.status == FAILED and long.cause is Cause.SERVICE_DIED
    assert long.message == "service `box` exited with code 3\n--- last log lines ---\nboom: out of cheese"
    assert r.node("step:next").cause is Cause.DEPENDENCY
    assert r.test("t").status == FAILED
    assert r.backend.alive() == []


def _ready_within(seconds: int) -> str:
    return f'''suite "s" {{
  service box {{
    image "crc/busybox:dev"
    command ["sleep", "3600"]
    ready exec ["ready"] within {seconds}s
  }}
  test "t" {{
    step a = exec box ["a"]
    expect a.exit == 0
  }}
}}'''


def test_a_service_that_never_gets_ready_skips_its_tests(tmp_path: Path) -> None:
    plan = compile_source(tmp_path, _ready_within(2))
    r = run([plan], FakeBackend(services={"box": FakeService(ready_after=60, log="starting...")}))
    svc = r.node("service:box")
    assert svc.status == FAILED and svc.cause is Cause.NOT_READY
    assert svc.message.startswith('service `box` not ready: `ready exec ["ready"]` did not pass within 2s')
    assert svc.message.endswith("container running\n--- last log lines ---\nstarting...")
    a = r.node("step:a")
    assert (a.status, a.message, a.cause) == (SKIPPED, "skipped: service `box` failed", Cause.DEPENDENCY)
    assert r.test("t").status == FAILED  # its service failed


def test_readiness_passes_once_the_service_is_ready(tmp_path: Path) -> None:
    plan = compile_source(tmp_path, _ready_within(20))
    r = run([plan], FakeBackend(services={"box": FakeService(ready_after=5)}))
    assert r.node("service:box").status == PASSED and r.test("t").status == PASSED


def test_test_timeout_errs_what_runs_and_skips_its_dependents(tmp_path: Path) -> None:
    plan = compile_source(tmp_path, suite('''
  test "t" timeout 3s {
    step slow = exec box ["slow"]
    expect slow.exit == 0
  }
  test "other" {
    step quick = exec box ["quick"]
  }'''))
    r = run([plan], FakeBackend(on_exec=by_argv({"slow": FakeExec(delay=100)})))
    slow = r.node("step:slow")
    assert (slow.status, slow.message, slow.cause) == (ERROR, "the test's timeout (3s) was reached",
                                                       Cause.TEST_TIMEOUT)
    check = r.node("::t::assert:1")
    assert (check.status, check.message, check.cause) == (SKIPPED, "skipped: step `slow` error", Cause.DEPENDENCY)
    assert r.test("t").status == ERROR and r.test("other").status == PASSED


def test_suite_timeout_errs_every_unfinished_node(tmp_path: Path) -> None:
    plan = compile_source(tmp_path, suite('''
  test "t" {
    step slow = exec box ["slow"]
    step after_it after slow = exec box ["x"]
  }''', head="  timeout 5s\n"))
    r = run([plan], FakeBackend(on_exec=by_argv({"slow": FakeExec(delay=100)})))
    for n in ("step:slow", "step:after_it"):
        res = r.node(n)
        assert (res.status, res.message, res.cause) == (ERROR, "suite timeout (5s) reached", Cause.SUITE_TIMEOUT)
    assert r.backend.alive() == []


def test_fail_fast_stops_other_suites_naming_the_failed_node(tmp_path: Path) -> None:
    a = compile_source(tmp_path, suite('''
  test "fails" {
    step bad = exec box ["bad"]
  }''', name="a"), "a.cr")
    b = compile_source(tmp_path, suite('''
  test "slow" {
    step wait = exec box ["wait"]
    step then after wait = exec box ["x"]
  }''', name="b"), "b.cr")
    backend = FakeBackend(on_exec=by_argv({"bad": FakeExec(exit_code=1, delay=1), "wait": FakeExec(delay=100)}))
    r = run([a, b], backend, RunOptions(fail_fast=True))
    assert r.node("step:bad").status == FAILED
    for n in ("step:wait", "step:then"):
        res = r.node(n)
        assert (res.status, res.message, res.cause) == (SKIPPED, "skipped: --fail-fast after bad failed",
                                                        Cause.FAIL_FAST)
    assert r.backend.alive() == []


def test_interrupting_a_run_errs_what_is_unfinished_and_tears_down(tmp_path: Path) -> None:
    plan = compile_source(tmp_path, suite('''
  test "t" {
    step slow = exec box ["slow"]
  }'''))
    r = run([plan], FakeBackend(on_exec=by_argv({"slow": FakeExec(delay=100)})), cancel_after=10)
    slow = r.node("step:slow")
    assert (slow.status, slow.message, slow.cause) == (ERROR, verdicts.INTERRUPTED.message, Cause.INTERRUPTED)
    assert r.result.interrupted and r.backend.alive() == []


def test_teardown_removes_dependents_first_then_the_network(tmp_path: Path) -> None:
    plan = compile_source(tmp_path, '''suite "s" {
  service db {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
  }
  service api {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
    needs db
  }
  service web {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
    needs api
  }
  test "t" {
    step a = exec web ["a"]
    step o = run "crc/busybox:dev" ["oneoff"]
  }
}''')
    backend = FakeBackend()
    r = run([plan], backend)
    assert r.test("t").status == PASSED
    names = {cid: name for what, cid, name in backend.calls if what == "create_container"}
    removed = [names[cid].rsplit("-", 1)[-1] for what, cid, _ in backend.calls if what == "remove_container"
               and "-step-" not in names[cid]]
    assert removed == ["web", "api", "db"]
    assert backend.calls[-1][0] == "remove_network"
    started = [names[cid].rsplit("-", 1)[-1] for what, cid, _ in backend.calls if what == "start"
               and "-step-" not in names[cid]]
    assert started == ["db", "api", "web"]
    # Every container and the network carry the run's labels (one helper spells them).
    for c in backend.containers.values():
        assert Labels.is_managed(c.spec.labels) and Labels.run_of(c.spec.labels) == "run-fake"
        assert c.spec.labels[Labels.SUITE] == "s"
    assert backend.alive() == []


def test_a_missing_image_is_an_environment_problem(tmp_path: Path) -> None:
    plan = compile_source(tmp_path, suite('''
  test "t" {
    step a = exec box ["a"]
  }'''))
    r = run([plan], FakeBackend(images=frozenset()))
    svc = r.node("service:box")
    assert svc.status == ERROR and svc.cause is Cause.ENVIRONMENT and "crc/busybox:dev" in svc.message
    assert r.result.exit_code() == 3


def test_span_checks_pass_on_emitted_spans_and_name_what_never_came(tmp_path: Path) -> None:
    plan = compile_source(tmp_path, suite('''
  test "ok" {
    step go = exec box ["go"]
    span work = "work"
    expect work.duration < 50ms
  }
  test "missing" {
    step go2 = exec box ["go2"]
    span never = "never"
  }''', head="  settle 100ms\n"))
    spans = (FakeSpan("work", duration_ms=20),)
    r = run([plan], FakeBackend(on_exec=by_argv({"go": FakeExec(delay=1, spans=spans),
                                                 "go2": FakeExec(delay=1)})), RunOptions(span_timeout=5))
    work = r.node("span:work")
    assert work.status == PASSED and [s["name"] for s in work.detail["spans"]] == ["work"]
    assert work.detail["window"]["complete"] is True
    never = r.node("span:never")
    assert never.status == FAILED and never.cause is Cause.NONE
    assert never.message.endswith("(waited 5.0s for spans; 0 span(s) arrived for this test)")
    assert never.detail["window"]["complete"] is False and never.detail["window"]["waited_s"] == 5.0
