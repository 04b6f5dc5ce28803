"""Editor grammars: generated files are current, the VS Code extension is complete, and both highlighters
(the TextMate grammar run by VS Code's own engine under node, and the Pygments lexer) classify every token of
every example and stdlib module the way the real parser does.

The TextMate tests need node and tests/editors/node_modules (`bash .ci/editors-setup`): they skip without
them on a developer's machine and fail in CI.
"""

from __future__ import annotations

import json
import os
import plistlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from crc.compiler.format import _parser
from crc.grammar import generate
from crc.grammar.generate import CONSTANT_SCOPES, DECLARATIONS, OPERATOR_SCOPES, ROLE_SCOPES
from crc.grammar.keywords import ALL_KEYWORDS, CONSTANTS, role_of
from lark import Token, Tree
from pygments.token import Comment, Error, Keyword, Name, Number, String
from pygments.token import Token as PToken

from crc import __version__

ROOT = Path(__file__).resolve().parent.parent
EDITORS = ROOT / "grammar" / "editors"
VSCODE = EDITORS / "vscode"
TM_GRAMMAR = VSCODE / "syntaxes" / "cr.tmLanguage.json"
NODE_DIR = ROOT / "tests" / "editors"

# A file using every construct the highlighters care about, in the places where they are hard to tell apart.
SAMPLE = r'''# A sample for the highlighters.
import "std/redis"

template web(port = 8080, root = "/www") {
  image "crc/busybox:dev"
  command ["httpd", "-f", "-p", "{{ port }}", "-h", root]
  ready tcp port within 10s
}

suite "sample" {
  seed 7
  clock "2025-01-01T00:00:00Z"
  timeout 2m
  settle 300ms
  let who = "{{ fake.name() }} says \"hi\"\n"

  service my-log = web(port = 9000)
  service log {
    image "crc/busybox:dev"
    env { LEVEL: "debug", "A.B": 1.5 }
    port 8081 -> 18081
    volume "./data" -> "/data" ro
    needs my-log
    ready http 8081 "/healthz" status 200 within 250ms  # trailing comment
  }

  test "everything" timeout 30s {
    step status = exec log ["sh", "-c", "echo {{ who }}"] timeout 1.5s
    step later after status = run "crc/busybox:dev" sh "echo \"{{ env(\"HOME\") }}\""
    capture id = status.stdout ~ /id=(\d+)\/x/im
    expect status.exit == 0
    expect status.stdout !~ /fail/
    expect status.stdout not contains "error"
    span request = "GET /orders" { service "api" kind server status error attr "http.code" >= 200 }
    span child = /^redis [A-Z]+$/ { parent request }
    expect request.attr["http.route"] == "/orders"
    expect request.duration < 250ms
    expect request.status == ok
    expect request before child gap 1ms..5ms
    expect child after request within 1s
    expect request contains child
    expect request parent of child
    expect count("redis *") <= -3
    expect no span { status error }
    expect hermetic allow "db.internal"
  }
}
'''


def source_files() -> list[Path]:
    return sorted([*ROOT.glob("examples/**/*.cr"), *ROOT.glob("stdlib/*.cr")])


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """name -> text: every example and stdlib module, and SAMPLE."""
    sample = tmp_path_factory.mktemp("editors") / "sample.cr"
    sample.write_text(SAMPLE, encoding="utf-8")
    out = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in source_files()}
    out[str(sample)] = SAMPLE
    assert len(out) >= 4, "examples and stdlib modules should be found"
    return out


# ---------------------------------------------------------------- what the real parser says each token is


@dataclass(frozen=True)
class Tok:
    kind: str  # a terminal name (STRING, NAME, SUITE, ...), "COMMENT", or "DECL:<keyword>" for a declared name
    text: str
    pos: int  # offset in the file
    line: int  # 1-based
    col: int  # 0-based


def grammar_tokens(text: str) -> list[Tok]:
    """Every token with the meaning the parser gives it, plus comments (found between tokens)."""
    out: list[Tok] = []
    decl_rules = {"service_decl": "service", "service_from": "service", "step": "step", "span_decl": "span",
                  "template_def": "template", "let_stmt": "let", "capture": "capture"}

    def walk(t: Tree[Token]) -> Iterator[tuple[Token, str | None]]:
        first_name = True
        for c in t.children:
            if isinstance(c, Tree):
                yield from walk(c)
            elif isinstance(c, Token):
                decl = None
                if c.type == "NAME" and first_name and t.data in decl_rules:
                    decl, first_name = decl_rules[t.data], False
                yield c, decl

    toks = list(walk(_parser().parse(text)))
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line_col(pos: int) -> tuple[int, int]:
        line = max(i for i, s in enumerate(line_starts) if s <= pos)
        return line + 1, pos - line_starts[line]

    prev_end = 0
    for tok, decl in toks:
        for m in re.finditer(r"#[^\n]*", text[prev_end:tok.start_pos]):
            out.append(Tok("COMMENT", m.group(), prev_end + m.start(), *line_col(prev_end + m.start())))
        out.append(Tok(f"DECL:{decl}" if decl else tok.type, tok.value, tok.start_pos, tok.line, tok.column - 1))
        prev_end = tok.end_pos
    for m in re.finditer(r"#[^\n]*", text[prev_end:]):
        out.append(Tok("COMMENT", m.group(), prev_end + m.start(), *line_col(prev_end + m.start())))
    return out


DECL_SCOPES = {kw: scope for kw, scope, _ in DECLARATIONS}
OPERATOR_TYPES = {"COMPARE", "MATCH", "TILDE", "__ANON_0", "__ANON_1"}


def expected_scope(tok: Tok) -> str | None:
    """The TextMate scope a token must carry (None: no claim, e.g. punctuation)."""
    if tok.kind == "COMMENT":
        return "comment.line.number-sign.cr"
    if tok.kind.startswith("DECL:"):
        return DECL_SCOPES[tok.kind[5:]]
    simple = {"STRING": "string.quoted.double.cr", "REGEX": "string.regexp.cr",
              "DURATION": "constant.numeric.duration.cr",
              "SIZE": "constant.numeric.size.cr", "FLOAT": "constant.numeric.float.cr",
              "INT": "constant.numeric.integer.cr"}
    if tok.kind in simple:
        return simple[tok.kind]
    if tok.kind in OPERATOR_TYPES:
        return OPERATOR_SCOPES.get(tok.text, "keyword.operator.match.cr")
    if tok.kind == tok.text.upper() and tok.text in ALL_KEYWORDS:
        return ROLE_SCOPES[role_of(tok.text)]  # type: ignore[index]
    return None


# ---------------------------------------------------------------- TextMate (vscode-textmate under node)


def _node_ready() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    for pkg in ("vscode-textmate", "vscode-oniguruma"):
        if not (NODE_DIR / "node_modules" / pkg / "package.json").exists():
            return f"{pkg} is not installed in tests/editors/node_modules (run `bash .ci/editors-setup`)"
    return None


@pytest.fixture(scope="module")
def textmate(sources: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[list[dict[str, Any]]]]:
    """name -> lines -> tokens ({text, scopes}) as VS Code's engine tokenizes them with the generated grammar."""
    problem = _node_ready()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"{problem}: .ci/setup should have run .ci/editors-setup")
        pytest.skip(problem)
    tmp = tmp_path_factory.mktemp("tm")
    names, paths = [], []
    for i, (name, text) in enumerate(sources.items()):
        p = tmp / f"f{i}.cr"
        p.write_text(text, encoding="utf-8")
        names.append(name)
        paths.append(str(p))
    res = subprocess.run(["node", str(NODE_DIR / "tokenize.mjs"), str(TM_GRAMMAR), *paths], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    return {name: data[p] for name, p in zip(names, paths, strict=True)}


def tm_scopes_at(lines: list[list[dict[str, Any]]], line: int, col: int) -> list[str]:
    """The scopes of the TextMate token covering (1-based line, 0-based column)."""
    start = 0
    for t in lines[line - 1]:
        end = start + len(t["text"])
        if start <= col < end:
            return t["scopes"]
        start = end
    raise AssertionError(f"no token at {line}:{col}")


def tm_find(lines: list[list[dict[str, Any]]], line_has: str, text: str, nth: int = 0) -> list[str]:
    """Scopes of the `nth` token whose text is `text` on the first line containing `line_has`."""
    for line in lines:
        if line_has in "".join(t["text"] for t in line):
            hits = [t["scopes"] for t in line if t["text"] == text]
            assert len(hits) > nth, f"no token {text!r} on the line with {line_has!r}: {line}"
            return hits[nth]
    raise AssertionError(f"no line contains {line_has!r}")


def test_textmate_agrees_with_the_parser_on_every_file(sources: dict[str, str], textmate: Any) -> None:
    checked = 0
    for name, text in sources.items():
        lines = textmate[name]
        for tok in grammar_tokens(text):
            if tok.kind == "NAME" and tok.text in ALL_KEYWORDS:
                continue  # a keyword spelt as a plain name where only a name fits: TextMate has no context
            scopes = tm_scopes_at(lines, tok.line, tok.col)
            want = expected_scope(tok)
            if want is not None:
                assert want in scopes, f"{name}:{tok.line}:{tok.col + 1} {tok.text!r} ({tok.kind}): {scopes}"
                checked += 1
            elif tok.kind == "NAME":
                assert not any(s.startswith("keyword") for s in scopes), f"{name}:{tok.line} {tok.text!r}: {scopes}"
    assert checked > 300


def test_textmate_leaves_nothing_unscoped(sources: dict[str, str], textmate: Any) -> None:
    """Every non-blank character is classified (nothing left as bare `source.cr`)."""
    for name, lines in textmate.items():
        for i, line in enumerate(lines, 1):
            for t in line:
                if t["text"].strip():
                    assert len(t["scopes"]) > 1, f"{name}:{i}: {t['text']!r} has no scope"


TM_CASES = [
    # (a line containing, token text, nth on that line, scope expected)
    ('import "std/redis"', "import", 0, "keyword.control.structure.cr"),
    ("template web(", "web", 0, "entity.name.function.template.cr"),
    ("service my-log =", "my-log", 0, "entity.name.type.service.cr"),
    ("needs my-log", "my-log", 0, "variable.other.cr"),  # `log` inside a name is no keyword
    ("service log {", "log", 0, "entity.name.type.service.cr"),
    ("exec log [", "log", 0, "keyword.other.readiness.cr"),  # the known limit: no context in TextMate
    ("step status =", "status", 0, "entity.name.function.step.cr"),
    ("expect status.exit", "status", 0, "variable.other.object.cr"),
    ("expect status.exit", "exit", 0, "variable.other.property.cr"),
    ("ready http", "within", 0, "keyword.other.readiness.cr"),
    ("ready http", "250ms", 0, "constant.numeric.duration.cr"),
    ("ready http", "200", 0, "constant.numeric.integer.cr"),
    ("ready http", " trailing comment", 0, "comment.line.number-sign.cr"),
    ("timeout 1.5s", "1.5s", 0, "constant.numeric.duration.cr"),
    ('"A.B": 1.5', "1.5", 0, "constant.numeric.float.cr"),
    ("let who", "{{", 0, "punctuation.section.embedded.begin.cr"),
    ("let who", "fake", 0, "meta.template.expression.cr"),
    ("let who", "name", 0, "entity.name.function.template.cr"),
    ("let who", "}}", 0, "punctuation.section.embedded.end.cr"),
    ("let who", '\\"', 0, "constant.character.escape.cr"),
    ("let who", "\\n", 0, "constant.character.escape.cr"),
    ("let who", "who", 0, "variable.other.constant.let.cr"),
    ("step later", "env", 0, "entity.name.function.template.cr"),
    ("step later", "HOME", 0, "meta.template.expression.cr"),
    ("capture id", "id", 0, "variable.other.capture.cr"),
    ("capture id", "\\d", 0, "constant.character.escape.cr"),
    ("capture id", "im", 0, "storage.modifier.regexp-flags.cr"),
    ("capture id", "~", 0, "keyword.operator.match.cr"),
    ("span request =", "request", 0, "entity.name.label.span.cr"),
    ("span request =", "server", 0, "constant.language.kind.cr"),
    ("span request =", "error", 0, "constant.language.status.cr"),
    ("span request =", "kind", 0, "keyword.other.span.cr"),
    ('expect request.attr["http.route"]', "attr", 0, "keyword.other.span.cr"),
    ("gap 1ms..5ms", "..", 0, "keyword.operator.range.cr"),
    ("gap 1ms..5ms", "5ms", 0, "constant.numeric.duration.cr"),
    ("port 8081 -> 18081", "->", 0, "keyword.operator.arrow.cr"),
    ("expect request parent of child", "of", 0, "keyword.operator.expectation.cr"),
    ('expect count("redis *")', "-3", 0, "constant.numeric.integer.cr"),
    ('expect count("redis *")', "count", 0, "keyword.operator.expectation.cr"),
    ("expect request.status == ok", "ok", 0, "constant.language.status.cr"),
]


@pytest.mark.parametrize(("line_has", "text", "nth", "scope"), TM_CASES, ids=[f"{c[1]}@{c[0]}" for c in TM_CASES])
def test_textmate_scopes(sources: dict[str, str], textmate: Any, line_has: str, text: str, nth: int,
                         scope: str) -> None:
    sample = next(v for k, v in textmate.items() if k.endswith("sample.cr"))
    assert scope in tm_find(sample, line_has, text, nth)


def test_textmate_unclosed_string_stops_at_the_end_of_its_line(textmate: Any, tmp_path: Path) -> None:
    p = tmp_path / "bad.cr"
    p.write_text('let x = "never closed {{ a\nsuite "s" {}\n', encoding="utf-8")
    res = subprocess.run(["node", str(NODE_DIR / "tokenize.mjs"), str(TM_GRAMMAR), str(p)], capture_output=True,
                         text=True, timeout=60)
    lines = json.loads(res.stdout)[str(p)]
    assert "keyword.control.structure.cr" in tm_find(lines, "suite", "suite")


# ---------------------------------------------------------------- Pygments


def pygments_tokens(text: str) -> list[tuple[int, Any, str]]:
    from crc.grammar.pygments_lexer import CleanroomLexer

    return list(CleanroomLexer().get_tokens_unprocessed(text))


PYG_DECL = {"service": Name.Class, "step": Name.Function, "span": Name.Label, "template": Name.Function,
            "let": Name.Constant, "capture": Name.Variable}


def expected_ptype(tok: Tok) -> Any:
    if tok.kind == "COMMENT":
        return Comment.Single
    if tok.kind.startswith("DECL:"):
        return PYG_DECL[tok.kind[5:]]
    simple = {"STRING": String.Double, "REGEX": String.Regex, "DURATION": Number.Duration, "SIZE": Number.Size,
              "FLOAT": Number.Float,
              "INT": Number.Integer}
    if tok.kind in simple:
        return simple[tok.kind]
    if tok.kind == tok.text.upper() and tok.text in ALL_KEYWORDS:
        return getattr(Keyword, role_of(tok.text).capitalize())  # type: ignore[union-attr]
    return None


def test_pygments_agrees_with_the_parser_on_every_file(sources: dict[str, str]) -> None:
    checked = 0
    for name, text in sources.items():
        toks = pygments_tokens(text)
        assert sum(len(v) for _, _, v in toks) == len(text)
        errors = [(i, v) for i, t, v in toks if t in Error]
        assert not errors, f"{name}: Error tokens {errors[:5]}"
        starts = [i for i, _, _ in toks]
        for tok in grammar_tokens(text):
            if tok.kind == "NAME" and tok.text in ALL_KEYWORDS:
                continue
            k = max(j for j, s in enumerate(starts) if s <= tok.pos)
            got = toks[k][1]
            want = expected_ptype(tok)
            if want is not None:
                assert got == want, f"{name}:{tok.line} {tok.text!r} ({tok.kind}): {got}"
                checked += 1
            elif tok.kind == "NAME":
                assert got not in Keyword or got is Keyword.Constant, f"{name}:{tok.line} {tok.text!r}: {got}"
    assert checked > 300


PYG_CASES = [
    ("{{", String.Interpol), ("fake", Name.Variable), ("name", Name.Function), ("\\n", String.Escape),
    ("my-log", Name.Class), ("server", Keyword.Constant), ("ok", Keyword.Constant), ("1ms", Number.Duration),
    ("..", PToken.Operator), ("->", PToken.Operator), ("!~", PToken.Operator), ("/fail/", String.Regex),
    ("# trailing comment", Comment.Single), ("attr", Keyword.Span), ("within", Keyword.Readiness),
    ("seed", Keyword.Structure), ("needs", Keyword.Service), ("capture", Keyword.Step),
    ("hermetic", Keyword.Expectation),
]


@pytest.mark.parametrize(("text", "ttype"), PYG_CASES, ids=[c[0] for c in PYG_CASES])
def test_pygments_token_types(text: str, ttype: Any) -> None:
    hits = [t for _, t, v in pygments_tokens(SAMPLE) if v == text]
    assert hits and hits[0] == ttype, hits


def test_pygments_plugin_is_registered_and_pygmentize_works() -> None:
    from pygments.lexers import find_lexer_class_by_name, guess_lexer_for_filename

    assert find_lexer_class_by_name("cleanroom").__name__ == "CleanroomLexer"
    assert type(guess_lexer_for_filename("x.cr", SAMPLE)).__name__ == "CleanroomLexer"  # not Crystal
    res = subprocess.run([sys.executable, "-m", "pygments", "-l", "cleanroom", "-f", "raw"], input=SAMPLE,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "Token.Keyword.Structure\t'suite'" in res.stdout
    assert "Token.Literal.String.Interpol\t'{{'" in res.stdout


def test_pygments_survives_bad_input() -> None:
    text = 'let x = "open {{ a\n@@ \'x\' suite "s" {}\n'
    toks = pygments_tokens(text)
    assert "".join(v for _, _, v in toks) == text
    assert any(t == Keyword.Structure and v == "suite" for _, t, v in toks)


# ---------------------------------------------------------------- generated files and the extension


def test_generated_files_are_current() -> None:
    res = subprocess.run([sys.executable, "-m", "crc.grammar.generate", "--check"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr


def test_check_names_a_stale_file_and_generate_fixes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(EDITORS, tmp_path / "editors")
    monkeypatch.setattr(generate, "HERE", tmp_path)
    assert generate.main(["--check"]) == 0
    stale = tmp_path / "editors" / "vscode" / "syntaxes" / "cr.tmLanguage.json"
    stale.write_text(stale.read_text().replace("keyword.control.step.cr", "keyword.other.step.cr"))
    (tmp_path / "editors" / "sublime" / "Comments.tmPreferences").unlink()
    capsys.readouterr()
    assert generate.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "grammar/editors/vscode/syntaxes/cr.tmLanguage.json is stale" in err
    assert "Comments.tmPreferences is stale" in err
    assert "package.json" not in err
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
    assert stale.read_bytes() == (EDITORS / "vscode" / "syntaxes" / "cr.tmLanguage.json").read_bytes()


def test_generator_covers_every_keyword_role_and_constant() -> None:
    tm = json.loads(TM_GRAMMAR.read_text())
    keyword_rules = {p["name"]: p["match"] for p in tm["repository"]["keyword"]["patterns"]}
    for word in ALL_KEYWORDS:
        rule = keyword_rules[ROLE_SCOPES[role_of(word)]]  # type: ignore[index]
        assert re.search(rule, f" {word} ") and not re.search(rule, f" {word}-x ") and not re.search(rule, f"x{word}")
    constant_rules = {p["name"]: p["match"] for p in tm["repository"]["constant"]["patterns"]}
    for role, ws in CONSTANTS.items():
        assert all(re.fullmatch(constant_rules[CONSTANT_SCOPES[role]], w) for w in ws)


def test_vscode_extension_is_complete() -> None:
    pkg = json.loads((VSCODE / "package.json").read_text())
    for key in ("name", "publisher", "version", "engines", "license", "displayName", "description"):
        assert pkg.get(key), key
    assert pkg["version"] == __version__
    assert pkg["engines"]["vscode"].startswith("^1.")
    (lang,) = pkg["contributes"]["languages"]
    (gram,) = pkg["contributes"]["grammars"]
    assert lang["extensions"] == [".cr"] and gram["language"] == lang["id"]
    assert (VSCODE / lang["configuration"]).is_file() and (VSCODE / gram["path"]).is_file()
    assert json.loads((VSCODE / gram["path"]).read_text())["scopeName"] == gram["scopeName"]
    for f in ("README.md", "LICENSE"):
        assert (VSCODE / f).read_text().strip(), f
    conf = json.loads((VSCODE / lang["configuration"]).read_text())
    assert conf["comments"]["lineComment"] == "#"
    assert ["{", "}"] in conf["brackets"] and ["[", "]"] in conf["brackets"]
    assert {"open": "{", "close": "}"} in conf["autoClosingPairs"]
    assert re.search(conf["folding"]["markers"]["start"], "  # region services")
    assert re.fullmatch(conf["wordPattern"].split("|")[-1], "my-api")


def test_sublime_grammar_is_the_same_textmate_grammar() -> None:
    tm = json.loads(TM_GRAMMAR.read_text())
    plist = plistlib.loads((EDITORS / "sublime" / "Cleanroom.tmLanguage").read_bytes())
    plist.pop("uuid")
    assert plist == tm
    prefs = plistlib.loads((EDITORS / "sublime" / "Comments.tmPreferences").read_bytes())
    assert prefs["scope"] == tm["scopeName"]
