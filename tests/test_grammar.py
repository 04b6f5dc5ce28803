"""The grammar: a table of valid snippets covering every construct, and the IR each one produces.

Each case names a snippet, a function picking the relevant part of the IR, and what that part must be (IR
values are flattened to plain Python by `plain`, so the table reads like the source). Every snippet is also
a complete, meaningful file: a second test compiles each one and expects no error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from crc.compiler import ir
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import Diagnostics
from crc.compiler.parser import grammar_text, lark_parser, parse
from crc.grammar.keywords import ALL_KEYWORDS, KEYWORDS, OPERATORS, role_of


def parse_ok(text: str, path: str = "t.cr") -> ir.Module:
    diags = Diagnostics()
    mod = parse(text, path, diags)
    assert not diags.items, [d.message for d in diags.items]
    assert mod is not None
    return mod


def plain(x: Any) -> Any:
    """IR -> plain data: literals to their value, regexes to ("/", pattern, flags), refs to ("ref", name)."""
    if isinstance(x, ir.Str | ir.Int | ir.Float):
        return x.value
    if isinstance(x, ir.Duration):
        return x.seconds
    if isinstance(x, ir.Regex):
        return ("/", x.pattern, x.flags)
    if isinstance(x, ir.Ref):
        return ("ref", x.name)
    if isinstance(x, ir.Name):
        return x.name
    if isinstance(x, ir.List):
        return [plain(v) for v in x.items]
    if isinstance(x, ir.Argv):
        return (x.form, [plain(v) for v in x.items])
    if isinstance(x, tuple | list):
        return [plain(v) for v in x]
    return x


# ---------------------------------------------------------------- snippet builders

SUITE_TAIL = '\nsuite "min" {\n  service a { image "img" }\n  test "t" { step one = exec a ["true"] }\n}\n'


def module(text: str) -> str:
    """Module-level declarations plus a minimal suite, so the file also compiles."""
    return text + SUITE_TAIL


def suite(items: str) -> str:
    return f'suite "s" {{\n{items}\n  test "t" {{ step one = exec a ["true"] }}\n}}\n'


def service(items: str) -> str:
    return suite(f"  service a {{\n    {items}\n  }}")


def in_test(items: str) -> str:
    """A test with service `a`, step `one`, spans `p` and `q`, and `items`."""
    return (f'suite "s" {{\n  service a {{ image "img" }}\n  test "t" {{\n    step one = exec a ["true"]\n'
            f'    span p = "P"\n    span q = "Q"\n{items}\n  }}\n}}\n')


# ---------------------------------------------------------------- IR pickers


def S(m: ir.Module) -> ir.Suite:
    return m.suites[0]


def svc(m: ir.Module, i: int = 0) -> ir.Service:
    return S(m).services[i]


def body(m: ir.Module) -> ir.ServiceBody:
    return svc(m).body


def items(m: ir.Module) -> tuple[Any, ...]:
    return S(m).tests[0].items


def nth(m: ir.Module, kind: type, i: int = 0) -> Any:
    return [x for x in items(m) if isinstance(x, kind)][i]


def last(m: ir.Module) -> Any:
    return items(m)[-1]


def probe(p: ir.Probe) -> dict[str, Any]:
    return {"kind": p.kind, "port": plain(p.port), "path": plain(p.path), "status": p.status,
            "argv": plain(p.argv), "pattern": plain(p.pattern), "within": plain(p.within)}


def sel(m: ir.SpanMatch) -> dict[str, Any]:
    return {"name": plain(m.name), "service": plain(m.service), "kind": plain(m.kind), "status": plain(m.status),
            "attrs": [(plain(a.key), a.op, plain(a.value)) for a in m.attrs], "parent": plain(m.parent),
            "ancestor": plain(m.ancestor)}


EMPTY_SEL = {"name": None, "service": None, "kind": None, "status": None, "attrs": [], "parent": None,
             "ancestor": None}


def compare(c: ir.Compare) -> tuple[Any, ...]:
    s = c.subject
    return (s.kind, plain(s.target), plain(s.field), plain(s.arg), c.op, plain(c.value))


def order(o: ir.Order) -> tuple[Any, ...]:
    return (plain(o.first), plain(o.second), plain(o.min_gap), plain(o.max_gap), o.written)


def step(s: ir.Step) -> dict[str, Any]:
    return {"name": plain(s.name), "after": plain(s.after), "action": s.action, "service": plain(s.service),
            "image": plain(s.image), "argv": plain(s.argv), "timeout": plain(s.timeout),
            "env": [(p.key, plain(p.value)) for p in s.env], "workdir": plain(s.workdir)}


STEP0 = {"name": "s2", "after": [], "action": "exec", "service": "a", "image": None, "argv": None, "timeout": None,
         "env": [], "workdir": None}


def step_case(text: str) -> str:
    return in_test(f"    {text}")


# ---------------------------------------------------------------- the table

Case = tuple[str, Callable[[ir.Module], Any], Any]
CASES: dict[str, Case] = {
    # ---- files, comments, imports, templates, module lets
    "comments-only": ("# nothing here\n   # indented comment\n" + SUITE_TAIL,
                      lambda m: (len(m.imports), len(m.templates), len(m.lets), len(m.suites)), (0, 0, 0, 1)),
    "trailing-comment": (suite('  service a { image "img" } # after code'), lambda m: plain(body(m).image), ["img"]),
    "import-std": (module('import "std/redis"\nimport "std/httpd"'),
                   lambda m: [i.path.value for i in m.imports], ["std/redis", "std/httpd"]),
    "template-defaults": (module('template web(port = 8080, root, image = "busybox",) {\n  image image\n  port port\n'
                                 '  workdir root\n}'),
                          lambda m: [(plain(p.name), plain(p.default)) for p in m.templates[0].params],
                          [("port", 8080), ("root", None), ("image", "busybox")]),
    "template-no-params": (module('template t() { image "x" }'),
                           lambda m: (plain(m.templates[0].name), m.templates[0].params, plain(m.templates[0].body.image)),
                           ("t", (), ["x"])),
    "module-let": (module('let base = "img"'), lambda m: [(plain(x.name), plain(x.value)) for x in m.lets],
                   [("base", "img")]),
    # ---- suites
    "suite-settings": (suite('  seed 42\n  clock "2025-01-01T00:00:00Z"\n  timeout 2m\n  settle 300ms\n'
                             '  service a { image "img" }'),
                       lambda m: (plain(S(m).name), plain(S(m).seed), plain(S(m).clock), plain(S(m).timeout),
                                  plain(S(m).settle)),
                       ("s", 42, "2025-01-01T00:00:00Z", 120.0, 0.3)),
    "suite-defaults": (suite('  service a { image "img" }'),
                       lambda m: (S(m).seed, S(m).clock, S(m).timeout, S(m).settle), (None, None, None, None)),
    "suite-let-values": (suite('  let s = "text"\n  let i = -3\n  let f = -1.25\n  let d = 1.5s\n  let r = /x+/im\n'
                               '  let l = ["a", 1, [2.5, 10ms], /y/, s,]\n  let e = []\n  service a { image s }'),
                         lambda m: [(plain(x.name), plain(x.value)) for x in S(m).lets],
                         [("s", "text"), ("i", -3), ("f", -1.25), ("d", 1.5), ("r", ("/", "x+", "im")),
                          ("l", ["a", 1, [2.5, 0.01], ("/", "y", ""), ("ref", "s")]), ("e", [])]),
    # ---- services
    "service-image-command-list": (service('image "img"\n    command ["sh", "-c", "echo hi"]'),
                                   lambda m: (plain(body(m).image), plain(body(m).command)),
                                   (["img"], [("list", ["sh", "-c", "echo hi"])])),
    "service-command-split": (service('image "img"\n    command "httpd -f -p 8080 \'a b\'"'),
                              lambda m: plain(body(m).command), [("split", ["httpd -f -p 8080 'a b'"])]),
    "service-command-sh": (service('image "img"\n    command sh "echo $HOME && sleep 1"'),
                           lambda m: plain(body(m).command), [("sh", ["echo $HOME && sleep 1"])]),
    "service-env": (service('image "img"\n    env { A: "1" "B.C": 2, D_E: "x", }\n    env { F: 1.5 }'),
                    lambda m: [(p.key, plain(p.value)) for p in body(m).env],
                    [("A", "1"), ("B.C", 2), ("D_E", "x"), ("F", 1.5)]),
    "service-env-empty": (service('image "img"\n    env { }'), lambda m: body(m).env, ()),
    "service-ports": (suite('  let hp = 18081\n  service a {\n    image "img"\n    port 8080\n    port 8081 -> 18080\n'
                            '    port 8082 -> hp\n  }'),
                      lambda m: [(plain(p.container), plain(p.host)) for p in body(m).ports],
                      [(8080, None), (8081, 18080), (8082, ("ref", "hp"))]),
    "service-volumes": (service('image "img"\n    volume "/data" -> "/srv"\n    volume "./a" -> "/a" ro\n'
                                '    volume "./b" -> "/b" rw\n    allow host "/data"'),
                        lambda m: [(plain(v.source), plain(v.target), v.read_only) for v in body(m).volumes],
                        [("/data", "/srv", False), ("./a", "/a", True), ("./b", "/b", False)]),
    "service-host-access": (service('image "img"\n    privileged\n    network host\n'
                                    '    allow host "privileged", "host-network"'),
                            lambda m: (len(body(m).privileged), len(body(m).host_network),
                                       [g.value for grant in body(m).grants for g in grant.grants]),
                            (1, 1, ["privileged", "host-network"])),
    "suite-network-internal": (suite('  network internal\n  service a { image "img" }'),
                               lambda m: S(m).internal is not None, True),
    "service-needs-workdir": (suite('  service b { image "img" }\n  service c { image "img" }\n'
                                    '  service a {\n    image "img"\n    needs b, c\n    needs b\n    workdir "/w"\n  }'),
                              lambda m: (plain(svc(m, 2).body.needs), plain(svc(m, 2).body.workdir)),
                              (["b", "c", "b"], ["/w"])),
    "probe-tcp": (service('image "img"\n    ready tcp 8080'), lambda m: probe(body(m).ready[0]),
                  {"kind": "tcp", "port": 8080, "path": None, "status": None, "argv": None, "pattern": None,
                   "within": None}),
    "probe-tcp-within": (service('image "img"\n    ready tcp 8080 within 5s'),
                         lambda m: (probe(body(m).ready[0])["kind"], probe(body(m).ready[0])["within"]),
                         ("tcp", 5.0)),
    "probe-http": (service('image "img"\n    ready http 8080 "/healthz"'), lambda m: probe(body(m).ready[0]),
                   {"kind": "http", "port": 8080, "path": "/healthz", "status": None, "argv": None,
                    "pattern": None, "within": None}),
    "probe-http-status-within": (service('image "img"\n    ready http 8080 "/h" status 204 within 250ms'),
                                 lambda m: probe(body(m).ready[0]),
                                 {"kind": "http", "port": 8080, "path": "/h", "status": 204, "argv": None,
                                  "pattern": None, "within": 0.25}),
    "probe-exec-list": (service('image "img"\n    ready exec ["redis-cli", "ping"] within 20s'),
                        lambda m: (probe(body(m).ready[0])["argv"], probe(body(m).ready[0])["within"]),
                        (("list", ["redis-cli", "ping"]), 20.0)),
    "probe-exec-split": (service('image "img"\n    ready exec "test -f /ready"'),
                         lambda m: probe(body(m).ready[0])["argv"], ("split", ["test -f /ready"])),
    "probe-exec-sh": (service('image "img"\n    ready exec sh "test -f /ready || exit 1"'),
                      lambda m: probe(body(m).ready[0])["argv"], ("sh", ["test -f /ready || exit 1"])),
    "probe-log-text": (service('image "img"\n    ready log "listening"'),
                       lambda m: (probe(body(m).ready[0])["kind"], probe(body(m).ready[0])["pattern"]),
                       ("log", "listening")),
    "probe-log-regex-within": (service('image "img"\n    ready log /listening on \\d+/i within 1m'),
                               lambda m: (probe(body(m).ready[0])["pattern"], probe(body(m).ready[0])["within"]),
                               (("/", r"listening on \d+", "i"), 60.0)),
    "probe-span": (service('image "img"\n    ready span "startup"'),
                   lambda m: (probe(body(m).ready[0])["kind"], probe(body(m).ready[0])["pattern"]),
                   ("span", "startup")),
    "probe-span-within": (service('image "img"\n    ready span "startup" within 30s'),
                          lambda m: probe(body(m).ready[0])["within"], 30.0),
    "probe-port-ref": (suite('  let p = 9000\n  service a {\n    image "img"\n    ready tcp p\n  }'),
                       lambda m: probe(body(m).ready[0])["port"], ("ref", "p")),
    "service-from-template": ('template tmpl(a, b = 1, c = "z") { image "img" port b }\n'
                              'suite "s" {\n  service x = tmpl(5, b = 2) {\n    image "override"\n'
                              '    env { K: "v" }\n  }\n  test "t" { step one = exec x ["true"] }\n}\n',
                              lambda m: (plain(svc(m).template), [(a.name, plain(a.value)) for a in svc(m).args],
                                         plain(svc(m).body.image), [p.key for p in svc(m).body.env]),
                              ("tmpl", [(None, 5), ("b", 2)], ["override"], ["K"])),
    "service-from-std-template": ('import "std/redis"\nsuite "s" {\n  service cache = redis(port = 6380,)\n'
                                  '  test "t" { step one = exec cache ["true"] }\n}\n',
                                  lambda m: (plain(svc(m).template), [(a.name, plain(a.value)) for a in svc(m).args],
                                             svc(m).body.image),
                                  ("redis", [("port", 6380)], ())),
    "service-from-no-args": ('import "std/httpd"\nsuite "s" {\n  service web = httpd()\n'
                             '  test "t" { step one = exec web ["true"] }\n}\n',
                             lambda m: (plain(svc(m).template), svc(m).args), ("httpd", ())),
    "names-with-dashes-and-keywords": (suite('  service my-api { image "img" }\n  service log { image "img" }\n'
                                             '  service a { image "img" }'),
                                       lambda m: [plain(s.name) for s in S(m).services], ["my-api", "log", "a"]),
    # ---- tests and steps
    "test-timeout": ('suite "s" {\n  service a { image "img" }\n  test "slow one" timeout 30s {\n'
                     '    step one = exec a ["true"]\n  }\n}\n',
                     lambda m: (plain(S(m).tests[0].name), plain(S(m).tests[0].timeout)), ("slow one", 30.0)),
    "step-exec-list": (step_case('step s2 = exec a ["echo", "two words", "$HOME"]'), lambda m: step(last(m)),
                       {**STEP0, "argv": ("list", ["echo", "two words", "$HOME"])}),
    "step-exec-split": (step_case('step s2 = exec a "wget -qO- http://a:8080/"'), lambda m: step(last(m))["argv"],
                        ("split", ["wget -qO- http://a:8080/"])),
    "step-exec-sh": (step_case('step s2 = exec a sh "echo $((6 * 7))"'), lambda m: step(last(m))["argv"],
                     ("sh", ["echo $((6 * 7))"])),
    "step-run-image-argv": (step_case('step s2 = run "img:dev" ["wget", "http://a/"]'), lambda m: step(last(m)),
                            {**STEP0, "action": "run", "service": None, "image": "img:dev",
                             "argv": ("list", ["wget", "http://a/"])}),
    "step-run-image-only": (step_case('step s2 = run "img:dev"'), lambda m: step(last(m)),
                            {**STEP0, "action": "run", "service": None, "image": "img:dev"}),
    "step-run-split": (step_case('step s2 = run "img" "ls -l /"'), lambda m: step(last(m))["argv"],
                       ("split", ["ls -l /"])),
    "step-after": (step_case('step s2 = exec a ["true"]\n    step s3 after one, s2 = exec a ["true"]'),
                   lambda m: step(last(m))["after"], ["one", "s2"]),
    "step-options": (step_case('step s2 = exec a ["pwd"] timeout 2s env { K: "v", N: 1 } workdir "/tmp"'),
                     lambda m: step(last(m)),
                     {**STEP0, "argv": ("list", ["pwd"]), "timeout": 2.0, "env": [("K", "v"), ("N", 1)],
                      "workdir": "/tmp"}),
    "step-options-any-order": (step_case('step s2 = exec a ["pwd"] workdir "/w" timeout 1m'),
                               lambda m: (step(last(m))["timeout"], step(last(m))["workdir"]), (60.0, "/w")),
    "capture-regex": (step_case('capture id = one.stdout ~ /id=(\\d+)/'),
                      lambda m: (plain(last(m).name), plain(last(m).step), plain(last(m).field), plain(last(m).regex),
                                 last(m).path),
                      ("id", "one", "stdout", ("/", r"id=(\d+)", ""), None)),
    "capture-json": (step_case('capture first = one.json("$.items[0].id")'),
                     lambda m: (plain(last(m).field), last(m).regex, plain(last(m).path)),
                     ("json", None, "$.items[0].id")),
    "test-let": (step_case('let greeting = "hi"\n    step s2 = exec a ["echo", greeting]'),
                 lambda m: (plain(nth(m, ir.Let).name), plain(nth(m, ir.Let).value), step(last(m))["argv"]),
                 ("greeting", "hi", ("list", ["echo", ("ref", "greeting")]))),
    # ---- step expectations
    **{f"expect-exit-{name}": (step_case(f"expect one.exit {op} 0"), lambda m: compare(last(m)),
                               ("field", "one", "exit", None, op2, 0))
       for name, op, op2 in [("eq", "==", "=="), ("ne", "!=", "!="), ("lt", "<", "<"), ("le", "<=", "<="),
                             ("gt", ">", ">"), ("ge", ">=", ">=")]},
    "expect-stdout-eq": (step_case('expect one.stdout == "two words\\n"'), lambda m: compare(last(m)),
                         ("field", "one", "stdout", None, "==", "two words\n")),
    "expect-stdout-contains": (step_case('expect one.stderr contains "404"'), lambda m: compare(last(m)),
                               ("field", "one", "stderr", None, "contains", "404")),
    "expect-stdout-not-contains": (step_case('expect one.stdout not contains "error"'), lambda m: compare(last(m)),
                                   ("field", "one", "stdout", None, "not contains", "error")),
    "expect-match": (step_case("expect one.stdout ~ /^hello/m"), lambda m: compare(last(m)),
                     ("field", "one", "stdout", None, "~", ("/", "^hello", "m"))),
    "expect-not-match": (step_case("expect one.stdout !~ /fail/i"), lambda m: compare(last(m)),
                         ("field", "one", "stdout", None, "!~", ("/", "fail", "i"))),
    "expect-json-path": (step_case('expect one.json("$.items[0].id") == 1'), lambda m: compare(last(m)),
                         ("path", "one", "json", "$.items[0].id", "==", 1)),
    "expect-step-duration": (step_case("expect one.duration < 2s"), lambda m: compare(last(m)),
                             ("field", "one", "duration", None, "<", 2.0)),
    # ---- span expectations
    "expect-span-duration": (step_case("expect p.duration < 250ms"), lambda m: compare(last(m)),
                             ("field", "p", "duration", None, "<", 0.25)),
    "expect-span-status": (step_case("expect p.status == ok"), lambda m: compare(last(m)),
                           ("field", "p", "status", None, "==", ("ref", "ok"))),
    "expect-span-attr": (step_case('expect p.attr["http.status_code"] == 200'), lambda m: compare(last(m)),
                         ("attr", "p", None, "http.status_code", "==", 200)),
    "expect-span-attr-match": (step_case('expect p.attr["url"] ~ /orders/'), lambda m: compare(last(m)),
                               ("attr", "p", None, "url", "~", ("/", "orders", ""))),
    "expect-count-ref": (step_case("expect count(p) >= 2"), lambda m: compare(last(m)),
                         ("count", "p", None, None, ">=", 2)),
    "expect-count-inline-name": (step_case('expect count("redis *") <= 3'),
                                 lambda m: (compare(last(m)), sel(last(m).subject.count_of)),
                                 (("count", None, None, None, "<=", 3), {**EMPTY_SEL, "name": "redis *"})),
    "expect-count-inline-selector": (step_case("expect count(/GET .*/ { kind client }) == 1"),
                                     lambda m: sel(last(m).subject.count_of),
                                     {**EMPTY_SEL, "name": ("/", "GET .*", ""), "kind": "client"}),
    "expect-count-body-only": (step_case("expect count({ status error }) == 0"),
                               lambda m: sel(last(m).subject.count_of), {**EMPTY_SEL, "status": "error"}),
    "expect-before": (step_case("expect p before q"), lambda m: order(last(m)), ("p", "q", None, None, "before")),
    "expect-after-swapped": (step_case("expect q after p"), lambda m: order(last(m)),
                             ("p", "q", None, None, "after")),
    "expect-before-within": (step_case("expect p before q within 50ms"), lambda m: order(last(m)),
                             ("p", "q", None, 0.05, "before")),
    "expect-after-within": (step_case("expect q after p within 1s"), lambda m: order(last(m)),
                            ("p", "q", None, 1.0, "after")),
    "expect-gap-min": (step_case("expect p before q gap 1ms.."), lambda m: order(last(m)),
                       ("p", "q", 0.001, None, "before")),
    "expect-gap-max": (step_case("expect p before q gap ..5ms"), lambda m: order(last(m)),
                       ("p", "q", None, 0.005, "before")),
    "expect-gap-range": (step_case("expect p before q gap 1ms..5ms"), lambda m: order(last(m)),
                         ("p", "q", 0.001, 0.005, "before")),
    "expect-gap-range-spaced": (step_case("expect p before q gap 1ms .. 2s"), lambda m: order(last(m)),
                                ("p", "q", 0.001, 2.0, "before")),
    "expect-contains": (step_case("expect p contains q"),
                        lambda m: (last(m).kind, plain(last(m).outer), plain(last(m).inner)), ("contains", "p", "q")),
    "expect-parent-of": (step_case("expect p parent of q"),
                         lambda m: (last(m).kind, plain(last(m).outer), plain(last(m).inner)), ("parent", "p", "q")),
    "expect-no-span-body": (step_case("expect no span { status error }"), lambda m: sel(last(m).match),
                            {**EMPTY_SEL, "status": "error"}),
    "expect-no-span-name": (step_case('expect no span "DROP *" { service "a" }'), lambda m: sel(last(m).match),
                            {**EMPTY_SEL, "name": "DROP *", "service": "a"}),
    "expect-no-span-regex": (step_case("expect no span /^panic/"), lambda m: sel(last(m).match),
                             {**EMPTY_SEL, "name": ("/", "^panic", "")}),
    "expect-hermetic": (step_case("expect hermetic"), lambda m: (type(last(m)).__name__, last(m).allow),
                        ("Hermetic", ())),
    "expect-hermetic-allow": (step_case('expect hermetic allow "db.internal", "10.0.0.1"'),
                              lambda m: plain(last(m).allow), ["db.internal", "10.0.0.1"]),
    # ---- span selectors
    "span-exact-name": (step_case('span r = "GET /orders"'), lambda m: sel(nth(m, ir.SpanDecl, 2).match),
                        {**EMPTY_SEL, "name": "GET /orders"}),
    "span-glob": (step_case('span r = "redis *"'), lambda m: sel(nth(m, ir.SpanDecl, 2).match),
                  {**EMPTY_SEL, "name": "redis *"}),
    "span-regex": (step_case("span r = /^GET \\/orders\\/\\d+$/i"), lambda m: sel(nth(m, ir.SpanDecl, 2).match),
                   {**EMPTY_SEL, "name": ("/", r"^GET /orders/\d+$", "i")}),
    "span-body-only": (step_case("span r = { kind server }"), lambda m: sel(nth(m, ir.SpanDecl, 2).match),
                       {**EMPTY_SEL, "kind": "server"}),
    "span-every-clause": (step_case('span r = "x" {\n      service "a"\n      kind client\n      status error\n'
                                    '      attr "k1" == 200\n      attr "k2" != "v"\n      attr "k3" ~ /re/\n'
                                    '      attr "k4" !~ /no/\n      attr "k5" exists\n      attr "k6" missing\n'
                                    '      attr "k7" >= 1.5\n      parent p\n      ancestor q\n    }'),
                          lambda m: sel(nth(m, ir.SpanDecl, 2).match),
                          {"name": "x", "service": "a", "kind": "client", "status": "error",
                           "attrs": [("k1", "==", 200), ("k2", "!=", "v"), ("k3", "~", ("/", "re", "")),
                                     ("k4", "!~", ("/", "no", "")), ("k5", "exists", None),
                                     ("k6", "missing", None), ("k7", ">=", 1.5)],
                           "parent": "p", "ancestor": "q"}),
    "span-clauses-one-line": (step_case('span r = "x" { parent p kind server attr "k" exists }'),
                              lambda m: (sel(nth(m, ir.SpanDecl, 2).match)["parent"],
                                         sel(nth(m, ir.SpanDecl, 2).match)["kind"],
                                         sel(nth(m, ir.SpanDecl, 2).match)["attrs"]),
                              ("p", "server", [("k", "exists", None)])),
    # ---- literals
    "string-escapes": (suite('  let s = "q\\"b\\\\s\\nn\\tt\\rr"\n  let u = "keep \\q"\n  service a { image "img" }'),
                       lambda m: [plain(x.value) for x in S(m).lets], ['q"b\\s\nn\tt\rr', "keep \\q"]),
    "regex-escaped-slash": (suite('  let r = /a\\/b\\d/\n  service a { image "img" }'),
                            lambda m: plain(S(m).lets[0].value), ("/", "a/b\\d", "")),
    "durations": (suite("  let d = [100us, 250ms, 1.5s, 2m, 1h, 0.001s, 10s]\n  service a { image \"img\" }"),
                  lambda m: plain(S(m).lets[0].value), [0.0001, 0.25, 1.5, 120.0, 3600.0, 0.001, 10.0]),
    "duration-text-kept": (suite("  timeout 1.50s\n  service a { image \"img\" }"),
                           lambda m: (S(m).timeout.text, S(m).timeout.seconds), ("1.50s", 1.5)),
    "template-string": (suite('  seed 1\n  let n = "{{ fake.name() }}"\n  service a { image "img" }'),
                        lambda m: plain(S(m).lets[0].value), "{{ fake.name() }}"),
}


@pytest.mark.parametrize(("source", "pick", "expected"), list(CASES.values()), ids=list(CASES))
def test_snippet_ir(source: str, pick: Callable[[ir.Module], Any], expected: Any) -> None:
    assert pick(parse_ok(source)) == expected


@pytest.mark.parametrize("source", [c[0] for c in CASES.values()], ids=list(CASES))
def test_snippet_compiles(source: str) -> None:
    """Every snippet of the table is also a meaningful file: it compiles with no error."""
    plan = compile_file("t.cr", text=source, environ={})
    assert plan.graph.number_of_nodes() > 0


# ---------------------------------------------------------------- positions


def test_locations_are_one_based_and_point_at_the_token() -> None:
    src = 'suite "s" {\n  service web { image "img" }\n  test "t" {\n    step get = exec web ["true"]\n' \
          '    expect get.exit == 0\n  }\n}\n'
    m = parse_ok(src, "f.cr")
    s = m.suites[0]
    assert (s.loc.file, s.loc.line, s.loc.col) == ("f.cr", 1, 1)
    assert (s.services[0].name.loc.line, s.services[0].name.loc.col) == (2, 11)
    st = s.tests[0].items[0]
    assert (st.name.loc.line, st.name.loc.col, st.name.loc.end_col) == (4, 10, 13)
    assert (st.service.loc.line, st.service.loc.col) == (4, 21)
    ex = s.tests[0].items[1]
    assert (ex.loc.line, ex.loc.col) == (5, 12)
    assert str(ex.subject.target.loc) == "f.cr:5:12"


def test_items_keep_source_order() -> None:
    m = parse_ok(step_case('step s2 = exec a ["true"]\n    expect s2.exit == 0\n    capture c = s2.stdout ~ /(x)/'))
    kinds = [type(x).__name__ for x in items(m)]
    assert kinds == ["Step", "SpanDecl", "SpanDecl", "Step", "Compare", "Capture"]


def test_ir_is_frozen() -> None:
    m = parse_ok(SUITE_TAIL)
    with pytest.raises(AttributeError):
        m.suites[0].name = None  # type: ignore[misc]


# ---------------------------------------------------------------- keywords


def _grammar_literals() -> set[str]:
    text = re.sub(r"//[^\n]*", "", grammar_text())
    return {lit for lit in re.findall(r'"([^"\\]+)"', text) if re.fullmatch(r"[A-Za-z_]+", lit)}


def test_keyword_list_equals_grammar_literals() -> None:
    assert _grammar_literals() == set(ALL_KEYWORDS)


def test_keyword_list_equals_lark_terminals() -> None:
    """The same check from what Lark compiled, not from a regex over the grammar text."""
    words = {t.pattern.value for t in lark_parser().terminals
             if t.pattern.type == "str" and t.pattern.value.isidentifier()}
    assert words == set(ALL_KEYWORDS)


def test_keywords_have_one_role_each() -> None:
    flat = [k for words in KEYWORDS.values() for k in words]
    assert len(flat) == len(set(flat)), "a keyword listed under two roles"
    assert all(role_of(k) is not None for k in flat)
    assert role_of("not-a-keyword") is None


def test_operators_are_grammar_literals() -> None:
    text = grammar_text()
    for op in OPERATORS:
        assert f'"{op}"' in text, op
