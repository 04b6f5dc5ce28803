"""`crc run --cluster` and `--workers` on a real Dask cluster over two real Docker engines.

The shared engine and a second dockerd (`.ci/engine-b`, its own socket, data root, exec root and address pool,
the test images loaded into it); a Dask scheduler and one worker per engine, each worker a process whose
DOCKER_HOST is its engine. Checked: a cluster run's recording has the digest and replay of a local run of the
same Plans; suites land on both engines; a missing image is exit 3 naming the worker; a worker killed mid-suite
has its suite re-run on the other worker, and what it left is reaped by its dead lease; Ctrl-C cancels remote
suites. After each test no crc resource of it is left on either engine; the second engine is stopped at the end
(when this module started it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerutil import ROOT, crc, docker_engine  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ENGINE_B = "unix:///run/docker-b.sock"
BUSYBOX = "crc/busybox:dev"


def engine_a() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def resources(host: str, tag: str) -> list[str]:
    """Containers and networks with crc's label on the engine at `host` whose suite names carry `tag`."""
    out = []
    for cmd in (["docker", "ps", "-a"], ["docker", "network", "ls"]):
        res = subprocess.run([*cmd, "--filter", "label=io.crc.managed=1", "--format",
                              '{{.ID}}\t{{.Label "io.crc.suite"}}'], capture_output=True, text=True,
                             env={**os.environ, "DOCKER_HOST": host}, check=True)
        out += [f"{cmd[1]}:{line.split()[0]}" for line in res.stdout.splitlines() if tag in line]
    return out


def remove(host: str, ids: list[str]) -> None:
    env = {**os.environ, "DOCKER_HOST": host}
    for r in ids:
        kind, _, rid = r.partition(":")
        subprocess.run(["docker", "rm", "-f", rid] if kind == "ps" else ["docker", "network", "rm", rid],
                       capture_output=True, env=env)


@pytest.fixture(scope="module")
def engines(docker_engine: None) -> Iterator[dict[str, str]]:  # noqa: F811
    """The shared engine and the second one (started here unless already running; then left running)."""
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "engine-b"), "start"], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"the second engine did not start: {proc.stderr}")
    yield {"a": engine_a(), "b": ENGINE_B}
    if proc.stdout.strip() == "started":
        subprocess.run(["bash", str(ROOT / ".ci" / "engine-b"), "stop"], check=True, timeout=120)


class Cluster:
    """A Dask scheduler and one worker process per engine (no nanny: a killed worker stays dead)."""

    def __init__(self, base: Path, engines: dict[str, str], threads: int = 2):
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.state = base / "state"  # the workers' lease directory: one host, so one directory
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        sched_file = base / "scheduler.json"
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        self.procs["scheduler"] = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", str(sched_file)], env=env, stdout=subprocess.DEVNULL,
            stderr=(base / "scheduler.log").open("wb"))
        deadline = time.monotonic() + 60
        while not sched_file.exists() or not sched_file.read_text().strip():
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        self.address = json.loads(sched_file.read_text())["address"]
        for name, host in engines.items():
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--name", name, "--nthreads",
                 str(threads), "--no-nanny", "--no-dashboard"],
                env={**env, "DOCKER_HOST": host, "CRC_STATE_DIR": str(self.state)}, stdout=subprocess.DEVNULL,
                stderr=(base / f"worker-{name}.log").open("wb"))
        self.wait_for(len(engines))

    def wait_for(self, n: int) -> None:
        code = (f"from distributed import Client; c = Client({self.address!r}, timeout=60); "
                f"c.wait_for_workers({n}, timeout=60); c.close()")
        subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True, timeout=120, capture_output=True)

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)


@contextlib.contextmanager
def cluster_of(base: Path, engines: dict[str, str]) -> Iterator[Cluster]:
    c = Cluster(base, engines)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def cluster(engines: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster_of(tmp_path_factory.mktemp("cluster"), engines) as c:
        yield c


@pytest.fixture
def tag(engines: dict[str, str]) -> Iterator[str]:
    t = "d" + secrets.token_hex(4)
    yield t
    left = {name: resources(host, t) for name, host in engines.items()}
    for name, host in engines.items():
        remove(host, left[name])
    assert not any(left.values()), f"crc left resources behind: {left}"


def tagged(text: str, tag: str) -> str:
    return re.sub(r'suite "([^"]+)"', lambda m: f'suite "{m.group(1)} {tag}"', text)


def suites(n: int, tag: str, step: str = '["echo", "hello {{ i }}"]') -> str:
    return tagged("\n".join(f'''suite "s{i}" {{
  service box {{ image "{BUSYBOX}" command ["sh", "-c", "sleep 0.5; touch /ready; sleep 300"]
                ready exec ["test", "-e", "/ready"] within 30s }}
  test "t" {{
    step s = exec box {step.replace("{{ i }}", str(i))}
    expect s.stdout contains "{i}"
  }}
}}''' for i in range(n)), tag)


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return crc("run", "--no-progress", "--pull", "never", *args, env={"PYTHONWARNINGS": "ignore", **(env or {})},
               timeout=timeout)


def test_cluster_run_equals_local_run(cluster: Cluster, engines: dict[str, str], tmp_path: Path, tag: str) -> None:
    """Suites on both engines; the merged recording replays and digests like a local run of the same Plans."""
    src = tmp_path / "many.cr"
    src.write_text(suites(4, tag))
    orders = tmp_path / "orders.cr"
    # The demo app draws its order ids from DEMO_SEED when set: the same outputs and spans in both runs.
    text = (ROOT / "examples" / "otel" / "orders.cr").read_text().replace('env { ', 'env { DEMO_SEED: "7", ', 1)
    assert "DEMO_SEED" in text
    orders.write_text(tagged(text, tag))
    plan_dir = tmp_path / "plans"
    assert crc("compile", str(src), str(orders), "-o", str(plan_dir)).returncode == 0
    plans = sorted(str(p) for p in plan_dir.rglob("*.plan"))
    assert len(plans) == 2
    state = {"CRC_STATE_DIR": str(tmp_path / "state")}

    local = run(*plans, "--record", str(tmp_path / "local.rec"), env=state)
    assert local.returncode == 0, local.stdout + local.stderr
    remote = run(*plans, "--cluster", cluster.address, "--record", str(tmp_path / "remote.rec"), "--json",
                 str(tmp_path / "remote.json"), env=state)
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert "5 passed, 0 failed" in remote.stdout

    report = json.loads((tmp_path / "remote.json").read_text())
    hosts = {a["docker_host"] for s in report["cluster"]["suites"] for a in s["attempts"]}
    assert hosts == set(engines.values()), report["cluster"]
    assert len(report["spans"]) > 0 and all(s["resource"]["crc.run"] == report["run_id"] for s in report["spans"])

    digests = [crc("digest", str(tmp_path / f"{w}.rec")).stdout.strip() for w in ("local", "remote")]
    assert digests[0] == digests[1] and len(digests[0]) == 64
    replays = [crc("replay", str(tmp_path / f"{w}.rec")) for w in ("local", "remote")]
    assert [r.returncode for r in replays] == [0, 0], [r.stdout + r.stderr for r in replays]
    assert all("5 passed, 0 failed, 0 skipped" in r.stdout for r in replays)


def test_missing_image_is_exit_3_naming_the_worker(cluster: Cluster, tmp_path: Path, tag: str) -> None:
    src = tmp_path / "missing.cr"
    src.write_text(tagged('suite "m" {\n  service x { image "crc/no-such-image:dev" }\n'
                          '  test "t" { step s = exec x ["true"] }\n}\n', tag))
    proc = run(str(src), "--cluster", cluster.address, env={"CRC_STATE_DIR": str(tmp_path / "state")})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "crc/no-such-image:dev" in proc.stdout
    assert re.search(r"on worker [ab] \(tcp://127\.0\.0\.1:\d+, DOCKER_HOST=unix://", proc.stdout), proc.stdout


def test_unreachable_cluster_is_exit_3(tmp_path: Path) -> None:
    src = tmp_path / "x.cr"
    src.write_text(suites(1, "unused"))
    proc = run(str(src), "--cluster", "tcp://127.0.0.1:9", timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in proc.stderr
    assert "Traceback" not in proc.stderr


def wait_for_container(hosts: dict[str, str], tag: str, timeout: float = 120) -> str:
    """The name of the engine on which a container of a suite tagged `tag` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, host in hosts.items():
            if any(r.startswith("ps:") for r in resources(host, tag)):
                return name
        time.sleep(0.2)
    raise AssertionError("no container of the suite appeared")


def test_worker_killed_mid_suite_reruns_elsewhere(engines: dict[str, str], tmp_path: Path, tag: str) -> None:
    src = tmp_path / "slow.cr"
    # The step takes a few seconds: the worker is killed once the suite's first container exists, mid-suite.
    src.write_text(tagged(f'''suite "slow" {{
  service box {{ image "{BUSYBOX}" command ["sh", "-c", "sleep 300"] }}
  test "t" {{ step s = exec box ["sh", "-c", "sleep 4; echo done"]
             expect s.stdout contains "done" }}
}}''', tag))
    with cluster_of(tmp_path / "c", engines) as c:
        report = tmp_path / "r.json"
        proc = subprocess.Popen([sys.executable, "-m", "crc", "run", "--no-progress", "--pull", "never",
                                 "--cluster", c.address, str(src), "--json", str(report)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONWARNINGS": "ignore", "CRC_STATE_DIR": str(tmp_path / "s")})
        victim = wait_for_container(engines, tag)
        c.procs[victim].send_signal(signal.SIGKILL)
        c.procs[victim].wait(timeout=30)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, out + err
        data = json.loads(report.read_text())
        [suite] = data["cluster"]["suites"]
        assert [a["name"] for a in suite["attempts"]] == [victim, "b" if victim == "a" else "a"], suite
        assert "was lost mid-suite" in suite["note"] and f"worker {victim} " in suite["note"]
        assert "was lost mid-suite" in out
        assert data["summary"]["passed"] == 1
        # The dead worker's containers and network are still on its engine, under a lease nobody holds:
        left = resources(engines[victim], tag)
        assert left, "the killed worker left nothing (was it killed mid-suite?)"
        clean = crc("clean", env={"DOCKER_HOST": engines[victim], "CRC_STATE_DIR": str(c.state)})
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert suite["attempts"][0]["run_id"] in clean.stdout
        assert resources(engines[victim], tag) == [], clean.stdout


def test_ctrl_c_cancels_remote_suites(cluster: Cluster, engines: dict[str, str], tmp_path: Path, tag: str) -> None:
    src = tmp_path / "long.cr"
    src.write_text(suites(2, tag, step='["sh", "-c", "sleep 120; echo {{ i }}"]'))
    proc = subprocess.Popen([sys.executable, "-m", "crc", "run", "--no-progress", "--pull", "never", "--cluster",
                             cluster.address, str(src)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONWARNINGS": "ignore",
                                            "CRC_STATE_DIR": str(tmp_path / "s")})
    wait_for_container(engines, tag)  # the run is under way (any point must clean up)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    # The `tag` fixture asserts that both engines hold nothing of these suites any more.


def test_local_workers(tmp_path: Path, tag: str) -> None:
    """`--workers N`: a local cluster on the shared engine, gone when the run ends."""
    src = tmp_path / "w.cr"
    src.write_text(suites(2, tag))
    proc = run(str(src), "--workers", "2", "--json", str(tmp_path / "w.json"),
               env={"CRC_STATE_DIR": str(tmp_path / "s")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "w.json").read_text())
    assert data["cluster"]["workers"] == 2 and data["summary"]["passed"] == 2
    assert all(len(s["attempts"]) == 1 for s in data["cluster"]["suites"])


def test_benchmark_smoke(engines: dict[str, str]) -> None:
    """benchmarks/distributed.py keeps working (no timing asserted: that is the benchmark's report)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "distributed.py"), "--smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "two engines through Dask vs one locally" in proc.stdout
    assert "one worker through Dask vs local" in proc.stdout


def test_logs_and_keep_on_workers(tmp_path: Path, tag: str) -> None:
    """`--logs` streams the workers' service logs back; `--keep all` leaves the suite running on the worker's
    engine, says where, and `crc clean` removes it."""
    src = tmp_path / "k.cr"
    src.write_text(tagged(f'''suite "k" {{
  service talk {{ image "{BUSYBOX}" command ["sh", "-c", "echo hello-from-worker; sleep 300"]
                 ready log "hello-from-worker" within 30s }}
  test "t" {{ step s = exec talk ["true"] }}
}}''', tag))
    state = {"CRC_STATE_DIR": str(tmp_path / "s")}
    proc = run(str(src), "--workers", "1", "--logs", "--keep", "all", env=state)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "talk | hello-from-worker" in proc.stdout
    assert "kept suite `k " in proc.stdout and "(on worker " in proc.stdout
    assert resources(engine_a(), tag), "--keep left nothing running"
    clean = crc("clean", env=state)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert resources(engine_a(), tag) == []


def test_fail_fast_stops_other_suites_on_the_cluster(tmp_path: Path, tag: str) -> None:
    """The first failure in one suite cancels the others on their workers: their nodes are skipped and say
    why (without it, the long step would run its whole minute and pass)."""
    src = tmp_path / "ff.cr"
    src.write_text(tagged(f'''suite "bad" {{
  service box {{ image "{BUSYBOX}" command ["sleep", "300"] }}
  test "fails" {{ step s = exec box ["false"] }}
}}
suite "long" {{
  service box {{ image "{BUSYBOX}" command ["sleep", "300"] }}
  test "waits" {{ step s = exec box ["sleep", "60"] }}
}}''', tag))
    proc = run(str(src), "--workers", "1", "-j", "2", "--fail-fast", "--json", str(tmp_path / "ff.json"),
               env={"CRC_STATE_DIR": str(tmp_path / "s")})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    tests = {t["suite"].split()[0]: t for t in json.loads((tmp_path / "ff.json").read_text())["tests"]}
    assert tests["bad"]["status"] == "failed"
    assert tests["long"]["status"] == "skipped", tests["long"]
    nodes = {n["node"]: n for n in json.loads((tmp_path / "ff.json").read_text())["nodes"]}
    step = next(n for k, n in nodes.items() if k.startswith("long") and n["kind"] == "step")
    assert step["status"] == "skipped" and "--fail-fast after" in step["message"], step
