"""Lowering of `http` steps: the request crc itself sends to a suite service.

The URL's host must be a service of the suite (or a host the step names in `allow`): a test reaches only what
it declares, so the check is made here, before anything runs. Values that use captures stay templates
(`Deferred`) and are rendered by the runtime; the step node lists which ones (`deferred_http`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from . import ir
from .diagnostics import Diagnostics, did_you_mean
from .templates import Templates

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DEFAULT_TIMEOUT = 30.0
_TEMPLATE = re.compile(r"\{\{|\{%")


class _Lowering(Protocol):
    """What this module needs from the compiler: its diagnostics and value evaluation (`evaluate.Evaluator`)."""

    @property
    def diags(self) -> Diagnostics: ...

    def text(self, v: ir.Value, scope: Any, tpl: Templates, what: str) -> str | None: ...

    def value(self, v: ir.Value, scope: Any, tpl: Templates) -> Any: ...


def lower(c: _Lowering, sname: str, step: ir.Step, scope: Any, tpl: Templates, services: Mapping[str, Any],
          is_deferred: Callable[[Any], bool], status_checked: bool, base: Path
          ) -> tuple[dict[str, Any], list[str]]:
    """The attributes of an http step node, and the strings in it that are rendered at run time. `base` is
    the directory a relative CA file is found in (the file's)."""
    assert step.method is not None and step.url is not None
    d = c.diags
    method = step.method.name.upper()
    if method not in METHODS:
        d.error(f"unknown HTTP method `{step.method.name}`", step.method.loc,
                did_you_mean(method, METHODS) or f"methods: {', '.join(METHODS)}")
    elif method != step.method.name:
        d.error(f"HTTP methods are written in capitals: `{method}`", step.method.loc)
    if step.env:
        d.error("an http step has no environment", step.env[0].loc, "request headers go in `headers { ... }`")
    if step.workdir is not None:
        d.error("an http step has no working directory", getattr(step.workdir, "loc", step.loc))
    if step.body is not None and step.json is not None:
        d.error("an http step sends either `body` or `json`, not both", getattr(step.json, "loc", step.loc))
    url = c.text(step.url, scope, tpl, "a URL") or ""
    deferred: list[str] = []
    target = _target(d, url, step, services, is_deferred(url))
    if is_deferred(url):
        deferred.append("url")
    headers: dict[str, str] = {}
    seen: dict[str, ir.EnvPair] = {}
    for pair in step.headers:
        low = pair.key.lower()
        if low in seen:
            d.error(f"header `{pair.key}` is given twice", pair.loc, notes=(("first given", seen[low].loc),))
        seen[low] = pair
        headers[pair.key] = c.text(pair.value, scope, tpl, f"header {pair.key}") or ""
    deferred_headers = sorted(k for k, v in headers.items() if is_deferred(v))
    body: Any = None
    body_type = None
    json_paths: list[list[Any]] = []
    if step.body is not None:
        body, body_type = c.text(step.body, scope, tpl, "a body") or "", "text"
        if is_deferred(body):
            deferred.append("body")
    elif isinstance(step.json, ir.JsonObject):
        body, body_type = _object(c, step.json, scope, tpl), "json"
        json_paths = [list(p) for p in _deferred_paths(body, (), is_deferred)]
        if json_paths:
            deferred.append("json")
    elif step.json is not None:
        text = c.text(step.json, scope, tpl, "a JSON body")
        body_type = "json"
        if text is not None and not is_deferred(text):
            try:
                body = json.loads(text)
            except ValueError as e:
                d.error(f"this JSON body is not JSON: {e}", getattr(step.json, "loc", step.loc),
                        'write JSON text, or the object itself: json { key: "value" }')
        else:
            body, body_type = text, "json-text"
            if text is not None:
                deferred.append("body")
    timeout = step.timeout.seconds if step.timeout else DEFAULT_TIMEOUT
    attrs: dict[str, Any] = {
        "service": f"{sname}::service:{target}" if target else None, "image": None, "argv": None, "env": {},
        "workdir": None, "method": method, "url": url, "headers": dict(sorted(headers.items())),
        "body": body, "body_type": body_type, "allow": [a.value for a in step.allow], "timeout": timeout,
        "implicit_status": not status_checked, "implicit_exit": False,
        "deferred_http": deferred, "deferred_headers": deferred_headers, "deferred_json": json_paths,
        "tls": _tls(c, step, url, scope, tpl, base, is_deferred),
    }
    late = [x for x in [url, *headers.values()] if is_deferred(x)]
    if "body" in deferred:
        late.append(body)
    if "json" in deferred:
        late.extend(_walk_strings(body, is_deferred))
    return attrs, late


def _target(d: Diagnostics, url: str, step: ir.Step, services: Mapping[str, Any], deferred: bool) -> str | None:
    """The service the URL names (None for an allowed outside host); reports a URL crc cannot send."""
    loc = getattr(step.url, "loc", step.loc)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as e:
        d.error(f"cannot read this URL: {e}", loc, 'write it as "http://SERVICE:PORT/path"')
        return None
    if parts.scheme not in ("http", "https"):
        d.error(f"an http step sends HTTP or HTTPS: the URL starts with `http://` or `https://`, not "
                f"`{parts.scheme or url}`", loc, 'for example: "http://api:8080/orders"')
        return None
    host = parts.hostname or ""
    if deferred and _TEMPLATE.search(parts.netloc):
        d.error("the host of an http step is known when the file is compiled, not taken from a capture", loc,
                "name the service in the URL; captures may be used in the path, query, headers and body")
        return None
    if not host:
        d.error("this URL names no host", loc, 'write it as "http://SERVICE:PORT/path"')
        return None
    by_lower = {s.lower(): s for s in services}
    if host in by_lower:
        return str(by_lower[host])
    allowed = {a.value.lower() for a in step.allow}
    if host in allowed:
        return None
    d.error(f"`{host}` is not a service of this suite", loc,
            did_you_mean(host, services) or
            f"an http step reaches the suite's services ({', '.join(sorted(services)) or 'none'}); "
            f'to reach another host on purpose, add `allow "{host}"` to the step')
    return None


def _tls(c: _Lowering, step: ir.Step, url: str, scope: Any, tpl: Templates, base: Path,
         is_deferred: Callable[[Any], bool]) -> dict[str, Any] | None:
    """`{"ca": PATH or None, "insecure": bool}` for an https URL (None for plain http); the CA file, relative
    to the file's directory as written, must exist."""
    https = url.startswith("https://")
    t = step.tls
    if t is None:
        return {"ca": None, "insecure": False} if https else None
    if not https:
        c.diags.error("`tls` applies to https URLs", t.loc, 'send the request to "https://SERVICE:PORT/..."')
        return None
    ca = c.text(t.ca, scope, tpl, "a CA file") if t.ca is not None else None
    if ca is not None and t.ca is not None:
        if is_deferred(ca):
            c.diags.error("a CA file is known when the file is compiled, not taken from a capture", t.ca.loc)
            return None
        if not (base / ca).is_file():
            c.diags.error(f"no CA file at `{ca}`", t.ca.loc,
                          "a PEM file of the certificate authority that signed the service's certificate, "
                          "relative to this file's directory")
    return {"ca": ca, "insecure": t.insecure}


def _object(c: _Lowering, obj: ir.JsonObject, scope: Any, tpl: Templates) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in obj.pairs:
        if key in out:
            c.diags.error(f"key `{key}` is given twice in this JSON object", getattr(v, "loc", obj.loc))
        out[key] = _object(c, v, scope, tpl) if isinstance(v, ir.JsonObject) else _json_value(c, v, scope, tpl)
    return out


def _json_value(c: _Lowering, v: ir.Value, scope: Any, tpl: Templates) -> Any:
    if isinstance(v, ir.Duration | ir.Regex):
        c.diags.error("a JSON value is text, a number, true, false or a list", v.loc)
        return None
    if isinstance(v, ir.List):
        return [_json_value(c, x, scope, tpl) for x in v.items]
    return c.value(v, scope, tpl)


def _deferred_paths(x: Any, path: tuple[Any, ...], is_deferred: Callable[[Any], bool]) -> Any:
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _deferred_paths(v, (*path, k), is_deferred)
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _deferred_paths(v, (*path, i), is_deferred)
    elif is_deferred(x):
        yield path


def _walk_strings(x: Any, keep: Callable[[Any], bool]) -> list[str]:
    if isinstance(x, dict):
        return [s for v in x.values() for s in _walk_strings(v, keep)]
    if isinstance(x, list):
        return [s for v in x for s in _walk_strings(v, keep)]
    return [x] if keep(x) else []

