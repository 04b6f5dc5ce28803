"""The embedded OTLP trace receiver: OTLP/HTTP (protobuf and JSON) and OTLP/gRPC in crc's event loop.

Each listener is a task that its caller's task group owns: `ep = await tg.start(receiver.serve, host)` binds
the ports, reports the endpoints through `task_status.started(...)`, serves until the task is cancelled (or
the receiver closed), and frees the ports before it returns. A crash in a listener propagates to its owner.
`async with OtlpReceiver() as rx: await rx.listen(host)` is the same with the receiver's own task group.

Payloads are turned into `crc.runtime.spans.Span` by the pure functions of `crc.runtime.otlpdecode`; this
module only serves. It runs in the asyncio event loop crc's anyio runtime uses (grpc.aio needs asyncio), so
handlers never race each other: a batch is decoded, appended to `spans` and announced (`on_spans`, `wait_for`
waiters) without an `await` in between, which keeps `spans` in arrival order and safe for any number of
concurrent exporters.

grpc and protobuf are imported only when serving; crc imports this module lazily so `crc --help` stays fast.
Even then, importing aiohttp.web and protobuf costs 20-30 ms of CPU, and `crc run` would pay it before its
first container starts. So a listener binds its socket with the stdlib and reports it started at once; the
server modules are then imported in a worker thread (`anyio.to_thread`) and aiohttp serves on the bound socket.
Senders that connect before that wait in the socket's listen backlog, so no span is lost.
"""

from __future__ import annotations

import functools
import importlib
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Self

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .otlpdecode import (
    JSON_TYPE,
    PROTOBUF_TYPES,
    PayloadError,
    decode_json,
    decode_protobuf,
    decode_spans,
    normalize,
)
from .spans import Span

if TYPE_CHECKING:
    import grpc  # imported when a gRPC listener starts: it costs ~30 ms that HTTP-only runs need not pay
    from aiohttp import web  # imported in a worker thread, see _load_server_modules

__all__ = ["Endpoints", "OtlpReceiver", "PayloadError", "decode_json", "decode_protobuf", "decode_spans",
           "normalize"]

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
# ExportTraceServiceResponse with no partial_success encodes to nothing, in both encodings.
_EMPTY_RESPONSE_PB = b""
_EMPTY_RESPONSE_JSON = b"{}"
_PROTOBUF_TYPE = "application/x-protobuf"  # what gRPC carries, and what OTLP/HTTP error bodies are


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where one listener serves. URLs are what an OTLP exporter's endpoint setting takes."""

    host: str
    http_port: int
    grpc_port: int
    http_url: str  # base URL (OTEL_EXPORTER_OTLP_ENDPOINT style); traces go to http_url + "/v1/traces"
    grpc_url: str  # "" when this listener serves HTTP only

    @property
    def http_traces_url(self) -> str:
        """Full URL for exporters configured per signal (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT style)."""
        return self.http_url + TRACES_PATH



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


@dataclass(eq=False)
class _Listener:
    """One `serve()` task's state: what it must close when it stops."""

    sock: socket.socket  # the HTTP socket, bound before serving: senders queue in its backlog meanwhile
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)  # cancelled by aclose()
    stopped: anyio.Event = field(default_factory=anyio.Event)  # set once every port is free again
    grpc: grpc.aio.Server | None = None
    http: web.AppRunner | None = None  # None until aiohttp serves on `sock`

    async def stop(self) -> None:
        """Stop serving and free the ports (short grace: crc is done with the exporters by then)."""
        if self.grpc is not None:
            await self.grpc.stop(grace=0.5)
        if self.http is not None:
            await self.http.cleanup()  # stops the site, closes its connections
        self.sock.close()  # aiohttp has closed it when it served; closing twice is harmless


class OtlpReceiver:
    """Collects spans sent over OTLP/HTTP and OTLP/gRPC, from any number of listeners (`serve`).

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
        self._listeners: list[_Listener] = []  # those serving now
        self._loading: anyio.Lock | None = None  # the first listener to need the server modules imports them
        self._loaded = False
        self._tg: TaskGroup | None = None  # the task group of `async with`, which listen() starts listeners in
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def serve(self, host: str, *, http_port: int = 0, grpc_port: int = 0, grpc: bool = True,
                    stamp: Mapping[str, str] | None = None, peers: str | None = None,
                    task_status: TaskStatus[Endpoints] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve OTLP/HTTP and (unless `grpc` is false) OTLP/gRPC on `host` (port 0 picks a free port) until
        cancelled or the receiver is closed; start it with `endpoints = await tg.start(receiver.serve, host)`.

        Spans received here get `stamp` as resource attributes, overriding what the sender set: which suite
        a span belongs to is decided by where it arrived, never by what a container claims. With `peers` (a
        network such as "172.18.0.0/16"), only senders with an address in it are served; others are refused
        (HTTP 403, gRPC PERMISSION_DENIED) and counted in `rejected`.

        The HTTP socket is bound and listening when the endpoints are reported; aiohttp serves on it shortly
        after (until then connections queue in the backlog). Start one per address to serve on several
        (e.g. each Docker network's gateway IP). An `OSError` when a port cannot be bound is raised to the
        starter; a failure after the start propagates to the task group. The ports are free on return.
        """
        if self._closed:
            raise RuntimeError("OtlpReceiver is closed")
        allowed = ipaddress.ip_network(peers, strict=False) if peers else None
        scope = dict(stamp) if stamp else None
        listener = _Listener(_bind_tcp(host, http_port))
        self._listeners.append(listener)
        started = False
        try:
            with listener.scope:
                bound_grpc = 0
                if grpc:
                    bound_grpc = await self._start_grpc(listener, host, grpc_port, scope, allowed)
                netloc_host = f"[{host}]" if ":" in host else host
                port = listener.sock.getsockname()[1]
                ep = Endpoints(host=host, http_port=port, grpc_port=bound_grpc, http_url=f"http://{netloc_host}:{port}",
                               grpc_url=f"http://{netloc_host}:{bound_grpc}" if grpc else "")
                self.endpoints.append(ep)
                task_status.started(ep)
                started = True
                # After gRPC, not before: the import would otherwise compete with grpc's for the GIL.
                await self._load_server_modules()
                listener.http = await self._http_runner(scope, allowed)
                from aiohttp import web

                await web.SockSite(listener.http, listener.sock, backlog=_BACKLOG).start()
                await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):  # the ports must be free whatever cancelled the listener
                await listener.stop()
            self._listeners.remove(listener)
            listener.stopped.set()
        if not started:  # aclose() ran while gRPC was starting
            raise RuntimeError("OtlpReceiver is closed")

    async def listen(self, host: str, *, http_port: int = 0, grpc_port: int = 0, grpc: bool = True,
                     stamp: Mapping[str, str] | None = None, peers: str | None = None) -> Endpoints:
        """`serve()` in the receiver's own task group, that of `async with OtlpReceiver() as rx`; returns
        the endpoints once the ports are bound."""
        if self._tg is None:
            raise RuntimeError("OtlpReceiver.listen() needs `async with OtlpReceiver()`; "
                               "else start serve() in a task group")
        serve = functools.partial(self.serve, host, http_port=http_port, grpc_port=grpc_port, grpc=grpc,
                                  stamp=stamp, peers=peers)
        endpoints: Endpoints = await self._tg.start(serve, name=f"otlp {host}")
        return endpoints

    async def _load_server_modules(self) -> None:
        """Import aiohttp.web and protobuf once, in a worker thread: the event loop meanwhile waits on the
        Docker engine. Cancelling waits for the import to finish (a thread cannot be interrupted)."""
        if self._loaded:
            return
        if self._loading is None:
            self._loading = anyio.Lock()
        async with self._loading:
            if not self._loaded:
                await anyio.to_thread.run_sync(_load_server_modules)
                self._loaded = True

    async def _http_runner(self, stamp: Mapping[str, str] | None, allowed: _Peers) -> web.AppRunner:
        """An aiohttp application for one listener, set up and not yet serving."""
        from aiohttp import web

        async def export(request: web.Request) -> web.Response:
            return await self._http_export(request, stamp, allowed)

        app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
        app.router.add_post(TRACES_PATH, export)
        # No access log: one log record per export costs more than decoding a small batch. Short shutdown
        # grace: the exporters are the system under test, crc is done with them then.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                               keepalive_timeout=KEEPALIVE_TIMEOUT)
        await runner.setup()
        return runner

    async def _start_grpc(self, listener: _Listener, host: str, port: int, stamp: Mapping[str, str] | None,
                          allowed: _Peers) -> int:
        """Start `listener`'s gRPC server; returns its port."""
        import grpc

        async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._grpc_export(request, context, stamp, allowed)

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
        listener.grpc = server  # before start(): a cancelled start still stops it
        await server.start()
        return int(bound)

    async def aclose(self) -> None:
        """Stop every listener, wait until their ports are free, and wake all `wait_for` callers. Received
        spans stay available; no listener starts afterwards."""
        self._closed = True
        # Shielded: a second aclose() finds nothing to wait for, so this one must see the listeners stop
        # whatever its caller's cancellation.
        with anyio.CancelScope(shield=True):
            for listener in list(self._listeners):
                listener.scope.cancel()
            for listener in list(self._listeners):
                await listener.stopped.wait()
        self._notify()

    async def __aenter__(self) -> Self:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, self._tg = self._tg, None
        await self.aclose()
        if tg is None:
            return None
        try:  # waits for the listeners' tasks and raises what crashed in one (after its start)
            return await tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                return None  # only the body's own exception: it propagates as it was, not in a group
            raise

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

    def _accept(self, batch: list[Span]) -> int:
        """Publish one decoded batch; -1 when it would pass `max_spans` (refused, counted in `dropped`).
        Synchronous on purpose: no other handler interleaves."""
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

    async def _http_export(self, request: web.Request, stamp: Mapping[str, str] | None,
                           allowed: _Peers) -> web.Response:
        from aiohttp import web  # loaded before serving started: a dict lookup

        ctype = request.content_type
        is_json = ctype == JSON_TYPE
        peer = request.remote or ""
        if allowed is not None and not _peer_in(peer, allowed):
            self._reject("HTTP", f"sender {peer} is not on this listener's network {allowed}")
            return _http_error(403, "senders outside this suite's network are not served", is_json)
        if not is_json and ctype not in PROTOBUF_TYPES:  # before reading a body that cannot be decoded
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
        try:
            batch = decode_spans(body, ctype, time.time_ns(), stamp)
        except PayloadError as exc:
            self._reject("HTTP", str(exc))
            return _http_error(400, str(exc), is_json)
        if self._accept(batch) < 0:  # 400, not 429 or 503: exporters must not retry
            return _http_error(400, f"crc keeps at most {self.max_spans} spans per run", is_json)
        if is_json:
            return web.Response(body=_EMPTY_RESPONSE_JSON, content_type=JSON_TYPE)
        return web.Response(body=_EMPTY_RESPONSE_PB, content_type=_PROTOBUF_TYPE)

    async def _grpc_export(self, request: bytes, context: grpc.aio.ServicerContext,
                           stamp: Mapping[str, str] | None = None, allowed: _Peers = None) -> bytes:
        import grpc

        if allowed is not None:
            peer = _grpc_peer_ip(context.peer())
            if not _peer_in(peer, allowed):
                self._reject("gRPC", f"sender {peer} is not on this listener's network {allowed}")
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "senders outside this suite's network")
        try:
            batch = decode_spans(request, _PROTOBUF_TYPE, time.time_ns(), stamp)
        except PayloadError as exc:
            self._reject("gRPC", str(exc))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return _EMPTY_RESPONSE_PB  # not reached: abort() raises
        if self._accept(batch) < 0:  # not RESOURCE_EXHAUSTED: exporters would retry it
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
        return web.Response(status=status, body=body, content_type=JSON_TYPE)
    return web.Response(
        status=status,
        body=_status_pb(_GRPC_INVALID_ARGUMENT, message),
        content_type=_PROTOBUF_TYPE,
    )


def _load_server_modules() -> None:
    """Import what serving and decoding need; runs in a worker thread.

    Once crc's own modules are loaded, these share no unloaded module with `import grpc`, which listen()
    may run on the event loop thread meanwhile, so the two imports cannot deadlock on import locks.
    """
    for name in _SERVER_MODULES:
        importlib.import_module(name)


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

