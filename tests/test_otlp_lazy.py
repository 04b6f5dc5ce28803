"""The receiver's fast start: listen() returns before aiohttp serves, and nothing sent meanwhile is lost.

A fixture holds the loader thread (which imports aiohttp.web and protobuf) so that "before serving started"
is a fact, not a race: the test opens the gate when it has checked what it needs to.
"""

from __future__ import annotations

import logging
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import anyio
import pytest
from crc.runtime import otlp
from crc.runtime.otlp import OtlpReceiver
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


@pytest.fixture
def loader_gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Hold the receiver's loader thread until the test sets the returned event."""
    gate = threading.Event()
    load = otlp._load_server_modules

    def held() -> None:
        if not gate.wait(30):
            raise TimeoutError("the test never released the loader")
        load()

    monkeypatch.setattr(otlp, "_load_server_modules", held)
    yield gate
    gate.set()  # a failing test must not leave the thread waiting


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
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.anyio
async def test_requests_sent_before_serving_starts_wait_in_the_backlog(loader_gate: threading.Event) -> None:
    async with OtlpReceiver() as rx:
        eps = [await rx.listen("127.0.0.1", grpc=False), await rx.listen("127.0.0.2", grpc=False)]
        conns = []
        try:
            for i, ep in enumerate(eps):
                conn = socket.create_connection((ep.host, ep.http_port), timeout=10)
                conns.append(conn)
                conn.sendall(export_request(f"early-{i}"))
            await anyio.sleep(0.1)  # the event loop runs, but nothing serves while the loader is held
            assert rx._sites == [] and rx.spans == []
            loader_gate.set()
            replies = [await anyio.to_thread.run_sync(read_to_eof, conn) for conn in conns]
        finally:
            for conn in conns:
                conn.close()
    assert [r.split(b"\r\n", 1)[0] for r in replies] == [b"HTTP/1.1 200 OK"] * 2
    assert sorted(s.name for s in rx.spans) == ["early-0", "early-1"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the accept queue with Linux's TCP_INFO")
@pytest.mark.anyio
async def test_sdk_exporter_started_right_after_listen_loses_nothing(loader_gate: threading.Event) -> None:
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
        exporter = HttpExporter(endpoint=ep.http_traces_url, timeout=10)

        async def export() -> None:
            results.append(await anyio.to_thread.run_sync(exporter.export, finished))

        async with anyio.create_task_group() as tg:
            tg.start_soon(export)
            # The exporter's connection is in the kernel's accept queue: connected, not refused, not served.
            with anyio.fail_after(5):
                while accept_queue_length(rx._socks[0]) < 1:
                    await anyio.sleep(0.01)
            assert rx._sites == [] and results == []
            loader_gate.set()
        assert await rx.wait_for(lambda spans: len(spans) == 3, timeout=10)
        exporter.shutdown()
    assert results == [SpanExportResult.SUCCESS]
    assert sorted(s.name for s in rx.spans) == ["a", "b", "c"]
    assert {s.service for s in rx.spans} == {"early"}


@pytest.mark.parametrize("hold", [True, False], ids=["loader-held", "loader-free"])
@pytest.mark.parametrize("grpc", [False, True], ids=["http", "http+grpc"])
@pytest.mark.anyio
async def test_aclose_right_after_listen_leaves_no_socket_or_thread(
    loader_gate: threading.Event, grpc: bool, hold: bool
) -> None:
    before = set(threading.enumerate())
    rx = OtlpReceiver()
    ep = await rx.listen("127.0.0.1", grpc=grpc)
    assert "crc-otlp-loader" in [t.name for t in set(threading.enumerate()) - before]
    assert rx._sites == []
    socks = list(rx._socks)
    release = threading.Timer(0.2 if hold else 0, loader_gate.set)  # held: aclose starts mid-import
    release.start()
    started = time.monotonic()
    await rx.aclose()
    release.join()
    if hold:
        assert time.monotonic() - started >= 0.15  # aclose waited for the loader thread
    new_threads = set(threading.enumerate()) - before
    assert "crc-otlp-loader" not in [t.name for t in new_threads]
    if not grpc:  # grpc.aio starts a poller thread of its own, once per process
        assert new_threads == set()
    assert [sock.fileno() for sock in socks] == [-1] and rx._sites == []
    assert refused("127.0.0.1", ep.http_port)
    if grpc:
        assert refused("127.0.0.1", ep.grpc_port)
    with pytest.raises(RuntimeError):
        await rx.listen("127.0.0.1")


@pytest.mark.anyio
async def test_a_loader_failure_refuses_senders_and_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise ImportError("no aiohttp here")

    monkeypatch.setattr(otlp, "_load_server_modules", broken)
    async with OtlpReceiver() as rx:
        ep = await rx.listen("127.0.0.1", grpc=False)
        with anyio.fail_after(5):
            while rx._socks[0].fileno() != -1:
                await anyio.sleep(0.01)
        assert refused("127.0.0.1", ep.http_port)  # instead of waiting in the backlog until a timeout
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and f"127.0.0.1:{ep.http_port}" in errors[0].getMessage()


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
