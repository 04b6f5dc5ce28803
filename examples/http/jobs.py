"""A job API and its worker, for examples/http/jobs.cr: `python3 jobs.py api` or `python3 jobs.py worker`.

api     POST /jobs queues a job in Redis (with the request's trace context) and answers {"id", "status"};
        GET /jobs?id=ID answers the job's status: "queued", then "done" once the worker took it.
worker  takes jobs from the queue, one at a time, and marks them done after a short while, in a span that
        continues the trace of the request that queued the job.

Standard library plus the OpenTelemetry SDK (the crc/demo:dev image has it); spans go to OTLP/HTTP as the
OTEL_* environment says (crc sets it).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

PROVIDER = TracerProvider(resource=Resource.create({}))
PROVIDER.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(timeout=3), schedule_delay_millis=50))
trace.set_tracer_provider(PROVIDER)
TRACER = trace.get_tracer("crc.example.jobs")
REDIS = urlsplit(os.environ.get("REDIS_URL", "redis://cache:6379"))


def redis(*args: str) -> object:
    """One command on a fresh connection (RESP): enough for an example."""
    with socket.create_connection((REDIS.hostname, REDIS.port or 6379), timeout=30) as s:
        s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args))
        f = s.makefile("rb")
        line = f.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else f.read(n + 2)[:-2].decode()
        if kind == b"*":
            n = int(rest)
            items = []
            for _ in range(max(n, 0)):
                size = int(f.readline()[1:])
                items.append(f.read(size + 2)[:-2].decode())
            return items if n >= 0 else None
        if kind == b"-":
            raise RuntimeError(rest.decode())
        return rest.decode()


class Api(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def answer(self, status: int, payload: dict[str, object]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_one(self, method: str) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/healthz":
            self.answer(200, {"ok": True})
            return
        parent = propagate.extract({k.lower(): v for k, v in self.headers.items()})
        with TRACER.start_as_current_span(f"{method} {parts.path}", context=parent, kind=SpanKind.SERVER) as span:
            if method == "POST" and parts.path == "/jobs":
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                job = str(uuid.uuid4())
                carrier: dict[str, str] = {}
                propagate.inject(carrier)  # the worker continues this trace
                redis("SET", f"job:{job}", "queued")
                redis("RPUSH", "jobs", json.dumps({"id": job, "trace": carrier}))
                span.set_attribute("job.id", job)
                status, payload = 202, {"id": job, "status": "queued"}
            elif method == "GET" and parts.path == "/jobs":
                job = parse_qs(parts.query).get("id", [""])[0]
                state = redis("GET", f"job:{job}")
                status, payload = (200, {"id": job, "status": state}) if state else (404, {"error": "no such job"})
            else:
                status, payload = 404, {"error": f"no route {method} {parts.path}"}
            span.set_attribute("http.response.status_code", status)
        PROVIDER.force_flush()
        self.answer(status, payload)

    def do_GET(self) -> None:
        self.handle_one("GET")

    def do_POST(self) -> None:
        self.handle_one("POST")


def worker() -> None:
    print("worker started", flush=True)
    while True:
        got = redis("BLPOP", "jobs", "5")
        if not isinstance(got, list):
            continue
        job = json.loads(got[1])
        ctx = propagate.extract(job["trace"])
        with TRACER.start_as_current_span("process job", context=ctx, kind=SpanKind.CONSUMER) as span:
            span.set_attribute("job.id", job["id"])
            time.sleep(0.5)  # the work takes a while: the test has to wait for it
            redis("SET", f"job:{job['id']}", "done")
        PROVIDER.force_flush()


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        worker()
    else:
        ThreadingHTTPServer(("0.0.0.0", 8080), Api).serve_forever()
