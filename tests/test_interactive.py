"""`crc run --interactive`, driven headlessly by Textual's own test driver (`App.run_test` and its Pilot).

The first tests give the app a scripted run (what the runner reports: nodes starting and finishing, log lines,
the result) to check the app's logic; the Docker test gives it real runs of a real file.
"""

from __future__ import annotations

import fnmatch
import time
from pathlib import Path
from typing import Any

import pytest
from browserutil import artifacts_dir
from conftest import run_crc
from crc.compiler.compile import compile_file
from crc.compiler.plan import Plan
from crc.runtime import results
from crc.runtime.options import RunOptions
from crc.runtime.results import FAILED, PASSED, NodeResult, RunResult

from crc.interactive import CrcApp, Hooks, docker_run, glob_escape

SOURCE = """suite "app" {
  service box {
    image "crc/busybox:dev"
    command ["sh", "-c", "echo box-is-up; sleep 3600"]
  }

  test "greets" {
    step hi = exec box ["echo", "hi"]
    expect hi.stdout == "hi\\n"
  }

  test "a [weird] *name" {
    step hi = exec box ["echo", "hello"]
    expect hi.stdout == "bye\\n"
  }
}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Textual runs on asyncio


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    src = tmp_path / "app.cr"
    src.write_text(SOURCE, encoding="utf-8")
    return compile_file(str(src))


def cell(app: CrcApp, row: int) -> str:
    return str(app.query_one("#tests").get_row_at(row)[0])


async def until(pilot: Any, cond: Any, timeout: float = 300) -> None:
    """Let the app run until `cond()` holds (generous deadline: the machine may be loaded)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "the app did not get there in time"
        await pilot.pause(0.05)


def test_glob_escape_matches_only_itself() -> None:
    name = "a [weird] *name?"
    assert fnmatch.fnmatchcase(name, glob_escape(name))
    assert not fnmatch.fnmatchcase("a w *name?", glob_escape(name))
    assert not fnmatch.fnmatchcase("a [weird] Xname?", glob_escape(name))


@pytest.mark.anyio
async def test_live_status_detail_logs_and_reruns(plan: Plan) -> None:
    calls: list[tuple[str, ...]] = []
    by_test = {t: [n for n, d in plan.nodes.items() if d.get("test") == t] for t in ("greets", "a [weird] *name")}

    async def scripted(select: tuple[str, ...], hooks: Hooks) -> RunResult:
        calls.append(select)
        hooks.log("box", f"box-is-up (run {len(calls)})")
        tests = []
        for name, nodes in by_test.items():
            if select and not any(fnmatch.fnmatchcase(f"app/{name}", p) for p in select):
                continue
            bad = name != "greets"
            for n in nodes:
                hooks.started(n)
                status = FAILED if bad and plan.node(n)["kind"] == "assert" else PASSED
                hooks.finished(NodeResult(n, plan.node(n)["kind"], status, "output differs" if status == FAILED else ""))
            tests.append(results.TestResult("app", name, FAILED if bad else PASSED, 0.1,
                                    ("app.cr:14:12: output differs\n-bye\n+hello",) if bad else (), tuple(nodes)))
        return RunResult("r1", 1, 2, tuple(tests), {}, ("app.cr",))

    app = CrcApp([plan], scripted)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.runs == 1)
        assert calls == [()]
        assert "ok" in cell(app, 0) and "FAIL" in cell(app, 1)
        assert "1 passed, 1 failed" in app.sub_title
        await pilot.press("down")  # the failed test: its failure message is shown
        detail = str(app.query_one("#detail").render())
        assert "a [weird] *name" in detail and "output differs" in detail and "+hello" in detail
        await pilot.press("r")  # re-run the selected test, and only it
        await until(pilot, lambda: app.runs == 2)
        assert calls[-1] == ("app/a [[]weird] [*]name",)
        await pilot.press("f")  # re-run the failed ones
        await until(pilot, lambda: app.runs == 3)
        assert calls[-1] == ("app/a [[]weird] [*]name",)
        await pilot.press("a")
        await until(pilot, lambda: app.runs == 4)
        assert calls[-1] == ()
        log = app.logs["box"]
        assert [str(line.text) for line in log.lines][-1] == "box-is-up (run 4)"
        await pilot.press("q")
    assert app.return_code in (0, None)


@pytest.mark.anyio
async def test_a_run_that_cannot_start_is_shown_and_the_app_stays(plan: Plan) -> None:
    async def broken(select: tuple[str, ...], hooks: Hooks) -> RunResult:
        raise OSError("no Docker engine answers")

    app = CrcApp([plan], broken)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.sub_title == "run failed")
        assert not app.busy and app.runs == 0
        await pilot.press("a")  # another try is possible
        await until(pilot, lambda: app.sub_title == "run failed" and not app.busy)


def test_interactive_refuses_report_options(tmp_path: Path) -> None:
    src = tmp_path / "app.cr"
    src.write_text(SOURCE, encoding="utf-8")
    proc = run_crc("run", src, "--interactive", "--json", tmp_path / "r.json", cwd=tmp_path)
    assert proc.returncode == 2 and "--interactive writes no report" in proc.stderr and "--json" in proc.stderr


@pytest.mark.docker
@pytest.mark.anyio
async def test_real_runs_in_the_app(plan: Plan) -> None:
    from dockerutil import engine_answers

    if not engine_answers():
        pytest.skip("no Docker engine answers (run `bash .ci/setup`)")
    app = CrcApp([plan], docker_run([plan], RunOptions(jobs=4)))
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.runs == 1)
        assert app.status[("app", "greets")] == PASSED
        assert app.status[("app", "a [weird] *name")] == FAILED
        await until(pilot, lambda: "box" in app.logs)
        assert any("box-is-up" in str(line.text) for line in app.logs["box"].lines)
        await pilot.press("down", "r")  # the failed test again, alone: a second real run
        await until(pilot, lambda: app.runs == 2)
        assert app.status[("app", "a [weird] *name")] == FAILED
        assert app.status[("app", "greets")] == PASSED  # not re-run, still shown
        detail = str(app.query_one("#detail").render())
        assert "hi.stdout" in detail or "bye" in detail
        shot = app.save_screenshot(filename="interactive.svg", path=str(artifacts_dir()))
        assert Path(shot).read_text(encoding="utf-8").lstrip().startswith("<svg")
        await pilot.press("q")
