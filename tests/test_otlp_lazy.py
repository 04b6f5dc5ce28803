"""The receiver's fast start: a listener reports its endpoints before aiohttp serves, and nothing sent
meanwhile is lost.

A fixture holds the import of the server modules (aiohttp.web and protobuf, in a worker thread) so that
"before serving started" is a fact, not a race: the test opens the gate when it has checked what it needs to.
"""

from __future__ import annotations

import functools
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio
import pytest
from crc.runtime import otlp
from crc.runtime.otlp import Endpoints, OtlpReceiver
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Loader:
    """The held import: `entered` is set when it starts, `gate` releases it, `returned` is set once it ended."""

    entered: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)
    returned: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def loader(monkeypatch: pytest.MonkeyPatch) -> Iterator[Loader]:
    """Hold the receiver's import of its server modules until the test sets `gate`."""
    held = Loader()
    load = otlp._load_server_modules

    def wait_then_load() -> None:
        held.entered.set()
        try:
            if not held.gate.wait(60):
                raise TimeoutError("the test never released the loader")
            load()
        finally:
            held.returned.set()

    monkeypatch.setattr(otlp, "_load_server_modules", wait_then_load)
    yield held
    held.gate.set()  # a failing test must not leave the thread waiting


def serving(rx: OtlpReceiver) -> int:
    """How many of the receiver's listeners aiohttp serves (the others only queue connections)."""
    return sum(listener.http is not None for listener in rx._listeners)


def export_request(name: str) -> bytes:
    span = trace_pb2.Span(trace_id=bytes(range(16)), span_id=b"\x00" * 7 + b"\x01", name=name)
    req = ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[span])])]
    )
    body = req.SerializeToString()
    head = (
        f"POST /v1/traces HTTP/1.1\r\nHost: otlp\r\nContent-Type: application/x-protobuf\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def accept_queue_length(sock: socket.socket) -> int:
    """Connections the kernel has accepted on a listening socket and no one has taken yet (Linux)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, 24)[0])  # tcpi_unacked: the accept queue, for a listener


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=30).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.anyio
async def test_requests_sent_before_serving_starts_wait_in_the_backlog(loader: Loader) -> None:
    async with OtlpReceiver() as rx:
        eps = [await rx.listen("127.0.0.1", grpc=False), await rx.listen("127.0.0.2", grpc=False)]
        conns = []
        try:
            for i, ep in enumerate(eps):
                conn = socket.create_connection((ep.host, ep.http_port), timeout=60)
                conns.append(conn)
                conn.sendall(export_request(f"early-{i}"))
            await anyio.sleep(0.1)  # the event loop runs, but nothing serves while the loader is held
            assert serving(rx) == 0 and rx.spans == []
            loader.gate.set()
            replies = [await anyio.to_thread.run_sync(read_to_eof, conn) for conn in conns]
        finally:
            for conn in conns:
                conn.close()
    assert [r.split(b"\r\n", 1)[0] for r in replies] == [b"HTTP/1.1 200 OK"] * 2
    assert sorted(s.name for s in rx.spans) == ["early-0", "early-1"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the accept queue with Linux's TCP_INFO")
@pytest.mark.anyio
async def test_sdk_exporter_started_right_after_listen_loses_nothing(loader: Loader) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "early"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for name in ("a", "b", "c"):
        with tracer.start_as_current_span(name):
            pass
    finished = memory.get_finished_spans()

    results: list[SpanExportResult] = []
    async with OtlpReceiver() as rx:
        ep = await rx.listen("127.0.0.1", grpc=False)
        exporter = HttpExporter(endpoint=ep.http_traces_url, timeout=60)

        async def export() -> None:
            results.append(await anyio.to_thread.run_sync(exporter.export, finished))

        async with anyio.create_task_group() as tg:
            tg.start_soon(export)
            # The exporter's connection is in the kernel's accept queue: connected, not refused, not served.
            with anyio.fail_after(60):  # bounds a hang only
                while accept_queue_length(rx._listeners[0].sock) < 1:
                    await anyio.sleep(0.01)
            assert serving(rx) == 0 and results == []
            loader.gate.set()
        assert await rx.wait_for(lambda spans: len(spans) == 3, timeout=60)
        exporter.shutdown()
    assert results == [SpanExportResult.SUCCESS]
    assert sorted(s.name for s in rx.spans) == ["a", "b", "c"]
    assert {s.service for s in rx.spans} == {"early"}


@pytest.mark.parametrize("hold", [True, False], ids=["loader-held", "loader-free"])
@pytest.mark.parametrize("grpc", [False, True], ids=["http", "http+grpc"])
@pytest.mark.anyio
async def test_a_listener_cancelled_right_after_its_start_frees_its_ports(loader: Loader, grpc: bool,
                                                                         hold: bool) -> None:
    rx = OtlpReceiver()

    async def release_once_blocked() -> None:  # the owner then waits in its task group's exit
        await anyio.wait_all_tasks_blocked()
        loader.gate.set()

    with anyio.fail_after(60):  # bounds a hang only
        async with anyio.create_task_group() as outer:
            async with anyio.create_task_group() as tg:
                ep = await tg.start(functools.partial(rx.serve, "127.0.0.1", grpc=grpc))
                [listener] = rx._listeners
                assert listener.http is None  # reported started while the import is still held
                assert await anyio.to_thread.run_sync(loader.entered.wait, 60)
                if hold:  # the cancellation lands mid-import
                    outer.start_soon(release_once_blocked)
                else:
                    loader.gate.set()
                tg.cancel_scope.cancel()
            # The owner's task group waited for the import (a thread cannot be interrupted) and the stop.
            assert loader.returned.is_set()
    assert rx._listeners == [] and listener.sock.fileno() == -1
    assert refused("127.0.0.1", ep.http_port)
    if grpc:
        assert refused("127.0.0.1", ep.grpc_port)
    with socket.socket() as again:  # the port is free for anyone
        again.bind(("127.0.0.1", ep.http_port))


@pytest.mark.anyio
async def test_a_loader_failure_propagates_to_the_owner_and_frees_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise ImportError("no aiohttp here")

    monkeypatch.setattr(otlp, "_load_server_modules", broken)
    rx = OtlpReceiver()
    endpoints: list[Endpoints] = []
    with anyio.fail_after(60), pytest.raises(ExceptionGroup) as raised:  # fail_after bounds a hang only
        async with anyio.create_task_group() as tg:
            endpoints.append(await tg.start(functools.partial(rx.serve, "127.0.0.1", grpc=False)))
            await anyio.sleep_forever()  # the owner is cancelled by the crash, not left waiting
    assert raised.group_contains(ImportError, match="no aiohttp here")
    assert rx._listeners == []
    assert refused("127.0.0.1", endpoints[0].http_port)  # instead of waiting in the backlog until a timeout


def test_importing_the_module_loads_neither_aiohttp_web_nor_protobuf() -> None:
    code = (
        "import sys, crc.runtime.otlp\n"
        "heavy = ('aiohttp.web', 'google.protobuf', 'opentelemetry.proto', 'grpc')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_grpc_service_name_is_the_protos() -> None:
    assert trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name == otlp._SERVICE_NAME
