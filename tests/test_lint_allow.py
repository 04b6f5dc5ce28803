"""Silencing lints: `# crc: allow CODE` on a warning's line, the project's `[lints] ignore`, `crc check
--ignore`; allow comments that name no lint or silence nothing are warnings themselves (compiler/lints.py
`suppress`). And a templated import path is one error, not two."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import CompileError, render
from crc.compiler.format import format_source
from crc.compiler.lints import HOST_NEAR_MISS, IGNORABLE, PROBE_PORT, UNKNOWN_LINT, UNUSED_ALLOW
from crc.compiler.plan import Plan

from crc.cli import main
from crc.config import ConfigError, load

SUITE = '''suite "s" {
  service cache { image "img" }
  service api {
    image "img"
    command ["serve", "redis://cahce:6379"]<c1>
    env { A: "redis://cahe:6379" }<c2>
    port 80
    ready tcp 81<c3>
    needs cache
  }
  test "t" {
    step s = exec api ["true"]<c4>
  }
}
'''


def source(c1: str = "", c2: str = "", c3: str = "", c4: str = "") -> str:
    """SUITE with a comment (or nothing) at the end of lines 5, 6, 8 and 12."""
    return SUITE.replace("<c1>", c1).replace("<c2>", c2).replace("<c3>", c3).replace("<c4>", c4)


def compiled(tmp_path: Path, text: str, ignore: tuple[str, ...] = ()) -> Plan:
    path = tmp_path / "t.cr"
    path.write_text(text, encoding="utf-8")
    return compile_file(str(path), environ={}, ignore=ignore)


def warnings(p: Plan) -> list[tuple[str | None, int, int, str]]:
    return [(w.code, w.loc.line, w.loc.col, w.message) for w in p.warnings if w.loc]


NEAR_5 = (HOST_NEAR_MISS, 5, 23, "`cahce` is not a service of this suite")
NEAR_6 = (HOST_NEAR_MISS, 6, 14, "`cahe` is not a service of this suite")
PORT_8 = (PROBE_PORT, 8, 15, "the probe checks port 81, which service `api` does not declare")


def test_without_allow_comments_every_lint_is_reported(tmp_path: Path) -> None:
    assert warnings(compiled(tmp_path, source())) == [NEAR_5, NEAR_6, PORT_8]


def test_an_allow_comment_silences_its_code_on_its_own_line_only(tmp_path: Path) -> None:
    p = compiled(tmp_path, source(c1="  # crc: allow host-near-miss", c3="  # crc: allow probe-port -- sidecar"))
    assert warnings(p) == [NEAR_6]
    # on the line before, it silences nothing there and is reported as unused
    text = source().replace('    ready tcp 81', '    # crc: allow probe-port\n    ready tcp 81')
    assert warnings(compiled(tmp_path, text)) == [
        NEAR_5, NEAR_6, (UNUSED_ALLOW, 8, 18, "`# crc: allow probe-port` silences nothing on this line"),
        (PROBE_PORT, 9, 15, PORT_8[3])]


def test_several_codes_in_one_comment(tmp_path: Path) -> None:
    text = source(c2="  # crc: allow host-near-miss, probe-port")
    assert warnings(compiled(tmp_path, text)) == [
        NEAR_5, (UNUSED_ALLOW, 6, 66, "`# crc: allow probe-port` silences nothing on this line"), PORT_8]


def test_a_colon_after_allow_is_allowed(tmp_path: Path) -> None:
    assert warnings(compiled(tmp_path, source(c3="  # crc: allow: probe-port"))) == [NEAR_5, NEAR_6]


def test_an_unknown_code_is_a_located_warning_with_did_you_mean(tmp_path: Path) -> None:
    p = compiled(tmp_path, source(c1="  # crc: allow hots-near-miss", c4="  # crc: allow", c3="  # crc: alow x"))
    got = [(w.code, w.loc.line, w.loc.col, w.loc.end_col, w.message, w.help) for w in p.warnings if w.loc]
    assert got == [
        (HOST_NEAR_MISS, 5, 23, 43, NEAR_5[3], "did you mean `cache`?"),
        (UNKNOWN_LINT, 5, 59, 73, "`hots-near-miss` is not a lint code", "did you mean `host-near-miss`?"),
        (HOST_NEAR_MISS, 6, 14, 33, NEAR_6[3], "did you mean `cache`?"),
        (PROBE_PORT, 8, 15, 17, PORT_8[3], "its ports: 80; probe one of them, or add `port 81`"),
        (UNKNOWN_LINT, 8, 26, 30, "`crc: alow` is not a comment crc reads",
         "did you mean `allow`? (`# crc: allow CODE` silences a lint on its line)"),
        (UNKNOWN_LINT, 12, 40, 45, "`# crc: allow` names no lint",
         "name the codes it silences: bind-source, host-near-miss, probe-port, undeclared-need, unused-grant"),
    ]
    # the caret is under the code as written
    shown = render(p.warnings[1], {str(tmp_path / "t.cr"): source(c1="  # crc: allow hots-near-miss")})
    assert shown.splitlines()[-2].endswith("| " + " " * 58 + "^" * 14)


def test_errors_and_the_allow_comments_own_codes_cannot_be_allowed(tmp_path: Path) -> None:
    p = compiled(tmp_path, source(c4="  # crc: allow host-access, unused-allow"))
    assert [(w.code, w.message) for w in p.warnings if w.loc and w.loc.line == 12] == [
        (UNKNOWN_LINT, "`host-access` is an error, which is never silenced"),
        (UNKNOWN_LINT, "`unused-allow` cannot be allowed by a comment")]


def test_other_crc_comments_and_text_in_strings_are_not_allow_comments(tmp_path: Path) -> None:
    text = source(c4="  # crc: this step only starts the test").replace(
        '["true"]', '["echo", "# crc: allow probe-port"]')
    assert warnings(compiled(tmp_path, text)) == [NEAR_5, NEAR_6, PORT_8]


def test_no_unused_report_while_the_file_has_errors(tmp_path: Path) -> None:
    text = source(c3="  # crc: allow probe-port", c4="  # crc: allow bind-source").replace(
        "needs cache", "needs cache\n    needs nowhere")
    with pytest.raises(CompileError) as e:
        compiled(tmp_path, text)
    assert [(d.severity, d.code) for d in e.value.diagnostics] == [
        ("warning", HOST_NEAR_MISS), ("warning", HOST_NEAR_MISS), ("error", None)]


def test_an_allow_comment_in_an_imported_module_applies_there(tmp_path: Path) -> None:
    (tmp_path / "lib.cr").write_text(
        'template web() {\n  image "img"\n  volume "./missing" -> "/data"  # crc: allow bind-source\n}\n'
        'template db() {\n  image "img"  # crc: allow probe-port -- not unused here: depends on the suite\n'
        '  volume "./gone" -> "/data"\n}\n', encoding="utf-8")
    p = compiled(tmp_path, 'import "lib"\nsuite "s" {\n  service w = web()\n  service d = db()\n'
                           '  test "t" { step s = exec w ["true"] }\n}\n')
    assert [(w.code, Path(w.loc.file).name, w.loc.line) for w in p.warnings if w.loc] == [("bind-source", "lib.cr", 7)]


# ---------------------------------------------------------------- the project's ignore
def test_ignored_codes_are_not_reported_nor_their_allow_comments_unused(tmp_path: Path) -> None:
    p = compiled(tmp_path, source(c3="  # crc: allow probe-port"), ignore=(PROBE_PORT,))
    assert warnings(p) == [NEAR_5, NEAR_6]
    p = compiled(tmp_path, source(c4="  # crc: allow probe-port"), ignore=(UNUSED_ALLOW,))
    assert warnings(p) == [NEAR_5, NEAR_6, PORT_8]


def test_lints_ignore_in_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "crc.toml").write_text('jobs = 2\n\n[lints]\nignore = ["probe-port", "unused-grant"]\n')
    cfg = load(environ={})
    assert (cfg["lints"], cfg.values["lints"].source) == ({"ignore": ("probe-port", "unused-grant")}, "crc.toml:3")
    (tmp_path / "crc.toml").write_text('lints = {ignore = ["host-near-miss"]}\n')
    assert load(environ={})["lints"] == {"ignore": ("host-near-miss",)}
    (tmp_path / "crc.toml").unlink()
    (tmp_path / "pyproject.toml").write_text('[tool.crc.lints]\nignore = ["bind-source"]\n')
    cfg = load(environ={"CRC_LINTS_IGNORE": "probe-port, host-near-miss"})
    assert (cfg["lints"], cfg.values["lints"].source) == (
        {"ignore": ("probe-port", "host-near-miss")}, "environment (CRC_LINTS_IGNORE)")
    assert load(environ={}).values["lints"].source == "pyproject.toml:1"
    assert load(environ={})["lints"] == {"ignore": ("bind-source",)}


@pytest.mark.parametrize(("toml", "where", "message", "help"), [
    ('[lints]\nignroe = ["probe-port"]\n', (2, 1), "`lints`: unknown key `ignroe` in [lints]", "known keys: ignore"),
    ('jobs = 1\n[lints]\nignore = ["prob-port"]\n', (3, 1), "`lints`: `prob-port` is not a lint code",
     "did you mean `probe-port`?"),
    ('[lints]\nignore = ["host-access"]\n', (2, 1), "`lints`: `host-access` is an error, which is never silenced",
     "grant the access with `allow host` (see docs/language.md, host access)"),
    ('lints = {ignore = "probe-port"}\n', (1, 1),
     '`lints`: expected a list of lint codes, such as ["probe-port"]', "`lints`: lint codes never reported in "
     "this project (`ignore`)"),
    ('lints = ["probe-port"]\n', (1, 1), '`lints`: expected a table, such as [lints] ignore = ["probe-port"]',
     "`lints`: lint codes never reported in this project (`ignore`)"),
])
def test_bad_lints_settings_are_located_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str,
                                               where: tuple[int, int], message: str, help: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "crc.toml").write_text(toml)
    with pytest.raises(ConfigError) as e:
        load(environ={})
    assert ((e.value.line, e.value.col), e.value.message, e.value.help) == (where, message, help)


def crc(*args: str) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return int(e.value.code or 0)


def test_crc_check_and_crc_config_use_the_projects_ignore_and_ignore_option(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRC_LINTS_IGNORE", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    (tmp_path / "t.cr").write_text(source(c1="  # crc: allow host-near-miss"), encoding="utf-8")
    (tmp_path / "crc.toml").write_text('[lints]\nignore = ["probe-port"]\n')
    assert crc("check", "t.cr") == 0
    out, err = capsys.readouterr()
    assert out == "ok t.cr  (3 nodes)\n"
    assert [line for line in err.splitlines() if line.startswith("warning")] == [
        "warning[host-near-miss]: `cahe` is not a service of this suite"]
    # --ignore replaces the project's list, as every command-line setting does
    assert crc("check", "--ignore", "host-near-miss", "t.cr") == 0
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")] == [
        "warning[probe-port]: the probe checks port 81, which service `api` does not declare"]
    assert crc("check", "--ignore", "host-near-miss,probe-port", "t.cr") == 0
    assert capsys.readouterr().err == ""
    assert crc("check", "--ignore", "hots-near-miss", "t.cr") == 2
    assert capsys.readouterr().err == ("crc: error: --ignore: `hots-near-miss` is not a lint code\n"
                                       "  help: did you mean `host-near-miss`?\n")
    assert crc("config") == 0
    assert 'lints         {ignore = ["probe-port"]}  # crc.toml:1' in capsys.readouterr().out.splitlines()
    assert crc("config", "--json") == 0
    assert json.loads(capsys.readouterr().out)["settings"]["lints"] == {
        "value": {"ignore": ["probe-port"]}, "source": "crc.toml:1"}


def test_every_warning_code_can_be_ignored() -> None:
    from crc.compiler import host_access, lints

    assert {*lints.CODES, host_access.UNUSED} == IGNORABLE


# ---------------------------------------------------------------- fmt
def test_fmt_keeps_allow_comments_on_their_lines(tmp_path: Path) -> None:
    text = source(c1="  # crc: allow host-near-miss", c3="   #   crc: allow probe-port").replace("  port 80", "port 80")
    formatted = format_source(text, "t.cr")
    assert "command [\"serve\", \"redis://cahce:6379\"]  # crc: allow host-near-miss\n" in formatted
    assert "ready tcp 81  #   crc: allow probe-port\n" in formatted
    assert warnings(compiled(tmp_path, formatted)) == [(HOST_NEAR_MISS, 8, 14, NEAR_6[3])]


# ---------------------------------------------------------------- one error for a templated import
@pytest.mark.parametrize("path", ["{{ x }}/lib", "std/{{ x }}"])
def test_a_templated_import_path_is_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str], path: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")
    (tmp_path / "t.cr").write_text(f'import "{path}"\nsuite "s" {{\n  test "t" {{ step a = run "img" ["true"] }}\n}}\n')
    assert crc("check", "t.cr") == 2
    caret = "^" * (len(path) + 2)
    assert capsys.readouterr().err == (
        "error: an import path is taken as written: crc does not render `{{ ... }}` there\n"
        "  --> t.cr:1:8\n"
        "    |\n"
        f'  1 | import "{path}"\n'
        f"    |        {caret}\n"
        "  help: write it out; templates are rendered in values (env values, commands, URLs, bodies, expected "
        "values), span names and attribute values\n"
        "\n"
        "1 error(s), 0 warning(s)\n")


def test_the_language_references_example_compiles_without_warnings(tmp_path: Path) -> None:
    docs = (Path(__file__).parent.parent / "docs" / "language.md").read_text(encoding="utf-8")
    start = docs.index('  suite "shop" {\n    service api {\n      image "crc/demo:dev"\n      port 8080')
    example = "\n".join(line[2:] for line in docs[start:docs.index("  ```", start)].splitlines()) + "\n"
    assert "# crc: allow probe-port" in example and warnings(compiled(tmp_path, example)) == []
    bare = "\n".join(line.split("  # crc:")[0] for line in example.splitlines()) + "\n"
    assert [w[0] for w in warnings(compiled(tmp_path, bare))] == [PROBE_PORT, HOST_NEAR_MISS]


def test_fmt_verifies_that_every_comment_is_kept() -> None:
    from crc.compiler.diagnostics import Diagnostics
    from crc.compiler.format import meaning
    from crc.compiler.parser import parse

    def of(text: str) -> object:
        return meaning(parse(text, "t.cr", Diagnostics()))

    assert of('let a = 1  # crc: allow probe-port\n') == of('let a = 1 # crc: allow probe-port   \n')
    assert of('let a = 1  # crc: allow probe-port\n') != of('let a = 1\n')


@pytest.mark.parametrize(("line", "code", "edit"), [
    ('    env { A: "x" }  ', "probe-port", ('    env { A: "x" }  # crc: allow probe-port')),
    ('  a  # crc: allow host-near-miss -- why', "probe-port", "  a  # crc: allow host-near-miss, probe-port -- why"),
    ('  a  # crc: allow', "probe-port", "  a  # crc: allow probe-port"),
    ('  a  # a note ', "bind-source", "  a  # crc: allow bind-source -- a note "),
    ('  a  #', "bind-source", "  a  # crc: allow bind-source"),
])
def test_the_edit_that_allows_a_code_on_a_line(line: str, code: str, edit: str) -> None:
    """The language server's quick fix: what it writes, given the line and the comment ending it."""
    from crc.compiler import ir
    from crc.compiler.lints import allow_edit

    at = line.find("#")
    comment = ir.Comment(line[at:].rstrip(), ir.Loc("t.cr", 1, at + 1, 1, len(line) + 1)) if at >= 0 else None
    start, end, text = allow_edit(line, comment, code)
    assert line[:start] + text + line[end:] == edit
