"""DockerBackend against a real engine (marked `docker`), plus the engine-free parts of backend.py.

Every resource a test creates is labelled with a per-test run id; the `cleanup` fixture removes all of
them afterwards, also when the test fails.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import anyio
import anyio.abc
import pytest
from crc.runtime.backend import (
    BackendError,
    ContainerSpec,
    ContainerState,
    EngineUnavailable,
    ExecResult,
    ImageUnavailable,
    Labels,
    Mount,
    NotFound,
    PortInUse,
    PortMapping,
    registry_host,
)
from crc.runtime.docker_backend import EXEC_TOKEN_ENV, DockerBackend, _demux

IMAGE = "crc/busybox:dev"
MISSING = "crc-test/does-not-exist:never"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ---------------------------------------------------------------- engine-free unit tests


def test_registry_host() -> None:
    assert registry_host("crc/busybox:dev") is None
    assert registry_host("busybox") is None
    assert registry_host("127.0.0.1:5000/app:1") == "127.0.0.1:5000"
    assert registry_host("localhost/app") == "localhost"
    assert registry_host("registry.example.org/team/app@sha256:abc") == "registry.example.org"


def test_state_describe() -> None:
    assert ContainerState("running", True, None).describe() == "running"
    assert ContainerState("exited", False, 3).describe() == "exited with code 3"
    assert ContainerState("exited", False, 137, oom_killed=True).describe() == "OOM-killed"
    assert "signal 9" in ContainerState("exited", False, 137).describe()
    assert ContainerState("created", False, None).describe() == "created, never started"


def test_labels_and_frozen_spec() -> None:
    labels = Labels.for_run("r1", "checkout", **{Labels.SERVICE: "api"})
    assert labels == {
        "io.crc.managed": "1",
        "io.crc.run": "r1",
        "io.crc.suite": "checkout",
        "io.crc.service": "api",
    }
    assert (
        Labels.is_managed(labels)
        and not Labels.is_managed({"io.crc.run": "r1"})
        and not Labels.is_managed(None)
    )
    env = {"A": "1"}
    spec = ContainerSpec(name="x", image=IMAGE, env=env, labels=labels)
    env["A"] = "2"  # the spec keeps its own copy
    assert spec.env["A"] == "1"
    with pytest.raises(TypeError):
        spec.env["B"] = "3"  # type: ignore[index]
    assert hash(spec) == hash(ContainerSpec(name="x", image=IMAGE, env={"A": "1"}, labels=labels))


def test_demux() -> None:
    frames = (
        b"\x01\x00\x00\x00\x00\x00\x00\x03out"
        + b"\x02\x00\x00\x00\x00\x00\x00\x04err\n"
        + b"\x01\x00\x00\x00"
    )
    assert list(_demux(frames)) == [(1, b"out"), (2, b"err\n")]


# ---------------------------------------------------------------- engine fixtures

_engine_problem: list[str | None] = []


def _engine_unavailable() -> str | None:
    """Why no engine answers (None if one does); asked once per session."""
    if not _engine_problem:

        async def probe() -> None:
            async with DockerBackend(connect_timeout=3) as b:
                await b.ping()

        try:
            anyio.run(probe)
            _engine_problem.append(None)
        except EngineUnavailable as exc:
            _engine_problem.append(str(exc).splitlines()[0])
    return _engine_problem[0]


@pytest.fixture(scope="session")
def engine() -> None:
    """Skip (with the reason) when no Docker engine answers; build the test image if it is missing."""
    problem = _engine_unavailable()
    if problem:
        pytest.skip(f"no Docker engine: {problem}")
    probe = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True)
    if probe.returncode != 0:
        build = subprocess.run([str(REPO / ".ci/images/build"), "busybox"], capture_output=True, text=True)
        if build.returncode != 0:
            pytest.fail(f"{IMAGE} is missing and .ci/images/build busybox failed:\n{build.stderr}")


@pytest.fixture
async def backend(engine: None) -> AsyncIterator[DockerBackend]:
    async with DockerBackend() as b:
        await b.ping()
        yield b


@pytest.fixture
async def run_id(backend: DockerBackend) -> AsyncIterator[str]:
    """A run id for this test; everything labelled with it is removed afterwards, pass or fail."""
    rid = f"test-{secrets.token_hex(4)}"
    yield rid
    with anyio.CancelScope(shield=True):
        leftovers = await backend.find({Labels.RUN: rid})
        for kind in ("container", "network", "volume"):
            for r in leftovers:
                if r.kind == kind:
                    remove = {
                        "container": backend.remove_container,
                        "network": backend.remove_network,
                        "volume": backend.remove_volume,
                    }[kind]
                    await remove(r.id)


def spec(
    run_id: str, suffix: str, command: tuple[str, ...] | None = ("sleep", "300"), **kw: Any
) -> ContainerSpec:
    return ContainerSpec(
        name=f"crc-{run_id}-{suffix}", image=IMAGE, command=command, labels=Labels.for_run(run_id), **kw
    )


async def started(backend: DockerBackend, s: ContainerSpec) -> str:
    cid = await backend.create_container(s)
    await backend.start(cid)
    return cid


@pytest.fixture
async def sleeper(backend: DockerBackend, run_id: str) -> str:
    return await started(backend, spec(run_id, "sleeper"))


async def live_commands(backend: DockerBackend, cid: str) -> str:
    """Command lines of every live (non-zombie) process in the container."""
    res = await backend.exec(cid, ["ps", "-o", "stat,args"])
    assert res.exit_code == 0, res
    return "\n".join(ln for ln in res.stdout.decode().splitlines()[1:] if not ln.lstrip().startswith("Z"))


# ---------------------------------------------------------------- exec


@pytest.mark.docker
@pytest.mark.anyio
async def test_exec_streams_and_exit_codes(backend: DockerBackend, sleeper: str) -> None:
    res = await backend.exec(sleeper, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (res.exit_code, res.stdout, res.stderr, res.timed_out) == (3, b"out\n", b"err\n", False)
    assert res.started_ns <= res.ended_ns and not res.ok
    assert (await backend.exec(sleeper, ["true"])).exit_code == 0
    # Large interleaved output: the multiplexed stream must be demultiplexed frame by frame.
    big = "i=0; while [ $i -lt 2000 ]; do echo o$i; echo e$i >&2; i=$((i+1)); done"
    res = await backend.exec(sleeper, ["sh", "-c", big])
    assert res.stdout.decode().split() == [f"o{i}" for i in range(2000)]
    assert res.stderr.decode().split() == [f"e{i}" for i in range(2000)]


@pytest.mark.docker
@pytest.mark.anyio
async def test_exec_argv_is_not_shell_split(backend: DockerBackend, sleeper: str) -> None:
    args = ["a b", "$HOME", "*", "'q'", "x;y", ""]
    res = await backend.exec(sleeper, ["printf", "[%s]", *args])
    assert res.stdout == b"[a b][$HOME][*]['q'][x;y][]"


@pytest.mark.docker
@pytest.mark.anyio
async def test_exec_env_workdir_and_missing_binary(backend: DockerBackend, sleeper: str) -> None:
    res = await backend.exec(
        sleeper, ["sh", "-c", 'echo "$FOO"; pwd'], env={"FOO": "bar $baz"}, workdir="/tmp"
    )
    assert res.stdout == b"bar $baz\n/tmp\n"
    res = await backend.exec(sleeper, ["no-such-binary"])
    assert res.exit_code in (126, 127) and b"no-such-binary" in res.stderr and res.stdout == b""


KILL_PATHS = pytest.mark.parametrize("host_kill", [True, False], ids=["host-kill", "api-kill"])


def killer_backend(host_kill: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[DockerBackend, list[str]]:
    """host-kill: os.kill from this host; api-kill: the helper container in the target's pid namespace.

    Returns the backend and a list that records each use of the API path.
    """
    b = DockerBackend(host_kill=host_kill)
    api_kills: list[str] = []
    original = b._kill_via_api

    async def spy(container: str, token: str) -> None:
        api_kills.append(container)
        await original(container, token)

    monkeypatch.setattr(b, "_kill_via_api", spy)
    return b, api_kills


@pytest.mark.docker
@pytest.mark.anyio
@KILL_PATHS
async def test_exec_timeout_kills_the_process_tree(
    backend: DockerBackend, sleeper: str, host_kill: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    b, api_kills = killer_backend(host_kill, monkeypatch)
    # The background job touches the marker only once told to, after the kill: however slow the kill is on a
    # loaded machine, the marker proves a survivor, never a late kill. `begun` is echoed after both jobs are
    # forked: seen in the output, it proves that the kill had a tree to kill.
    cmd = ("sleep 271 & (until [ -e /tmp/go ]; do sleep 0.05; done; touch /tmp/survived) & "
           "echo begun; sleep 272")
    try:
        # A longer timeout only when a loaded machine had not even run `echo` before the kill: the verdict
        # never depends on the machine's speed, only the time it takes does.
        attempts = 0
        for timeout in (3, 6, 12, 24, 48):
            attempts += 1
            with anyio.fail_after(timeout + 120):  # it ends at its timeout, not after the 272 s sleep
                res = await b.exec(sleeper, ["sh", "-c", cmd], timeout=timeout)
            assert res.timed_out and res.exit_code is None
            if res.stdout:
                break
        assert res.stdout == b"begun\n"  # output written before the kill is kept
    finally:
        await b.close()
    assert api_kills == ([] if host_kill else [sleeper] * attempts)
    procs = await live_commands(backend, sleeper)  # the subshell would show the parent's command line
    assert "sleep 27" not in procs and "begun" not in procs and "sleep 0.05" not in procs, procs
    assert (await backend.exec(sleeper, ["touch", "/tmp/go"])).exit_code == 0
    await anyio.sleep(0.5)  # a survivor would touch the marker within 0.05 s
    assert (await backend.exec(sleeper, ["test", "-e", "/tmp/survived"])).exit_code == 1
    assert not [r for r in await backend.find({Labels.SERVICE: "crc-exec-killer"}) if sleeper in r.name]


@pytest.mark.docker
@pytest.mark.anyio
@KILL_PATHS
async def test_exec_timeout_kills_a_background_child_of_a_finished_command(
    backend: DockerBackend, sleeper: str, host_kill: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sh exits at once, but its background child keeps the output open: the exec is not over.
    b, _ = killer_backend(host_kill, monkeypatch)
    try:
        # The timeout must land after `echo` ran and before the engine's ~2 s grace after sh exits (it then
        # closes the output itself and the exec is over, child or not). Whether a loaded machine met both is
        # visible in the result; an attempt that did not (no output, or not timed out) is made again, with a
        # child of its own, so the verdict never depends on the machine's speed.
        for attempt in range(5):
            child = f"sleep {2740 + attempt}"
            res = await b.exec(sleeper, ["sh", "-c", f"{child} & echo bye"], timeout=1.5)
            if res.timed_out and res.stdout:
                break
    finally:
        await b.close()
    assert res.timed_out and res.stdout == b"bye\n"
    assert child not in await live_commands(backend, sleeper)


@pytest.mark.docker
@pytest.mark.anyio
async def test_cancelled_exec_is_killed(backend: DockerBackend, sleeper: str) -> None:
    with anyio.move_on_after(0.5):
        await backend.exec(sleeper, ["sleep", "273"])  # no timeout: cancellation must still kill it
    assert "sleep 273" not in await live_commands(backend, sleeper)


@pytest.mark.docker
@pytest.mark.anyio
async def test_exec_token_is_only_in_exec_env(backend: DockerBackend, sleeper: str) -> None:
    res = await backend.exec(sleeper, ["sh", "-c", f'echo "${EXEC_TOKEN_ENV}"'])
    assert len(res.stdout.strip()) == 24  # present for the exec (so it can be killed) ...
    res = await backend.exec(sleeper, ["sh", "-c", "tr '\\0' '\\n' < /proc/1/environ"])
    assert EXEC_TOKEN_ENV not in res.stdout.decode()  # ... never in the container's own env


# ---------------------------------------------------------------- one-off containers


@pytest.mark.docker
@pytest.mark.anyio
async def test_run_oneoff(backend: DockerBackend, run_id: str) -> None:
    res = await backend.run_oneoff(
        spec(run_id, "once", ("sh", "-c", "echo a; echo b >&2; exit 4")), timeout=30
    )
    assert (res.exit_code, res.stdout, res.stderr, res.timed_out) == (4, b"a\n", b"b\n", False)
    assert await backend.find({Labels.RUN: run_id}) == []  # removed


@pytest.mark.docker
@pytest.mark.anyio
async def test_run_oneoff_timeout_kills_container(backend: DockerBackend, run_id: str) -> None:
    # A longer timeout only when a loaded machine had not even run `echo` before the kill.
    for timeout in (3, 6, 12, 24, 48):
        with anyio.fail_after(timeout + 120):  # it ends at its timeout, not after the 300 s sleep
            res = await backend.run_oneoff(spec(run_id, "slow", ("sh", "-c", "echo started; sleep 300")),
                                           timeout=timeout)
        assert res.timed_out and res.exit_code is None
        assert await backend.find({Labels.RUN: run_id}) == []
        if res.stdout:
            break
    assert res.stdout == b"started\n"


@pytest.mark.docker
@pytest.mark.anyio
async def test_run_oneoff_missing_image(backend: DockerBackend, run_id: str) -> None:
    with pytest.raises(ImageUnavailable, match="does-not-exist"):
        await backend.run_oneoff(
            ContainerSpec(name=f"crc-{run_id}-x", image=MISSING, labels=Labels.for_run(run_id))
        )


# ---------------------------------------------------------------- networking and volumes

HTTPD = ("sh", "-c", "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www")


@pytest.mark.docker
@pytest.mark.anyio
async def test_network_dns_by_alias(backend: DockerBackend, run_id: str) -> None:
    net = await backend.create_network(f"crc-{run_id}", Labels.for_run(run_id))
    assert net.gateway and net.name == f"crc-{run_id}"
    web = await started(backend, spec(run_id, "web", HTTPD, network=net.name, aliases=("web", "www")))
    fetch = "for i in $(seq 50); do wget -qO- http://www:8080/ && exit 0; sleep 0.1; done; exit 1"
    res = await backend.run_oneoff(spec(run_id, "client", ("sh", "-c", fetch), network=net.name), timeout=30)
    assert res.exit_code == 0 and res.stdout == b"hello\n", res
    assert (await backend.address(web, net.name)).count(".") == 3
    await backend.remove_container(web)
    await backend.remove_network(net.id)
    await backend.remove_network(net.id)  # idempotent
    assert [r for r in await backend.find({Labels.RUN: run_id}) if r.kind == "network"] == []


async def http_get(port: int) -> bytes:
    deadline = time.monotonic() + 120  # bounds a hang only: a loaded engine starts httpd slowly
    while True:
        try:
            async with await anyio.connect_tcp("127.0.0.1", port) as s:
                await s.send(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                with anyio.fail_after(60):
                    try:
                        while True:
                            data += await s.receive()
                    except anyio.EndOfStream:
                        pass
                if data:
                    return data
        except (OSError, anyio.BrokenResourceError):
            pass  # docker-proxy accepts, then resets while the server is not listening yet
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing answers on 127.0.0.1:{port}")
        await anyio.sleep(0.1)


@pytest.mark.docker
@pytest.mark.anyio
async def test_published_ports(backend: DockerBackend, run_id: str) -> None:
    cid = await backend.create_container(spec(run_id, "web", HTTPD, ports=(PortMapping(8080),)))
    ports = await backend.start(cid)
    assert set(ports) == {8080} and ports[8080] > 0
    assert (await http_get(ports[8080])).endswith(b"hello\n")


@pytest.mark.docker
@pytest.mark.anyio
async def test_fixed_port_in_use(backend: DockerBackend, run_id: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cid = await backend.create_container(spec(run_id, "clash", ports=(PortMapping(8080, port),)))
        with pytest.raises(PortInUse) as info:
            await backend.start(cid)
        assert info.value.environment


@pytest.mark.docker
@pytest.mark.anyio
async def test_volumes(backend: DockerBackend, run_id: str, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("from host\n")
    vol = await backend.create_volume(f"crc-{run_id}-data", Labels.for_run(run_id))
    mounts = (Mount(str(tmp_path), "/ro", read_only=True), Mount(vol, "/rw"))
    cid = await started(backend, spec(run_id, "vols", volumes=mounts))
    assert (await backend.exec(cid, ["cat", "/ro/f.txt"])).stdout == b"from host\n"
    res = await backend.exec(cid, ["touch", "/ro/new"])
    assert res.exit_code != 0 and b"Read-only" in res.stderr
    assert not (tmp_path / "new").exists()
    assert (await backend.exec(cid, ["touch", "/rw/new"])).exit_code == 0
    assert any(r.kind == "volume" and r.name == vol for r in await backend.find({Labels.RUN: run_id}))


# ---------------------------------------------------------------- logs, state, wait


@pytest.mark.docker
@pytest.mark.anyio
async def test_logs_tail_and_stream(backend: DockerBackend, run_id: str) -> None:
    script = (
        "for i in 1 2 3 4 5; do echo line$i; done; sleep 0.2; echo oops >&2; sleep 0.2; echo later; sleep 300"
    )
    cid = await started(backend, spec(run_id, "logs", ("sh", "-c", script)))
    chunks: list[tuple[str, bytes]] = []
    with anyio.fail_after(120):  # bounds a hang only
        async for chunk in backend.stream_logs(cid):
            chunks.append(chunk)
            if b"later" in chunk[1]:
                break
    assert ("stderr", b"oops\n") in chunks
    assert b"".join(d for s, d in chunks if s == "stdout") == b"line1\nline2\nline3\nline4\nline5\nlater\n"
    assert await backend.logs(cid, tail=2) == "oops\nlater\n"
    assert (await backend.logs(cid)).startswith("line1\n")


@pytest.mark.docker
@pytest.mark.anyio
async def test_state_of_crashed_container(backend: DockerBackend, run_id: str, sleeper: str) -> None:
    assert (await backend.state(sleeper)).describe() == "running"
    cid = await started(backend, spec(run_id, "crash", ("sh", "-c", "echo dying >&2; exit 3")))
    assert await backend.wait(cid) == 3
    st = await backend.state(cid)
    assert (st.status, st.running, st.exit_code, st.oom_killed) == ("exited", False, 3, False)
    assert st.describe() == "exited with code 3"
    assert "dying" in await backend.logs(cid, tail=5)
    await backend.remove_container(cid)
    await backend.remove_container(cid)  # idempotent
    with pytest.raises(NotFound):
        await backend.state(cid)


# ---------------------------------------------------------------- images and engine errors


@pytest.fixture
def requests_seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every API path any aiodocker client requests during the test."""
    seen: list[str] = []
    original = aiodocker.Docker._do_query

    async def spy(self: aiodocker.Docker, path: Any, method: str, **kw: Any) -> Any:
        seen.append(f"{method} {path}")
        return await original(self, path, method, **kw)

    monkeypatch.setattr(aiodocker.Docker, "_do_query", spy)
    return seen


@pytest.mark.docker
@pytest.mark.anyio
async def test_missing_image_is_never_pulled(
    backend: DockerBackend, run_id: str, requests_seen: list[str]
) -> None:
    assert (await backend.ensure_image(IMAGE, allow_pull=False)).startswith("sha256:")
    with pytest.raises(ImageUnavailable) as info:
        await backend.ensure_image(MISSING, allow_pull=False)
    assert info.value.image == MISSING and MISSING in str(info.value) and "help:" in str(info.value)
    with pytest.raises(ImageUnavailable):
        await backend.create_container(ContainerSpec(name=f"crc-{run_id}-m", image=MISSING))
    assert requests_seen and not [r for r in requests_seen if "images/create" in r], requests_seen


@pytest.mark.anyio
@pytest.mark.parametrize("host", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:1"])
async def test_ping_bogus_docker_host(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setenv("DOCKER_HOST", host)
    async with DockerBackend(connect_timeout=5) as b:
        with pytest.raises(EngineUnavailable) as info:
            await b.ping()
        msg = str(info.value)
        assert host in msg and "DOCKER_HOST" in msg and "dockerd" in msg
        assert info.value.environment and isinstance(info.value, BackendError)
        with pytest.raises(EngineUnavailable):
            await b.find({Labels.MANAGED: "1"})


@pytest.mark.anyio
async def test_ping_something_that_is_not_an_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    async def answer(stream: Any) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, answer)
        monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
        async with DockerBackend(connect_timeout=5) as b:
            with pytest.raises(EngineUnavailable, match="does not answer like a Docker engine"):
                await b.ping()
        tg.cancel_scope.cancel()


@pytest.mark.docker
@pytest.mark.anyio
async def test_find_is_label_exact(backend: DockerBackend, run_id: str, sleeper: str) -> None:
    found = await backend.find({Labels.RUN: run_id})
    assert [(r.kind, r.name) for r in found] == [("container", f"crc-{run_id}-sleeper")]
    assert found[0].id == sleeper and Labels.is_managed(found[0].labels)
    assert await backend.find({Labels.RUN: run_id + "-other"}) == []


def test_exec_result_helpers() -> None:
    r = ExecResult(0, b"", b"", 1_000_000_000, 3_500_000_000)
    assert r.ok and r.duration_s == 2.5
    assert not ExecResult(None, b"", b"", 0, 0, timed_out=True).ok
