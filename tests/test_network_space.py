"""Suite networks and the engine's address space, on the fake backend: `-j` bounds how many suite networks
exist at once, a suite waits for another of the run to give its network back when the engine has no subnet
left, and fails with exit 3 saying what to change when no suite can. (test_hostnet_docker runs the -j bound
on the shared engine, test_address_pool_docker the rest on a real engine with room for two networks.)"""

from __future__ import annotations

from pathlib import Path

from crc.runtime.backend import NetworkInfo
from crc.runtime.fake_backend import ExecCall, FakeBackend, FakeExec
from crc.runtime.results import ERROR, PASSED, Cause
from crc.runtime.runner import RunOptions
from fakerun import compile_source, run


def many_suites(tmp_path: Path, n: int) -> list:  # type: ignore[type-arg]
    """`n` files of one small suite each: a service and a test with one step that takes a second."""
    plans = []
    for i in range(n):
        plans.append(compile_source(tmp_path, f'''suite "s{i}" {{
  service box {{
    image "crc/busybox:dev"
    command ["sleep", "3600"]
  }}
  test "t" {{
    step hi = exec box ["hi"]
    expect hi.exit == 0
  }}
}}
''', name=f"s{i}.cr"))
    return plans


def slow(_call: object) -> FakeExec:
    return FakeExec(delay=1.0)


def test_jobs_bound_how_many_suite_networks_exist_at_once(tmp_path: Path) -> None:
    backend = FakeBackend(on_exec=slow)
    r = run(many_suites(tmp_path, 50), backend, RunOptions(jobs=4))
    assert [t.status for t in r.result.tests] == [PASSED] * 50
    assert backend.most_networks == 4  # reached, never passed
    assert r.result.exit_code() == 0
    assert backend.alive() == []


def test_a_suite_waits_for_address_space_another_suite_gives_back(tmp_path: Path) -> None:
    # -j 8 but room for 3 networks: five suites at a time find the pools used up and wait for a removal.
    backend = FakeBackend(on_exec=slow, address_pools=3)
    r = run(many_suites(tmp_path, 20), backend, RunOptions(jobs=8))
    assert [t.status for t in r.result.tests] == [PASSED] * 20
    assert backend.most_networks == 3
    failed = [c for c in backend.calls if c[0] == "create_network_failed"]
    assert failed  # it did run out, and waited rather than failing
    assert len([c for c in backend.calls if c[0] == "create_network"]) == 20
    assert r.result.exit_code() == 0
    assert backend.alive() == []


def test_no_address_space_that_the_run_could_free_is_exit_3_saying_what_to_change(tmp_path: Path) -> None:
    backend = FakeBackend(on_exec=slow, address_pools=0)  # other networks took it all
    r = run(many_suites(tmp_path, 3), backend, RunOptions(jobs=2))
    step = r.node("s1::t::step:hi")
    assert (step.status, step.cause) == (ERROR, Cause.ENVIRONMENT)
    assert "non-overlapping IPv4 address pool" in step.message
    assert "default-address-pools" in step.message and "daemon.json" in step.message
    assert {t.status for t in r.result.tests} == {ERROR}
    assert r.result.exit_code() == 3
    assert backend.alive() == []


def test_a_kept_suite_network_is_not_waited_for(tmp_path: Path) -> None:
    # Room for one network, kept by the first suite (`--keep all`): the second cannot wait for it.
    backend = FakeBackend(on_exec=slow, address_pools=1)
    r = run(many_suites(tmp_path, 2), backend, RunOptions(jobs=2, keep="all"))
    statuses = sorted((t.status for t in r.result.tests), key=str)
    assert statuses == sorted([PASSED, ERROR], key=str)
    assert r.result.exit_code() == 3


def test_a_suite_that_finds_no_room_while_others_still_wait_for_theirs_waits_too(tmp_path: Path) -> None:
    # As on Docker: the engine refuses a third network while the answers for the first two are on their way,
    # so no suite of the run holds a network yet; the third waits for them instead of failing.
    backend = FakeBackend(on_exec=slow, address_pools=2, network_answer=0.2)
    r = run(many_suites(tmp_path, 6), backend, RunOptions(jobs=6))
    assert [t.status for t in r.result.tests] == [PASSED] * 6
    assert backend.most_networks == 2
    assert [c for c in backend.calls if c[0] == "create_network_failed"]
    assert r.result.exit_code() == 0
    assert backend.alive() == []


def test_a_waiting_suite_takes_the_room_a_foreign_network_gives_back(tmp_path: Path) -> None:
    # Room for two, one held by a network crc did not make, removed once the first suite's step runs: the
    # other suite, waiting, gets its network while the first still holds its own.
    backend = FakeBackend(address_pools=2)
    backend.networks["foreign"] = NetworkInfo("foreign", "foreign", "127.1.0.1")

    def step(_call: ExecCall) -> FakeExec:
        backend.networks.pop("foreign", None)
        return FakeExec(delay=30.0)
    backend.on_exec = step
    r = run(many_suites(tmp_path, 2), backend, RunOptions(jobs=2))
    assert [t.status for t in r.result.tests] == [PASSED] * 2
    order = [c[0] for c in backend.calls if "network" in c[0]]
    assert order[:4] == ["create_network", "create_network_failed", "create_network", "remove_network"], order
    assert r.result.exit_code() == 0
