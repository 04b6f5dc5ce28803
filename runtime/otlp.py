"""The embedded OTLP trace receiver: OTLP/HTTP (protobuf and JSON) and OTLP/gRPC in crc's event loop.

Every payload is normalized into `crc.runtime.spans.Span` exactly once, here. The receiver runs in the
asyncio event loop crc's anyio runtime uses (grpc.aio needs asyncio), so handlers never race each other:
a batch is decoded, appended to `spans` and announced (`on_spans`, `wait_for` waiters) without an `await`
in between, which keeps `spans` in arrival order and safe for any number of concurrent exporters.

grpc and protobuf are imported only here; crc imports this module lazily so `crc --help` stays fast. Even
then, importing aiohttp.web and protobuf costs 20-30 ms of CPU, and `crc run` would pay it before its first
container starts. So `listen()` binds its socket with the stdlib and returns at once, while a loader thread
imports the server modules; aiohttp then serves on the bound socket. Senders that connect before that wait in
the socket's listen backlog, so no span is lost.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio

from .spans import Span, SpanEvent, SpanLink

if TYPE_CHECKING:
    import grpc  # imported when a gRPC listener starts: it costs ~30 ms that HTTP-only runs need not pay
    from aiohttp import web  # imported by the loader thread, see _load_server_modules
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = ["Endpoints", "OtlpReceiver", "PayloadError", "decode_json", "decode_protobuf", "normalize"]

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
# Generous: a BatchSpanProcessor batch is ~100 KiB, but a sender with huge attributes must not be cut off.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Spans one receiver (one run) keeps, ~1 KiB each: past it whole batches are refused, counted in `dropped`,
# and every span check of the run errs saying so (its verdict could not be trusted).
MAX_SPANS = 500_000
# An HTTP connection idle this long is closed (exporters reconnect): idle sockets cannot pile up.
KEEPALIVE_TIMEOUT = 5.0

# trace_service_pb2's service, spelled out: a gRPC listener then needs no protobuf import on the critical path.
_SERVICE_NAME = "opentelemetry.proto.collector.trace.v1.TraceService"
# What the HTTP listener and the decoders import, off the event loop (see _load_server_modules).
_SERVER_MODULES = (
    "aiohttp.web",
    "google.protobuf.json_format",
    "google.protobuf.message",
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
)
# aiohttp's default; the socket listens with it before aiohttp serves, so early senders queue rather than fail.
_BACKLOG = 128
_PROTOBUF_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
_JSON_TYPE = "application/json"
# ExportTraceServiceResponse with no partial_success encodes to nothing, in both encodings.
_EMPTY_RESPONSE_PB = b""
_EMPTY_RESPONSE_JSON = b"{}"

_KINDS: dict[int, str] = {
    0: "unspecified",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}
_STATUSES: dict[int, str] = {0: "unset", 1: "ok", 2: "error"}


class PayloadError(ValueError):
    """A payload that is not a valid OTLP trace export request."""


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where one `listen()` call serves. URLs are what an OTLP exporter's endpoint setting takes."""

    host: str
    http_port: int
    grpc_port: int
    http_url: str  # base URL (OTEL_EXPORTER_OTLP_ENDPOINT style); traces go to http_url + "/v1/traces"
    grpc_url: str  # "" when this listener serves HTTP only

    @property
    def http_traces_url(self) -> str:
        """Full URL for exporters configured per signal (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT style)."""
        return self.http_url + TRACES_PATH


# ---------------------------------------------------------------------------------------------------------
# Normalization (the hot path: keep per-span work to attribute reads and one Span construction)


def _any_value(v: Any) -> Any:
    """AnyValue -> plain Python. Ordered by how often each kind appears in real instrumentation."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "bool_value":
        return v.bool_value
    if which == "double_value":
        return v.double_value
    if which == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return v.bytes_value.hex()
    return None  # an empty AnyValue is legal OTLP and means "no value"


def _attributes(kvs: Any) -> dict[str, Any]:
    """KeyValue list -> dict. Scalars are inlined: a call per attribute is measurable at ~100k spans/s."""
    out: dict[str, Any] = {}
    if not kvs:
        return out
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        if which == "string_value":
            out[kv.key] = v.string_value
        elif which == "int_value":
            out[kv.key] = v.int_value
        elif which == "bool_value":
            out[kv.key] = v.bool_value
        elif which == "double_value":
            out[kv.key] = v.double_value
        else:
            out[kv.key] = _any_value(v)
    return out


def normalize(request: ExportTraceServiceRequest, received_ns: int,
              stamp: Mapping[str, str] | None = None) -> list[Span]:
    """Turn one decoded export request into `Span`s, in payload order, all stamped with `received_ns`;
    `stamp` overrides resource attributes (the listener's `crc.run`/`crc.suite`, whatever the sender said)."""
    out: list[Span] = []
    append = out.append
    kinds = _KINDS
    statuses = _STATUSES
    for rs in request.resource_spans:
        resource = _attributes(rs.resource.attributes)
        if stamp:
            resource.update(stamp)
        service = resource.get("service.name", "")
        if not isinstance(service, str):
            service = str(service)
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for sp in ss.spans:
                parent = sp.parent_span_id
                status = sp.status
                events: tuple[SpanEvent, ...] = ()
                links: tuple[SpanLink, ...] = ()
                if sp.events:
                    events = tuple(
                        SpanEvent(e.name, e.time_unix_nano, _attributes(e.attributes)) for e in sp.events
                    )
                if sp.links:
                    links = tuple(
                        SpanLink(ln.trace_id.hex(), ln.span_id.hex(), _attributes(ln.attributes))
                        for ln in sp.links
                    )
                append(
                    Span(
                        sp.trace_id.hex(),
                        sp.span_id.hex(),
                        parent.hex() if parent else None,
                        sp.name,
                        kinds.get(sp.kind, "unspecified"),
                        statuses.get(status.code, "unset"),
                        status.message,
                        sp.start_time_unix_nano,
                        sp.end_time_unix_nano,
                        service,
                        _attributes(sp.attributes),
                        # Each span gets its own copy: Span is frozen but dicts are not, and one consumer
                        # mutating a shared resource dict would silently change every sibling span.
                        dict(resource),
                        scope,
                        events,
                        links,
                        received_ns,
                    )
                )
    return out


# ---------------------------------------------------------------------------------------------------------
# Decoding


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    """Parse a binary `ExportTraceServiceRequest`; raises `PayloadError` when it is not one."""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise PayloadError(f"malformed protobuf ExportTraceServiceRequest: {exc}") from exc
    return req


_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


def _fix_id(obj: dict[str, Any], key: str) -> None:
    """OTLP/JSON spells ids in hex, proto3 JSON (what json_format reads) in base64: convert hex ids.

    Padded base64 of an 8- or 16-byte id always contains '=', so a hex-looking string is never a valid
    base64 id; that lets us also accept `MessageToJson` output, which keeps base64 ids. Anything else is
    refused here, because json_format's base64 decoder silently drops characters it does not know.
    """
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        return
    if _HEX.fullmatch(value):
        obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
        return
    try:
        base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise PayloadError(f"malformed OTLP/JSON: {key} {value!r} is neither hex nor base64") from exc


def _dicts(value: Any) -> Iterable[dict[str, Any]]:
    if isinstance(value, list):
        return (x for x in value if isinstance(x, dict))
    return ()


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON export request (hex ids, camelCase or snake_case keys, enum names or ints)."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"malformed JSON: {exc}") from exc
    except RecursionError as exc:  # nested AnyValues (or any JSON) deeper than the parser recurses
        raise PayloadError("malformed OTLP/JSON: nested too deeply") from exc
    if not isinstance(doc, dict):
        raise PayloadError("malformed OTLP/JSON: the top level must be an object")
    for rs in _dicts(doc.get("resourceSpans", doc.get("resource_spans"))):
        for ss in _dicts(rs.get("scopeSpans", rs.get("scope_spans"))):
            for sp in _dicts(ss.get("spans")):
                for key in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"):
                    _fix_id(sp, key)
                for ln in _dicts(sp.get("links")):
                    for key in ("traceId", "trace_id", "spanId", "span_id"):
                        _fix_id(ln, key)
    req = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(doc, req, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise PayloadError(f"malformed OTLP/JSON: {exc}") from exc
    return req


def _status_pb(code: int, message: str) -> bytes:
    """A google.rpc.Status (what OTLP/HTTP error bodies carry), hand-encoded to need no extra module."""
    msg = message.encode("utf-8")
    out = bytearray(b"\x08")  # field 1 (code), varint
    out += _varint(code)
    out += b"\x12"  # field 2 (message), length-delimited
    out += _varint(len(msg))
    out += msg
    return bytes(out)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_GRPC_INVALID_ARGUMENT = 3  # google.rpc.Code, also what OTLP/HTTP error bodies use


# ---------------------------------------------------------------------------------------------------------
# The receiver


class OtlpReceiver:
    """Collects spans sent over OTLP/HTTP and OTLP/gRPC.

    `spans` holds everything received, in arrival order; `rejected` counts refused payloads (malformed
    bodies, unsupported content types). `on_spans`, if given, is called in the event loop with each accepted
    non-empty batch, right after the batch is appended to `spans`. At most `max_spans` are kept: later
    batches are refused whole and their spans counted in `dropped`.
    """

    def __init__(self, *, on_spans: Callable[[list[Span]], None] | None = None, max_spans: int = MAX_SPANS) -> None:
        self.spans: list[Span] = []
        self.max_spans = max_spans
        self.dropped: int = 0
        self.rejected: int = 0
        self.last_rejection: str | None = None  # why the latest refused payload was refused, for reports
        self.batches: int = 0
        self.endpoints: list[Endpoints] = []
        self._on_spans = on_spans
        self._arrival: anyio.Event | None = None  # created on demand by waiters, replaced on each arrival
        self._runner: web.AppRunner | None = None
        self._sites: list[web.BaseSite] = []
        self._socks: list[socket.socket] = []  # every HTTP socket bound; aclose() closes them, served or not
        self._serving: list[asyncio.Task[None]] = []  # one per listen(): hands its socket to aiohttp
        self._loader: threading.Thread | None = None  # imports the server modules, see _start_loader
        self._loaded: asyncio.Future[None] | None = None  # settled by the loader thread
        self._grpc_servers: list[grpc.aio.Server] = []
        self._setup_lock = asyncio.Lock()  # one AppRunner for all sockets, set up by the first to need it
        # Per HTTP port: the resource attributes its spans get, and the senders it accepts (see listen()).
        self._http_scope: dict[int, tuple[Mapping[str, str] | None, _Peers]] = {}
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def listen(self, host: str, *, http_port: int = 0, grpc_port: int = 0, grpc: bool = True,
                     stamp: Mapping[str, str] | None = None, peers: str | None = None) -> Endpoints:
        """Serve OTLP/HTTP and (unless `grpc` is false) OTLP/gRPC on `host` (port 0 picks a free port) and
        return the endpoints.

        Spans received here get `stamp` as resource attributes, overriding what the sender set: which suite
        a span belongs to is decided by where it arrived, never by what a container claims. With `peers` (a
        network such as "172.18.0.0/16"), only senders with an address in it are served; others are refused
        (HTTP 403, gRPC PERMISSION_DENIED) and counted in `rejected`.

        The HTTP socket is bound and listening on return; aiohttp starts serving on it shortly after, in
        the background (until then connections queue in the backlog). Call once per address to serve on
        several (e.g. each Docker network's gateway IP). Raises `OSError` when a port cannot be bound.
        """
        if self._closed:
            raise RuntimeError("OtlpReceiver is closed")
        allowed = ipaddress.ip_network(peers, strict=False) if peers else None
        sock = _bind_tcp(host, http_port)
        bound_grpc = 0
        if grpc:
            try:
                server, bound_grpc = await self._start_grpc(host, grpc_port, stamp, allowed)
            except BaseException:
                sock.close()
                raise
            if self._closed:  # aclose() ran while gRPC was starting and has not seen this server
                sock.close()
                await server.stop(None)
                raise RuntimeError("OtlpReceiver is closed")
            self._grpc_servers.append(server)
        self._socks.append(sock)
        http_port = sock.getsockname()[1]
        self._http_scope[http_port] = (dict(stamp) if stamp else None, allowed)
        netloc_host = f"[{host}]" if ":" in host else host
        # After gRPC, not before: the loader thread would otherwise compete with grpc's import for the GIL.
        if self._loaded is None:
            self._start_loader()
        where = f"{netloc_host}:{http_port}"
        self._serving.append(asyncio.get_running_loop().create_task(self._serve(sock, where), name=f"otlp {where}"))
        ep = Endpoints(
            host=host,
            http_port=http_port,
            grpc_port=bound_grpc,
            http_url=f"http://{netloc_host}:{http_port}",
            grpc_url=f"http://{netloc_host}:{bound_grpc}" if grpc else "",
        )
        self.endpoints.append(ep)
        return ep

    def _start_loader(self) -> None:
        """Import the HTTP server and protobuf modules in a thread of their own.

        The event loop then spends that time waiting on the Docker engine instead. A dedicated thread, not
        a pooled one, so that aclose() can join it and leave no thread behind.
        """
        loop = asyncio.get_running_loop()
        loaded: asyncio.Future[None] = loop.create_future()

        def load() -> None:
            error: Exception | None = None
            try:
                _load_server_modules()
            except Exception as exc:
                error = exc
            try:
                loop.call_soon_threadsafe(_settle, loaded, error)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass

        self._loaded = loaded
        self._loader = threading.Thread(target=load, name="crc-otlp-loader", daemon=True)
        self._loader.start()

    async def _serve(self, sock: socket.socket, where: str) -> None:
        """Start aiohttp on a socket bound by listen(), once the loader thread has imported it."""
        assert self._loaded is not None
        try:
            await self._loaded
            from aiohttp import web

            async with self._setup_lock:
                if self._closed:  # aclose() closes the socket
                    return
                if self._runner is None:
                    app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
                    app.router.add_post(TRACES_PATH, self._http_export)
                    # No access log: one log record per export costs more than decoding a small batch. Short
                    # shutdown grace: the exporters are the system under test, crc is done with them then.
                    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                                           keepalive_timeout=KEEPALIVE_TIMEOUT)
                    await runner.setup()
                    self._runner = runner
                site = web.SockSite(self._runner, sock, backlog=_BACKLOG)
                await site.start()
                self._sites.append(site)
        except Exception:
            # Nothing awaits this task to raise to. Close the socket so that senders are refused instead
            # of waiting in the backlog until they time out.
            sock.close()
            if not self._closed:
                log.exception("crc's OTLP/HTTP receiver could not start serving on %s", where)

    async def _start_grpc(self, host: str, port: int, stamp: Mapping[str, str] | None,
                          allowed: _Peers) -> tuple[grpc.aio.Server, int]:
        import grpc

        scope = dict(stamp) if stamp else None

        async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._grpc_export(request, context, scope, allowed)

        handler = grpc.method_handlers_generic_handler(
            _SERVICE_NAME,
            {
                # No (de)serializers: raw bytes in and out, so a malformed message reaches us (and is
                # counted and answered INVALID_ARGUMENT) instead of failing inside grpc as INTERNAL.
                "Export": grpc.unary_unary_rpc_method_handler(export),
            },
        )
        server = grpc.aio.server(
            handlers=[handler],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                # grpc enables SO_REUSEPORT by default: two runs could then share a port and steal each
                # other's spans. A taken port must fail loudly instead.
                ("grpc.so_reuseport", 0),
            ],
        )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc reports bind failures as RuntimeError
            raise OSError(f"cannot serve OTLP/gRPC on {address}: {exc}") from exc
        if not bound:  # older grpc returns 0 instead of raising
            raise OSError(f"cannot serve OTLP/gRPC on {address}")
        await server.start()
        return server, bound

    async def aclose(self) -> None:
        """Stop every listener and wake all `wait_for` callers. Received spans stay available.

        Also right after listen(): it then waits for the loader thread (a thread cannot be interrupted
        mid-import), so that no thread and no socket outlives the receiver.
        """
        if self._closed:
            return
        self._closed = True
        # Shielded: once closed, a second aclose() returns at once, so this one must finish whatever its caller's
        # cancellation, or listeners, sockets and the loader thread would be left behind.
        with anyio.CancelScope(shield=True):
            # asyncio.wait, not await: cancelling aclose must not cancel a serving task in the middle of
            # handing its socket to aiohttp. Once closed, a task that has not started serving returns.
            if self._serving:
                await asyncio.wait(self._serving)
            self._serving.clear()
            servers, self._grpc_servers = self._grpc_servers, []
            for server in servers:
                await server.stop(grace=0.5)
            for site in self._sites:
                await site.stop()
            self._sites.clear()
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
            for sock in self._socks:  # those never served; closing twice is harmless
                sock.close()
            self._socks.clear()
            if self._loader is not None:
                self._loader.join()  # it has settled _loaded, which the serving tasks awaited: it is exiting
                self._loader = None
        self._notify()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- waiting -----------------------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[Sequence[Span]], bool], timeout: float | None) -> bool:
        """Wait until `predicate(spans)` holds; re-evaluated on each arriving batch, never by polling.

        Returns whether it held before `timeout` seconds passed (None waits forever) or the receiver
        closed.
        """
        if predicate(self.spans):
            return True
        with anyio.move_on_after(timeout):
            while not self._closed:
                if self._arrival is None:
                    self._arrival = anyio.Event()
                await self._arrival.wait()
                if predicate(self.spans):
                    return True
        return predicate(self.spans)

    def _notify(self) -> None:
        event, self._arrival = self._arrival, None
        if event is not None:
            event.set()

    # -- ingest ------------------------------------------------------------------------------------------

    def _accept(self, request: ExportTraceServiceRequest, received_ns: int,
                stamp: Mapping[str, str] | None = None) -> int:
        """Normalize and publish one batch; -1 when it would pass `max_spans` (refused, counted in `dropped`).
        Synchronous on purpose: no other handler interleaves."""
        batch = normalize(request, received_ns, stamp)
        if not batch:
            return 0
        if len(self.spans) + len(batch) > self.max_spans:
            if not self.dropped:  # one warning, not one per refused batch
                log.warning("OTLP: more than %d spans in this run: further batches are refused", self.max_spans)
            self.dropped += len(batch)
            self.rejected += 1
            self.last_rejection = f"span limit: more than {self.max_spans} spans; {self.dropped} dropped"
            return -1
        self.spans.extend(batch)
        self.batches += 1
        if self._on_spans is not None:
            try:
                self._on_spans(batch)
            except Exception:  # a consumer bug must not turn into an export failure for the sender
                log.exception("on_spans callback failed")
        self._notify()
        return len(batch)

    def _reject(self, transport: str, reason: str) -> None:
        self.rejected += 1
        self.last_rejection = f"OTLP/{transport}: {reason}"
        log.warning("OTLP/%s payload rejected: %s", transport, reason)

    async def _http_export(self, request: web.Request) -> web.Response:
        from aiohttp import web  # loaded before serving started: a dict lookup

        ctype = request.content_type
        is_json = ctype == _JSON_TYPE
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        stamp, allowed = self._http_scope.get(sockname[1] if sockname else -1, (None, None))
        peer = request.remote or ""
        if allowed is not None and not _peer_in(peer, allowed):
            self._reject("HTTP", f"sender {peer} is not on this listener's network {allowed}")
            return _http_error(403, "senders outside this suite's network are not served", is_json)
        if not is_json and ctype not in _PROTOBUF_TYPES:
            self._reject("HTTP", f"unsupported Content-Type {ctype!r}")
            hint = "use application/x-protobuf or application/json"
            return _http_error(415, f"unsupported Content-Type {ctype!r}; {hint}", False)
        try:
            # aiohttp undoes Content-Encoding (gzip, deflate) itself; a corrupt stream raises here.
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._reject("HTTP", "payload too large")
            return _http_error(413, f"payload larger than {MAX_MESSAGE_BYTES} bytes", is_json)
        except Exception as exc:  # a corrupt gzip stream and the like: a bad body, not a bad receiver
            cause = exc.__cause__ or exc  # aiohttp wraps the decoder's error, whose .message reads best
            reason = f"unreadable body: {getattr(cause, 'message', None) or cause}"
            self._reject("HTTP", reason)
            # The connection is mid-body in an unknown state: mark the payload done (else aiohttp drains
            # it, re-raises and logs "Unhandled exception") and tell the client not to reuse the connection.
            request.content.feed_eof()
            resp = _http_error(400, reason, is_json)
            resp.force_close()
            return resp
        received_ns = time.time_ns()
        try:
            decoded = decode_json(body) if is_json else decode_protobuf(body)
        except PayloadError as exc:
            self._reject("HTTP", str(exc))
            return _http_error(400, str(exc), is_json)
        if self._accept(decoded, received_ns, stamp) < 0:  # 400, not 429 or 503: exporters must not retry
            return _http_error(400, f"crc keeps at most {self.max_spans} spans per run", is_json)
        if is_json:
            return web.Response(body=_EMPTY_RESPONSE_JSON, content_type=_JSON_TYPE)
        return web.Response(body=_EMPTY_RESPONSE_PB, content_type="application/x-protobuf")

    async def _grpc_export(self, request: bytes, context: grpc.aio.ServicerContext,
                           stamp: Mapping[str, str] | None = None, allowed: _Peers = None) -> bytes:
        import grpc

        if allowed is not None:
            peer = _grpc_peer_ip(context.peer())
            if not _peer_in(peer, allowed):
                self._reject("gRPC", f"sender {peer} is not on this listener's network {allowed}")
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "senders outside this suite's network")
        received_ns = time.time_ns()
        try:
            decoded = decode_protobuf(request)
        except PayloadError as exc:
            self._reject("gRPC", str(exc))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return _EMPTY_RESPONSE_PB  # not reached: abort() raises
        if self._accept(decoded, received_ns, stamp) < 0:  # not RESOURCE_EXHAUSTED: exporters would retry it
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"crc keeps at most {self.max_spans} spans")
        return _EMPTY_RESPONSE_PB


_Peers = ipaddress.IPv4Network | ipaddress.IPv6Network | None


def _peer_in(peer: str, allowed: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """Whether a sender's address (as the socket reports it) lies in `allowed`."""
    try:
        return ipaddress.ip_address(peer.split("%", 1)[0]) in allowed
    except ValueError:
        return False


def _grpc_peer_ip(peer: str) -> str:
    """The address in a gRPC peer string: `ipv4:172.18.0.2:5000`, `ipv6:[fd00::2]:5000`."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest[1:].split("]", 1)[0] if rest.startswith("[") else rest.rsplit(":", 1)[0]
    return rest.rsplit(":", 1)[0]


def _http_error(status: int, message: str, as_json: bool) -> web.Response:
    """OTLP/HTTP error response: a google.rpc.Status in the request's encoding."""
    from aiohttp import web

    if as_json:
        body = json.dumps({"code": _GRPC_INVALID_ARGUMENT, "message": message}).encode()
        return web.Response(status=status, body=body, content_type=_JSON_TYPE)
    return web.Response(
        status=status,
        body=_status_pb(_GRPC_INVALID_ARGUMENT, message),
        content_type="application/x-protobuf",
    )


def _load_server_modules() -> None:
    """Import what serving and decoding need; runs in the loader thread.

    Once crc's own modules are loaded, these share no unloaded module with `import grpc`, which listen()
    may run on the event loop thread meanwhile, so the two imports cannot deadlock on import locks.
    """
    for name in _SERVER_MODULES:
        importlib.import_module(name)


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _bind_tcp(host: str, port: int) -> socket.socket:
    """Bind and listen on our own socket, so the port is known, and senders can connect, before aiohttp runs."""
    # An ASCII host as bytes: getaddrinfo would otherwise import the idna codec (~1 ms) to encode it,
    # which for ASCII names and IP addresses changes nothing.
    infos = socket.getaddrinfo(
        host.encode("ascii") if host.isascii() else host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        # SO_REUSEADDR only skips TIME_WAIT leftovers; unlike SO_REUSEPORT it never shares a live port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock

