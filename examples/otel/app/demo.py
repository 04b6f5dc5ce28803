"""A small instrumented HTTP service that emits real OpenTelemetry spans through the official OTLP
exporters. crc's examples and tests run it (image crc/demo:dev) to check span expectations against
the real SDK rather than hand-made spans.

Standard library plus the OpenTelemetry SDK only. Configuration, all from the environment:

  PORT                          listen port (default 8080)
  OTEL_SERVICE_NAME             service.name of every span (default "demo")
  OTEL_EXPORTER_OTLP_ENDPOINT   collector base URL, e.g. http://crc:4318 (http) or http://crc:4317
                                (grpc); OTEL_EXPORTER_OTLP_TRACES_ENDPOINT works as the SDK defines.
                                Neither set: no spans are exported (and the log says so).
  OTEL_EXPORTER_OTLP_PROTOCOL   "http/protobuf" (default) or "grpc"
                                (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL wins when set)
  OTEL_TRACES_EXPORTER          "otlp" (default), "console" (spans as JSON on stdout) or "none"
  OTEL_BSP_SCHEDULE_DELAY       batch processor delay in ms (default here 50, not the SDK's 5000)
  OTEL_EXPORTER_OTLP_TIMEOUT    export timeout as the SDK reads it (default here 3 s, not 10)
  OTEL_SEMCONV_STABILITY_OPT_IN "http/dup" also emits the old http.method/http.target/
                                http.status_code attributes next to the stable ones
  REDIS_URL                     redis://host:port[/db]: /orders stores each order there (raw RESP)
  DOWNSTREAM                    http://host:port of another demo instance, for /call
  DEMO_SEED                     makes order ids a deterministic sequence

Every request's spans are exported (force_flush) BEFORE its response is written, so a client that
has the response knows the spans have already reached the collector (when it is reachable).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

PORT = int(os.environ.get("PORT", "8080"))
SERVICE = os.environ.get("OTEL_SERVICE_NAME") or "demo"
REDIS_URL = os.environ.get("REDIS_URL", "")
DOWNSTREAM = os.environ.get("DOWNSTREAM", "").rstrip("/")
DUP_SEMCONV = "http/dup" in os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# Tracing setup
# --------------------------------------------------------------------------------------------
def make_exporter() -> SpanExporter | None:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint:
        return None
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    # Fail fast when the collector is away instead of holding every request for the SDK's 10 s.
    timeout = None if "OTEL_EXPORTER_OTLP_TIMEOUT" in os.environ else 3.0
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        # "host:4317" without a scheme would mean TLS to the SDK; crc's collector is plaintext.
        insecure = None
        if "://" not in endpoint and "OTEL_EXPORTER_OTLP_INSECURE" not in os.environ:
            insecure = True
        return Grpc(insecure=insecure, timeout=timeout)
    if protocol in ("http/protobuf", "http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

        return Http(timeout=timeout)
    raise SystemExit(f"demo: unsupported OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r} (grpc or http/protobuf)")


def setup_tracing() -> TracerProvider:
    # Explicit attributes win over OTEL_RESOURCE_ATTRIBUTES; OTEL_SERVICE_NAME was read above.
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    exporter = make_exporter()
    if exporter is None:
        log("tracing disabled (OTEL_TRACES_EXPORTER=none, or no OTEL_EXPORTER_OTLP_ENDPOINT)")
    else:
        delay = float(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "50"))
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay))
    trace.set_tracer_provider(provider)
    return provider


PROVIDER = setup_tracing()
TRACER = trace.get_tracer("crc.demo", "1.0")


def flush() -> None:
    PROVIDER.force_flush()


# --------------------------------------------------------------------------------------------
# Order ids: random, or a reproducible sequence when DEMO_SEED is set
# --------------------------------------------------------------------------------------------
_id_lock = threading.Lock()
_id_rng = random.Random(os.environ["DEMO_SEED"]) if os.environ.get("DEMO_SEED") else None


def new_id() -> str:
    if _id_rng is None:
        return str(uuid.uuid4())
    with _id_lock:
        return str(uuid.UUID(int=_id_rng.getrandbits(128), version=4))


# --------------------------------------------------------------------------------------------
# A minimal Redis client: RESP over a raw socket, one connection per request
# --------------------------------------------------------------------------------------------
class Redis:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise SystemExit(f"demo: REDIS_URL must look like redis://host:port, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 6379
        self.db = int(parts.path.lstrip("/") or 0)
        self.sock: socket.socket | None = None
        self.buf = b""

    def command(self, *args: str) -> object:
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=5)
            if self.db:
                self.sock.sendall(self._encode("SELECT", str(self.db)))
                self._reply()
        self.sock.sendall(self._encode(*args))
        return self._reply()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    @staticmethod
    def _encode(*args: str) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def _line(self) -> bytes:
        assert self.sock is not None
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _reply(self) -> object:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(f"redis error: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            assert self.sock is not None
            while len(self.buf) < n + 2:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("redis closed the connection")
                self.buf += chunk
            data, self.buf = self.buf[:n], self.buf[n + 2 :]
            return data.decode()
        raise RuntimeError(f"unexpected redis reply {line!r}")

    def traced(self, *args: str) -> object:
        """One command inside a CLIENT span named "redis <COMMAND>"."""
        op = args[0].upper()
        with TRACER.start_as_current_span(f"redis {op}", kind=SpanKind.CLIENT) as span:
            span.set_attributes(
                {
                    "db.system": "redis",  # pre-1.26 semantic conventions
                    "db.system.name": "redis",
                    "db.operation.name": op,
                    "db.namespace": str(self.db),
                    "db.query.text": " ".join([op, *(args[1:2]), *("?" for _ in args[2:])]),
                    "server.address": self.host,
                    "server.port": self.port,
                }
            )
            return self.command(*args)


# --------------------------------------------------------------------------------------------
# Request handling
# --------------------------------------------------------------------------------------------
class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Reply = tuple[int, dict]


def query_int(q: dict[str, list[str]], name: str, default: int | None = None) -> int:
    raw = q.get(name, [None])[0]
    if raw is None:
        if default is None:
            raise HttpError(400, f"missing query parameter {name}")
        return default
    try:
        return int(raw)
    except ValueError:
        raise HttpError(400, f"{name} must be an integer, got {raw!r}") from None


def orders(q: dict[str, list[str]]) -> Reply:
    with TRACER.start_as_current_span("validate") as span:
        time.sleep(0.005)
        try:
            sku = query_int(q, "sku", default=1)
        except HttpError as e:
            span.set_status(Status(StatusCode.ERROR, str(e)))
            raise
        span.set_attribute("order.sku", sku)
    order_id = new_id()
    order = {"status": "created", "sku": sku, "id": order_id}
    trace.get_current_span().set_attribute("order.id", order_id)
    if REDIS_URL:
        redis = Redis(REDIS_URL)
        try:
            redis.traced("SET", f"order:{order_id}", json.dumps(order, sort_keys=True))
            stored = redis.traced("GET", f"order:{order_id}")
        except (OSError, RuntimeError) as e:
            raise HttpError(502, f"redis {redis.host}:{redis.port}: {e}") from e
        finally:
            redis.close()
        if stored is None or json.loads(str(stored)) != order:
            raise HttpError(502, "redis returned something else than was stored")
    else:
        with TRACER.start_as_current_span("cache") as span:
            span.set_attribute("cache.backend", "memory")
            time.sleep(0.001)
    return 200, order


def slow(q: dict[str, list[str]]) -> Reply:
    ms = query_int(q, "ms", default=100)
    if not 0 <= ms <= 600_000:
        raise HttpError(400, "ms must be between 0 and 600000")
    with TRACER.start_as_current_span("work") as span:
        span.set_attribute("work.ms", ms)
        time.sleep(ms / 1000)
    return 200, {"status": "done", "slept_ms": ms}


class DemoFailure(RuntimeError):
    pass


def fail(q: dict[str, list[str]]) -> Reply:
    raise DemoFailure("demo failure (requested via /fail)")


def call(q: dict[str, list[str]]) -> Reply:
    if not DOWNSTREAM:
        raise HttpError(400, "DOWNSTREAM is not set")
    target = urlsplit(DOWNSTREAM)
    host, port = target.hostname or "", target.port or 80
    sku = query_int(q, "sku", default=1)
    url = f"{DOWNSTREAM}/orders?sku={sku}"
    with TRACER.start_as_current_span("GET downstream", kind=SpanKind.CLIENT) as span:
        span.set_attributes(
            {
                "http.request.method": "GET",
                "url.full": url,
                "server.address": host,
                "server.port": port,
            }
        )
        headers: dict[str, str] = {}
        propagate.inject(headers)  # traceparent of this CLIENT span: downstream's span is its child
        # No proxies from the environment: the demo talks only to what it was pointed at.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        except OSError as e:
            span.record_exception(e)
            span.set_status(Status(StatusCode.ERROR, str(e)))
            span.set_attribute("error.type", type(e).__name__)
            raise HttpError(502, f"downstream {host}:{port}: {e}") from e
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", str(status))
            raise HttpError(502, f"downstream answered {status}")
    try:
        downstream = json.loads(body)
    except ValueError:
        downstream = body.decode(errors="replace")
    return 200, {"status": "called", "downstream": downstream}


def external(q: dict[str, list[str]]) -> Reply:
    host = q.get("host", [""])[0]
    if not host:
        raise HttpError(400, "missing query parameter host")
    port = query_int(q, "port", default=443)
    # Only the span: nothing connects anywhere. Tests use it to see crc flag a hermeticity breach.
    with TRACER.start_as_current_span("GET external", kind=SpanKind.CLIENT) as span:
        span.set_attributes(
            {
                "http.request.method": "GET",
                "url.full": f"https://{host}:{port}/",
                "server.address": host,
                "server.port": port,
            }
        )
    return 200, {"status": "pretended", "host": host, "port": port}


ROUTES: dict[str, Callable[[dict[str, list[str]]], Reply]] = {
    "/orders": orders,
    "/slow": slow,
    "/fail": fail,
    "/call": call,
    "/external": external,
}


class Handler(BaseHTTPRequestHandler):
    server_version = "crc-demo/1.0"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.handle_request()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.handle_request()

    def log_message(self, format: str, *args: object) -> None:  # one line per request is ours
        pass

    def send_body(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def handle_request(self) -> None:
        start = time.monotonic()
        parts = urlsplit(self.path)
        path = parts.path or "/"
        if path == "/healthz" and self.command == "GET":
            self.send_body(200, b"ok\n", "text/plain")  # no span, no log line: probes poll this
            return

        method = self.command
        host_header = self.headers.get("Host", "")
        attrs: dict[str, str | int] = {
            "http.request.method": method,
            "url.path": path,
            "url.scheme": "http",
            "server.address": host_header.rsplit(":", 1)[0] if host_header else socket.gethostname(),
            "server.port": PORT,
            "client.address": self.client_address[0],
            "network.peer.address": self.client_address[0],
            "network.peer.port": self.client_address[1],
            "network.protocol.version": self.request_version.removeprefix("HTTP/"),
        }
        if path in ROUTES:
            attrs["http.route"] = path
        if parts.query:
            attrs["url.query"] = parts.query
        if ua := self.headers.get("User-Agent"):
            attrs["user_agent.original"] = ua
        if DUP_SEMCONV:
            attrs.update({"http.method": method, "http.target": self.path, "http.scheme": "http"})

        # Header names are case-insensitive (urllib sends "Traceparent"); the propagator's getter is not.
        parent = propagate.extract({k.lower(): v for k, v in self.headers.items()})
        span = TRACER.start_span(f"{method} {path}", context=parent, kind=SpanKind.SERVER, attributes=attrs)
        with trace.use_span(span, end_on_exit=False):
            status, payload = self.dispatch(span, method, path, parse_qs(parts.query))
        span.set_attribute("http.response.status_code", status)
        if DUP_SEMCONV:
            span.set_attribute("http.status_code", status)
        if status >= 500:  # semantic conventions: 5xx is a server error, 4xx is the client's
            span.set_status(Status(StatusCode.ERROR, payload.get("error")))  # dispatch set error.type
        span.end()
        # Export before answering: whoever sees the response can rely on the spans being sent.
        flush()
        body = (json.dumps(payload) + "\n").encode()
        self.send_body(status, body, "application/json")
        ms = (time.monotonic() - start) * 1000
        trace_id = format(span.get_span_context().trace_id, "032x")
        log(f"{method} {self.path} {status} {ms:.1f}ms trace={trace_id}")

    def dispatch(self, span: Span, method: str, path: str, q: dict[str, list[str]]) -> Reply:
        handler = ROUTES.get(path)
        if handler is None:
            return 404, {"error": f"no such path {path}"}
        if method not in ("GET", "POST"):
            return 405, {"error": f"{method} not allowed"}
        try:
            return handler(q)
        except HttpError as e:
            if e.status >= 500:
                span.set_attribute("error.type", type(e.__cause__ or e).__name__)
            return e.status, {"error": str(e)}
        except Exception as e:  # an unexpected failure is still an HTTP answer, and a recorded span
            span.record_exception(e)
            span.set_attribute("error.type", type(e).__name__)
            return 500, {"error": str(e)}


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
def main() -> None:
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    # Bind first: once the "startup" span reaches the collector, connections are already accepted.
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)

    with TRACER.start_as_current_span("startup") as span:
        span.set_attributes(
            {
                "server.port": PORT,
                "demo.redis": REDIS_URL or "",
                "demo.downstream": DOWNSTREAM or "",
            }
        )
    flush()

    def stop(signum: int, frame: object) -> None:
        log(f"received {signal.Signals(signum).name}, shutting down")
        # shutdown() waits for serve_forever() to return, so it cannot run on the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    log(f"listening on :{PORT} (service {SERVICE})")
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    PROVIDER.shutdown()  # flushes whatever is still queued
    log("stopped")
    sys.exit(0)


if __name__ == "__main__":
    main()
