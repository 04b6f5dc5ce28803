"""Hostile inputs get located errors and exit 2, never a traceback, a hang or another file's contents."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import RunCrc, write_files
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import CompileError
from crc.compiler.source import MAX_SOURCE_BYTES


def errors(path: Path) -> list[tuple[str, str]]:
    """(location, message) of every error compiling `path`."""
    with pytest.raises(CompileError) as info:
        compile_file(str(path))
    return [(str(d.loc) if d.loc else "", d.message) for d in info.value.diagnostics if d.severity == "error"]


def test_invalid_utf8_is_located_at_its_byte(tmp_path: Path, crc: RunCrc) -> None:
    f = tmp_path / "bad.cr"
    f.write_bytes(b'suite "\xc3\xa9" {\n  let x = "ab\xffc"\n}\n')
    assert errors(f) == [(f"{f}:2:14", "invalid UTF-8: byte 0xff cannot start or continue a character")]
    proc = crc("check", f)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert '  2 |   let x = "ab\N{REPLACEMENT CHARACTER}c"' in proc.stderr and "help: save the file as UTF-8" in proc.stderr


def test_an_undecodable_import_is_located_in_the_imported_file(tmp_path: Path) -> None:
    files = write_files(tmp_path, {"main.cr": 'import "lib"\nsuite "s" {}\n'})
    (tmp_path / "lib.cr").write_bytes(b"# ok\n\x80\n")
    assert errors(files["main.cr"]) == [
        (f"{tmp_path}/lib.cr:2:1", "invalid UTF-8: byte 0x80 cannot start or continue a character"),
        (f"{files['main.cr']}:1:8", "cannot import `lib`: invalid UTF-8: byte 0x80 cannot start or continue a character"),
    ]


@pytest.mark.parametrize("how", ["named", "symlink in a directory", "import"])
def test_special_files_are_refused_without_reading(tmp_path: Path, crc: RunCrc, how: str) -> None:
    (tmp_path / ".git").mkdir()  # the project: symlinks inside it are followed, and checked
    (tmp_path / "zero.cr").symlink_to("/dev/zero")
    (tmp_path / "fifo.cr").unlink(missing_ok=True)
    os.mkfifo(tmp_path / "fifo.cr")  # opening it for reading would block without O_NONBLOCK
    write_files(tmp_path, {"imp.cr": 'import "fifo"\nsuite "s" {}\n'})
    target = {"named": "/dev/zero", "symlink in a directory": str(tmp_path), "import": str(tmp_path / "imp.cr")}[how]
    proc = crc("check", target, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "not a regular file" in proc.stderr


def test_oversized_sources_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "big.cr"
    f.write_bytes(b"#" * (MAX_SOURCE_BYTES + 1))
    assert errors(f) == [("", f"cannot read {f}: {MAX_SOURCE_BYTES + 1} bytes, more than the {MAX_SOURCE_BYTES} "
                              "allowed")]


def test_imports_outside_the_project_are_refused_and_never_shown(tmp_path: Path, crc: RunCrc) -> None:
    secret = tmp_path / "outside" / "secret.cr"
    write_files(tmp_path, {"outside/secret.cr": "TOP-SECRET-LINE {\n", "proj/.git/HEAD": "",
                           "proj/sub/main.cr": 'import "/etc/shadow"\nimport "../../outside/secret"\n'
                                               'import "link"\nimport "../lib"\nsuite "s" {}\n',
                           "proj/lib.cr": "let ok = 1\n"})
    (tmp_path / "proj/sub/link.cr").symlink_to(secret)
    main = tmp_path / "proj/sub/main.cr"
    root = tmp_path / "proj"
    assert errors(main) == [
        (f"{main}:1:8", f"cannot import `/etc/shadow`: it is outside the project ({root})"),
        (f"{main}:2:8", f"cannot import `../../outside/secret`: it is outside the project ({root})"),
        (f"{main}:3:8", f"cannot import `link`: it is outside the project ({root})"),
    ]  # `../lib` stays inside the project (the directory holding .git): accepted
    proc = crc("check", main)
    assert proc.returncode == 2 and "TOP-SECRET" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("target", ["a" * 5000, "x/" * 600 + "y", "b" * 300])
def test_import_paths_the_os_refuses_are_located(tmp_path: Path, target: str) -> None:
    files = write_files(tmp_path, {"main.cr": f'import "{target}"\nsuite "s" {{}}\n'})
    [(loc, msg)] = errors(files["main.cr"])
    assert loc == f"{files['main.cr']}:1:8" and msg.startswith("cannot import `")
    assert "longer than 1024 characters" in msg or "file name too long" in msg


def compile_errors(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    f = tmp_path / "t.cr"
    f.write_text(text, encoding="utf-8")
    return [(loc.removeprefix(f"{f}:"), msg) for loc, msg in errors(f)]


@pytest.mark.parametrize(("text", "expected"), [
    ("let x = " + "[" * 150 + "1" + "]" * 150 + "\n", ("1:107", "nested too deeply: more than 100 levels")),
    ("let x = " + "9" * 5000 + "\n", ("1:9", "integer out of range (a 64-bit signed integer at most)")),
    ("let x = 9223372036854775808\n", ("1:9", "integer out of range (a 64-bit signed integer at most)")),
    ('suite "s" {\n  seed ' + "9" * 30 + "\n}\n", ("2:8", "integer out of range (a 64-bit signed integer at most)")),
    ('suite "s" {\n  timeout 99999999999h\n}\n', ("2:11", "duration too long (at most 365 days)")),
    ("let " + "n" * 200 + " = 1\n", ("1:5", "name longer than 128 characters")),
])
def test_parser_limits_are_located(tmp_path: Path, text: str, expected: tuple[str, str]) -> None:
    assert compile_errors(tmp_path, text) == [expected]


def test_depth_at_the_limit_still_compiles(tmp_path: Path) -> None:
    f = tmp_path / "ok.cr"
    f.write_text("let x = " + "[" * 90 + "1" + "]" * 90 + '\nsuite "s" {}\n', encoding="utf-8")
    assert compile_file(str(f)).suites[0]["name"] == "s"


@pytest.mark.parametrize(("template", "why"), [
    ("{{ 'a'.zfill(10**9) }}", "template value longer than 1000000 characters"),
    ("{{ 'a' * 10**9 }}", "template value longer than 1000000 characters"),
    ("{{ [1] * 10**8 }}", "template value longer than 1000000 characters"),
    ("{{ '{:>1000000000}'.format(1) }}", "a format width too large"),
    ("{{ '%1000000000s' % 1 }}", "a format width too large"),
    ("{{ 7 ** 10000000 }}", "template number too large"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "template loops run more than 100000 times in all"),
    ("{% for i in range(99999) %}" + "x" * 20 + "{% endfor %}", "template output longer than 1000000 characters"),
    ("{{ " + "[" * 400 + "]" * 400 + " }}", "template nested too deeply"),
    ("{{ fake.factories[0].providers }}", "has no attribute 'factories'"),
    ("{% set l = [1] %}{{ l.append(2) }}", "access to attribute 'append' of 'list' object is unsafe"),
])
def test_templates_cannot_compute_without_bound(tmp_path: Path, template: str, why: str) -> None:
    [(loc, msg)] = compile_errors(tmp_path, f'let x = "{template}"\nsuite "s" {{}}\n')
    assert loc.startswith("1:9") and why in msg, msg


def test_no_template_changes_another_files_fake_values(tmp_path: Path) -> None:
    """Faker's word lists are shared by every Faker in the process: a template cannot reach them."""
    plain = 'suite "s" {\n  seed 3\n  let who = "{{ fake.last_name() }}"\n  test "t" {\n' \
            '    step a = run "crc/busybox:dev" ["echo", who]\n  }\n}\n'
    f = tmp_path / "plain.cr"
    f.write_text(plain, encoding="utf-8")
    before = compile_file(str(f)).digest
    hostile = tmp_path / "hostile.cr"
    for attack in ("fake.factories[0].providers[0].last_names.clear()", "fake.last_names.clear()",
                   "fake.seed(1)", "fake.random.seed(1)"):
        hostile.write_text(f'suite "h" {{\n  let x = "{{{{ {attack} }}}}"\n}}\n', encoding="utf-8")
        with pytest.raises(CompileError):
            compile_file(str(hostile))
    assert compile_file(str(f)).digest == before


def test_captures_in_sh_scripts_warn_unless_quoted(tmp_path: Path) -> None:
    from crc.compiler.templates import render_with, runtime_environment

    f = tmp_path / "sh.cr"
    f.write_text('suite "q" {\n  service box {\n    image "crc/busybox:dev"\n    command ["sleep", "3600"]\n  }\n'
                 '  test "t" {\n    step a = exec box ["echo", "x"]\n    capture id = a.stdout ~ /^(.*)$/m\n'
                 '    step b = exec box sh "echo {{ id }}"\n    step c = exec box sh "echo {{ id | shquote }}"\n'
                 '  }\n}\n', encoding="utf-8")
    warnings = [(d.loc.line if d.loc else 0, d.message, d.help) for d in compile_file(str(f)).warnings]
    assert warnings == [(9, "run-time value `id` is interpolated into a shell script unquoted: whatever shell "
                            "syntax it holds runs", "quote it: {{ id | shquote }}")]
    hostile = "order-1; echo INJECTED > /tmp/pwned"
    assert render_with(runtime_environment(), "echo {{ id | shquote }}", {"id": hostile}) == \
        "echo 'order-1; echo INJECTED > /tmp/pwned'"


@pytest.mark.parametrize("source", ["/tmp/a\0b", "rel\0dir", "./x\0"])
def test_a_nul_in_a_volume_source_is_checked_as_written(tmp_path: Path, source: str) -> None:
    """Found by the fuzzer: the host-access check and the missing-source lint resolved such paths and raised."""
    (tmp_path / ".git").mkdir()
    text = ('suite "s" {\n  service a {\n    image "crc/busybox:dev"\n    command ["sleep", "1"]\n'
            f'    volume "{source}" -> "/x"\n  }}\n  test "t" {{\n    step s = exec a ["true"]\n  }}\n}}\n')
    try:
        compile_file(str(tmp_path / "nul.cr"), text=text, environ={})
    except CompileError as e:
        assert all(d.loc is not None for d in e.diagnostics if d.severity == "error")


def test_a_size_past_64_bits_is_located(tmp_path: Path) -> None:
    """Found by the fuzzer: a memory limit of 10^39 GiB overflowed converting to bytes."""
    text = ('suite "s" {\n  service a {\n    image "crc/busybox:dev"\n    memory ' + "9" * 39 + 'GiB\n  }\n'
            '  test "t" {\n    step s = exec a ["true"]\n  }\n}\n')
    with pytest.raises(CompileError) as e:
        compile_file(str(tmp_path / "big.cr"), text=text, environ={})
    assert any("is not a size" in d.message and d.loc is not None and d.loc.line == 4 for d in e.value.diagnostics)


def test_a_plan_nesting_a_value_a_thousand_deep_is_refused_naming_the_file(tmp_path: Path, crc: RunCrc) -> None:
    """Found by the fuzzer: describing the bad value (its repr) raised RecursionError in `crc graph`."""
    import msgpack

    src = write_files(tmp_path, {"p.cr": 'suite "s" {\n  service web { image "crc/busybox:dev" }\n'
                                           '  test "t" {\n    step a = exec web ["true"]\n  }\n}\n'})["p.cr"]
    data = compile_file(str(src), environ={}).to_data()
    data["suites"][0]["env_reads"] = {"HOME": "DEEP"}
    blob = msgpack.packb(data, use_bin_type=True)
    plan = tmp_path / "deep.plan"
    plan.write_bytes(blob.replace(msgpack.packb("DEEP"), b"\x91" * 1000 + b"\xc0"))  # [[[...[nil]...]]]
    proc = crc("graph", "--format", "dot", plan)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{plan}: damaged Plan file: " in proc.stderr and "[[[[...]]]]" in proc.stderr


def test_a_plan_whose_node_entry_nests_a_thousand_deep_is_refused_naming_the_file(tmp_path: Path,
                                                                                  crc: RunCrc) -> None:
    """Found by the fuzzer: the structure check's own description of a bad node entry (a second copy of the
    short repr, without a depth limit) raised RecursionError in `crc graph`."""
    import msgpack

    src = write_files(tmp_path, {"p.cr": 'suite "s" {\n  service web { image "crc/busybox:dev" }\n'
                                           '  test "t" {\n    step a = exec web ["true"]\n  }\n}\n'})["p.cr"]
    data = compile_file(str(src), environ={}).to_data()
    data["nodes"].append("DEEP")
    blob = msgpack.packb(data, use_bin_type=True)
    plan = tmp_path / "deep.plan"
    plan.write_bytes(blob.replace(msgpack.packb("DEEP"), b"\x91" * 1000 + b"\xc0"))  # [[[...[nil]...]]]
    proc = crc("graph", plan)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{plan}: damaged Plan file: a node is not [id, attributes]: [[[[...]]]]" in proc.stderr, proc.stderr

