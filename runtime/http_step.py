"""The `http` step: crc itself sends the request to a suite service, and checks what came back.

crc reaches a service at its container's address on the suite network (the engine's host routes to its
bridge networks), with a `Host` header naming the service as the URL does. The result is an `HttpOutput`:
status, headers, body and duration, or why there was no response ("connection refused by api:8080").
An https URL's certificate is verified for the service's name (the URL's host), against the system's CAs,
the step's `tls ca` file, or not at all with `tls insecure`.
aiohttp is imported by the first request, so runs without http steps never load it.
"""

from __future__ import annotations

import copy
import errno
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from crc.compiler.jsonpath import lookup
from crc.compiler.schema import regex_text

from .checks import _compare, _show, _text_or_value
from .matching import RegexTimeout, search_regex
from .results import FAILED, PASSED, Verdict
from .tracecontext import TraceContext

BODY_LIMIT = 4 * 1024 * 1024  # bytes of a response body kept (and recorded); the rest is cut


@dataclass(frozen=True, slots=True)
class HttpOutput:
    """What an http step got. `status` is None when no response came (`error` says why)."""

    status: int | None
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: str
    duration_s: float
    error: str = ""
    timed_out: bool = False

    def header(self, name: str) -> str | None:
        """A response header by name, in any case; repeated headers are joined with ", "."""
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(found) if found else None

    def to_dict(self) -> dict[str, Any]:
        return {"type": "http", "status": self.status, "reason": self.reason,
                "headers": [list(h) for h in self.headers], "body": self.body, "duration_s": self.duration_s,
                "error": self.error, "timed_out": self.timed_out}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HttpOutput:
        return cls(d["status"], d.get("reason", ""), tuple((str(k), str(v)) for k, v in d.get("headers", ())),
                   d.get("body", ""), float(d["duration_s"]), d.get("error", ""), bool(d.get("timed_out", False)))

    # ------------------------------------------------------------ checks
    def evaluate(self, assertion: Mapping[str, Any], expected: Any = None) -> Verdict:
        """One expectation on this response (`status`, `body`, `headers[...]`, `json(...)`, `duration`)."""
        field, op = assertion["field"], assertion["op"]
        value = assertion["value"] if expected is None else expected
        text = assertion.get("label", f"{field} {op}")
        if self.status is None:
            return Verdict.of(False, f"{text}: the request got no response: {self.error}")
        if field == "status":
            ok = _compare(op, self.status, value)
            return Verdict.of(ok, f"{text}: the status was {self.status} {self.reason}".rstrip()
                           + (f"; body: {_show(self.body.strip()[-300:])}" if self.body.strip() else ""))
        if field == "duration":
            ok = _compare(op, self.duration_s, value)
            return Verdict.of(ok, f"{text}: the request took {self.duration_s * 1000:.0f}ms")
        if field == "headers":
            actual = self.header(assertion["key"])
            if actual is None:
                names = ", ".join(sorted({k for k, _ in self.headers})) or "none"
                return Verdict.of(op in ("!=", "not contains", "!~"),
                               "" if op in ("!=", "not contains", "!~") else
                               f"{text}: the response has no header `{assertion['key']}` (headers: {names})")
            return _text_or_value(text, op, actual, value)
        if field == "json":
            doc, why = self._json()
            if why:
                return Verdict.of(False, f"{text}: {why}")
            try:
                actual = lookup(doc, assertion["path"])
            except KeyError as e:
                return Verdict.of(False, f"{text}: {e.args[0]} in {_show(doc)}")
            return _text_or_value(text, op, actual, value)
        return _text_or_value(text, op, self.body, value)

    def _json(self) -> tuple[Any, str]:
        try:
            return json.loads(self.body), ""
        except json.JSONDecodeError as e:
            return None, f"the body is not JSON ({e.msg} at line {e.lineno} col {e.colno}): {_show(self.body)}"

    def capture(self, spec: Mapping[str, Any]) -> tuple[str | None, str]:
        """A captured value (or None and why): the body by regex, a JSON value, or a header."""
        name = spec["name"]
        if self.status is None:
            return None, f"capture {name}: the request got no response: {self.error}"
        if spec["field"] == "headers":
            got = self.header(spec["key"])
            return (got, "") if got is not None else (None, f"capture {name}: the response has no header "
                                                            f"`{spec['key']}`")
        if spec["field"] == "json":
            doc, why = self._json()
            if why:
                return None, f"capture {name}: {why}"
            try:
                value = lookup(doc, spec["path"])
            except KeyError as e:
                return None, f"capture {name}: {e.args[0]}"
            return (value if isinstance(value, str) else json.dumps(value)), ""
        rx = spec["regex"]
        try:
            m = search_regex(rx, self.body)
        except RegexTimeout as e:
            return None, f"capture {name}: {e}"
        if m is None:
            return None, f"capture {name}: {regex_text(rx)} does not match the body {_show(self.body)}"
        return (m.group(1) if m.groups() else m.group(0)), ""


def verdict(d: Mapping[str, Any], out: HttpOutput, caps: dict[str, str]) -> tuple[str, str]:
    """The step's own verdict: a response came, its captures were found, and (unless an expectation checks
    the status) the status is not an error."""
    name = d["name"]
    if out.status is None:
        return FAILED, f"step `{name}`: {out.error}"
    if d.get("implicit_status") and out.status >= 400:
        tail = out.body.strip().splitlines()[-5:]
        return FAILED, (f"step `{name}` got status {out.status} {out.reason}".rstrip()
                        + ("\n" + "\n".join(tail) if tail else "")
                        + f"\n  help: expect it explicitly with `expect {name}.status == {out.status}`")
    for spec in d["captures"]:
        value, err = out.capture(spec)
        if value is None:
            return FAILED, err
        caps[spec["name"]] = value
    return PASSED, ""


# ------------------------------------------------------------ sending


@dataclass(frozen=True, slots=True)
class Request:
    """A request ready to send: everything rendered. `address` is where to connect instead of the URL's host
    (a container's IP); the URL's host still goes in the `Host` header."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    timeout: float
    address: str | None = None
    ca: str | None = None  # https: verify with this CA file (else the system's)
    insecure: bool = False  # https: no verification (`tls insecure`)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "url": self.url, "headers": [list(h) for h in self.headers],
                "body": (self.body or b"").decode("utf-8", "replace")}


def request(d: Mapping[str, Any], render: Callable[[str], str], tc: TraceContext, base: Path = Path(".")
            ) -> Request:
    """The request an http step node describes, its capture-dependent parts rendered by `render`, carrying
    the step's trace context (a `traceparent` the step sets itself wins). A relative CA file is found in
    `base`, the directory of the Plan's source."""
    late = set(d.get("deferred_http", ()))
    url = render(d["url"]) if "url" in late else d["url"]
    late_headers = set(d.get("deferred_headers", ()))
    headers = {k: render(v) if k in late_headers else v for k, v in d["headers"].items()}
    body = d["body"]
    if "body" in late:
        body = render(body)
    if "json" in late:
        body = copy.deepcopy(body)
        for path in d.get("deferred_json", ()):
            holder = body
            for key in path[:-1]:
                holder = holder[key]
            holder[path[-1]] = render(holder[path[-1]])
    data, ctype = body_of(d, body)
    names = {k.lower() for k in headers}
    if ctype and "content-type" not in names:
        headers["Content-Type"] = ctype
    if "traceparent" not in names:
        headers["traceparent"] = tc.traceparent
    tls = d.get("tls") or {}
    ca = str(base / tls["ca"]) if tls.get("ca") else None
    return Request(d["method"], url, tuple(headers.items()), data, float(d["timeout"]), ca=ca,
                   insecure=bool(tls.get("insecure")))


def body_of(d: Mapping[str, Any], body: Any) -> tuple[bytes | None, str | None]:
    """The request body's bytes and its content type (JSON bodies are sent as compact JSON)."""
    kind = d.get("body_type")
    if kind is None or body is None:
        return None, None
    if kind == "json":
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(), "application/json"
    if kind == "json-text":
        return str(body).encode(), "application/json"
    return str(body).encode(), "text/plain; charset=utf-8"


def where(url: str) -> str:
    """`host:port` of a URL, as messages name it."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


async def send(session: Any, req: Request) -> HttpOutput:
    """Send `req` and read the whole response; never raises for what happens on the wire."""
    import aiohttp

    target = where(req.url)
    parts = urlsplit(req.url)
    url = req.url
    headers = dict(req.headers)
    if req.address is not None:
        netloc = f"{req.address}:{parts.port}" if parts.port else req.address
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        if not any(k.lower() == "host" for k in headers):
            headers["Host"] = parts.netloc
    started = time.monotonic()

    def took() -> float:
        return time.monotonic() - started

    tls: dict[str, Any] = {}
    if parts.scheme == "https":
        try:
            tls = {"ssl": _ssl(req), "server_hostname": parts.hostname}
        except OSError as e:  # the CA file went away, or is not PEM
            return HttpOutput(None, "", (), "", took(), f"cannot use the CA file {req.ca}: {e.strerror or e}")
    try:
        async with session.request(req.method, url, headers=headers, data=req.body, allow_redirects=False,
                                   timeout=aiohttp.ClientTimeout(total=req.timeout), **tls) as resp:
            raw = await resp.content.read(BODY_LIMIT)
            charset = resp.charset or "utf-8"
            return HttpOutput(resp.status, resp.reason or "", tuple((str(k), str(v)) for k, v in resp.headers.items()),
                              raw.decode(charset, "replace"), took())
    except TimeoutError:
        return HttpOutput(None, "", (), "", took(), f"{target} did not answer within {req.timeout:g}s",
                          timed_out=True)
    except aiohttp.ClientConnectorCertificateError as e:
        return HttpOutput(None, "", (), "", took(), _untrusted(target, req, e.certificate_error))
    except aiohttp.ClientSSLError as e:
        return HttpOutput(None, "", (), "", took(), f"the TLS handshake with {target} failed: {e.os_error}")
    except aiohttp.ClientConnectorError as e:
        return HttpOutput(None, "", (), "", took(), _connect_error(target, e.os_error))
    except aiohttp.ServerDisconnectedError:
        return HttpOutput(None, "", (), "", took(), f"{target} closed the connection before answering")
    except aiohttp.ClientPayloadError as e:
        return HttpOutput(None, "", (), "", took(), f"the response from {target} was cut short: {e}")
    except aiohttp.ClientResponseError as e:
        return HttpOutput(None, "", (), "", took(), f"{target} did not answer with valid HTTP: {e.message}")
    except aiohttp.ClientError as e:
        return HttpOutput(None, "", (), "", took(), f"the request to {target} failed: {e or type(e).__name__}")


def _ssl(req: Request) -> Any:
    """What aiohttp verifies an https answer with: False (`tls insecure`), or a context trusting the step's
    CA file, else the system's CAs. Raises OSError (ssl.SSLError is one) for a CA file it cannot use."""
    if req.insecure:
        return False
    import ssl

    return ssl.create_default_context(cafile=req.ca)


def _untrusted(target: str, req: Request, e: Exception) -> str:
    why = getattr(e, "verify_message", None) or str(e)
    fix = (f"checked against the CA file {req.ca}" if req.ca else
           'trust the CA that signed it with `tls ca "FILE"`, or skip verification with `tls insecure`')
    return f"the certificate of {target} is not trusted ({why}): {fix}"


def _connect_error(target: str, e: OSError) -> str:
    if e.errno == errno.ECONNREFUSED:
        return f"connection refused by {target}"
    if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return (f"{target} cannot be reached from crc ({e.strerror}); when crc runs in a container, it must "
                "be attached to the suite's network (see docs/http.md)")
    if isinstance(e, TimeoutError) or e.errno == errno.ETIMEDOUT:
        return f"connecting to {target} timed out"
    return f"could not connect to {target}: {e.strerror or e}"


def new_session() -> Any:
    """An aiohttp session for a run's http steps: no proxies or cookies from the environment, since a test
    talks only to its suite."""
    import aiohttp

    return aiohttp.ClientSession(trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
                                 auto_decompress=True, skip_auto_headers=("User-Agent",),
                                 headers={"User-Agent": "crc"})
