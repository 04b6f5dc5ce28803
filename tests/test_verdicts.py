"""One verdict path: replaying a recording gives exactly the live verdicts, causes and messages, node by node.

Live runs are the Runner on the scriptable fake backend (virtual clock, no engine); each run is recorded, the
recording goes through its bytes and is replayed. Covered: every example, and many randomized runs
(Hypothesis) over the examples and a few suites that use captures, timeouts, fail-fast, dying services,
readiness and span checks, with random outputs, exit codes, delays, deaths, spans and run options.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from conftest import example_files, examples
from crc.compiler.compile import compile_file
from crc.compiler.plan import Plan
from crc.runtime import recording
from crc.runtime.fake_backend import ExecCall, FakeBackend, FakeExec, FakeService, FakeSpan
from crc.runtime.replay import replay
from crc.runtime.results import Cause
from crc.runtime.runner import RunOptions
from fakerun import run
from hypothesis import given, settings
from hypothesis import strategies as st

SYNTHETIC = '''suite "synthetic" {
  timeout 60s
  settle 100ms
  service db {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
    ready exec ["ready"] within 5s
  }
  service api {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
    env { API_TOKEN: "secret-token-1234" }
    needs db
  }
  test "captures" {
    step first = exec api ["first"]
    capture id = first.stdout ~ /id=(\\w+)/
    expect first.exit == 0
    step second = exec api ["second", "{{ id }}"] timeout 3s
    expect second.stdout == "got abc"
    expect second.stdout contains "{{ id }}"
    expect second.duration < 1s
  }
  test "json" timeout 10s {
    step j = exec db ["json"]
    expect j.json("$.a") == 1
    expect j.stderr ~ /warn/
    step k after j = run "crc/busybox:dev" ["oneoff"]
    expect k.exit != 0
  }
  test "spans" {
    step go = exec api ["go"]
    span work = "work" { service "api" }
    span inner = "inner" { parent work }
    expect work.duration < 50ms
    expect work.status != error
    expect count(inner) >= 1
    expect work contains inner
    span late = "late"
    expect inner before late
    expect count(late) <= 2
    expect hermetic
  }
}
'''


def _plans(tmp_path: Path) -> list[Plan]:
    src = tmp_path / "synthetic.cr"
    src.write_text(SYNTHETIC, encoding="utf-8")
    return [compile_file(str(src))]


def _exec_readiness(plan: Plan) -> Plan:
    """The Plan with tcp/http readiness probes turned into exec ones: the fake backend has no network, and
    readiness is not what is under test here."""
    nodes = {}
    for n, d in plan.nodes.items():
        if d["kind"] == "service":
            d = {**d, "probes": [p if p["type"] in ("exec", "log", "span") else
                                 {"type": "exec", "argv": ["ready"], "within": p["within"], "loc": p["loc"]}
                                 for p in d["probes"]]}
        nodes[n] = d
    return Plan.of(nodes, plan.edges, plan.meta)


def _strings(plans: list[Plan]) -> tuple[list[str], list[str]]:
    """Outputs that some expectation of the Plans wants, and the span names their selectors look for."""
    outs = ["", "id=abc", "got abc", '{"a": 1}', "warn", "hello\n"]
    names = ["work", "inner", "startup"]
    for p in plans:
        for d in p.nodes.values():
            if d["kind"] == "assert" and isinstance(d.get("value"), str):
                outs.append(d["value"])
            if d["kind"] == "span" and d["match"]["name"] and not d["match"]["glob"]:
                names.append(d["match"]["name"])
            for probe in d.get("probes", ()):
                if probe["type"] == "span":
                    names.append(probe["span"])
    return sorted(set(outs)), sorted(set(names))


def _script(seed: int, plans: list[Plan]) -> tuple[FakeBackend, RunOptions, float | None]:
    """A random but reproducible world: what every command answers, how services behave, the run options."""
    rng = random.Random(seed)
    outs, names = _strings(plans)
    services = sorted({d["name"] for p in plans for d in p.nodes.values() if d["kind"] == "service"})

    def spans() -> tuple[FakeSpan, ...]:
        return tuple(FakeSpan(rng.choice(names), start_ms=rng.choice([-5.0, -1.0, 0.0, 2.0]),
                              duration_ms=rng.choice([0.5, 20.0, 80.0]), status=rng.choice(["unset", "ok", "error"]),
                              kind=rng.choice(["internal", "server", "client"]),
                              parent=rng.choice([None, 0, 1]),
                              attributes=rng.choice([{}, {"http.url": "http://example.invalid/"}]))
                     for _ in range(rng.choice([0, 1, 2, 4])))

    def on_exec(call: ExecCall) -> FakeExec:
        return FakeExec(exit_code=rng.choice([0, 0, 0, 1, 2]), stdout=rng.choice(outs),
                        stderr=rng.choice(["", "warn: x", "boom"]), delay=rng.choice([0, 0, 0.5, 2, 5, 120]),
                        spans=spans(), kills=rng.choice([None] * 12 + services))

    svc = {s: FakeService(dies_after=rng.choice([None, None, None, 1.0, 8.0]), exit_code=rng.choice([1, 137]),
                          log=rng.choice(["", "starting\nready"]), ready_after=rng.choice([0, 0, 1, 30]),
                          spans_at_start=(FakeSpan("startup"),) if rng.random() < 0.8 else spans())
           for s in services}
    options = RunOptions(jobs=rng.choice([1, 2, 8]), fail_fast=rng.random() < 0.25,
                         shuffle_seed=rng.choice([None, rng.randrange(100)]), span_timeout=rng.choice([1.0, 4.0]))
    cancel = rng.choice([None] * 6 + [0.5, 3.0, 7.0])
    return FakeBackend(on_exec=on_exec, services=svc), options, cancel


def _check_equivalent(plans: list[Plan], seed: int) -> dict[str, Any]:
    backend, options, cancel = _script(seed, plans)
    live = run(plans, backend, options, cancel_after=cancel)
    assert backend.alive() == [], "the run left containers or networks behind"
    rec = recording.Recording.from_bytes(
        recording.build(live.result, plans, [s.to_dict() for s in live.runner.spans], options, "test").to_bytes())
    again = replay(rec).result
    recorded = rec.results()
    assert set(again.nodes) == set(recorded)
    for n, r in sorted(recorded.items()):
        got = again.nodes[n]
        assert (got.status, got.cause, got.message) == (r.status, r.cause, r.message), n
        assert got.detail.get("window") == r.detail.get("window"), n
        assert [s["span_id"] for s in got.detail.get("spans", ())] == \
            [s["span_id"] for s in r.detail.get("spans", ())], n
    assert [(t.suite, t.name, t.status, t.failures) for t in again.tests] == \
        [(t.suite, t.name, t.status, t.failures) for t in rec.tests]
    return {r.cause for r in recorded.values()}  # type: ignore[return-value]


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_replay_of_every_example_gives_the_live_verdicts(path: Path) -> None:
    plans = [_exec_readiness(compile_file(str(path)))]
    for seed in range(3):
        _check_equivalent(plans, seed)


@settings(max_examples=examples(100))
@given(seed=st.integers(0, 2**32))
def test_replay_of_random_runs_gives_the_live_verdicts(tmp_path_factory: pytest.TempPathFactory, seed: int) -> None:
    tmp = tmp_path_factory.mktemp("synthetic")
    plans = _plans(tmp)
    if seed % 3 == 0:  # sometimes with an example beside it: two Plans, fail-fast across suites
        examples = example_files()
        plans.append(_exec_readiness(compile_file(str(examples[seed % len(examples)]))))
    _check_equivalent(plans, seed)


def test_random_runs_reach_every_cause(tmp_path: Path) -> None:
    """The randomized worlds are rich enough: together they produce every cause a live run can give."""
    plans = _plans(tmp_path)
    seen: set[Cause] = set()
    for seed in range(60):
        seen |= _check_equivalent(plans, seed)
    live_causes = set(Cause) - {Cause.NO_DATA, Cause.INTERNAL, Cause.ENVIRONMENT, Cause.BACKEND, Cause.RENDER,
                                Cause.CANCELLED, Cause.OOM_KILLED}
    assert live_causes <= seen, live_causes - seen


REAL_ERROR = '''suite "s" {
  service api { image "crc/busybox:dev" command ["sleep", "3600"] }
  test "implicit" {
    step a = exec api ["a"]
    capture id = a.stdout ~ /id=(\\w+)/
    expect a.stdout contains "x"
    step b = exec api ["b", "{{ id }}"]
    expect b.stdout == "y"
  }
  test "explicit" {
    step c = exec api ["c"]
    capture id = c.stdout ~ /id=(\\w+)/
    expect c.stdout contains "x"
    expect c.exit == 0
    expect c.stderr !~ /warn/
  }
  test "captured" {
    step e = exec api ["e"]
    capture id = e.stdout ~ /id=(\\w+)/
    expect e.exit != 0
  }
}
'''


def test_the_real_error_comes_first_live_and_replayed_in_every_report(tmp_path: Path) -> None:
    """A failed step's exit code and stderr tail lead its test's failures, in the terminal, JSON, JUnit and
    HTML reports; what it made skip is one line under it; replay says the same."""
    from crc.runtime import html_report, report

    src = tmp_path / "t.cr"
    src.write_text(REAL_ERROR, encoding="utf-8")
    plans = [compile_file(str(src))]
    live = run(plans, FakeBackend(
        on_exec=lambda call: FakeExec(exit_code=2, stdout="partial", stderr="starting\nboom: no such table"),
        services={"api": FakeService()}))
    rec = recording.Recording.from_bytes(
        recording.build(live.result, plans, [], RunOptions(), "test").to_bytes())
    replayed = replay(rec).result
    at = str(src)
    expected = {
        "implicit": (f"{at}:4:5: step `a` exited with code 2\nstarting\nboom: no such table\n"
                     "  help: expect a non-zero exit explicitly with `expect a.exit != 0`\n"
                     "(skipped because of it: step `b`, 2 expectations)",),
        "explicit": (f"{at}:11:5: step `c` exited with code 2\nstarting\nboom: no such table\n"
                     "capture id: /id=(\\w+)/ does not match stdout 'partial'\n"
                     "(skipped because of it: 3 expectations)",),
        "captured": (f"{at}:18:5: step `e` exited with code 2\nstarting\nboom: no such table\n"
                     "capture id: /id=(\\w+)/ does not match stdout 'partial'\n"
                     "(skipped because of it: 1 expectation)",),
    }
    for result in (live.result, replayed):
        assert {t.name: t.failures for t in result.tests} == expected
    labels = dict(plans[0].nodes)
    text = report.summary_text(live.result, labels)
    assert "  - " + expected["explicit"][0].replace("\n", "\n    ") in text
    data = report.to_json(live.result, labels)
    assert [t["failures"][0] for t in data["tests"]] == [expected[t["name"]][0] for t in data["tests"]]
    report.write_junit(tmp_path / "junit.xml", live.result, plans)
    junit = (tmp_path / "junit.xml").read_text(encoding="utf-8")
    assert 'message="' + f"{at}:11:5: step `c` exited with code 2" + '"' in junit
    import xml.etree.ElementTree as ET

    cases = {c.get("name"): (c.get("file"), c.get("line")) for c in ET.fromstring(junit).iter("testcase")}
    assert cases == {"implicit": (at, "3"), "explicit": (at, "10"), "captured": (at, "17")}  # where declared
    model = html_report.build_model(html_report.from_recording(rec))
    assert {t["name"]: tuple(t["fail"]) for t in model["tests"]} == expected


def test_a_failed_exit_expectation_skips_the_steps_other_expectations(tmp_path: Path) -> None:
    src = tmp_path / "t.cr"
    src.write_text(REAL_ERROR.replace('    capture id = c.stdout ~ /id=(\\w+)/\n', ''), encoding="utf-8")
    plans = [compile_file(str(src))]
    live = run(plans, FakeBackend(on_exec=lambda call: FakeExec(exit_code=2, stdout="partial", stderr="warn: x"),
                                  services={"api": FakeService()}))
    rec = recording.Recording.from_bytes(
        recording.build(live.result, plans, [], RunOptions(), "test").to_bytes())
    for result in (live.result, replay(rec).result):
        t = next(t for t in result.tests if t.name == "explicit")
        assert t.failures == (f"{src}:13:12: c.exit == 0: exit code was 2\nwarn: x\n"
                              "(skipped because of it: 2 expectations)",)
        skipped = {n: r.message for n, r in result.nodes.items() if n.startswith("s::explicit::assert")}
        assert skipped == {"s::explicit::assert:1": "skipped: assert `c.exit == 0` failed",
                           "s::explicit::assert:2": "c.exit == 0: exit code was 2\nwarn: x",
                           "s::explicit::assert:3": "skipped: assert `c.exit == 0` failed"}


POLLED = '''suite "s" {
  service box { image "crc/busybox:dev" command ["sleep", "3600"] }
  test "poll" {
    step tick = exec box ["tick"]
    expect tick.stdout == "3" eventually within 10s every 1s
  }
}
'''


def _polled(tmp_path: Path, condition: str) -> tuple[recording.Recording, Path]:
    """A recorded run whose `tick` answers 1, 2, 3, ... per attempt, polled until `condition`; and its source."""
    src = tmp_path / "p.cr"
    src.write_text(POLLED.replace('tick.stdout == "3"', condition), encoding="utf-8")
    plans = [compile_file(str(src))]
    count = iter(range(1, 100))
    live = run(plans, FakeBackend(on_exec=lambda call: FakeExec(stdout=str(next(count))),
                                  services={"box": FakeService()}))
    return recording.Recording.from_bytes(
        recording.build(live.result, plans, [], RunOptions(), "test").to_bytes()), src


def _edited(tmp_path: Path, condition: str) -> list[Plan]:
    edited = tmp_path / "edited.cr"
    edited.write_text(POLLED.replace('tick.stdout == "3"', condition), encoding="utf-8")
    return [compile_file(str(edited))]


def test_replay_of_an_edited_eventually_says_where_polling_would_stop(tmp_path: Path) -> None:
    rec, _ = _polled(tmp_path, 'tick.stdout == "3"')
    assert [a["output"]["stdout"] for a in rec.results()["s::poll::step:tick"].detail["attempts"]] == ["1", "2", "3"]
    same = replay(rec, _edited(tmp_path, 'tick.stdout == "3"'))
    assert same.stop_points == () and same.no_data == () and same.changed == ()
    # Holds earlier: polling would have stopped at attempt 2, which is what is checked.
    earlier = replay(rec, _edited(tmp_path, 'tick.stdout ~ /^[2-9]$/'))
    assert earlier.stop_points == (("s::poll::step:tick", "the `eventually` condition now holds at attempt 2 of the "
                                    "3 recorded: a live run would have stopped polling there (the recorded run "
                                    "stopped at attempt 3); attempt 2 is checked"),)
    assert earlier.result.nodes["s::poll::assert:1"].status == "passed" and earlier.changed == ()
    # Holds at none: a live run would have polled on, which the recording cannot tell.
    never = replay(rec, _edited(tmp_path, 'tick.stdout == "7"'))
    assert never.stop_points == ()
    why = ("the `eventually` condition holds at none of the 3 recorded attempts, but the recorded run stopped "
           "polling after attempt 3, where its condition held: a live run would have polled on, and the recording "
           "cannot say what it would have seen")
    assert never.no_data == (("s::poll::assert:1", f"its step has no recorded data ({why})"),
                             ("s::poll::step:tick", why))
    assert never.result.tests[0].status == "skipped"


def test_replay_of_a_poll_that_never_held_finds_an_earlier_stop(tmp_path: Path) -> None:
    rec, _ = _polled(tmp_path, 'tick.stdout == "99"')
    attempts = rec.results()["s::poll::step:tick"].detail["attempts"]
    assert rec.tests[0].status == "failed" and len(attempts) >= 3
    # The same condition: polled to the deadline live and on replay, the same failure.
    same = replay(rec)
    assert same.stop_points == () and same.changed == ()
    found = replay(rec, _edited(tmp_path, 'tick.stdout == "2"'))
    assert [why for _, why in found.stop_points] == [
        f"the `eventually` condition now holds at attempt 2 of the {len(attempts)} recorded: a live run would have "
        f"stopped polling there (the recorded run stopped at attempt {len(attempts)}); attempt 2 is checked"]
    assert found.result.tests[0].status == "passed"
    # Still never: the same as the live run (it polled to the deadline), nothing to say.
    still = replay(rec, _edited(tmp_path, 'tick.stdout == "98"'))
    assert still.stop_points == () and still.no_data == () and still.result.tests[0].status == "failed"


def test_a_suite_interrupted_while_it_waits_for_a_slot_reports_its_nodes_interrupted(tmp_path: Path) -> None:
    """With -j 1 the second suite waits for the first; Ctrl-C then leaves it unrun, and every node of it says
    so, live and replayed (not missing from the live result and invented on replay)."""
    src = tmp_path / "two.cr"
    src.write_text('''suite "first" {
  service a { image "crc/busybox:dev" command ["sleep", "3600"] }
  test "slow" { step s = exec a ["slow"] }
}
suite "second" {
  service b { image "crc/busybox:dev" command ["sleep", "3600"] }
  test "quick" { step q = exec b ["quick"] }
}
''', encoding="utf-8")
    plans = [compile_file(str(src))]
    backend = FakeBackend(on_exec=lambda call: FakeExec(delay=60 if call.argv == ("slow",) else 0),
                          services={"a": FakeService(), "b": FakeService()})
    live = run(plans, backend, RunOptions(jobs=1), cancel_after=5.0)
    second = {n: (r.status, r.cause) for n, r in live.result.nodes.items() if n.startswith("second::")}
    assert second == {"second::service:b": ("error", Cause.INTERRUPTED),
                      "second::quick::step:q": ("error", Cause.INTERRUPTED)}
    rec = recording.Recording.from_bytes(
        recording.build(live.result, plans, [], RunOptions(jobs=1), "test").to_bytes())
    again = replay(rec).result
    assert {n: (r.status, r.cause) for n, r in again.nodes.items()} == \
        {n: (r.status, r.cause) for n, r in live.result.nodes.items()}
