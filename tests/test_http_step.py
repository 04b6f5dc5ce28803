"""http steps without an engine: compiling them (and what is refused, located), formatting them, the checks
on a response, and crc sending real requests to a real HTTP server on 127.0.0.1; trace context and the
`in STEP` selector clause; crc's own trace giving each step span the ids the step sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import CompileError
from crc.compiler.format import format_source
from crc.compiler.plan import Plan
from crc.runtime import http_step, spancheck, tracecontext
from crc.runtime.checks import capture, evaluate, output_from_dict
from crc.runtime.http_step import HttpOutput, Request
from crc.runtime.otlp import OtlpReceiver
from crc.runtime.results import FAILED, PASSED, NodeResult, RunResult
from crc.runtime.results import TestResult as Outcome
from crc.runtime.spans import Span
from crc.runtime.telemetry import TelemetryOptions, export_run

SERVICES = 'service api { image "crc/demo:dev" }\n  service cache { image "crc/python:dev" }'


def plan_of(test_body: str, services: str = SERVICES) -> Plan:
    return compile_file("t.cr", text=f'suite "s" {{\n  {services}\n  test "t" {{\n{test_body}\n  }}\n}}\n',
                        environ={})


def errors_of(test_body: str) -> list[tuple[str, int, int, str | None]]:
    with pytest.raises(CompileError) as e:
        plan_of(test_body)
    return [(d.message, d.loc.line, d.loc.col, d.help) for d in e.value.diagnostics if d.severity == "error"]


def step(p: Plan, name: str) -> dict[str, Any]:
    return dict(p.node(f"s::t::step:{name}"))


# ---------------------------------------------------------------- compiling


def test_an_http_step_names_its_service_and_request() -> None:
    p = plan_of('    step r = http POST "http://api:8080/orders?sku=1" headers { Accept: "application/json" } '
                'json { sku: 42, tags: ["a"], nested: { ok: true } } timeout 2s\n'
                '    expect r.status == 201')
    d = step(p, "r")
    assert d["action"] == "http" and d["method"] == "POST"
    assert d["service"] == "s::service:api"  # the test waits for it, like an exec step's service
    assert d["url"] == "http://api:8080/orders?sku=1"
    assert d["headers"] == {"Accept": "application/json"}
    assert d["body"] == {"sku": 42, "tags": ["a"], "nested": {"ok": True}} and d["body_type"] == "json"
    assert d["timeout"] == 2.0 and d["implicit_status"] is False
    assert p.tests[0]["uses"] == ["s::service:api"]


def test_without_a_status_expectation_the_status_is_checked_implicitly() -> None:
    d = step(plan_of('    step r = http GET "http://api:8080/"'), "r")
    assert d["implicit_status"] is True and d["timeout"] == http_step_default_timeout()


def http_step_default_timeout() -> float:
    from crc.compiler.http import DEFAULT_TIMEOUT

    return DEFAULT_TIMEOUT


def test_a_host_that_is_not_a_service_is_refused_with_did_you_mean() -> None:
    errs = errors_of('    step r = http GET "http://apl:8080/orders"')
    assert errs == [("`apl` is not a service of this suite", 5, 23, "did you mean `api`?")]


def test_an_outside_host_is_refused_unless_allowed() -> None:
    errs = errors_of('    step r = http GET "http://example.test/"')
    assert len(errs) == 1 and "not a service of this suite" in errs[0][0]
    assert errs[0][3] is not None and 'allow "example.test"' in errs[0][3]
    d = step(plan_of('    step r = http GET "http://127.0.0.1:9/" allow "127.0.0.1"'), "r")
    assert d["service"] is None and d["allow"] == ["127.0.0.1"]


@pytest.mark.parametrize(("body", "message"), [
    ('http GET "ftp://api/"', "an http step sends HTTP or HTTPS"),
    ('http GET "http://api/" tls insecure', "`tls` applies to https URLs"),
    ('http GET "https://api/" tls ca "no-such-ca.pem"', "no CA file at `no-such-ca.pem`"),
    ('exec api ["true"] tls insecure', "`tls` is an option of http steps"),
    ('http GET "https://api/" tls insecure tls ca "x.pem"', "`tls` is given twice"),
    ('http get "http://api/"', "HTTP methods are written in capitals"),
    ('http FETCH "http://api/"', "unknown HTTP method `FETCH`"),
    ('http GET "http://api:99999/"', "cannot read this URL"),
    ('http GET "http:///x"', "this URL names no host"),
    ('http POST "http://api/" json "{nope"', "this JSON body is not JSON"),
    ('http POST "http://api/" json "{}" body "x"', "either `body` or `json`"),
    ('http GET "http://api/" env { A: "1" }', "an http step has no environment"),
    ('exec api ["true"] headers { A: "1" }', "`headers` is an option of http steps"),
    ('http GET "http://api/" timeout 1s timeout 2s', "`timeout` is given twice"),
    ('http GET "http://api/" headers { A: "1", a: "2" }', "header `a` is given twice"),
])
def test_what_an_http_step_refuses(body: str, message: str) -> None:
    errs = errors_of(f"    step r = {body}")
    assert any(message in e[0] for e in errs), errs


def test_the_host_cannot_come_from_a_capture_but_the_path_can() -> None:
    errs = errors_of('    step a = http GET "http://api/"\n    capture h = a.body ~ /(\\w+)/\n'
                     '    step b = http GET "http://{{ h }}/"')
    assert any("known when the file is compiled" in e[0] for e in errs)
    p = plan_of('    step a = http GET "http://api/"\n    capture id = a.json("$.id")\n'
                '    step b = http PUT "http://api/orders/{{ id }}" headers { "X-Id": id } json { id: id, n: 1 }')
    b = step(p, "b")
    assert b["deferred_http"] == ["url", "json"] and b["deferred_headers"] == ["X-Id"]
    assert b["deferred_json"] == [["id"]]
    assert ("s::t::step:a", "s::t::step:b") in {(u, v) for u, v, k in p.graph.edges(keys=True) if k == "after"}


def test_fields_are_checked_against_the_kind_of_step() -> None:
    errs = errors_of('    step r = http GET "http://api/"\n    expect r.exit == 0\n    expect r.stdout == ""\n'
                     '    step e = exec api ["true"]\n    expect e.status == 0\n    expect e.headers["a"] == "b"\n'
                     '    expect r.status == "200"')
    msgs = [(m, h) for m, _, _, h in errs]
    assert ("an http step has no field `exit`", 'step fields: status, body, headers["name"], duration, '
            'json("$.path")') in msgs
    assert any(m == "an http step has no field `stdout`" for m, _ in msgs)
    assert ("a step has no field `status`", "did you mean `stats`?") not in msgs
    assert any(m == "a step has no field `status`" for m, _ in msgs)
    assert any(m == "`headers[...]` is not a step field" for m, _ in msgs)
    assert any(m == "the status code is compared with a number" for m, _ in msgs)


def test_captures_read_the_body_json_and_headers() -> None:
    p = plan_of('    step r = http GET "http://api/"\n    capture a = r.body ~ /id=(\\d+)/\n'
                '    capture b = r.json("$.id")\n    capture c = r.headers["Location"]')
    assert [c["field"] for c in step(p, "r")["captures"]] == ["body", "json", "headers"]
    errs = errors_of('    step r = http GET "http://api/"\n    capture a = r.stdout ~ /x/')
    assert errs[0][0] == "a regex capture reads body, not `stdout`"


def test_format_keeps_http_steps_and_lays_them_out() -> None:
    src = ('suite "f" {\n  service api { image "x" }\n  test "t" {\n'
           '    step r = http   POST "http://api:8080/x"  headers {Accept:"a"} json {a:1,b:{c:[1,2]}}\n'
           '    step q = http PUT "http://api/x" json {\n      a: 1\n      b: "two"\n    }\n'
           '    capture h = r.headers [ "Location" ]\n    expect r.headers["x"]=="y"\n'
           '    span s = "GET" {in r}\n  }\n}\n')
    out = format_source(src)
    assert '    step r = http POST "http://api:8080/x" headers { Accept: "a" } json { a: 1, b: { c: [1, 2] } }\n' in out
    assert '    step q = http PUT "http://api/x" json {\n      a: 1,\n      b: "two",\n    }\n' in out
    assert '    capture h = r.headers["Location"]\n' in out and '    expect r.headers["x"] == "y"\n' in out
    assert '    span s = "GET" { in r }\n' in out
    assert format_source(out) == out


# ---------------------------------------------------------------- trace-scoped selectors


def test_a_test_whose_selectors_are_all_in_its_traces_is_attributed_by_trace() -> None:
    p = plan_of('    step r = http GET "http://api/"\n    span req = "GET /" { in r }\n'
                '    span db = "redis GET" { parent req }\n    expect count({ in r kind client }) <= 3\n'
                '    expect hermetic')
    t = p.tests[0]
    assert t["by_trace"] is True
    assert t["uses"] == ["s::service:api"]  # not every service: it need not run alone
    assert p.node("s::t::span:req")["match"]["trace_of"] == "s::t::step:r"


def test_one_selector_without_a_trace_makes_the_test_run_alone() -> None:
    p = plan_of('    step r = http GET "http://api/"\n    span req = "GET /" { in r }\n    expect no span { status error }')
    t = p.tests[0]
    assert t["by_trace"] is False and t["uses"] == ["s::service:api", "s::service:cache"]


def test_in_names_a_step_of_the_test() -> None:
    errs = errors_of('    step order = http GET "http://api/"\n    span s = "GET /" { in ordr }')
    assert errs == [("unknown step `ordr`", 6, 27, "did you mean `order`?")]


def test_a_selector_in_a_trace_matches_only_that_trace() -> None:
    def span(trace: str, name: str = "GET /") -> Span:
        return Span(trace, "1" * 16, None, name, "server", "unset", "", 1, 2, "api")

    sel = spancheck.Selector(id="s", label="s", name="GET /", traces=frozenset({"a" * 32}), trace_label="order")
    res = spancheck.evaluate([span("a" * 32), span("b" * 32)], [sel],
                             [spancheck.Count(id="c", where="t.cr:1:1", selector="s", min=2)])
    assert not res[0].passed and "found 1" in res[0].message
    res = spancheck.evaluate([span("b" * 32)], [sel], [spancheck.Count(id="c", where="t.cr:1:1", selector="s", min=1)])
    assert not res[0].passed and "in order (its trace)" in res[0].message, res[0].message


def test_a_trace_scoped_selector_names_its_step_from_the_plan() -> None:
    """The step an `in STEP` selector names comes from the step node's name (a step may be named like a
    node id's separator would cut it: ids are not parsed back)."""
    from crc.runtime.verdicts import span_checks

    p = plan_of('    step order = http GET "http://api/"\n    span req = "GET /" { in order }\n'
                '    expect count(req) == 1')
    checks = span_checks(p, "s", "t", traces={"s::t::step:order": "a" * 32})
    [sel] = checks.selectors
    assert sel.trace_label == "order" and sel.traces == frozenset({"a" * 32})
    other = Span("b" * 32, "1" * 16, None, "GET /", "server", "unset", "", 1, 2, "api")
    [res] = spancheck.evaluate([other], checks.selectors, checks.constraints)
    assert "in order (its trace)" in res.message, res.message


# ---------------------------------------------------------------- checks on a response


RESPONSE = HttpOutput(200, "OK", (("Content-Type", "application/json"), ("Set-Cookie", "a"), ("set-cookie", "b")),
                      '{"id": 7, "status": "done"}', 0.012)


def check(field: str, op: str, value: Any, **kw: Any) -> tuple[bool, str]:
    v = evaluate({"field": field, "op": op, "value": value, "label": f"r.{field} {op}", **kw}, RESPONSE)
    return v.passed, v.message


def test_expectations_on_a_response() -> None:
    assert check("status", "==", 200)[0] and not check("status", "<", 300 - 100)[0]
    assert check("json", "==", "done", path="$.status")[0]
    assert check("headers", "==", "application/json", key="content-type")[0]
    assert check("headers", "==", "a, b", key="SET-COOKIE")[0]
    assert check("body", "contains", '"id": 7')[0]
    assert check("duration", "<", 1.0)[0]
    ok, msg = check("headers", "==", "x", key="Location")
    assert not ok and "has no header `Location`" in msg and "Content-Type" in msg
    assert check("headers", "!=", "x", key="Location")[0]


def test_expectations_on_a_request_that_got_no_response_say_why() -> None:
    out = HttpOutput(None, "", (), "", 0.001, "connection refused by api:8080")
    v = evaluate({"field": "status", "op": "==", "value": 200, "label": "r.status == 200"}, out)
    assert not v.passed and v.message == "r.status == 200: the request got no response: connection refused by api:8080"


def test_captures_and_the_step_verdict() -> None:
    assert capture({"name": "c", "field": "json", "path": "$.id"}, RESPONSE) == ("7", "")
    assert capture({"name": "c", "field": "headers", "key": "content-type"}, RESPONSE) == ("application/json", "")
    assert capture({"name": "c", "field": "body", "regex": {"pattern": r'"status": "(\w+)"', "flags": ""}},
                   RESPONSE) == ("done", "")
    d = {"name": "r", "captures": [{"name": "c", "field": "json", "path": "$.id"}], "implicit_status": True}
    caps: dict[str, str] = {}
    assert http_step.verdict(d, RESPONSE, caps) == (PASSED, "") and caps == {"c": "7"}
    bad = HttpOutput(503, "Service Unavailable", (), "down\n", 0.01)
    status, msg = http_step.verdict({**d, "captures": []}, bad, {})
    assert status == FAILED and msg.startswith("step `r` got status 503 Service Unavailable\ndown")
    assert "expect r.status == 503" in msg
    assert http_step.verdict({**d, "captures": [], "implicit_status": False}, bad, {})[0] == PASSED


def test_a_response_round_trips_through_a_recording() -> None:
    assert output_from_dict(RESPONSE.to_dict()) == RESPONSE


# ---------------------------------------------------------------- sending, to a real server


@asynccontextmanager
async def server(handler: Any) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def node(url: str, **kw: Any) -> dict[str, Any]:
    return {"name": "r", "method": "POST", "url": url, "headers": {"X-A": "1"}, "body": {"id": "{{ id }}", "n": 1},
            "body_type": "json", "timeout": 5.0, "deferred_http": ["json"], "deferred_json": [["id"]], **kw}


def test_crc_sends_the_request_with_its_trace_context() -> None:
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(method=request.method, path=request.path_qs, headers=dict(request.headers),
                    body=await request.json())
        return web.json_response({"ok": True}, status=201, headers={"Location": "/x/1"})

    async def main() -> HttpOutput:
        async with server(handler) as where:
            tc = tracecontext.new()
            req = http_step.request(node(f"http://{where}/orders?x=1"), lambda t: t.replace("{{ id }}", "42"), tc)
            seen["tc"] = tc
            session = http_step.new_session()
            try:
                return await http_step.send(session, req)
            finally:
                await session.close()

    out = asyncio.run(main())
    assert out.status == 201 and out.header("location") == "/x/1" and json.loads(out.body) == {"ok": True}
    assert seen["method"] == "POST" and seen["path"] == "/orders?x=1"
    assert seen["body"] == {"id": "42", "n": 1}
    assert seen["headers"]["X-A"] == "1" and seen["headers"]["Content-Type"] == "application/json"
    assert seen["headers"]["traceparent"] == seen["tc"].traceparent


def test_crc_connects_to_the_address_it_is_given_and_names_the_service_in_host() -> None:
    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["host"] = request.headers["Host"]
        return web.Response(text="hi")

    async def main() -> HttpOutput:
        async with server(handler) as where:
            host, port = where.split(":")
            req = Request("GET", f"http://api:{port}/", (), None, 5.0, address=host)
            session = http_step.new_session()
            try:
                return await http_step.send(session, req)
            finally:
                await session.close()

    out = asyncio.run(main())
    assert out.body == "hi" and seen["host"].startswith("api:")


def test_connection_failures_say_what_happened() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="late")

    async def main() -> tuple[HttpOutput, HttpOutput]:
        session = http_step.new_session()
        try:
            async with server(slow) as where:
                _, port = where.split(":")
                late = await http_step.send(session, Request("GET", f"http://api:{port}/", (), None, 0.2,
                                                             address="127.0.0.1"))
            # The server is gone: nothing listens on its port any more.
            refused = await http_step.send(session, Request("GET", f"http://api:{port}/", (), None, 5.0,
                                                            address="127.0.0.1"))
            return late, refused
        finally:
            await session.close()

    late, refused = asyncio.run(main())
    assert late.status is None and late.timed_out and late.error.endswith("did not answer within 0.2s")
    assert late.error.startswith("api:")
    assert refused.status is None and refused.error == f"connection refused by {refused.error.split()[-1]}"
    assert refused.error.startswith("connection refused by api:")


# ---------------------------------------------------------------- trace context and crc's own trace


def test_traceparent_round_trips() -> None:
    tc = tracecontext.new()
    assert tracecontext.parse(tc.traceparent) == tc and tc.env() == {"TRACEPARENT": tc.traceparent}
    assert tracecontext.parse("00-" + "0" * 32 + "-" + "1" * 16 + "-01") is None
    assert tracecontext.parse("garbage") is None


def test_crcs_own_trace_gives_each_step_span_the_ids_the_step_sent() -> None:
    tc = tracecontext.new()
    step_node, check_node = "s::t::step:r", "s::t::assert:1"
    t0 = 1_700_000_000_000_000_000
    nodes = {step_node: NodeResult(step_node, "step", PASSED, "", t0, t0 + 10, {"trace": tc.to_dict()}),
             check_node: NodeResult(check_node, "assert", PASSED, "", t0 + 11, t0 + 12)}
    result = RunResult("run1", t0 - 1, t0 + 30, (Outcome("s", "t", PASSED, 0.1, (), (step_node, check_node)),),
                       nodes, ("t.cr",))
    labels = {step_node: {"kind": "step", "label": "r", "suite": "s", "test": "t"},
              check_node: {"kind": "assert", "label": "r.status == 200", "suite": "s", "test": "t"}}
    got: list[Span] = []

    async def main() -> None:
        async with OtlpReceiver(on_spans=got.extend) as rx:
            ep = await rx.listen("127.0.0.1")
            n = await anyio.to_thread.run_sync(
                lambda: export_run(result, labels, TelemetryOptions("otlp", ep.http_url, "http/protobuf")))
            await rx.wait_for(lambda spans: len(spans) >= n, timeout=60)

    anyio.run(main)
    by_name = {s.name: s for s in got}
    mine = by_name["step r"]
    assert (mine.trace_id, mine.span_id, mine.parent_span_id) == (tc.trace_id, tc.span_id, None)
    assert [(ln.trace_id, ln.span_id) for ln in mine.links] == [(by_name["test t"].trace_id,
                                                                 by_name["test t"].span_id)]
    assert by_name["check r.status == 200"].trace_id == by_name["crc run"].trace_id != tc.trace_id


# ---------------------------------------------------------------- eventually


def test_eventually_marks_the_step_to_poll() -> None:
    p = plan_of('    step s = http GET "http://api/state"\n'
                '    expect s.json("$.status") == "done" eventually within 10s every 200ms\n'
                '    expect s.status == 200 eventually within 20s every 1s\n    expect s.body contains "x"')
    ev = step(p, "s")["eventually"]
    assert ev == {"within": 20.0, "every": 0.2, "asserts": ["s::t::assert:1", "s::t::assert:2"]}
    assert p.node("s::t::assert:1")["eventually"] is True and not p.node("s::t::assert:3").get("eventually")
    d = step(plan_of('    step s = exec api ["true"]\n    expect s.exit == 0 eventually'), "s")
    assert d["eventually"]["within"] == 10.0 and d["eventually"]["every"] == 0.2


@pytest.mark.parametrize(("line", "message"), [
    ('expect s.exit == 0 eventually within 1s every 2s', "leaves no second attempt"),
    ('expect s.exit == 0 eventually within 0s', "`eventually` waits a positive time"),
    ('span x = "a"\n    expect x.duration < 1s eventually', "only expectations on a step's results can wait"),
])
def test_what_eventually_refuses(line: str, message: str) -> None:
    errs = errors_of(f'    step s = exec api ["true"]\n    {line}')
    assert any(message in e[0] for e in errs), errs


def test_format_keeps_eventually() -> None:
    src = 'suite "f" {\n  test "t" {\n    step s = exec a ["true"]\n    expect s.exit==0  eventually within 1s  every 10ms\n  }\n}\n'
    assert "    expect s.exit == 0 eventually within 1s every 10ms\n" in format_source(src)


def test_format_keeps_tls_and_its_words_stay_usable_as_names() -> None:
    src = ('suite "f" {\n  service ca { image "img" }\n  test "t" {\n'
           '    step insecure = http GET   "https://ca:8443/"  tls   insecure\n'
           '    step tls = http GET "https://ca/" tls  ca "x.pem"\n  }\n}\n')
    out = format_source(src)
    assert '    step insecure = http GET "https://ca:8443/" tls insecure\n' in out
    assert '    step tls = http GET "https://ca/" tls ca "x.pem"\n' in out


# ---------------------------------------------------------------- run-time values in span checks


def test_span_attribute_values_may_use_lets_and_captures() -> None:
    p = plan_of('    let sku = "42"\n    step a = http GET "http://api/"\n    capture id = a.json("$.id")\n'
                '    span r = "GET {{ sku }}" { in a attr "order.id" == id attr "sku" == sku }\n'
                '    expect r.attr["order.id"] == "order-{{ id }}"\n    expect r.attr["x"] contains id')
    d = p.node("s::t::span:r")
    assert d["match"]["name"] == "GET 42"
    assert d["match"]["attrs"] == [{"key": "order.id", "op": "==", "value": {"template": "{{ id }}", "escape": False}},
                                   {"key": "sku", "op": "==", "value": "42"}]
    values = {c["key"]: c["value"] for c in d["constraints"] if c["check"] == "attr"}
    assert values == {"order.id": {"template": "order-{{ id }}", "escape": False},
                      "x": {"template": "{{ id }}", "escape": True}}


def test_a_template_crc_cannot_render_is_an_error_not_a_literal() -> None:
    errs = errors_of('    step a = http GET "http://api/"\n    capture id = a.json("$.id")\n'
                     '    span r = "GET {{ id }}" { service "{{ id }}" }\n    expect hermetic allow "{{ id }}"\n'
                     '    expect r.attr["k"] == "{{ nope }}"')
    msgs = [m for m, *_ in errs]
    assert "a span name is known when the file is compiled: it cannot use a capture" in msgs
    assert "a service name is known when the file is compiled: it cannot use a capture" in msgs
    assert "a host is known when the file is compiled: it cannot use a capture" in msgs
    assert any("nope" in m for m in msgs), msgs


def test_span_phase_renders_capture_values() -> None:
    from crc.runtime.spanphase import build

    p = plan_of('    step a = http GET "http://api/"\n    capture id = a.json("$.id")\n'
                '    span r = "GET /" { attr "order.id" == id }\n    expect r.attr["note"] contains "{{ id }}."')
    selectors, constraints, _ = build(p, "s", "t", {}, lambda text, d: text.replace("{{ id }}", "7"))
    assert [(a.key, a.value) for a in selectors[0].attrs] == [("order.id", "7")]
    assert [c.match.value for c in constraints if isinstance(c, spancheck.Attr)] == ["7\\."]


def test_the_real_error_comes_before_a_capture_it_could_not_feed() -> None:
    from crc.runtime import verdicts
    from crc.runtime.checks import StepOutput

    d = {"name": "s", "captures": [{"name": "id", "field": "json", "path": "$.id"}], "implicit_exit": True,
         "implicit_status": True, "timeout": None}
    v, _ = verdicts.step(d, StepOutput(2, "", "boom: no such table\n", 0.1))
    status, msg = v.status, v.message
    assert status == FAILED and msg.startswith("step `s` exited with code 2\nboom: no such table"), msg
    status, msg = http_step.verdict(d, HttpOutput(500, "Internal Server Error", (), "db down\n", 0.1), {})
    assert status == FAILED and msg.startswith("step `s` got status 500 Internal Server Error\ndb down"), msg


def test_a_host_that_nearly_names_a_service_is_a_warning() -> None:
    p = plan_of('    step s = exec api ["true"] env { T: "redis://cahce:6379", U: "cache:6379", V: "localhost:80" }',
                services='service api { image "crc/demo:dev" env { A: "apl:8080" } }\n'
                         '  service cache { image "crc/python:dev" }')
    warnings = [(w.message, w.loc.line, w.help) for w in p.warnings]
    assert warnings == [("`apl` is not a service of this suite", 2, "did you mean `api`?"),
                        ("`cahce` is not a service of this suite", 5, "did you mean `cache`?")]


def test_the_other_expectations_of_an_http_step_wait_for_its_status_check() -> None:
    p = plan_of('    step r = http GET "http://api:8080/x"\n    expect r.json("$.id") == 1\n    expect r.status == 200\n'
                '    expect r.body contains "x"')
    checks = sorted((u.rsplit("::", 1)[1], v.rsplit("::", 1)[1]) for u, v, k in p.graph.edges(keys=True) if k == "checks")
    assert checks == [("assert:2", "assert:1"), ("assert:2", "assert:3"),
                      ("step:r", "assert:1"), ("step:r", "assert:2"), ("step:r", "assert:3")]


def test_https_steps_carry_how_the_certificate_is_trusted(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    src = tmp_path / "t.cr"
    src.write_text(f'suite "s" {{\n  {SERVICES}\n  test "t" {{\n'
                   '    step a = http GET "https://api:8443/"\n'
                   '    step b = http GET "https://api:8443/" tls ca "certs/ca.pem"\n'
                   '    step c = http GET "https://api/" tls insecure\n'
                   '    step d = http GET "http://api/"\n  }\n}\n', encoding="utf-8")
    p = compile_file(str(src), environ={})
    assert [step(p, s)["tls"] for s in "abcd"] == [{"ca": None, "insecure": False},
                                                   {"ca": "certs/ca.pem", "insecure": False},
                                                   {"ca": None, "insecure": True}, None]
    req = http_step.request(step(p, "b"), str, tracecontext.new(), tmp_path)
    assert (req.ca, req.insecure) == (str(tmp_path / "certs" / "ca.pem"), False)
    assert http_step.where("https://api/x") == "api:443"
