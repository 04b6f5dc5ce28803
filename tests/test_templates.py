"""Templates and seeding: the same source and seed give byte-identical Plans (in one process and across
processes), seeds are per suite, the functions templates can call, and what is left for run time."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import run_crc
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import CompileError
from crc.compiler.plan import Plan
from crc.compiler.templates import DEFAULT_CLOCK, TemplateProblem, Templates, derive_seed

SEEDED = '''suite "{name}" {{
  seed {seed}
  clock "2024-02-03T04:05:06Z"
  let fixed = "constant"
  let when = "{{{{ now().isoformat() }}}}"
  let hashed = "{{{{ sha256('abc') }}}}"
  let person = "{{{{ fake.name() }}}}"
  let mail = "{{{{ fake.email() }}}}"
  let iban = "{{{{ fake.iban() }}}}"
  let id = "{{{{ uuid() }}}}"
  let id2 = "{{{{ uuid() }}}}"
  service a {{
    image "img"
    env {{ FIXED: fixed, WHEN: when, HASHED: hashed, PERSON: person, MAIL: mail, IBAN: iban, ID: id, ID2: id2 }}
  }}
  test "t" {{
    step one = exec a ["echo", person, "{{{{ person }}}}"]
  }}
}}
'''

SEEDED_KEYS = {"PERSON", "MAIL", "IBAN", "ID", "ID2"}


def seeded(name: str = "s", seed: int = 42) -> str:
    return SEEDED.format(name=name, seed=seed)


def env_of(plan: Plan, suite: str = "s") -> dict[str, str]:
    return plan.graph.nodes[f"{suite}::service:a"]["env"]


def compile_text(text: str, environ: dict[str, str] | None = None) -> Plan:
    return compile_file("t.cr", text=text, environ={} if environ is None else environ)


# ---------------------------------------------------------------- determinism


def test_same_seed_same_values_and_bytes() -> None:
    a, b = compile_text(seeded()), compile_text(seeded())
    assert env_of(a) == env_of(b)
    assert a.to_bytes() == b.to_bytes()
    assert a.digest == b.digest


def test_seeded_values_look_right() -> None:
    env = env_of(compile_text(seeded()))
    assert env["FIXED"] == "constant"
    assert "@" in env["MAIL"]
    assert len(env["PERSON"].split()) >= 2
    assert env["IBAN"][:2].isalpha() and env["IBAN"][2:4].isdigit()
    for key in ("ID", "ID2"):
        u = uuid.UUID(env[key])
        assert u.version == 4
    assert env["ID"] != env["ID2"], "each uuid() call is a new value"


def test_a_let_is_evaluated_once() -> None:
    plan = compile_text(seeded())
    argv = plan.graph.nodes["s::t::step:one"]["argv"]
    assert argv == ["echo", env_of(plan)["PERSON"], env_of(plan)["PERSON"]]


def test_different_seed_changes_only_seeded_values() -> None:
    a, b = compile_text(seeded(seed=1)), compile_text(seeded(seed=2))
    ea, eb = env_of(a), env_of(b)
    assert {k for k in ea if ea[k] != eb[k]} == SEEDED_KEYS
    # the graph has the same shape; only seeded values (and the seed itself) differ
    assert sorted(a.graph.nodes) == sorted(b.graph.nodes)
    assert sorted(a.graph.edges(keys=True)) == sorted(b.graph.edges(keys=True))
    ma, mb = a.suites[0], b.suites[0]
    assert {k for k in ma if ma[k] != mb[k]} == {"seed", "faker_seed"}


def test_plan_bytes_identical_across_processes(tmp_path: Path) -> None:
    """Two `crc compile` processes (with different hash seeds) write byte-identical Plan files."""
    (tmp_path / "s.cr").write_text(seeded())
    outs = []
    for i, hashseed in enumerate(("1", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = tmp_path / f"p{i}.plan"
        proc = run_crc("compile", "s.cr", "-o", out.name, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert Plan.from_bytes(outs[0]).to_bytes() == outs[0]


def test_values_identical_across_processes(tmp_path: Path) -> None:
    code = ("from crc.compiler.compile import compile_file\n"
            "import sys\n"
            "p = compile_file('s.cr', environ={})\n"
            "sys.stdout.write(repr(sorted(p.graph.nodes['s::service:a']['env'].items())))\n")
    (tmp_path / "s.cr").write_text(seeded())
    outs = {subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout for h in (3, 4)}
    assert len(outs) == 1


# ---------------------------------------------------------------- per-suite seeding


def test_adding_a_suite_does_not_change_another_suites_values() -> None:
    alone = env_of(compile_text(seeded("checkout")), "checkout")
    before = compile_text(seeded("other") + seeded("checkout"))
    after = compile_text(seeded("checkout") + seeded("other"))
    assert env_of(before, "checkout") == alone
    assert env_of(after, "checkout") == alone


def test_same_seed_in_two_suites_gives_different_values() -> None:
    plan = compile_text(seeded("one") + seeded("two"))
    e1, e2 = env_of(plan, "one"), env_of(plan, "two")
    assert all(e1[k] != e2[k] for k in SEEDED_KEYS)
    assert plan.suites[0]["faker_seed"] != plan.suites[1]["faker_seed"]


def test_faker_seed_is_derived_from_seed_and_suite_name() -> None:
    plan = compile_text(seeded("x", 7))
    assert plan.suites[0]["faker_seed"] == derive_seed(7, "x", "faker")
    assert derive_seed(7, "x", "faker") == derive_seed(7, "x", "faker")
    assert derive_seed(7, "x", "faker") != derive_seed(8, "x", "faker")
    assert 0 <= derive_seed(7, "x") < 2**64


def test_default_seed_is_fixed() -> None:
    src = seeded().replace("  seed 42\n", "")
    assert env_of(compile_text(src)) == env_of(compile_text(src))
    assert compile_text(src).suites[0]["seed"] == 0


def test_module_level_lets_are_seeded_per_suite() -> None:
    src = ('let who = "{{ fake.name() }}"\n'
           'suite "one" {\n  service a { image "i" env { W: who } }\n  test "t" { step s = exec a ["true"] }\n}\n'
           'suite "two" {\n  service a { image "i" env { W: who } }\n  test "t" { step s = exec a ["true"] }\n}\n')
    plan = compile_text(src)
    w1 = plan.graph.nodes["one::service:a"]["env"]["W"]
    w2 = plan.graph.nodes["two::service:a"]["env"]["W"]
    assert w1 != w2
    alone = compile_text(src.split('suite "two"')[0])
    assert alone.graph.nodes["one::service:a"]["env"]["W"] == w1


# ---------------------------------------------------------------- functions


def test_now_is_frozen_to_the_clock() -> None:
    env = env_of(compile_text(seeded()))
    assert env["WHEN"] == "2024-02-03T04:05:06+00:00"


def test_default_clock() -> None:
    src = seeded().replace('  clock "2024-02-03T04:05:06Z"\n', "")
    assert env_of(compile_text(src))["WHEN"] == "2025-01-01T00:00:00+00:00"
    assert DEFAULT_CLOCK == "2025-01-01T00:00:00Z"


def test_naive_clock_is_utc() -> None:
    src = seeded().replace("2024-02-03T04:05:06Z", "2024-02-03T04:05:06")
    assert env_of(compile_text(src))["WHEN"] == "2024-02-03T04:05:06+00:00"


def test_sha256_function_and_filter() -> None:
    src = ('suite "s" {\n  let x = "abc"\n  service a { image "i" env { F: "{{ sha256(x) }}", G: "{{ x | sha256 }}" } }\n'
           '  test "t" { step s = exec a ["true"] }\n}\n')
    env = env_of(compile_text(src))
    want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert env == {"F": want, "G": want}


def test_env_with_default_and_recorded_reads() -> None:
    src = ('suite "s" {\n  service a { image "i" env { A: "{{ env(\'CRC_T_SET\') }}", '
           'B: "{{ env(\'CRC_T_UNSET\', \'dflt\') }}" } }\n  test "t" { step s = exec a ["true"] }\n}\n')
    plan = compile_text(src, environ={"CRC_T_SET": "yes"})
    assert env_of(plan) == {"A": "yes", "B": "dflt"}
    assert plan.suites[0]["env_reads"] == {"CRC_T_SET": "yes", "CRC_T_UNSET": "dflt"}


def test_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRC_T_FROM_OS", "os-value")
    src = ('suite "s" {\n  service a { image "{{ env(\'CRC_T_FROM_OS\') }}" }\n'
           '  test "t" { step s = exec a ["true"] }\n}\n')
    assert compile_file("t.cr", text=src).graph.nodes["s::service:a"]["image"] == "os-value"


def test_env_without_default_is_a_located_error() -> None:
    src = 'suite "s" {\n  service a { image "{{ env(\'CRC_T_NOPE\') }}" }\n  test "t" { step s = exec a ["true"] }\n}\n'
    with pytest.raises(CompileError) as exc:
        compile_text(src)
    d = next(d for d in exc.value.diagnostics if "CRC_T_NOPE" in d.message)
    assert (d.loc.line, d.loc.col) == (2, 21)
    assert d.help is not None and 'env("CRC_T_NOPE", "value")' in d.help


@pytest.mark.parametrize(("expr", "fragment"), [
    ("{{ nope }}", "'nope' is undefined"),
    ("{{ fake.no_such_provider() }}", "no_such_provider"),
    ("{{ person.upper( }}", "template syntax error"),
    ("{{ ''.__class__ }}", "not allowed"),
    ("{{ uuid(1, 2) }}", "template error"),
])
def test_template_errors_are_located(expr: str, fragment: str) -> None:
    src = f'suite "s" {{\n  let person = "x"\n  service a {{\n    image "img"\n    env {{ K: "{expr}" }}\n  }}\n' \
          '  test "t" { step s = exec a ["true"] }\n}\n'
    with pytest.raises(CompileError) as exc:
        compile_text(src)
    d = next(d for d in exc.value.diagnostics if fragment in d.message)
    assert (d.loc.file, d.loc.line, d.loc.col) == ("t.cr", 5, 14)


def test_faker_beyond_name_and_email() -> None:
    src = ('suite "s" {\n  seed 9\n  let v = "{{ fake.iban() }}|{{ fake.city() }}|{{ fake.pyint(1, 9) }}|'
           '{{ fake.date_of_birth() }}"\n  service a { image "i" env { V: v } }\n'
           '  test "t" { step s = exec a ["true"] }\n}\n')
    v1, v2 = env_of(compile_text(src))["V"], env_of(compile_text(src))["V"]
    assert v1 == v2
    iban, city, n, dob = v1.split("|")
    assert len(iban) > 10 and city and 1 <= int(n) <= 9 and len(dob) == 10


def test_templates_object_directly() -> None:
    t = Templates(seed=1, suite="s", clock="2025-06-01T00:00:00Z", environ={})
    assert t.render("plain", {}) == "plain"
    assert t.render("{{ x }}-{{ now().month }}", {"x": "v"}) == "v-6"
    assert t.names("{{ a }} {{ b | sha256 }} {{ fake.name() }}") == {"a", "b", "fake"}
    assert t.names("no template") == set()
    with pytest.raises(TemplateProblem):
        t.render("{{ undefined_thing }}", {})
    with pytest.raises(ValueError):
        Templates(seed=1, suite="s", clock="not a time", environ={})


def test_faker_is_not_imported_when_unused() -> None:
    code = ("import sys\nfrom crc.compiler.compile import compile_file\n"
            "compile_file('t.cr', text='suite \"s\" { service a { image \"i\" } test \"t\" { step s = exec a [\"x\"] } }')\n"
            "print(any(m == 'faker' or m.startswith('faker.') for m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ---------------------------------------------------------------- templates in service templates


def test_template_parameters_and_defaults() -> None:
    src = ('template web(port = 8080, root = "/www", tag) {\n  image "busybox:{{ tag }}"\n'
           '  command ["httpd", "-p", "{{ port }}", "-h", root]\n  port port\n}\n'
           'suite "s" {\n  service a = web(tag = "dev")\n  service b = web(9090, "/srv", "x") { image "over" }\n'
           '  test "t" { step s = exec a ["true"] }\n}\n')
    g = compile_text(src).graph
    a, b = g.nodes["s::service:a"], g.nodes["s::service:b"]
    assert (a["image"], a["command"], a["ports"]) == ("busybox:dev", ["httpd", "-p", "8080", "-h", "/www"],
                                                      [{"container": 8080, "host": None}])
    assert (b["image"], b["command"], b["ports"]) == ("over", ["httpd", "-p", "9090", "-h", "/srv"], [{"container": 9090, "host": None}])
    assert a["template"] == "web"


def test_template_default_can_be_seeded() -> None:
    src = ('template t(pw = "{{ fake.password() }}") {\n  image "i"\n  env { PW: pw }\n}\n'
           'suite "s" {\n  seed 4\n  service a = t()\n  service b = t()\n  test "t" { step s = exec a ["true"] }\n}\n')
    g1, g2 = compile_text(src).graph, compile_text(src).graph
    pa, pb = g1.nodes["s::service:a"]["env"]["PW"], g1.nodes["s::service:b"]["env"]["PW"]
    assert pa != pb, "a default is evaluated for each use"
    assert (pa, pb) == (g2.nodes["s::service:a"]["env"]["PW"], g2.nodes["s::service:b"]["env"]["PW"])


# ---------------------------------------------------------------- values left for run time


CAPTURE = '''suite "s" {
  seed 5
  let who = "{{ fake.name() }}"
  let greeting = "hello"
  service a { image "x" }
  test "t" {
    step one = exec a "echo {{ who }} 'x y'"
    capture c = one.stdout ~ /(.*)/
    step two = exec a ["echo", "{{ c }}-{{ greeting }}", c] env { K: "{{ c | sha256 }}" }
    expect two.stdout == "{{ c }}"
  }
}
'''


def _node(plan: Plan, name: str) -> dict[str, Any]:
    return plan.graph.nodes[f"s::t::{name}"]


def test_templated_value_is_one_argv_element() -> None:
    plan = compile_text(CAPTURE)
    argv = _node(plan, "step:one")["argv"]
    assert len(argv) == 3 and argv[0] == "echo" and " " in argv[1] and argv[2] == "x y"


def test_captures_are_rendered_at_run_time() -> None:
    plan = compile_text(CAPTURE)
    two = _node(plan, "step:two")
    assert two["argv"] == ["echo", "{{ c }}-{{ greeting }}", "{{ c }}"]
    assert two["env"] == {"K": "{{ c | sha256 }}"}
    assert two["deferred"] is True
    assert two["template_values"] == {"greeting": "hello"}
    one = _node(plan, "step:one")
    assert one["deferred"] is False
    assert one["captures"] == [{"name": "c", "loc": {"file": "t.cr", "line": 8, "col": 5, "end_line": 8, "end_col": 36},
                                "field": "stdout", "regex": {"pattern": "(.*)", "flags": ""}, "path": None,
                                "key": None}]
    a = _node(plan, "assert:1")
    assert (a["value"], a["deferred"]) == ("{{ c }}", True)
    assert plan.graph.has_edge("s::t::step:one", "s::t::step:two", "after")


def test_capture_mixed_with_a_seeded_call_is_an_error() -> None:
    src = CAPTURE.replace('"{{ c }}-{{ greeting }}"', '"{{ c }}{{ uuid() }}"')
    with pytest.raises(CompileError) as exc:
        compile_text(src)
    d = exc.value.diagnostics[0]
    assert "can only use lets and captures" in d.message and d.loc.line == 9


def test_capture_adds_an_order_edge_even_with_explicit_after() -> None:
    src = ('suite "s" {\n  service a { image "x" }\n  test "t" {\n    step one = exec a ["true"]\n'
           '    step zero = exec a ["true"]\n    capture c = one.stdout ~ /(.*)/\n'
           '    step two after zero = exec a ["echo", c]\n  }\n}\n')
    g = compile_text(src).graph
    assert g.edges["s::t::step:one", "s::t::step:two", "after"]["capture"] == "c"
    assert g.has_edge("s::t::step:zero", "s::t::step:two", "after")


def test_readiness_log_text_and_span_name_are_rendered_like_every_string() -> None:
    p = compile_file("t.cr", text='''
template web(port = 8080, name = "boot") {
  image "img"
  ready log "listening on {{ port }}"
  ready span "{{ name }} done"
}
suite "s" {
  let n = 2
  service w = web(port = 9090, name = "warm-{{ n }}")
  test "t" { step a = exec w ["true"] }
}
''', environ={})
    probes = p.node("s::service:w")["probes"]
    assert [pr.get("text") or pr.get("span") for pr in probes] == ["listening on 9090", "warm-2 done"]
