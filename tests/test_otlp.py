"""The embedded OTLP receiver, fed by the OpenTelemetry SDK's real exporters and by hand-built payloads."""

from __future__ import annotations

import base64
import functools
import gzip
import json
import socket
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import anyio
import grpc
import pytest
from crc.runtime.otlp import Endpoints, OtlpReceiver, normalize
from crc.runtime.otlpdecode import PayloadError, UnsupportedContentType, decode_spans
from crc.runtime.spans import Span
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as Resource_pb
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

GRPC_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PB = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
T0 = 1_735_689_600_000_000_000  # 2025-01-01T00:00:00Z in ns: exact timestamps make exact assertions


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[OtlpReceiver, Endpoints]]:
    async with OtlpReceiver() as rx:
        ep = await rx.listen("127.0.0.1")
        yield rx, ep


def hexid(n: int, width: int) -> str:
    return format(n, f"0{width}x")


# ---------------------------------------------------------------------------------------------------------
# A workload emitted through the real SDK, checked field by field


def emit_workload(exporter: SpanExporter, *, batch: bool) -> dict[str, Any]:
    """Three related spans with every attribute type, an event, a link and all three statuses.

    Blocking (the SDK exporters are synchronous): call it in a worker thread.
    """
    resource = Resource.create({"service.name": "checkout", "deployment.environment": "ci", "res.shard": 7})
    provider = TracerProvider(resource=resource)
    processor = (
        BatchSpanProcessor(exporter, schedule_delay_millis=20, max_export_batch_size=2)
        if batch
        else SimpleSpanProcessor(exporter)
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("crc.tests.workload", "1.0")

    producer = tracer.start_span("enqueue", kind=SpanKind.PRODUCER, start_time=T0)
    producer.end(end_time=T0 + 10)
    root = tracer.start_span(
        "GET /orders",
        kind=SpanKind.SERVER,
        start_time=T0 + 100,
        attributes={
            "http.method": "GET",
            "http.status_code": 200,
            "ratio": 0.25,
            "cached": False,
            "tags": ["a", "b"],
            "ports": [80, 443],
            "flags": [True, False],
            "weights": [1.5, 2.5],
        },
    )
    root.add_event("cache.miss", {"key": "sku-42", "attempt": 2}, timestamp=T0 + 150)
    child = tracer.start_span(
        "redis GET",
        kind=SpanKind.CLIENT,
        start_time=T0 + 200,
        context=trace.set_span_in_context(root),
        links=[Link(producer.get_span_context(), {"reason": "retry"})],
    )
    child.set_status(Status(StatusCode.ERROR, "connection reset"))
    child.end(end_time=T0 + 300)
    root.set_status(Status(StatusCode.OK))
    root.end(end_time=T0 + 1000)
    provider.shutdown()  # flushes the processor and closes the exporter
    return {
        "trace_id": hexid(root.get_span_context().trace_id, 32),
        "root": hexid(root.get_span_context().span_id, 16),
        "child": hexid(child.get_span_context().span_id, 16),
        "producer": hexid(producer.get_span_context().span_id, 16),
        "producer_trace": hexid(producer.get_span_context().trace_id, 32),
    }


def check_workload(spans: Sequence[Span], ids: dict[str, Any], before_ns: int, after_ns: int) -> None:
    by_name = {s.name: s for s in spans}
    assert sorted(by_name) == ["GET /orders", "enqueue", "redis GET"]
    root, child, producer = by_name["GET /orders"], by_name["redis GET"], by_name["enqueue"]

    assert (root.trace_id, root.span_id, root.parent_span_id) == (ids["trace_id"], ids["root"], None)
    assert (child.trace_id, child.parent_span_id) == (ids["trace_id"], ids["root"])
    assert child.span_id == ids["child"]
    assert producer.span_id == ids["producer"] and producer.parent_span_id is None

    assert (root.kind, child.kind, producer.kind) == ("server", "client", "producer")
    assert (root.status, child.status, producer.status) == ("ok", "error", "unset")
    assert child.status_message == "connection reset"
    assert root.status_message == ""

    assert (root.start_ns, root.end_ns, root.duration_ns, root.timed) == (T0 + 100, T0 + 1000, 900, True)
    assert (child.start_ns, child.end_ns) == (T0 + 200, T0 + 300)

    assert root.attributes == {
        "http.method": "GET",
        "http.status_code": 200,
        "ratio": 0.25,
        "cached": False,
        "tags": ["a", "b"],
        "ports": [80, 443],
        "flags": [True, False],
        "weights": [1.5, 2.5],
    }
    assert type(root.attributes["http.status_code"]) is int
    assert type(root.attributes["cached"]) is bool
    assert child.attributes == {}

    for s in spans:
        assert s.service == "checkout"
        assert s.resource["deployment.environment"] == "ci"
        assert s.resource["res.shard"] == 7
        assert s.resource["telemetry.sdk.language"] == "python"
        assert s.scope == "crc.tests.workload"
        assert before_ns <= s.received_ns <= after_ns
    assert root.attr("deployment.environment") == "ci"  # resource fallback

    assert len(root.events) == 1
    ev = root.events[0]
    assert (ev.name, ev.time_ns, ev.attributes) == ("cache.miss", T0 + 150, {"key": "sku-42", "attempt": 2})

    assert len(child.links) == 1
    ln = child.links[0]
    assert (ln.trace_id, ln.span_id) == (ids["producer_trace"], ids["producer"])
    assert ln.attributes == {"reason": "retry"}
    assert root.links == () and child.events == ()


async def run_workload(rx: OtlpReceiver, exporter: SpanExporter, *, batch: bool) -> None:
    before = time.time_ns()
    ids = await anyio.to_thread.run_sync(lambda: emit_workload(exporter, batch=batch))
    after = time.time_ns()
    assert rx.rejected == 0
    check_workload(rx.spans, ids, before, after)


@pytest.mark.anyio
async def test_http_protobuf_sdk_exporter(receiver: tuple[OtlpReceiver, Endpoints]) -> None:
    rx, ep = receiver
    await run_workload(rx, HttpExporter(endpoint=ep.http_traces_url, timeout=30), batch=False)
    assert rx.batches == 3  # SimpleSpanProcessor: one export per span


@pytest.mark.anyio
async def test_http_protobuf_gzip_sdk_exporter(receiver: tuple[OtlpReceiver, Endpoints]) -> None:
    rx, ep = receiver
    exporter = HttpExporter(endpoint=ep.http_traces_url, timeout=30, compression=HttpCompression.Gzip)
    await run_workload(rx, exporter, batch=True)


@pytest.mark.anyio
async def test_grpc_sdk_exporter(receiver: tuple[OtlpReceiver, Endpoints]) -> None:
    rx, ep = receiver
    await run_workload(rx, GrpcExporter(endpoint=ep.grpc_url, insecure=True, timeout=30), batch=False)


@pytest.mark.anyio
async def test_grpc_gzip_sdk_exporter_batched(receiver: tuple[OtlpReceiver, Endpoints]) -> None:
    rx, ep = receiver
    exporter = GrpcExporter(endpoint=ep.grpc_url, insecure=True, timeout=30, compression=grpc.Compression.Gzip)
    await run_workload(rx, exporter, batch=True)


# ---------------------------------------------------------------------------------------------------------
# OTLP/JSON


def sdk_request() -> ExportTraceServiceRequest:
    """The exact request the SDK exporters would send for the workload."""
    memory = InMemorySpanExporter()
    emit_workload(memory, batch=False)
    spans: Sequence[ReadableSpan] = memory.get_finished_spans()
    return encode_spans(spans)


def strip_received(spans: Sequence[Span]) -> list[dict[str, Any]]:
    out = []
    for s in spans:
        d = s.to_dict()
        del d["received_ns"]
        out.append(d)
    return out


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes, str]:
    async with session.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.read(), resp.content_type


@pytest.mark.anyio
async def test_http_json_hand_built(receiver: tuple[OtlpReceiver, Endpoints]) -> None:
    rx, ep = receiver
    trace_id, root_id, child_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173"
    kvlist = [{"key": "inner", "value": {"boolValue": False}}, {"key": "deep", "value": {"arrayValue": {}}}]
    attributes = [
        {"key": "s", "value": {"stringValue": "x"}},
        {"key": "i", "value": {"intValue": "-42"}},
        {"key": "big", "value": {"intValue": "9007199254740993"}},  # beyond float precision: keep the string
        {"key": "d", "value": {"doubleValue": 1.5}},
        {"key": "b", "value": {"boolValue": True}},
        {"key": "raw", "value": {"bytesValue": "Af8="}},  # base64 of b"\x01\xff"
        {"key": "arr", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "two"}]}}},
        {"key": "kv", "value": {"kvlistValue": {"values": kvlist}}},
        {"key": "empty", "value": {}},
    ]
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "api"}},
                        {"key": "host.cores", "value": {"intValue": "8"}},
                    ]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "my.library", "version": "1.0.0"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": root_id,
                                "parentSpanId": "",
                                "name": "GET /orders",
                                "kind": 2,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": "1544712661000000000",
                                "attributes": attributes,
                                "events": [
                                    {
                                        "timeUnixNano": "1544712660500000000",
                                        "name": "retry",
                                        "attributes": [{"key": "n", "value": {"intValue": 3}}],
                                    }
                                ],
                                "links": [{"traceId": trace_id, "spanId": child_id, "attributes": []}],
                                "status": {"code": "STATUS_CODE_OK"},
                                "someFutureField": {"ignored": True},
                            },
                            {
                                "traceId": trace_id,
                                "spanId": child_id,
                                "parentSpanId": root_id,
                                "name": "SELECT",
                                "kind": "SPAN_KIND_CLIENT",
                                "status": {"code": 2, "message": "deadlock"},
                            },
                        ],
                    }
                ],
            }
        ]
    }
    async with aiohttp.ClientSession() as session:
        status, payload, ctype = await post(session, ep.http_traces_url, json.dumps(body).encode(), JSON)
    assert (status, ctype) == (200, "application/json")
    json_format.Parse(payload, ExportTraceServiceResponse())  # a valid (empty) response in JSON

    root, child = rx.spans
    assert (root.trace_id, root.span_id, root.parent_span_id) == (trace_id, root_id, None)
    assert (child.parent_span_id, child.kind, child.status, child.status_message) == (
        root_id,
        "client",
        "error",
        "deadlock",
    )
    assert (root.kind, root.status, root.scope, root.service) == ("server", "ok", "my.library", "api")
    assert root.resource == {"service.name": "api", "host.cores": 8}
    assert (root.start_ns, root.end_ns, root.duration_ns) == (1544712660000000000, 1544712661000000000, 10**9)
    assert root.attributes == {
        "s": "x",
        "i": -42,
        "big": 9007199254740993,
        "d": 1.5,
        "b": True,
        "raw": "01ff",
        "arr": [1, "two"],
        "kv": {"inner": False, "deep": []},
        "empty": None,
    }
    events = [(e.name, e.time_ns, e.attributes) for e in root.events]
    assert events == [("retry", 1544712660500000000, {"n": 3})]
    assert [(ln.trace_id, ln.span_id) for ln in root.links] == [(trace_id, child_id)]
    # Missing timestamps read as 0 and mark the span untimed.
    assert (child.start_ns, child.end_ns, child.timed, child.duration_ns) == (0, 0, False, 0)


@pytest.mark.anyio
async def test_http_json_matches_protobuf_for_a_real_sdk_request(
    receiver: tuple[OtlpReceiver, Endpoints],
) -> None:
    rx, ep = receiver
    request = await anyio.to_thread.run_sync(sdk_request)
    via_pb = request.SerializeToString()
    # MessageToJson keeps proto3's base64 ids; the OTLP/JSON spelling uses hex. Both must read the same.
    b64_json = json_format.MessageToJson(request)
    doc = json.loads(b64_json)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in sp:
                        sp[key] = base64.b64decode(sp[key]).hex()
                for ln in sp.get("links", []):
                    ln["traceId"] = base64.b64decode(ln["traceId"]).hex()
                    ln["spanId"] = base64.b64decode(ln["spanId"]).hex()
    hex_json = json.dumps(doc)
    assert doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] not in b64_json

    async with aiohttp.ClientSession() as session:
        assert (await post(session, ep.http_traces_url, via_pb, PB))[0] == 200
        assert (await post(session, ep.http_traces_url, b64_json.encode(), JSON))[0] == 200
        assert (await post(session, ep.http_traces_url, hex_json.encode(), JSON))[0] == 200
    assert rx.rejected == 0 and len(rx.spans) == 9
    first, second, third = rx.spans[0:3], rx.spans[3:6], rx.spans[6:9]
    expected = strip_received(normalize(request, 0))
    assert strip_received(first) == expected
    assert strip_received(second) == expected
    assert strip_received(third) == expected
    assert {s.name for s in first} == {"GET /orders", "redis GET", "enqueue"}


@pytest.mark.anyio
async def test_snake_case_json_keys(receiver: tuple[OtlpReceiver, Endpoints]) -> None:
    rx, ep = receiver
    body = {
        "resource_spans": [
            {"scope_spans": [{"spans": [{"trace_id": "01" * 16, "span_id": "02" * 8, "name": "snake"}]}]}
        ]
    }
    async with aiohttp.ClientSession() as session:
        status, _, _ = await post(session, ep.http_traces_url, json.dumps(body).encode(), JSON)
    assert status == 200
    (span,) = rx.spans
    assert (span.trace_id, span.span_id, span.name, span.service, span.kind) == (
        "01" * 16,
        "02" * 8,
        "snake",
        "",
        "unspecified",
    )


# ---------------------------------------------------------------------------------------------------------
# Edge cases


def one_span_request(
    name: str = "op", start: int = 0, end: int = 0, span_id: int = 1, **span_fields: Any
) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                scope_spans=[
                    trace_pb2.ScopeSpans(
                        spans=[
                            trace_pb2.Span(
                                trace_id=bytes(range(16)),
                                span_id=span_id.to_bytes(8, "big"),
                                name=name,
                                start_time_unix_nano=start,
                                end_time_unix_nano=end,
                                **span_fields,
                            )
                        ]
                    )
                ]
            )
        ]
    )


@pytest.mark.anyio
async def test_gzip_bodies_protobuf_and_json(receiver: tuple[OtlpReceiver, Endpoints]) -> None:
    rx, ep = receiver
    pb = gzip.compress(one_span_request("zipped-pb", T0, T0 + 5).SerializeToString())
    js = gzip.compress(json_format.MessageToJson(one_span_request("zipped-json", T0, T0)).encode())
    async with aiohttp.ClientSession() as session:
        assert (await post(session, ep.http_traces_url, pb, {**PB, "Content-Encoding": "gzip"}))[0] == 200
        assert (await post(session, ep.http_traces_url, js, {**JSON, "Content-Encoding": "gzip"}))[0] == 200
    a, b = rx.spans
    assert (a.name, a.duration_ns, a.timed) == ("zipped-pb", 5, True)
    # Equal timestamps: a timed, zero-length span (not "untimed").
    assert (b.name, b.start_ns, b.end_ns, b.duration_ns, b.timed) == ("zipped-json", T0, T0, 0, True)


@pytest.mark.anyio
async def test_unknown_enum_values_and_missing_parent(receiver: tuple[OtlpReceiver, Endpoints]) -> None:
    rx, ep = receiver
    req = one_span_request(kind=9, status=trace_pb2.Status(code=7, message="?"))  # type: ignore[arg-type]
    async with aiohttp.ClientSession() as session:
        assert (await post(session, ep.http_traces_url, req.SerializeToString(), PB))[0] == 200
        # Unknown enum names in JSON are ignored like unknown fields (forward compatibility).
        doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "future", "kind": "SPAN_KIND_NEW"}]}]}]}
        assert (await post(session, ep.http_traces_url, json.dumps(doc).encode(), JSON))[0] == 200
    first, second = rx.spans
    assert (first.kind, first.status, first.parent_span_id) == ("unspecified", "unset", None)
    assert (second.name, second.kind) == ("future", "unspecified")


@pytest.mark.parametrize(
    ("body", "headers", "expected_status"),
    [
        (b"\x0a\x05abc", PB, 400),  # truncated length-delimited field
        (b"\xff\xff\xff\xff", PB, 400),
        (b'{"resourceSpans": [', JSON, 400),  # JSON syntax error
        (b"[1, 2]", JSON, 400),  # not an object
        (b'{"resourceSpans": "nope"}', JSON, 400),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "%%%"}]}]}]}', JSON, 400),  # bad id
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}', JSON, 400),
        (b"\xff\xfe not utf-8", JSON, 400),
        (b"not gzip at all", {**PB, "Content-Encoding": "gzip"}, 400),
        (b"{}", {"Content-Type": "text/plain"}, 415),
        (b"{}", {}, 415),
    ],
)
@pytest.mark.anyio
async def test_malformed_payloads_are_rejected_and_receiver_keeps_working(
    receiver: tuple[OtlpReceiver, Endpoints], body: bytes, headers: dict[str, str], expected_status: int
) -> None:
    rx, ep = receiver
    good = one_span_request("after-the-bad-one").SerializeToString()
    async with aiohttp.ClientSession() as session:
        status, payload, ctype = await post(session, ep.http_traces_url, body, headers)
        assert status == expected_status
        assert rx.rejected == 1 and rx.spans == []
        assert rx.last_rejection and rx.last_rejection.startswith("OTLP/HTTP: ")
        # The error body is a google.rpc.Status in the request's encoding, naming the problem.
        if ctype == "application/json":
            assert json.loads(payload)["message"]
        else:
            assert payload[:2] == b"\x08\x03" and len(payload) > 10
        assert (await post(session, ep.http_traces_url, good, PB))[0] == 200
    assert [s.name for s in rx.spans] == ["after-the-bad-one"]
    assert rx.rejected == 1


@pytest.mark.anyio
async def test_wrong_path_and_method(receiver: tuple[OtlpReceiver, Endpoints]) -> None:
    rx, ep = receiver
    body = one_span_request().SerializeToString()
    async with aiohttp.ClientSession() as session:
        assert (await post(session, ep.http_url + "/v1/metrics", body, PB))[0] == 404
        assert (await post(session, ep.http_url + "/", body, PB))[0] == 404
        async with session.get(ep.http_traces_url) as resp:
            assert resp.status == 405
    assert rx.spans == [] and rx.rejected == 0


@pytest.mark.anyio
async def test_empty_request_is_accepted_without_a_batch() -> None:
    calls: list[int] = []
    async with OtlpReceiver(on_spans=lambda batch: calls.append(len(batch))) as rx:
        ep = await rx.listen("127.0.0.1")
        async with aiohttp.ClientSession() as session:
            status, payload, ctype = await post(session, ep.http_traces_url, b"", PB)
    assert (status, ctype) == (200, "application/x-protobuf")
    ExportTraceServiceResponse.FromString(payload)
    assert rx.spans == [] and rx.batches == 0 and calls == []


@pytest.mark.anyio
async def test_grpc_raw_requests_gzip_and_malformed(receiver: tuple[OtlpReceiver, Endpoints]) -> None:
    rx, ep = receiver
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ep.grpc_port}") as channel:
        export = channel.unary_unary(GRPC_EXPORT)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await export(b"\x0a\x05abc")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed protobuf" in (err.value.details() or "")
        assert rx.rejected == 1
        good = one_span_request("grpc-gzip", T0, T0 + 1).SerializeToString()
        reply = await export(good, compression=grpc.Compression.Gzip)
        ExportTraceServiceResponse.FromString(reply)
    assert [s.name for s in rx.spans] == ["grpc-gzip"]


@pytest.mark.anyio
async def test_many_spans_with_the_same_name(receiver: tuple[OtlpReceiver, Endpoints]) -> None:
    rx, ep = receiver
    n = 2000

    def emit() -> None:
        provider = TracerProvider(resource=Resource.create({"service.name": "worker"}))
        exporter = HttpExporter(endpoint=ep.http_traces_url, timeout=30)
        provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=512, max_queue_size=n))
        tracer = provider.get_tracer("bulk")
        with tracer.start_as_current_span("batch"):
            for _ in range(n):
                with tracer.start_as_current_span("work"):
                    pass
        provider.shutdown()

    await anyio.to_thread.run_sync(emit)
    work = [s for s in rx.spans if s.name == "work"]
    assert len(work) == n and len(rx.spans) == n + 1
    assert len({s.span_id for s in work}) == n
    (parent,) = (s for s in rx.spans if s.name == "batch")
    assert all(s.parent_span_id == parent.span_id for s in work)
    assert rx.batches >= 4  # 512-span batches


@pytest.mark.anyio
async def test_many_concurrent_exporters(receiver: tuple[OtlpReceiver, Endpoints]) -> None:
    rx, ep = receiver
    per_exporter = 150

    def emit(i: int) -> None:
        provider = TracerProvider(resource=Resource.create({"service.name": f"svc-{i}"}))
        exporter: SpanExporter = (
            HttpExporter(endpoint=ep.http_traces_url, timeout=60)
            if i % 2
            else GrpcExporter(endpoint=ep.grpc_url, insecure=True, timeout=60)
        )
        processor = BatchSpanProcessor(exporter, max_export_batch_size=16, schedule_delay_millis=5)
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("concurrent")
        for k in range(per_exporter):
            with tracer.start_as_current_span(f"op-{k % 3}"):
                pass
        provider.shutdown()

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(anyio.to_thread.run_sync, emit, i)
    assert rx.rejected == 0
    assert len(rx.spans) == 8 * per_exporter
    counts: dict[str, int] = {}
    for s in rx.spans:
        counts[s.service] = counts.get(s.service, 0) + 1
    assert counts == {f"svc-{i}": per_exporter for i in range(8)}
    assert sorted(s.received_ns for s in rx.spans) == [s.received_ns for s in rx.spans]  # arrival order


# ---------------------------------------------------------------------------------------------------------
# wait_for, on_spans, listeners and lifecycle


@pytest.mark.anyio
async def test_wait_for_wakes_on_each_arrival_without_polling(
    receiver: tuple[OtlpReceiver, Endpoints],
) -> None:
    rx, ep = receiver
    calls: list[int] = []

    def three_spans(spans: Sequence[Span]) -> bool:
        calls.append(len(spans))
        return len(spans) >= 3

    result: list[bool] = []

    async def waiter() -> None:
        result.append(await rx.wait_for(three_spans, timeout=60))

    async with aiohttp.ClientSession() as session, anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert calls == [0]
        for i in range(3):
            await anyio.sleep(0.05)  # spacing only: the waiter must stay asleep in between
            body = one_span_request(f"s{i}", span_id=i + 1).SerializeToString()
            assert (await post(session, ep.http_traces_url, body, PB))[0] == 200
    # One evaluation up front, then exactly one per arriving batch: no polling in between.
    assert calls == [0, 1, 2, 3]
    assert result == [True]


@pytest.mark.anyio
async def test_wait_for_timeout_and_immediate(receiver: tuple[OtlpReceiver, Endpoints]) -> None:
    rx, _ = receiver
    start = time.monotonic()
    assert await rx.wait_for(lambda spans: len(spans) > 0, timeout=0.2) is False
    assert time.monotonic() - start >= 0.15  # it waited; how much longer depends on the machine's load
    assert await rx.wait_for(lambda spans: True, timeout=0) is True


@pytest.mark.anyio
async def test_wait_for_returns_when_receiver_closes() -> None:
    rx = OtlpReceiver()
    result: list[bool] = []

    async def waiter() -> None:
        result.append(await rx.wait_for(lambda spans: bool(spans), timeout=None))

    with anyio.fail_after(60):  # bounds a hang only
        async with anyio.create_task_group() as tg:
            await tg.start(rx.serve, "127.0.0.1")
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            await rx.aclose()  # stops the listener too: the task group can end
    assert result == [False]
    async with anyio.create_task_group() as tg:
        with pytest.raises(RuntimeError, match="closed"):
            await tg.start(rx.serve, "127.0.0.1")


@pytest.mark.anyio
async def test_on_spans_per_batch_and_callback_errors_do_not_fail_exports() -> None:
    batches: list[list[str]] = []

    def on_spans(batch: list[Span]) -> None:
        batches.append([s.name for s in batch])
        if len(batches) == 1:
            raise ValueError("consumer bug")

    async with OtlpReceiver(on_spans=on_spans) as rx:
        ep = await rx.listen("127.0.0.1")
        async with aiohttp.ClientSession() as session:
            for name in ("first", "second"):
                body = one_span_request(name).SerializeToString()
                assert (await post(session, ep.http_traces_url, body, PB))[0] == 200
    assert batches == [["first"], ["second"]]
    assert [s.name for s in rx.spans] == ["first", "second"]


@pytest.mark.anyio
async def test_several_listeners_feed_one_span_list() -> None:
    async with OtlpReceiver() as rx:
        a = await rx.listen("127.0.0.1")
        b = await rx.listen("127.0.0.2")  # all of 127/8 is loopback on Linux: stands in for a 2nd gateway
        assert a.host == "127.0.0.1" and b.host == "127.0.0.2"
        assert b.http_url == f"http://127.0.0.2:{b.http_port}" and b.grpc_url == f"http://127.0.0.2:{b.grpc_port}"
        assert rx.endpoints == [a, b]
        async with aiohttp.ClientSession() as session:
            for ep in (a, b):
                body = one_span_request(f"via-{ep.host}").SerializeToString()
                assert (await post(session, ep.http_traces_url, body, PB))[0] == 200
        async with grpc.aio.insecure_channel(f"127.0.0.2:{b.grpc_port}") as channel:
            await channel.unary_unary(GRPC_EXPORT)(one_span_request("grpc-b").SerializeToString())
    assert [s.name for s in rx.spans] == ["via-127.0.0.1", "via-127.0.0.2", "grpc-b"]


@pytest.mark.anyio
async def test_http_only_listener_serves_no_grpc() -> None:
    async with OtlpReceiver() as rx:
        ep = await rx.listen("127.0.0.1", grpc=False)
        assert ep.grpc_url == "" and ep.grpc_port == 0
        assert [listener.grpc for listener in rx._listeners] == [None]
        async with aiohttp.ClientSession() as session:
            body = one_span_request("http-only").SerializeToString()
            assert (await post(session, ep.http_traces_url, body, PB))[0] == 200
    assert [s.name for s in rx.spans] == ["http-only"]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
@pytest.mark.anyio
async def test_ipv6_listener_urls() -> None:
    async with OtlpReceiver() as rx:
        ep = await rx.listen("::1")
        assert ep.http_url == f"http://[::1]:{ep.http_port}"
        assert ep.grpc_url == f"http://[::1]:{ep.grpc_port}"
        async with aiohttp.ClientSession() as session:
            body = one_span_request("v6").SerializeToString()
            assert (await post(session, ep.http_traces_url, body, PB))[0] == 200
    assert [s.name for s in rx.spans] == ["v6"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.anyio
async def test_taken_port_raises_oserror(protocol: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with OtlpReceiver() as rx:
            with pytest.raises(OSError):
                if protocol == "http":
                    await rx.listen("127.0.0.1", http_port=port)
                else:
                    await rx.listen("127.0.0.1", grpc_port=port)
            # A failed listen leaves nothing half-open: the receiver can still listen elsewhere.
            ep = await rx.listen("127.0.0.1")
            assert rx.endpoints == [ep]


@pytest.mark.anyio
async def test_fixed_ports_are_used() -> None:
    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    http_port, grpc_port = free_port(), free_port()
    async with OtlpReceiver() as rx:
        ep = await rx.listen("127.0.0.1", http_port=http_port, grpc_port=grpc_port)
        assert (ep.http_port, ep.grpc_port) == (http_port, grpc_port)


# ---------------------------------------------------------------------------------------------------------
# Task ownership: a listener is a task of its caller's task group


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=30).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.anyio
async def test_a_listener_is_started_and_stopped_by_its_owners_task_group() -> None:
    rx = OtlpReceiver()
    with anyio.fail_after(120):  # bounds a hang only
        async with anyio.create_task_group() as tg:
            ep: Endpoints = await tg.start(rx.serve, "127.0.0.1")
            assert rx.endpoints == [ep] and len(rx._listeners) == 1
            # The real SDK exporters deliver, over both protocols, to a listener the test's task group owns.
            await run_workload(rx, HttpExporter(endpoint=ep.http_traces_url, timeout=30), batch=False)
            rx.spans.clear()
            await run_workload(rx, GrpcExporter(endpoint=ep.grpc_url, insecure=True, timeout=30), batch=True)
            tg.cancel_scope.cancel()
    assert rx._listeners == []
    assert refused("127.0.0.1", ep.http_port) and refused("127.0.0.1", ep.grpc_port)


@pytest.mark.anyio
async def test_cancelling_a_listener_frees_its_ports_for_the_next() -> None:
    rx = OtlpReceiver()
    with anyio.fail_after(120):  # bounds a hang only
        async with anyio.create_task_group() as tg:
            first: Endpoints = await tg.start(rx.serve, "127.0.0.1")
            async with aiohttp.ClientSession() as session:  # a kept-alive connection must not hold the port
                body = one_span_request("before").SerializeToString()
                assert (await post(session, first.http_traces_url, body, PB))[0] == 200
                tg.cancel_scope.cancel()
        assert refused("127.0.0.1", first.http_port)
        # The very same ports serve again at once (gRPC binds without SO_REUSEPORT: a live port would fail).
        async with anyio.create_task_group() as tg:
            again: Endpoints = await tg.start(functools.partial(
                rx.serve, "127.0.0.1", http_port=first.http_port, grpc_port=first.grpc_port))
            assert (again.http_port, again.grpc_port) == (first.http_port, first.grpc_port)
            async with aiohttp.ClientSession() as session:
                body = one_span_request("after").SerializeToString()
                assert (await post(session, again.http_traces_url, body, PB))[0] == 200
            tg.cancel_scope.cancel()
    assert [s.name for s in rx.spans] == ["before", "after"]


@pytest.mark.anyio
async def test_a_crash_inside_a_listener_propagates_to_its_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: OtlpReceiver, *args: Any) -> Any:
        raise RuntimeError("aiohttp could not be set up")

    monkeypatch.setattr(OtlpReceiver, "_http_runner", broken)
    rx = OtlpReceiver()
    owner_cancelled = False
    with anyio.fail_after(120), pytest.raises(ExceptionGroup) as raised:  # fail_after bounds a hang only
        async with anyio.create_task_group() as tg:
            ep: Endpoints = await tg.start(rx.serve, "127.0.0.1")
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                owner_cancelled = True
                raise
    assert raised.group_contains(RuntimeError, match="aiohttp could not be set up")
    assert owner_cancelled and rx._listeners == []
    assert refused("127.0.0.1", ep.http_port) and refused("127.0.0.1", ep.grpc_port)


@pytest.mark.anyio
async def test_the_receivers_own_task_group_raises_a_listeners_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: OtlpReceiver, *args: Any) -> Any:
        raise RuntimeError("aiohttp could not be set up")

    monkeypatch.setattr(OtlpReceiver, "_http_runner", broken)
    with anyio.fail_after(120), pytest.raises(ExceptionGroup) as raised:
        async with OtlpReceiver() as rx:
            await rx.listen("127.0.0.1", grpc=False)
            await anyio.sleep_forever()
    assert raised.group_contains(RuntimeError, match="aiohttp could not be set up")
    with pytest.raises(RuntimeError, match="needs `async with"):
        await rx.listen("127.0.0.1")


@pytest.mark.anyio
async def test_an_error_in_the_body_of_async_with_propagates_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with OtlpReceiver() as rx:
            await rx.listen("127.0.0.1")
            raise KeyError("the caller's own")


# ---------------------------------------------------------------------------------------------------------
# Decoding without a socket


def test_decode_spans_protobuf_and_json_give_the_same_spans() -> None:
    request = sdk_request()
    from_pb = decode_spans(request.SerializeToString(), "application/x-protobuf", 7, {"crc.suite": "s0"})
    from_json = decode_spans(json_format.MessageToJson(request).encode(), "application/json", 7,
                             {"crc.suite": "s0"})
    assert from_pb == from_json == normalize(request, 7, {"crc.suite": "s0"})
    assert len(from_pb) == 3 and {s.resource["crc.suite"] for s in from_pb} == {"s0"}
    assert {s.received_ns for s in from_pb} == {7}


@pytest.mark.parametrize(("body", "ctype", "error", "message"), [
    (b"\xff\xff\xff", "application/x-protobuf", PayloadError, "malformed protobuf"),
    (b"{", "application/json", PayloadError, "malformed JSON"),
    (b"[]", "application/json", PayloadError, "top level must be an object"),
    (b"{}", "text/plain", UnsupportedContentType, "unsupported Content-Type 'text/plain'"),
])
def test_decode_spans_refuses_what_is_not_an_export_request(body: bytes, ctype: str, error: type[Exception],
                                                             message: str) -> None:
    with pytest.raises(error, match=message):
        decode_spans(body, ctype, 0)


def test_decode_spans_of_an_empty_request_is_no_span() -> None:
    assert decode_spans(b"", "application/x-protobuf", 0) == []
    assert decode_spans(b"{}", "application/json", 0) == []


# ---------------------------------------------------------------------------------------------------------
# normalize() directly


def test_normalize_nested_any_values_and_resource_copies() -> None:
    def kv(key: str, value: common_pb2.AnyValue) -> common_pb2.KeyValue:
        return common_pb2.KeyValue(key=key, value=value)

    nested = common_pb2.AnyValue(
        kvlist_value=common_pb2.KeyValueList(
            values=[
                kv(
                    "list",
                    common_pb2.AnyValue(
                        array_value=common_pb2.ArrayValue(
                            values=[
                                common_pb2.AnyValue(bytes_value=b"\x00\x10"),
                                common_pb2.AnyValue(double_value=-0.5),
                                common_pb2.AnyValue(),
                            ]
                        )
                    ),
                )
            ]
        )
    )
    req = one_span_request(attributes=[kv("nested", nested)])
    req.resource_spans[0].resource.attributes.append(kv("service.name", common_pb2.AnyValue(int_value=5)))
    sibling = trace_pb2.Span(name="sibling", span_id=b"\x00" * 7 + b"\x02")
    req.resource_spans[0].scope_spans[0].spans.append(sibling)
    first, second = normalize(req, 123)
    assert first.attributes == {"nested": {"list": ["0010", -0.5, None]}}
    assert first.service == "5"  # a non-string service.name still names the service
    assert first.received_ns == second.received_ns == 123
    assert first.resource == second.resource and first.resource is not second.resource


def test_span_round_trips_through_to_dict() -> None:
    link = trace_pb2.Span.Link(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    req = one_span_request("rt", T0, T0 + 9, links=[link])
    (span,) = normalize(req, 1)
    assert Span.from_dict(span.to_dict()) == span


def test_reading_a_well_formed_span_at_once_agrees_with_the_field_checks() -> None:
    """`Span.from_dict` builds a span whose fields all have `to_dict`'s exact types at once (recordings are
    mostly that); any other input goes through the field-by-field checks. Both give the same span, or the
    same error, for fields of every type (the checks are what a plain mapping, not a dict, goes through)."""
    import random
    from types import MappingProxyType

    from crc.runtime.spans import _plain_span

    (span,) = normalize(one_span_request("rt", T0, T0 + 9), 1)
    good = {**span.to_dict(), "attributes": {"a": 1, "b": "x", "c": 0.5, "d": None, "e": True}}
    assert _plain_span(good) is not None and Span.from_dict(good) == Span.from_dict(MappingProxyType(good))
    odd = [None, 1, True, 2.0, 2.5, float("nan"), "x", b"x", [], [1], (), {}, {"k": 1}, {"k": [1]}, {1: 2},
           {"k": b"x"}, [{"name": "e", "time_ns": 1}], 10**30]
    rng = random.Random(7)
    fast = 0
    for _ in range(4000):
        d: dict[Any, Any] = dict(good)
        for key in rng.sample(sorted(good), rng.randint(1, 3)):
            if rng.random() < 0.2:
                del d[key]
            else:
                d[key] = rng.choice(odd)
        fast += _plain_span(d) is not None
        outcomes = []
        for form in (d, MappingProxyType(d)):
            try:
                outcomes.append(Span.from_dict(form))  # type: ignore[arg-type]
            except TypeError as e:
                outcomes.append(str(e))
        assert outcomes[0] == outcomes[1], d
    assert fast > 100  # the cases where both ways build the span are among them


@pytest.mark.anyio
async def test_span_limit_refuses_whole_batches_and_counts_them() -> None:
    async with OtlpReceiver(max_spans=3) as rx:
        ep = await rx.listen("127.0.0.1")
        two = ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(
            spans=[trace_pb2.Span(name=f"s{i}", span_id=bytes([i + 1]) * 8, trace_id=b"\x01" * 16)
                   for i in range(2)])])]).SerializeToString()
        async with aiohttp.ClientSession() as session:
            assert (await post(session, ep.http_traces_url, two, PB))[0] == 200
            status, payload, _ = await post(session, ep.http_traces_url, two, PB)
            assert status == 400 and b"at most 3 spans" in payload  # 400: exporters do not retry it
            assert (await post(session, ep.http_traces_url, one_span_request("fits").SerializeToString(), PB))[0] \
                == 200
        channel = grpc.aio.insecure_channel(ep.grpc_url.removeprefix("http://"))
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await export(two)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await channel.close()
    assert [s.name for s in rx.spans] == ["s0", "s1", "fits"] and rx.dropped == 4
    assert rx.last_rejection == "span limit: more than 3 spans; 4 dropped"


@pytest.mark.anyio
async def test_deeply_nested_json_is_a_400(receiver: tuple[OtlpReceiver, Endpoints]) -> None:
    rx, ep = receiver
    deep = '{"arrayValue": {"values": [' * 5000 + "{}" + "]}}" * 5000
    doc = ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "x", "attributes": [{"key": "k", "value": '
           + deep + "}]}]}]}]}")
    async with aiohttp.ClientSession() as session:
        status, payload, _ = await post(session, ep.http_traces_url, doc.encode(), JSON)
    assert status == 400 and "nested too deeply" in json.loads(payload)["message"]
    assert rx.spans == [] and rx.rejected == 1


@pytest.mark.anyio
async def test_idle_connections_are_closed(receiver: tuple[OtlpReceiver, Endpoints]) -> None:
    """A client that connects and then sends nothing (or stops mid-request) is hung up on, not kept."""
    _, ep = receiver
    async with aiohttp.ClientSession() as session:  # the receiver serves once a request got through
        await post(session, ep.http_traces_url, b"", PB)
    idle = await anyio.connect_tcp("127.0.0.1", ep.http_port)
    slow = await anyio.connect_tcp("127.0.0.1", ep.http_port)
    await slow.send(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    with anyio.fail_after(60):  # the keep-alive timeout is 5 s; generous for a loaded machine
        for conn in (idle, slow):
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError)):
                while True:
                    await conn.receive()
            await conn.aclose()


@pytest.mark.anyio
async def test_a_listener_stamps_its_spans_and_serves_only_its_network() -> None:
    """Where a span arrived decides its suite: the listener's stamp overrides the sender's attributes, and a
    sender outside the listener's network is refused (HTTP and gRPC)."""
    forged = ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=Resource_pb(attributes=[common_pb2.KeyValue(key="crc.suite", value=common_pb2.AnyValue(
            string_value="victim"))]),
        scope_spans=[trace_pb2.ScopeSpans(spans=[trace_pb2.Span(name="x", span_id=b"\x01" * 8,
                                                                trace_id=b"\x01" * 16)])])]).SerializeToString()
    async with OtlpReceiver() as rx:
        mine = await rx.listen("127.0.0.1", stamp={"crc.run": "r", "crc.suite": "s1"}, peers="127.0.0.0/8")
        other = await rx.listen("127.0.0.1", stamp={"crc.suite": "s0"}, peers="10.99.0.0/24")
        async with aiohttp.ClientSession() as session:
            assert (await post(session, mine.http_traces_url, forged, PB))[0] == 200
            status, payload, _ = await post(session, other.http_traces_url, forged, PB)
            assert status == 403 and b"outside this suite's network" in payload
        channel = grpc.aio.insecure_channel(other.grpc_url.removeprefix("http://"))
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await export(forged)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await channel.close()
        channel = grpc.aio.insecure_channel(mine.grpc_url.removeprefix("http://"))
        await channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")(forged)
        await channel.close()
    assert [s.resource for s in rx.spans] == [{"crc.suite": "s1", "crc.run": "r"}] * 2
    assert rx.rejected == 2 and "is not on this listener's network 10.99.0.0/24" in (rx.last_rejection or "")


@pytest.mark.anyio
async def test_span_checks_err_when_the_receiver_dropped_spans() -> None:
    """Past its span limit, no span verdict can be trusted: every span node of the test fails saying why."""
    from crc.compiler.compile import compile_file
    from crc.runtime import spanphase

    src = ('suite "s" {\n  service a {\n    image "crc/busybox:dev"\n  }\n  test "t" {\n'
           '    step x = exec a ["true"]\n    expect no span { status error }\n  }\n}\n')
    plan = compile_file("drop.cr", text=src, environ={})
    for dropped, passed in ((0, True), (7, False)):
        rx = OtlpReceiver(max_spans=3)
        rx.dropped = dropped
        phase = spanphase.SpanPhase(plan, suite="s", test="t", receiver=rx, spans=list, settle=0, deadline=0,
                                    clock_skew=0)
        [verdict] = (await phase.results()).values()
        assert verdict.passed is passed
        if not passed:
            assert "crc's OTLP receiver dropped 7 span(s) past its limit of 3 per run" in verdict.message


def test_a_stored_span_holding_bytes_is_damaged() -> None:
    """Bytes values are decoded to hex text, so a recording or report whose span holds raw bytes was damaged:
    refused when read (as a TypeError naming the field), never a traceback later (`crc spans --json`)."""
    req = one_span_request("rt", T0, T0 + 9)
    (span,) = normalize(req, 1)
    d = span.to_dict()
    d["attributes"] = {"blob": b"\x00\x01"}
    with pytest.raises(TypeError, match="attributes: a value that is not plain data"):
        Span.from_dict(d)
    d["attributes"] = {"blob": [{"nested": b"x"}]}
    with pytest.raises(TypeError, match="not plain data"):
        Span.from_dict(d)
