"""crc's own trace: one span for the run, one per suite and test, one per service start, step and check.

A step's span carries the ids of the trace crc started for the step (the `traceparent` it sent), so it is the
root of that trace and the parent of the spans the system emitted for the step; a link ties it to its test.

The trace is built from the run's node results when the run ends, with each span's real start and end
times, so instrumentation adds nothing to the hot path and cancellation cannot leave a span open. It is
exported through the OpenTelemetry SDK's own exporters: `none`, `stdout` (the SDK's console exporter) or
`otlp` (HTTP/protobuf, or gRPC when the protocol says so) to any collector, another crc's receiver included.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from crc import __version__

from .results import FAILED, PASSED, RunResult, label_of
from .tracecontext import TraceContext

EXPORTERS = ("none", "stdout", "otlp")
PROTOCOLS = ("http/protobuf", "grpc")
EXPORT_TIMEOUT = 5.0  # seconds; a missing collector must not hold the run's exit for long

# What each node kind is called in crc's trace; the label follows.
_SPAN_NAMES = {"service": "service", "step": "step", "assert": "check", "span": "span check"}


@dataclass(frozen=True, slots=True)
class TelemetryOptions:
    exporter: str = "none"
    endpoint: str | None = None  # OTLP base URL; default from OTEL_EXPORTER_OTLP_ENDPOINT
    protocol: str | None = None  # default from OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf


def resolve(options: TelemetryOptions, environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """The endpoint and protocol an `otlp` export goes to, after the OTEL_* environment defaults."""
    protocol = options.protocol or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown OTLP protocol {protocol!r} (use {' or '.join(PROTOCOLS)})")
    default = "http://localhost:4317" if protocol == "grpc" else "http://localhost:4318"
    endpoint = options.endpoint or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or default
    return endpoint.rstrip("/"), protocol


def _exporter(options: TelemetryOptions) -> Any:
    if options.exporter == "stdout":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    endpoint, protocol = resolve(options)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"), timeout=EXPORT_TIMEOUT)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=f"{endpoint}/v1/traces", timeout=EXPORT_TIMEOUT)


class _Counting(SpanExporter):
    """Wraps an exporter to learn whether the collector took the trace (the SDK only logs failures)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.failed = 0

    def export(self, spans: Any) -> Any:
        res = self.inner.export(spans)
        if res is not SpanExportResult.SUCCESS:
            self.failed += len(spans)
        return res

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


class ExportFailed(Exception):
    """The collector did not accept crc's trace."""


def export_run(result: RunResult, labels: Mapping[str, Mapping[str, Any]], options: TelemetryOptions) -> int:
    """Emit the run's trace and flush it; returns how many spans were exported (0 for `none`).

    Raises `ExportFailed` when the collector refused or could not be reached.
    """
    if options.exporter == "none":
        return 0
    if options.exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {options.exporter!r}")
    from opentelemetry.context import Context
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode, get_current_span, set_span_in_context

    class StepIds(RandomIdGenerator):
        """Random ids, except for a step's span: the ids of the trace crc started for the step, so the spans
        the system emitted in that trace hang under it."""

        step: TraceContext | None = None

        def generate_trace_id(self) -> int:
            return int(self.step.trace_id, 16) if self.step else super().generate_trace_id()

        def generate_span_id(self) -> int:
            return int(self.step.span_id, 16) if self.step else super().generate_span_id()

    ids = StepIds()
    provider = TracerProvider(resource=Resource.create({
        "service.name": "crc", "service.version": __version__, "crc.run.id": result.run_id}), id_generator=ids)
    exporter = _Counting(_exporter(options))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=512))
    tracer = provider.get_tracer("crc", __version__)
    count = 0

    def span(name: str, start: int, end: int, parent: Any, attrs: dict[str, Any], ok: bool | None,
             step: TraceContext | None = None) -> Any:
        nonlocal count
        links = []
        if step is not None:
            # The step's span roots the step's own trace; a link leads back to the test that ran it.
            links = [Link(get_current_span(parent).get_span_context())]
            parent, ids.step = Context(), step
        try:
            s = tracer.start_span(name, context=parent, start_time=max(1, start), attributes=attrs,
                                  kind=SpanKind.INTERNAL, links=links)
        finally:
            ids.step = None
        if ok is not None:
            s.set_status(Status(StatusCode.OK if ok else StatusCode.ERROR))
        s.end(end_time=max(start, end, 1))
        count += 1
        return set_span_in_context(s)

    # Parents must exist before children are started, so windows are computed first, then emitted top down.
    by_suite: dict[str, list[str]] = {}
    for node in result.nodes:
        by_suite.setdefault(str(labels.get(node, {}).get("suite")), []).append(node)
    root_ctx = span("crc run", result.started_ns, result.ended_ns, None,
                    {"crc.run.id": result.run_id, "crc.tests": len(result.tests),
                     "crc.interrupted": result.interrupted}, result.passed)
    for suite, nodes in sorted(by_suite.items()):
        rs = [result.nodes[n] for n in nodes if result.nodes[n].started_ns]
        s_start = min((r.started_ns for r in rs), default=result.started_ns)
        s_end = max((r.ended_ns for r in rs), default=result.ended_ns)
        s_ok = all(r.status not in (FAILED, "error") for r in result.nodes.values()
                   if labels.get(r.node, {}).get("suite") == suite)
        suite_ctx = span(f"suite {suite}", s_start, s_end, root_ctx, {"crc.suite": suite}, s_ok)
        tests = {t.name: t for t in result.tests if t.suite == suite}
        test_ctx: dict[str, Any] = {}
        for name, t in sorted(tests.items()):
            trs = [result.nodes[n] for n in t.nodes if n in result.nodes and result.nodes[n].started_ns]
            if not trs:
                continue
            test_ctx[name] = span(f"test {name}", min(r.started_ns for r in trs), max(r.ended_ns for r in trs),
                                  suite_ctx, {"crc.suite": suite, "crc.test": name, "crc.status": t.status},
                                  None if t.status == "skipped" else t.status == PASSED)
        for node in sorted(nodes, key=lambda n: (result.nodes[n].started_ns, n)):
            r = result.nodes[node]
            if not r.started_ns:
                continue  # skipped before it started: nothing happened to time
            lab = labels.get(node, {})
            test = lab.get("test")
            parent = test_ctx.get(str(test), suite_ctx) if test else suite_ctx
            attrs = {"crc.node": node, "crc.kind": r.kind, "crc.status": r.status, "crc.suite": suite}
            if test:
                attrs["crc.test"] = str(test)
            if lab.get("loc"):
                attrs["crc.loc"] = str(lab["loc"])
            span(f"{_SPAN_NAMES.get(r.kind, r.kind)} {label_of(labels, node)}", r.started_ns, r.ended_ns,
                 parent, attrs, r.status == PASSED if r.status != "skipped" else None,
                 TraceContext.from_dict(r.detail.get("trace")) if r.kind == "step" else None)
    provider.force_flush()
    provider.shutdown()
    if exporter.failed:
        where = "stdout" if options.exporter == "stdout" else "{} ({})".format(*resolve(options))
        raise ExportFailed(f"{exporter.failed} of {count} span(s) of crc's own trace were not accepted by {where}")
    return count
