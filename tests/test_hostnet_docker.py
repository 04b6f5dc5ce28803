"""Suite networks on the real engine: `-j` bounds how many exist at once; an internal network has no route out
while crc's receiver still gets its spans; host access (privileged, host network, binds) is applied as written.

Nothing here sends traffic off this machine: the only address outside a suite's network that a container is
asked to reach is a listener this test starts on another network's gateway, on this host.
"""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerutil import (  # noqa: F401
    ROOT,
    NetworkEvents,
    crc,
    crc_resources,
    docker_engine,
    most_at_once,
    remove_resources,
    run_json,
)

pytestmark = [pytest.mark.docker]

BUSYBOX = "crc/busybox:dev"
TAG = {"tag": ""}


@pytest.fixture
def state(tmp_path: Path) -> dict[str, str]:
    d = tmp_path / "state"
    d.mkdir()
    return {"CRC_STATE_DIR": str(d)}


@pytest.fixture(autouse=True)
def no_leftovers(docker_engine: None) -> Iterator[None]:  # noqa: F811
    TAG["tag"] = "h" + secrets.token_hex(4)
    yield
    left = crc_resources(TAG["tag"])
    remove_resources(left)
    assert not left, f"crc left resources behind: {left}"


def write(tmp_path: Path, text: str, name: str = "t.cr") -> Path:
    p = tmp_path / name
    p.write_text(re.sub(r'suite "([^"]+)"', lambda m: f'suite "{m.group(1)} {TAG["tag"]}"', text))
    return p


def test_jobs_bound_how_many_suite_networks_exist_at_once(tmp_path: Path, state: dict[str, str]) -> None:
    body = "\n".join(f"""
suite "n{i}" {{
  service box {{ image "{BUSYBOX}" command ["sleep", "300"] }}
  test "t" {{ step a = exec box ["true"] }}
}}""" for i in range(24))
    src = write(tmp_path, body)
    watch = NetworkEvents()
    try:
        proc, rep = run_json(src, "-j", "3", env=state)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert [t["status"] for t in rep["tests"]] == ["passed"] * 24
        events = watch.of(f"crc-{rep['run_id']}-", destroyed=24)
    finally:
        watch.close()
    assert len([e for e in events if e[1] == "create"]) == 24
    assert most_at_once(events) == 3, events  # -j 3: three at once, never more
    assert sum(1 if a == "create" else -1 for _, a, _ in events) == 0


# ---------------------------------------------------------------- internal networks

SEND = ("from opentelemetry import trace; from opentelemetry.sdk.trace import TracerProvider; "
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor; "
        "from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter; "
        "p = TracerProvider(); p.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter())); "
        "trace.set_tracer_provider(p); trace.get_tracer('t').start_span('{name}').end(); p.shutdown(); print('sent')")
DEFAULT_ROUTE = r"/\n\S+\s+00000000\s/"  # a line of /proc/net/route whose destination is 0.0.0.0


@pytest.fixture
def outside() -> Iterator[tuple[str, int, list[str]]]:
    """A TCP listener on this host, on the gateway of a network of this test's own: an address of the machine
    outside every suite network. Yields (address, port, peers it accepted)."""
    name = f"hostnet-outside-{secrets.token_hex(4)}"
    subprocess.run(["docker", "network", "create", name], check=True, capture_output=True)
    try:
        gateway = subprocess.run(["docker", "network", "inspect", name, "--format",
                                  "{{(index .IPAM.Config 0).Gateway}}"], check=True, capture_output=True,
                                 text=True).stdout.strip()
        srv = socket.create_server((gateway, 0))
        peers: list[str] = []
        done = threading.Event()

        def accept() -> None:
            srv.settimeout(0.2)
            while not done.is_set():
                try:
                    conn, peer = srv.accept()
                except OSError:
                    continue
                peers.append(peer[0])
                conn.close()

        t = threading.Thread(target=accept, daemon=True)
        t.start()
        try:
            yield gateway, srv.getsockname()[1], peers
        finally:
            done.set()
            t.join(timeout=30)
            srv.close()
    finally:
        subprocess.run(["docker", "network", "rm", name], capture_output=True)


def test_an_internal_network_has_no_route_out_and_its_spans_still_arrive(
        tmp_path: Path, state: dict[str, str], outside: tuple[str, int, list[str]]) -> None:
    host, port, peers = outside
    reach = f"import socket; socket.create_connection(('{host}', {port}), 5); print('reached')"
    box = '''service py { image "crc/python:dev" command ["sleep", "300"] }
  service peer { image "crc/busybox:dev" command ["httpd", "-f", "-p", "8080"] port 8080 ready tcp 8080 }'''
    src = write(tmp_path, f"""
suite "open" {{
  {box}
  test "the host is reachable" {{
    step routes = exec py ["cat", "/proc/net/route"]
    expect routes.stdout ~ {DEFAULT_ROUTE}
    step reach = exec py ["python3", "-c", "{reach}"]
    expect reach.stdout contains "reached"
  }}
}}
suite "sealed" {{
  network internal
  {box}
  test "nothing outside the network is" {{
    step routes = exec py ["cat", "/proc/net/route"]
    expect routes.stdout !~ {DEFAULT_ROUTE}
    step oneoff = run "crc/busybox:dev" ["cat", "/proc/net/route"]
    expect oneoff.stdout !~ {DEFAULT_ROUTE}
    step reach = exec py ["python3", "-c", "{reach}"]
    expect reach.exit != 0
    expect reach.stderr contains "Network is unreachable"
    step neighbour = exec py ["python3", "-c", "import socket; socket.create_connection(('peer', 8080), 5); print('ok')"]
    expect neighbour.stdout contains "ok"
    step send = exec py ["python3", "-c", "{SEND.format(name='sealed-ping')}"]
    expect send.stdout contains "sent"
    span ping = "sealed-ping" {{ service "py" }}
    expect count(ping) == 1
  }}
}}
""")
    proc, rep = run_json(src, env=state)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {t["name"]: t["status"] for t in rep["tests"]} == {
        "the host is reachable": "passed", "nothing outside the network is": "passed"}
    assert len(peers) == 1, peers  # the open suite's connection; none came from the sealed one
    ping = next(n for n in rep["nodes"] if n["kind"] == "span" and n["label"] == "ping")
    (span,) = ping["detail"]["spans"]  # sent by the SDK's OTLP exporter, received on the internal gateway
    assert span["name"] == "sealed-ping" and span["resource"]["telemetry.sdk.name"] == "opentelemetry"


# ---------------------------------------------------------------- host access


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def test_host_access_without_a_grant_is_refused_before_anything_runs(tmp_path: Path, state: dict[str, str]) -> None:
    src = write(tmp_path, f"""
suite "ungranted" {{
  service agent {{
    image "{BUSYBOX}"
    command ["sleep", "300"]
    volume "/var/run/docker.sock" -> "/var/run/docker.sock"
  }}
  test "t" {{ step s = exec agent ["true"] }}
}}
""")
    proc = crc("run", str(src), "--no-progress", "--pull", "never", env=state)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error[host-access]: service `agent` binds the Docker socket" in proc.stderr
    assert 'help: if it should have it, grant it in the service: allow host "docker-socket"' in proc.stderr
    assert f"{src}:6:12" in proc.stderr


def test_granted_host_access_is_listed_and_applied(tmp_path: Path, state: dict[str, str]) -> None:
    port = free_port()
    src = write(tmp_path, f"""
suite "granted" {{
  service agent {{
    image "{BUSYBOX}"
    command ["sleep", "300"]
    volume "/var/run/docker.sock" -> "/var/run/docker.sock" ro
    allow host "docker-socket"
  }}
  service onhost {{
    image "{BUSYBOX}"
    command ["httpd", "-f", "-p", "127.0.0.1:{port}"]
    network host
    port {port}
    ready http {port} "/" status 404
    allow host "host-network"
  }}
  service exporter {{
    image "crc/python:dev"
    command ["sleep", "300"]
    network host
    allow host "host-network"
  }}
  test "t" {{
    step sock = exec agent ["test", "-S", "/var/run/docker.sock"]
    expect sock.exit == 0
    step name = exec onhost ["hostname"]
    expect name.stdout contains "{socket.gethostname()}"
    step send = exec exporter ["python3", "-c", "{SEND.format(name='host-ping')}"]
    expect send.stdout contains "sent"
    span ping = "host-ping" {{ service "exporter" }}
    expect count(ping) == 1
  }}
}}
""")
    check = crc("check", str(src))
    assert check.returncode == 0, check.stdout + check.stderr
    lines = [line.strip() for line in check.stdout.splitlines() if "host access" in line]
    suite = f"granted {TAG['tag']}"
    assert lines == [
        f'{src}:7:16: host access "docker-socket" for service `agent` of suite "{suite}": '
        "binds the Docker socket (/run/docker.sock)",
        f'{src}:15:16: host access "host-network" for service `onhost` of suite "{suite}": '
        "shares the host's network",
        f'{src}:21:16: host access "host-network" for service `exporter` of suite "{suite}": '
        "shares the host's network",
    ], check.stdout
    proc, _ = run_json(src, env=state)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Once, before anything runs; then the host-network services were reached on 127.0.0.1 (the ready probe)
    # and reached crc's receiver (on loopback: what they send to a gateway arrives masqueraded).
    assert [line for line in proc.stderr.splitlines() if "host access" in line] == [f"crc: {x}" for x in lines]


@pytest.mark.anyio
async def test_a_privileged_container_gets_it_from_the_engine() -> None:
    """What the engine is asked for, read back from it. (Privileged containers cannot start on an engine whose
    own capability set is short of the full one, as in some sandboxes: this checks the creation only.)"""
    from crc.runtime.backend import ContainerSpec, Labels
    from crc.runtime.docker_backend import DockerBackend

    run = "hostnet-" + secrets.token_hex(4)
    async with DockerBackend() as b:
        plain = await b.create_container(ContainerSpec(f"{run}-plain", BUSYBOX, labels=Labels.for_run(run)))
        priv = await b.create_container(ContainerSpec(f"{run}-priv", BUSYBOX, labels=Labels.for_run(run),
                                                      privileged=True, network="host"))
        try:
            for cid, want in ((plain, ("false", "default")), (priv, ("true", "host"))):
                got = subprocess.run(["docker", "inspect", cid, "--format",
                                      "{{.HostConfig.Privileged}} {{.HostConfig.NetworkMode}}"],
                                     capture_output=True, text=True, check=True).stdout.split()
                assert tuple(got) == want
        finally:
            await b.remove_container(plain)
            await b.remove_container(priv)


def test_the_networks_benchmark_runs_at_its_smallest_size() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "networks.py"), "--smoke"], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"internal/plain \d+\.\d+x", proc.stdout), proc.stdout
    assert re.search(r"-j 3/-j 8 \d+\.\d+x", proc.stdout), proc.stdout
    assert re.search(r"waiting/-j 2 \d+\.\d+x", proc.stdout), proc.stdout
