"""`crc dev`'s logic in-process: what an edit changed (`classify`, by node digests) and what a warm session
(`DevSession` on the scriptable fake backend, on a virtual clock) restarts, re-runs and re-checks from the last
run. The Docker tests (test_dev_docker.py) drive the real command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from crc.compiler.compile import compile_file
from crc.compiler.plan import Plan
from crc.runtime.dev_session import Change, DevSession, classify, mounted_paths, node_digests, watched_paths
from crc.runtime.fake_backend import ExecCall, FakeBackend, FakeExec, FakeReceiver, FakeService, FakeSpan
from crc.runtime.results import FAILED, PASSED
from crc.runtime.runner import RunOptions
from virtualclock import VirtualClockLoop

BASE = """suite "s" {
  service db {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
  }
  service api {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
    volume "www" -> "/www" ro
    needs db
  }
  service other {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
  }

  test "uses api" {
    step get = exec api ["get"]
    expect get.stdout contains "hello"
    span work = "work" { service "api" }
    expect work.duration < 100ms
  }

  test "uses other" {
    step echo = exec other ["echo"]
    expect echo.exit == 0
  }
}
"""


def compiled(tmp_path: Path, text: str, name: str = "t.cr") -> Plan:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    (tmp_path / "www").mkdir(exist_ok=True)
    return compile_file(str(path))


def edit(tmp_path: Path, old: str, new: str, text: str = BASE) -> Plan:
    assert old in text, old
    return compiled(tmp_path, text.replace(old, new, 1))


# ------------------------------------------------------------------------------------------------- classify
def test_a_first_compilation_starts_every_service_and_runs_every_test(tmp_path: Path) -> None:
    ch = classify([], [compiled(tmp_path, BASE)])
    assert ch.restart == {"s::service:db", "s::service:api", "s::service:other"}
    assert ch.run == {("s", "uses api"), ("s", "uses other")} and not ch.recheck
    assert ch.lines == ["suite `s`: new"]


def test_moving_lines_and_comments_change_nothing(tmp_path: Path) -> None:
    old = compiled(tmp_path, BASE)
    new = compiled(tmp_path, "# a comment\n\n" + BASE.replace('  test "uses other"', '\n\n  test "uses other"'))
    assert node_digests(old) != {} and node_digests(old) == node_digests(new)
    ch = classify([old], [new])
    assert ch.empty and ch.lines == []


def test_an_expectation_edit_is_a_recheck_of_that_test_only(tmp_path: Path) -> None:
    old = compiled(tmp_path, BASE)
    ch = classify([old], [edit(tmp_path, 'contains "hello"', 'contains "bye"')])
    assert ch.recheck == {("s", "uses api")} and not ch.run and not ch.restart
    assert ch.lines == ['test `s / uses api`: expectation `get.stdout contains "bye"` changed']


def test_a_span_expectation_edit_and_an_added_expectation_are_rechecks(tmp_path: Path) -> None:
    old = compiled(tmp_path, BASE)
    ch = classify([old], [edit(tmp_path, "< 100ms", "< 5ms")])
    assert ch.recheck == {("s", "uses api")} and not ch.run
    added = edit(tmp_path, "expect echo.exit == 0", 'expect echo.exit == 0\n    expect echo.stdout == ""')
    ch = classify([old], [added])
    assert ch.recheck == {("s", "uses other")} and not ch.run
    assert ch.lines == ['test `s / uses other`: expectation `echo.stdout == ""` new']


def test_a_step_edit_runs_its_test_and_restarts_nothing(tmp_path: Path) -> None:
    old = compiled(tmp_path, BASE)
    ch = classify([old], [edit(tmp_path, '["echo"]', '["echo", "x"]')])
    assert ch.run == {("s", "uses other")} and not ch.recheck and not ch.restart
    assert ch.lines == ["test `s / uses other`: step `echo` changed"]


def test_a_service_edit_restarts_it_and_what_needs_it_and_runs_the_tests_using_them(tmp_path: Path) -> None:
    old = compiled(tmp_path, BASE)
    db_edit = BASE.replace('command ["sleep", "3600"]', 'command ["sleep", "7200"]', 1)  # the first: db's
    ch = classify([old], [compiled(tmp_path, db_edit)])
    assert ch.restart == {"s::service:db", "s::service:api"}  # api needs db
    assert ch.run == {("s", "uses api")} and not ch.recheck
    assert ch.lines == ["service `db`: its definition changed", "restarted with what they need: `api`"]


def test_a_changed_mounted_file_restarts_the_service_that_mounts_it(tmp_path: Path) -> None:
    plan = compiled(tmp_path, BASE)
    page = tmp_path / "www" / "index.html"
    assert mounted_paths(plan, "s::service:api") == [(tmp_path / "www").resolve()]
    ch = classify([plan], [plan], [page.resolve()])
    assert ch.restart == {"s::service:api"} and ch.run == {("s", "uses api")}
    assert ch.lines == ["service `api`: a file it mounts or is built from changed"]
    assert classify([plan], [plan], [(tmp_path / "elsewhere.txt").resolve()]).empty


def test_a_dead_service_is_started_again_at_the_next_change(tmp_path: Path) -> None:
    plan = compiled(tmp_path, BASE)
    ch = classify([plan], [plan], broken={"s::service:other"})
    # "uses api" checks spans: the compiler counts every service of the suite as one it uses.
    assert ch.restart == {"s::service:other"} and ch.run == {("s", "uses other"), ("s", "uses api")}


def test_new_removed_tests_and_suite_settings(tmp_path: Path) -> None:
    old = compiled(tmp_path, BASE)
    no_other = BASE[:BASE.index('  test "uses other"')] + "}\n"
    ch = classify([old], [compiled(tmp_path, no_other)])
    assert ch.removed == {("s", "uses other")} and not ch.run
    ch = classify([compiled(tmp_path, no_other)], [old])
    assert ch.run == {("s", "uses other")} and ch.lines == ["test `s / uses other`: new"]
    ch = classify([old], [edit(tmp_path, 'suite "s" {', 'suite "s" {\n  timeout 5m')])
    assert ch.run == {("s", "uses api"), ("s", "uses other")} and not ch.restart
    assert ch.lines == ["suite `s`: its settings changed"]


def test_a_suite_whose_first_run_did_not_finish_is_compared_with_the_plan_its_services_run(tmp_path: Path) -> None:
    base = compiled(tmp_path, BASE)
    db_edit = compiled(tmp_path, BASE.replace('command ["sleep", "3600"]', 'command ["sleep", "7200"]', 1))
    ch = classify([], [db_edit], unfinished={"s": base})
    assert ch.restart == {"s::service:db", "s::service:api"} and ch.run == {("s", "uses api"), ("s", "uses other")}
    assert ch.lines == ["suite `s`: its first run did not finish (every test runs)",
                        "service `db`: its definition changed", "restarted with what they need: `api`"]
    assert classify([], [db_edit]).restart == {"s::service:db", "s::service:api", "s::service:other"}


def test_watched_paths_are_the_sources_imports_and_mounts(tmp_path: Path) -> None:
    (tmp_path / "lib.cr").write_text('let greeting = "hello"\n', encoding="utf-8")
    plan = compiled(tmp_path, 'import "lib.cr"\n' + BASE.replace('"hello"', "greeting"))
    sources, mounts = watched_paths([plan])
    assert sources == {(tmp_path / "t.cr").resolve(), (tmp_path / "lib.cr").resolve()}
    assert mounts == {(tmp_path / "www").resolve()}


# ------------------------------------------------------------------------------------------------- a session
class Script:
    """The fake engine's answers, changeable between edits; counts what ran."""

    def __init__(self) -> None:
        self.out = {"get": FakeExec(stdout="hello", spans=(FakeSpan("work", duration_ms=20),)),
                    "echo": FakeExec(stdout="")}
        self.ran: list[str] = []

    def __call__(self, call: ExecCall) -> FakeExec:
        self.ran.append(call.argv[0])
        return self.out.get(call.argv[0], FakeExec())


def session_run(body: Any, backend: FakeBackend, options: RunOptions | None = None) -> Any:
    """Run `body(session)` inside a DevSession on `backend`, on a virtual clock; returns what it returns."""
    async def main() -> Any:
        def receiver(on_spans: Any) -> FakeReceiver:
            backend.receiver = FakeReceiver(on_spans)
            return backend.receiver

        async with DevSession(backend, options or RunOptions(span_timeout=2), run_id="dev-fake",
                              receiver=receiver) as s:
            return await body(s)

    return anyio.run(main, backend="asyncio", backend_options={"loop_factory": VirtualClockLoop})


def created(backend: FakeBackend) -> list[str]:
    return [name.rsplit("-", 1)[1] for what, _, name in backend.calls if what == "create_container"]


def removed(backend: FakeBackend) -> list[str]:
    return [name.rsplit("-", 1)[1] for what, _, name in backend.calls if what == "remove_container"]


async def apply(s: DevSession, plan: Plan, touched: tuple[Path, ...] = ()) -> tuple[Change, Any, Any]:
    ch = s.change([plan], touched)
    re = s.recheck([plan], ch.recheck)
    return ch, re, await s.execute([plan], ch)


def test_services_stay_up_and_an_expectation_edit_is_rechecked_then_confirmed(tmp_path: Path) -> None:
    script = Script()
    backend = FakeBackend(on_exec=script)
    first, fails = compiled(tmp_path, BASE), edit(tmp_path, 'contains "hello"', 'contains "bye"')

    async def body(s: DevSession) -> Any:
        _, re0, r0 = await apply(s, first)
        assert re0 is None and {t.name: t.status for t in r0.tests} == {"uses api": PASSED, "uses other": PASSED}
        assert sorted(created(backend)) == ["api", "db", "other"]
        script.ran.clear()
        ch, re, r = await apply(s, fails)
        assert ch.recheck == {("s", "uses api")}
        return re, r, sorted(s.warm())

    re, r, warm = session_run(body, backend)
    # From the last run's output, before anything ran again: the same message the live run gives.
    assert [(t.name, t.status) for t in re.result.tests] == [("uses api", FAILED)]
    assert "does not contain 'bye'" in re.result.tests[0].failures[0] and re.no_data == ()
    assert [(t.name, t.status) for t in r.tests] == [("uses api", FAILED)]
    assert re.result.tests[0].failures == r.tests[0].failures
    assert script.ran == ["get"]  # the confirming run ran that test's step only
    assert sorted(created(backend)) == ["api", "db", "other"]  # no service started twice
    assert warm == [("s", "api"), ("s", "db"), ("s", "other")]
    assert backend.alive() == []  # closing the session removed every container and the network


def test_a_span_expectation_is_rechecked_on_the_spans_the_last_run_received(tmp_path: Path) -> None:
    backend = FakeBackend(on_exec=Script())

    async def body(s: DevSession) -> Any:
        await apply(s, compiled(tmp_path, BASE))
        _, re, r = await apply(s, edit(tmp_path, "< 100ms", "< 5ms"))
        return re, r

    re, r = session_run(body, backend)
    assert [(t.name, t.status) for t in re.result.tests] == [("uses api", FAILED)]
    assert [(t.name, t.status) for t in r.tests] == [("uses api", FAILED)]
    span = "s::uses api::span:work"
    assert re.result.nodes[span].status == r.nodes[span].status == FAILED
    assert "do not have duration < 5.0ms" in re.result.nodes[span].message
    assert re.result.nodes[span].message == r.nodes[span].message


def test_a_service_edit_restarts_that_service_and_its_dependents_only(tmp_path: Path) -> None:
    script = Script()
    backend = FakeBackend(on_exec=script)
    db_edit = BASE.replace('command ["sleep", "3600"]', 'command ["sleep", "7200"]', 1)

    async def body(s: DevSession) -> Any:
        await apply(s, compiled(tmp_path, BASE))
        script.ran.clear()
        return await apply(s, compiled(tmp_path, db_edit))

    ch, re, r = session_run(body, backend)
    assert ch.restart == {"s::service:db", "s::service:api"}
    assert re is None and [t.name for t in r.tests] == ["uses api"] and r.tests[0].status == PASSED
    assert sorted(created(backend)) == ["api", "api", "db", "db", "other"]
    assert removed(backend)[:2] == ["api", "db"]  # dependents first, before the new ones start
    assert script.ran == ["get"]
    assert backend.alive() == []


def test_a_service_that_died_between_edits_is_started_again(tmp_path: Path) -> None:
    script = Script()
    backend = FakeBackend(on_exec=script, services={"other": FakeService(dies_after=30, log="bye")})
    plan = compiled(tmp_path, BASE)

    async def body(s: DevSession) -> Any:
        await apply(s, plan)
        await anyio.sleep(60)  # it dies meanwhile: its watcher notices
        assert ("s", "other") not in s.warm()
        return await apply(s, plan)

    ch, _, r = session_run(body, backend)
    assert ch.lines == ["service `other`: it had stopped or failed"]
    assert [(t.name, t.status) for t in r.tests] == [("uses api", PASSED), ("uses other", PASSED)]
    assert created(backend).count("other") == 2 and created(backend).count("api") == 1


def test_a_new_step_is_not_answered_from_the_last_run(tmp_path: Path) -> None:
    backend = FakeBackend(on_exec=Script())
    step = edit(tmp_path, '["echo"]', '["echo", "x"]')

    async def body(s: DevSession) -> Any:
        await apply(s, compiled(tmp_path, BASE))
        return await apply(s, step)

    ch, re, r = session_run(body, backend)
    assert re is None and ch.run == {("s", "uses other")}
    assert [(t.name, t.status) for t in r.tests] == [("uses other", PASSED)]


@pytest.mark.parametrize("gone", ["test", "suite"])
def test_what_is_gone_is_stopped_and_forgotten(tmp_path: Path, gone: str) -> None:
    backend = FakeBackend(on_exec=Script())
    other = BASE.replace('suite "s"', 'suite "t"')
    no_test = BASE[:BASE.index('  test "uses other"')] + "}\n"

    async def body(s: DevSession) -> Any:
        await apply(s, compiled(tmp_path, BASE))
        if gone == "suite":
            s2 = compiled(tmp_path, other, "u.cr")
            ch = s.change([s2])
            await s.execute([s2], ch)
            return ch, s.warm(), s.last_run()
        plan = compiled(tmp_path, no_test)
        ch = s.change([plan])
        await s.execute([plan], ch)
        assert not any("uses other" in n for n in s.results)  # what the gone test left is forgotten
        return ch, s.warm(), s.last_run()

    ch, warm, last = session_run(body, backend)
    if gone == "suite":
        assert "suite `s` is gone" in ch.lines and {w[0] for w in warm} == {"t"}
        assert {t.suite for t in last.tests} == {"t"}
    else:
        assert ch.removed == {("s", "uses other")}
        assert [t.name for t in last.tests] == ["uses api"]
    assert backend.alive() == []


# ------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("args", "said"), [
    (("nope.cr",), "crc: error: no such file or directory: nope.cr"),
    (("t.cr", "-k", "a and ("), "crc: error: -k 'a and (': expected a name, found the end at column 8"),
    (("t.cr", "-k", "uses aip"), "crc: error: -k 'uses aip' matched no test"),
])
def test_bad_input_is_exit_2_before_the_engine_is_reached(tmp_path: Path, args: tuple[str, ...], said: str) -> None:
    from conftest import run_crc

    compiled(tmp_path, BASE)
    # No engine at this address: only input errors found before reaching it give exit 2.
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock", "CRC_STATE_DIR": str(tmp_path / "st")}
    res = run_crc("dev", *args, cwd=tmp_path, env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert said in res.stderr and "Traceback" not in res.stderr


def test_no_engine_is_exit_3(tmp_path: Path) -> None:
    from conftest import run_crc

    compiled(tmp_path, BASE)
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock", "CRC_STATE_DIR": str(tmp_path / "st")}
    res = run_crc("dev", "t.cr", cwd=tmp_path, env=env)
    assert res.returncode == 3 and "cannot reach the Docker engine" in res.stderr, res.stdout + res.stderr


def test_a_changed_file_in_a_build_context_restarts_the_service_built_from_it(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text("FROM crc/busybox:dev\n", encoding="utf-8")
    plan = compiled(tmp_path, BASE.replace('image "crc/busybox:dev"', 'build "./app"', 1))  # db is built
    assert mounted_paths(plan, "s::service:db") == [(tmp_path / "app").resolve()]
    ch = classify([plan], [plan], [(tmp_path / "app" / "Dockerfile").resolve()])
    assert ch.restart == {"s::service:db", "s::service:api"}  # api needs db
    assert ch.lines[0] == "service `db`: a file it mounts or is built from changed"


def test_what_the_command_watches_and_its_screen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Directories it mounts are watched with what is under them, a mounted file through its directory only, a
    socket not at all; the screen is cleared only on a terminal."""
    import socket

    from crc.commands_dev import CLEAR, _Dev

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.ini").write_text("x=1\n", encoding="utf-8")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.sock"))
    try:
        text = BASE.replace('volume "www" -> "/www" ro', 'volume "www" -> "/www" ro\n    volume "conf/app.ini" -> '
                            '"/app.ini" ro\n    volume "s.sock" -> "/s.sock"')
        monkeypatch.chdir(tmp_path)
        dev = _Dev([Path("t.cr")], [Path("t.cr")], RunOptions())
        dev.plans = {Path("t.cr"): compiled(tmp_path, text)}
        flat, deep = dev._watch_dirs()
    finally:
        sock.close()
    root = tmp_path.resolve()
    assert deep == {root / "www"} and flat == {root, root / "conf"}
    assert dev._relevant(root / "www" / "index.html") and dev._relevant(root / "conf" / "app.ini")
    assert dev._relevant(root / "t.cr") and not dev._relevant(root / "conf" / "other.ini")
    for tty in (False, True):
        dev.tty = tty
        dev._header(set(), first=True)
        assert (CLEAR in capsys.readouterr().out) is tty


# ------------------------------------------------------------------------------------------------- superseding
def test_a_cancelled_run_leaves_the_session_as_the_last_finished_run_left_it(tmp_path: Path) -> None:
    """A run cancelled half-way (a newer save): services keep running, the tests keep the verdicts of the last
    run that finished, and the next change still holds what the cancelled one would have done."""
    script = Script()
    script.out["slow"] = FakeExec(delay=600)
    backend = FakeBackend(on_exec=script)
    first = compiled(tmp_path, BASE)
    slow, fast = edit(tmp_path, '["echo"]', '["slow"]'), edit(tmp_path, '["echo"]', '["echo", "x"]')

    async def body(s: DevSession) -> Any:
        await apply(s, first)
        before = s.results["s::uses other::step:echo"]
        ch = s.change([slow])
        with anyio.move_on_after(5) as scope:
            await s.execute([slow], ch)
        assert scope.cancelled_caught
        cancelled_at = anyio.current_time()
        assert s.results["s::uses other::step:echo"] == before and s.plans == [first]
        assert [t.status for t in s.last_run().tests] == [PASSED, PASSED]
        ch2 = s.change([fast])
        r = await s.execute([fast], ch2)
        return ch2, r, anyio.current_time() - cancelled_at, sorted(s.warm())

    ch2, r, took, warm = session_run(body, backend)
    assert ch2.run == {("s", "uses other")} and not ch2.restart
    assert [(t.name, t.status) for t in r.tests] == [("uses other", PASSED)]
    assert script.ran == ["get", "echo", "slow", "echo"] and took < 600  # the slow exec did not finish
    assert sorted(created(backend)) == ["api", "db", "other"]  # no service started twice
    assert warm == [("s", "api"), ("s", "db"), ("s", "other")]
    assert backend.alive() == []


def test_a_superseded_first_run_keeps_the_services_it_started(tmp_path: Path) -> None:
    """The first run cancelled by a save: the next change runs every test of the suite, against the services
    the first run started (compared with the Plan they run from), none started twice."""
    script = Script()
    script.out["slow"] = FakeExec(delay=600)
    backend = FakeBackend(on_exec=script)
    slow, fast = edit(tmp_path, '["echo"]', '["slow"]'), edit(tmp_path, '["echo"]', '["echo", "x"]')

    async def body(s: DevSession) -> Any:
        with anyio.move_on_after(5):
            await s.execute([slow], s.change([slow]))
        assert s.plans == [] and sorted(s.warm()) == [("s", "api"), ("s", "db"), ("s", "other")]
        ch = s.change([fast])
        return ch, await s.execute([fast], ch)

    ch, r = session_run(body, backend)
    assert ch.lines == ["suite `s`: its first run did not finish (every test runs)"] and not ch.restart
    assert [(t.name, t.status) for t in r.tests] == [("uses api", PASSED), ("uses other", PASSED)]
    assert sorted(created(backend)) == ["api", "db", "other"]
    assert backend.alive() == []


def test_a_save_during_a_run_supersedes_it_and_a_burst_of_saves_is_one_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`crc dev`'s loop on the fake engine, fed scripted saves: a save while a step runs cancels that run and
    says so; two saves within the debounce window are one change; the services stay up throughout."""
    from crc.commands_dev import DEBOUNCE, _Dev

    monkeypatch.chdir(tmp_path)
    script = Script()
    script.out["slow"] = FakeExec(delay=600)
    backend = FakeBackend(on_exec=script)
    compiled(tmp_path, BASE)
    src = (tmp_path / "t.cr").resolve()
    dev = _Dev([Path("t.cr")], [Path("t.cr")], RunOptions(span_timeout=2))
    dev.first_plans = dev._compile()
    dev._watch_dirs()

    async def save(send: Any, old: str, new: str) -> None:
        src.write_text(BASE.replace(old, new, 1), encoding="utf-8")
        await send.send({src, (tmp_path / "unrelated.txt").resolve()})

    async def body(s: DevSession) -> float:
        send, receive = anyio.create_memory_object_stream[set[Path]](10)
        async with anyio.create_task_group() as tg:
            tg.start_soon(dev._loop, s, receive)
            await anyio.sleep(30)  # the first run
            await save(send, '["echo"]', '["slow"]')
            await anyio.sleep(30)  # change 1 is in its slow step
            assert script.ran[-1] == "slow" and dev.count == 1
            t0 = anyio.current_time()
            await save(send, '["echo"]', '["echo", "x"]')
            await anyio.sleep(DEBOUNCE / 2)
            await save(send, '["echo"]', '["echo", "y"]')
            await anyio.sleep(30)
            tg.cancel_scope.cancel()
        return t0

    session_run(body, backend)
    out = capsys.readouterr().out
    assert out.count("superseded: a newer save came; change 1 was cancelled (its tests keep their last verdicts); "
                     "running: api, db, other") == 1
    assert "· change 2 ·" in out and "· change 3 ·" not in out  # the burst of two saves: one change
    assert "edited: t.cr" in out and "unrelated" not in out
    assert script.ran == ["get", "echo", "slow", "echo"]  # the step ran once more, as last saved
    assert out.rstrip().splitlines()[-2].startswith("1 passed, 0 failed, 0 skipped")
    assert sorted(created(backend)) == ["api", "db", "other"]
    assert backend.alive() == []


# ------------------------------------------------------------------------------------------------- the confirming run
def waited(message: str) -> str:
    """A span node's message without the figure of how long its phase waited."""
    import re

    return re.sub(r"\(waited [0-9.]+s for spans", "(waited Xs for spans", message)


def test_the_confirming_run_stops_waiting_for_a_span_that_cannot_come_and_agrees_with_a_run(tmp_path: Path) -> None:
    """A misspelt span name: the confirming run ends its span wait once the steps are done and the receiver
    has been quiet for a flush window, not after the span timeout; its verdict is the one a run gives."""
    from fakerun import run

    typo = edit(tmp_path, 'span work = "work"', 'span work = "wrok"')
    backend = FakeBackend(on_exec=Script())

    async def body(s: DevSession) -> Any:
        await apply(s, compiled(tmp_path, BASE))
        ch = s.change([typo])
        t0 = anyio.current_time()
        r = await s.execute([typo], ch)
        return ch, r, anyio.current_time() - t0, dict(s.ended_early)

    ch, r, took, early = session_run(body, backend, RunOptions(span_timeout=300))
    assert ch.recheck == {("s", "uses api")}
    assert list(early) == [("s", "uses api")] and took < 60  # not the 300 s span timeout
    full = run([typo], FakeBackend(on_exec=Script()), RunOptions(span_timeout=300))
    span = "s::uses api::span:work"
    assert r.nodes[span].status == full.nodes[span].status == FAILED
    assert "(waited 300.0s for spans" in full.nodes[span].message
    assert waited(r.nodes[span].message) == waited(full.nodes[span].message)
    assert [(t.name, t.status) for t in r.tests] == [(t.name, t.status) for t in full.result.tests
                                                      if t.name == "uses api"]


def test_the_confirming_run_waits_as_long_as_the_last_run_saw_spans_come(tmp_path: Path) -> None:
    """Spans that came 3 s after the steps in the last run of the same steps are waited for again (the
    flush window alone would have ended the wait before them); a run that is not a confirmation never ends
    its wait early."""
    from crc.runtime.fake_backend import FakeSpan

    script = Script()
    backend = FakeBackend(on_exec=script)
    late = BASE.replace('    expect work.duration < 100ms', '    expect work.duration < 100ms\n'
                        '    span slow = "late" { service "api" }')
    typo = edit(tmp_path, 'span work = "work"', 'span work = "wrok"', late)
    step = edit(tmp_path, '["get"]', '["get", "x"]', late.replace('"work"', '"wrok"', 1))

    async def emit_late() -> None:
        """3 s after each `get`, api sends a span named "late" (as a background job of the request would)."""
        seen = 0
        while True:
            await anyio.sleep(0.05)
            if script.ran.count("get") > seen:
                seen = script.ran.count("get")
                await anyio.sleep(3)
                api = next(c for c in backend.containers.values() if not c.removed and c.spec.aliases[:1] == ("api",))
                backend._emit(api, [FakeSpan("late")])

    async def body(s: DevSession) -> Any:
        async with anyio.create_task_group() as tg:
            tg.start_soon(emit_late)
            first = await s.execute([compiled(tmp_path, late)], s.change([compiled(tmp_path, late)]))
            ch = s.change([typo])
            r = await s.execute([typo], ch)
            early = dict(s.ended_early)
            t0 = anyio.current_time()
            r2 = await s.execute([step], s.change([step]))  # a step edit: a run like any other
            tg.cancel_scope.cancel()
        return first, ch, r, early, r2, anyio.current_time() - t0, dict(s.ended_early)

    first, ch, r, early, r2, took2, early2 = session_run(body, backend, RunOptions(span_timeout=300))
    assert first.nodes["s::uses api::span:slow"].status == PASSED and ch.recheck == {("s", "uses api")}
    assert list(early) == [("s", "uses api")]
    assert r.nodes["s::uses api::span:slow"].status == PASSED  # the late span was waited for
    assert r.nodes["s::uses api::span:work"].status == FAILED
    assert early2 == {} and took2 >= 300  # `wrok` never comes: a run waits its whole span timeout
    assert r2.nodes["s::uses api::span:work"].status == FAILED


def test_a_span_that_comes_after_an_early_end_gives_the_verdict_a_run_gives(tmp_path: Path) -> None:
    """The wait ended early, then the span came (sent by a timer, 5 s after the request, unlike in the last
    run): within what `crc run` would have waited, the verdict becomes the one `crc run` gives, and the
    session says so."""
    from crc.runtime.fake_backend import FakeSpan
    from fakerun import run_async

    script = Script()
    backend = FakeBackend(on_exec=script)
    renamed = edit(tmp_path, 'span work = "work"', 'span work = "timer"')

    async def emit_timer(backend: FakeBackend) -> None:
        """5 s after each `get`, api sends a span named "timer"."""
        seen = 0
        while True:
            await anyio.sleep(0.05)
            if script.ran.count("get") > seen:
                seen = script.ran.count("get")
                await anyio.sleep(5)
                api = next(c for c in backend.containers.values() if not c.removed and c.spec.aliases[:1] == ("api",))
                backend._emit(api, [FakeSpan("timer")])

    told: list[Any] = []

    async def body(s: DevSession) -> Any:
        s.on_late = told.append
        await apply(s, compiled(tmp_path, BASE))
        async with anyio.create_task_group() as tg:
            tg.start_soon(emit_timer, backend)
            r = await s.execute([renamed], s.change([renamed]))
            early = dict(s.ended_early)
            await anyio.sleep(30)
            tg.cancel_scope.cancel()
        return r, early, s.last_run()

    r, early, last = session_run(body, backend, RunOptions(span_timeout=300))
    span = "s::uses api::span:work"
    assert list(early) == [("s", "uses api")] and r.nodes[span].status == FAILED  # ended before the span came
    assert [(t.name, t.status) for t in told] == [("uses api", PASSED)]
    assert last.nodes[span].status == PASSED

    script.ran.clear()
    full_backend = FakeBackend(on_exec=script)

    async def crc_run() -> Any:
        async with anyio.create_task_group() as tg:
            tg.start_soon(emit_timer, full_backend)
            res = await run_async([renamed], full_backend, RunOptions(span_timeout=300))
            tg.cancel_scope.cancel()
        return res

    full = anyio.run(crc_run, backend="asyncio", backend_options={"loop_factory": VirtualClockLoop})
    assert full.nodes[span].status == PASSED  # what `crc run` says, and `crc dev` in the end
