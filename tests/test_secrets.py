"""Secrets: `secret("NAME")` is read when a container starts and its value is never stored or printed.

The end-to-end test writes one known secret through every path a value can take (service env and command,
step argv and env, stdout, stderr, a service's log, a span attribute, a failure message, a capture) and then
greps everything crc wrote for it: terminal output, JSON and JUnit reports, the recording, the compile
cache, a compiled Plan, `crc spans`, `crc logs`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import CompileError
from crc.compiler.secrets import Masker, SecretProblem, misplaced, names_in, placeholder, reveal

SECRET = "s3cr3t-Qm7e-9xRk"


# ---------------------------------------------------------------- the logic


def test_reveal_and_mask() -> None:
    m = Masker()
    text = f"Bearer {placeholder('TOKEN')} and {placeholder('OTHER')}"
    assert names_in({"env": {"A": text}, "argv": ["x"]}) == {"TOKEN", "OTHER"}
    out = reveal(text, {"TOKEN": "abcd1234", "OTHER": "zzzzzz"}, m)
    assert out == "Bearer abcd1234 and zzzzzz"
    assert m.text(f"got abcd1234zzzzzz{out}") == "got ******Bearer *** and ***"
    assert m.data({"k": ["abcd1234", ("zzzzzz",)], "abcd1234": 1}) == {"k": ["***", ("***",)], "***": 1}
    with pytest.raises(SecretProblem, match="secret `TOKEN` is not set: export TOKEN"):
        reveal(text, {}, m)
    with pytest.raises(SecretProblem, match="shorter than 4"):
        reveal(placeholder("TOKEN"), {"TOKEN": "ab"}, m)
    assert not Masker() and Masker().text("abcd1234") == "abcd1234"


def test_the_longest_value_is_masked_first() -> None:
    m = Masker(["abcd", "abcdefgh"])
    assert m.text("abcdefgh abcd") == "*** ***"


def test_misplaced() -> None:
    p = placeholder("T")
    assert misplaced("service", {"env": {"A": p}, "command": [p], "image": "x"}) == []
    assert misplaced("service", {"env": {}, "image": p}) == ["image"]
    assert misplaced("step", {"argv": [p], "env": {"A": p}, "template_values": {"t": p}}) == []
    assert misplaced("assert", {"value": p}) == ["value"]


def test_the_plan_holds_the_name_never_the_value(tmp_path: Path) -> None:
    src = tmp_path / "s.cr"
    src.write_text('suite "s" {\n  let tok = "{{ secret(\'TOKEN\') }}"\n  service api {\n    image "x"\n'
                   '    env { A: "Bearer {{ tok }}" }\n  }\n  test "t" {\n    step s = exec api ["echo", tok]\n'
                   '  }\n}\n')
    plan = compile_file(str(src), environ={"TOKEN": SECRET})
    assert SECRET.encode() not in plan.to_bytes()
    assert plan.node("s::service:api")["env"]["A"] == f"Bearer {placeholder('TOKEN')}"
    assert plan.node("s::t::step:s")["argv"] == ["echo", placeholder("TOKEN")]


def test_a_secret_where_it_would_be_shown_is_a_located_error(tmp_path: Path) -> None:
    src = tmp_path / "s.cr"
    src.write_text('suite "s" {\n  service api {\n    image "{{ secret(\'IMG\') }}"\n  }\n  test "t" {\n'
                   '    step s = exec api ["true"]\n    expect s.stdout == "{{ secret(\'X\') }}"\n  }\n}\n')
    with pytest.raises(CompileError) as e:
        compile_file(str(src))
    got = [(d.loc.line if d.loc else 0, d.message) for d in e.value.diagnostics]
    assert got == [(2, "secret() used in the image of a service"),
                   (7, "secret() used in the value of an expectation")]


def test_secret_takes_a_variable_name(tmp_path: Path) -> None:
    src = tmp_path / "s.cr"
    src.write_text('suite "s" {\n  service api {\n    image "x"\n    env { A: "{{ secret(\'no spaces\') }}" }\n'
                   '  }\n  test "t" {\n    step s = exec api ["true"]\n  }\n}\n')
    with pytest.raises(CompileError) as e:
        compile_file(str(src))
    assert "secret() takes an environment variable's name" in e.value.diagnostics[0].message


# ---------------------------------------------------------------- end to end, on the real engine

SOURCE = """suite "secret-e2e" {
  let tok = "{{ secret('CRC_E2E_TOKEN') }}"
  service app {
    image "crc/demo:dev"
    env { API_TOKEN: "Bearer {{ tok }}" }
    command ["sh", "-c", "echo service-start $API_TOKEN; echo service-err $API_TOKEN >&2; sleep 300"]
  }
  test "every path" {
    step hash = exec app ["sh", "-c", "printf %s \\"$API_TOKEN\\" | sha256sum"]
    expect hash.stdout contains "HASH"
    step echo = exec app ["sh", "-c", "echo out {{ tok }}; echo err $T >&2"] env { T: tok }
    expect echo.stdout == "out ***\\n"
    expect echo.stderr == "err ***\\n"
    capture c = echo.stdout ~ /out (.*)/
    step span = exec app ["python3", "-c", "SPAN_SCRIPT"]
    span leaky = "leaky"
    expect count(leaky) == 1
    step fail = exec app ["sh", "-c", "echo failing with $API_TOKEN >&2; exit 4"]
  }
}
"""

SPAN_SCRIPT = ("from opentelemetry import trace; from opentelemetry.sdk.trace import TracerProvider; "
               "from opentelemetry.sdk.trace.export import SimpleSpanProcessor; "
               "from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter; import os; "
               "p = TracerProvider(); p.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter())); "
               "s = p.get_tracer('t').start_span('leaky', attributes={'token': os.environ['API_TOKEN']}); "
               "s.end(); p.shutdown()")


@pytest.fixture
def e2e(tmp_path: Path) -> Iterator[Path]:
    from dockerutil import crc_resources, engine_answers, remove_resources

    if not engine_answers():
        pytest.skip("no Docker engine answers (run `bash .ci/setup`)")
    digest = hashlib.sha256(f"Bearer {SECRET}".encode()).hexdigest()
    (tmp_path / "s.cr").write_text(SOURCE.replace("HASH", digest).replace("SPAN_SCRIPT", SPAN_SCRIPT))
    yield tmp_path
    left = crc_resources("secret-e2e")
    remove_resources(left)
    assert not left


@pytest.mark.docker
def test_a_secret_reaches_the_container_and_nothing_crc_writes(e2e: Path) -> None:
    from dockerutil import crc

    env = {"CRC_E2E_TOKEN": SECRET, "CRC_STATE_DIR": str(e2e / "state")}
    run = crc("run", "s.cr", "--no-progress", "--pull", "never", "--logs", "--json", "r.json", "--junit", "j.xml",
              "--record", "r.crcrec", cwd=e2e, env=env)
    assert run.returncode == 1, run.stdout + run.stderr
    # The container got the value (its hash matched), the only failure is the deliberate one, and the
    # span with the secret attribute arrived.
    assert run.stdout.count("FAIL ") == 2 and "step `fail` exited with code 4" in run.stdout, run.stdout
    assert "failing with Bearer ***" in run.stdout and "app | service-start Bearer ***" in run.stdout
    compiled = crc("compile", "s.cr", "-o", "out.plan", cwd=e2e, env=env)
    assert compiled.returncode == 0, compiled.stderr
    spans = crc("spans", "r.crcrec", "--attrs", cwd=e2e, env=env)
    assert "leaky" in spans.stdout and "token = 'Bearer ***'" in spans.stdout
    logs = crc("logs", "r.json", cwd=e2e, env=env)
    assert "service-err Bearer ***" in logs.stdout
    printed = run.stdout + run.stderr + compiled.stdout + spans.stdout + logs.stdout
    assert SECRET not in printed
    written = [p for p in e2e.rglob("*") if p.is_file()] + [p for p in Path(e2e / ".crc").rglob("*") if p.is_file()]
    assert any(p.name == "r.crcrec" for p in written) and any(".crc" in p.parts for p in written)
    leaked = [p for p in written if SECRET.encode() in p.read_bytes()]
    assert leaked == []
    assert os.environ.get("CRC_E2E_TOKEN") is None  # the test process itself never had it
