"""OTLP ingest rate of crc's embedded receiver, fed by the official OpenTelemetry exporters over loopback.

The receiver runs in its own process (its own GIL, like crc's loop beside the SDKs in the containers); this
process generates spans with an SDK TracerProvider + BatchSpanProcessor(max_export_batch_size=512) and
exports them over OTLP/HTTP (protobuf) and OTLP/gRPC. Per protocol it prints one line:

    end-to-end: first span created -> last batch acknowledged, all producer processes together
    sdk-only:   the same producers with an exporter that encodes like OTLP but sends nothing, measured
                right before; ratio = end-to-end rate / sdk-only rate (1.0: transport + receiver are free)
    receiver:   spans / CPU seconds the receiver process spent (all its threads) = its ingest capacity

Goal: the receiver ingests >= 20k spans/s (checked on its CPU-based capacity). The end-to-end figure is
bounded by the Python SDK itself (span creation + OTLP encoding cost ~45 us/span per producer core), which
the `sdk-only` line measures; on a 2-core machine that ceiling is itself near 20k spans/s.

Usage: python benchmarks/ingest.py [--spans N] [--smoke] [--producers K] [--protocols http,grpc] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing as mp
import pstats
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

GOAL_SPANS_PER_S = 20_000
BATCH = 512


@dataclass(frozen=True)
class ReceiverStats:
    spans: int
    batches: int
    rejected: int
    cpu_s: float  # receiver process CPU time between "reset" and "done"


# ---------------------------------------------------------------------------------------------------------
# Receiver process


def _receiver_main(conn: Connection, profile: bool) -> None:
    """Entry point of the receiver process: serve on loopback, answer commands from `conn`."""
    import anyio
    from crc.runtime.otlp import OtlpReceiver

    async def serve() -> None:
        async with OtlpReceiver() as rx:
            ep = await rx.listen("127.0.0.1")
            conn.send((ep.http_traces_url, ep.grpc_url))
            cpu0 = time.process_time()
            while True:
                cmd, arg = await anyio.to_thread.run_sync(conn.recv)
                if cmd == "reset":
                    rx.spans.clear()
                    rx.batches = rx.rejected = 0
                    cpu0 = time.process_time()
                    conn.send("ok")
                elif cmd == "expect":
                    ok = await rx.wait_for(lambda spans, want=int(arg): len(spans) >= want, timeout=120)
                    cpu = time.process_time() - cpu0
                    conn.send((ok, ReceiverStats(len(rx.spans), rx.batches, rx.rejected, cpu)))
                else:
                    return

    if not profile:
        anyio.run(serve)
        return
    prof = cProfile.Profile()
    prof.enable()
    anyio.run(serve)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    conn.send(out.getvalue())


# ---------------------------------------------------------------------------------------------------------
# Producer (this process)


def _emit(exporter: Any, n: int) -> float:
    """Create `n` spans (traces of 10: a server span and 9 children) and flush them; returns seconds."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": "bench", "deployment.environment": "ci"})
    provider = TracerProvider(resource=resource)
    # Queue as large as the run: the benchmark measures throughput, not the SDK's drop policy.
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_export_batch_size=BATCH, max_queue_size=max(n, 2048))
    )
    tracer = provider.get_tracer("crc.benchmarks.ingest")
    attrs: dict[str, Any] = {
        "http.method": "GET",
        "http.route": "/orders/{id}",
        "http.status_code": 200,
        "retry": False,
    }
    t0 = time.perf_counter()
    made = 0
    while made < n:
        root = tracer.start_span("GET /orders", kind=trace.SpanKind.SERVER, attributes=attrs)
        made += 1
        ctx = trace.set_span_in_context(root)
        for i in range(min(9, n - made)):
            child_attrs: dict[str, Any] = {"db.statement": "SELECT ?", "i": i}
            child = tracer.start_span("db.query", context=ctx, attributes=child_attrs)
            child.end()
            made += 1
        root.end()
    provider.force_flush(timeout_millis=120_000)
    elapsed = time.perf_counter() - t0
    provider.shutdown()
    return elapsed


class _NullExporter:
    """Encodes like the OTLP exporters do, sends nothing: the SDK-side cost without any transport."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.sdk.trace.export import SpanExportResult

        encode_spans(spans).SerializeToString()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _exporter(protocol: str, http_url: str, grpc_url: str) -> Any:
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

        return Http(endpoint=http_url, timeout=60)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

    return Grpc(endpoint=grpc_url, insecure=True, timeout=60)


def _producer_main(conn: Connection, protocol: str, http_url: str, grpc_url: str, n: int, start: Any) -> None:
    """Entry point of a producer process: wait for the common start, emit `n` spans, report seconds."""
    exporter = _NullExporter() if protocol == "none" else _exporter(protocol, http_url, grpc_url)
    conn.send("ready")
    start.wait()
    conn.send(_emit(exporter, n))


def _run_producers(
    ctx: Any, protocol: str, http_url: str, grpc_url: str, n: int, producers: int
) -> float:
    """Run `producers` processes emitting `n` spans in all, started together; returns wall seconds."""
    start = ctx.Event()
    share = [n // producers + (1 if i < n % producers else 0) for i in range(producers)]
    pipes, procs = [], []
    for k in share:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_producer_main, args=(child, protocol, http_url, grpc_url, k, start))
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    for parent in pipes:  # every producer has imported the SDK and built its exporter: start the clock
        parent.recv()
    t0 = time.perf_counter()
    start.set()
    for parent in pipes:
        parent.recv()
    wall = time.perf_counter() - t0
    for proc in procs:
        proc.join(timeout=30)
    return wall


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when a protocol misses the goal or loses spans."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=50_000, help="spans per protocol (default 50000)")
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI (2000 spans, no goal check)")
    ap.add_argument("--protocols", default="http,grpc", help="comma-separated subset of http,grpc")
    ap.add_argument(
        "--producers", type=int, default=2, help="exporting processes, like services in a test (default 2)"
    )
    ap.add_argument("--profile", action="store_true", help="cProfile the receiver process, print hot spots")
    args = ap.parse_args(argv)
    n = 2_000 if args.smoke else args.spans
    producers = max(1, args.producers)

    ctx = mp.get_context("spawn")  # clean interpreters: no fork of a process with SDK or grpc threads
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_receiver_main, args=(child, args.profile), daemon=True)
    proc.start()
    http_url, grpc_url = parent.recv()
    print(f"{n} spans per protocol, {producers} producer process(es), BatchSpanProcessor batches of {BATCH}")

    failed = False
    for protocol in [p.strip() for p in args.protocols.split(",") if p.strip()]:
        # Baseline right before each protocol run, so the ratio compares neighbours on a noisy machine:
        # the same producers with an exporter that encodes like OTLP but sends nothing.
        sdk_s = _run_producers(ctx, "none", http_url, grpc_url, n, producers)
        parent.send(("reset", None))
        parent.recv()
        e2e_s = _run_producers(ctx, protocol, http_url, grpc_url, n, producers)
        parent.send(("expect", n))
        ok, stats = parent.recv()
        capacity = stats.spans / stats.cpu_s if stats.cpu_s else float("inf")
        print(
            f"{protocol:<4} {stats.spans} spans"
            f" | end-to-end {e2e_s:5.2f} s = {n / e2e_s:7,.0f} spans/s"
            f" | sdk-only {sdk_s:5.2f} s = {n / sdk_s:7,.0f} spans/s, ratio {sdk_s / e2e_s:.2f}"
            f" | receiver CPU {stats.cpu_s:4.2f} s = {capacity:7,.0f} spans/s"
            f" | {stats.batches} batches, {stats.rejected} rejected"
        )
        if not ok or stats.spans != n or stats.rejected:
            print(f"  !! {protocol}: expected {n} spans, got {stats.spans}", file=sys.stderr)
            failed = True
        elif not args.smoke and capacity < GOAL_SPANS_PER_S:
            print(f"  !! {protocol}: receiver under {GOAL_SPANS_PER_S:,} spans/s", file=sys.stderr)
            failed = True

    parent.send(("stop", None))
    if args.profile:
        print(parent.recv())
    proc.join(timeout=30)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
