"""`crc fmt`: the canonical layout (a table of before/after cases), idempotence, every comment kept, and the
same Plan before and after formatting (locations aside) on every example, stdlib module and grammar snippet,
and on files whose layout was scrambled at random; then the command line's exit codes and output.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from conftest import ROOT, run_crc
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import CompileError, Diagnostics
from crc.compiler.format import FormatterBug, _Layout, _parser, format_source, meaning
from crc.compiler.parser import parse
from crc.compiler.plan import Plan
from test_grammar import CASES as GRAMMAR_CASES


def sources() -> dict[str, str]:
    files = sorted([*ROOT.glob("examples/**/*.cr"), *ROOT.glob("stdlib/*.cr")])
    out = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in files}
    out.update({f"grammar-case:{k}": v[0] for k, v in GRAMMAR_CASES.items()})
    return out


SOURCES = sources()


def comments(text: str) -> Counter[str]:
    """The comments of a file (text after `#` outside strings and regexes), as a multiset."""
    found: Counter[str] = Counter()
    for m in re.finditer(r'"(?:[^"\\\n]|\\.)*"|/(?:[^/\\\n]|\\.)+/|#[^\n]*', text):
        if m.group().startswith("#"):
            found[m.group().rstrip()] += 1
    return found


_LOCATED_ID = re.compile(r"@\d+:\d+$")


def _strip(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: (_LOCATED_ID.sub("", v) if k == "id" and isinstance(v, str) else _strip(v))
                for k, v in x.items() if k not in ("loc", "source_digest")}
    if isinstance(x, list | tuple):
        return [_strip(v) for v in x]
    return x


def layout_free_digest(plan: Plan) -> str:
    """The Plan's digest once source positions (and the digest of the source text) are taken out."""
    g = nx.MultiDiGraph()
    for n, attrs in plan.graph.nodes(data=True):
        g.add_node(n, **_strip(attrs))
    for u, v, k, attrs in plan.graph.edges(keys=True, data=True):
        g.add_edge(u, v, key=k, **_strip(attrs))
    return Plan(g, _strip(plan.meta), _strip(plan.suites), _strip(plan.tests)).digest


def compiles(name: str, text: str) -> bool:
    return "suite " in text and not name.startswith("stdlib/")


def path_for(name: str) -> str:
    """Compile under the file's own path, so relative imports and volumes resolve as they do for the file."""
    return str(ROOT / name) if not name.startswith("grammar-case:") else "t.cr"


# ---------------------------------------------------------------- the layout, case by case

CASES: list[tuple[str, str, str]] = [
    ("blocks-one-statement-per-line",
     'suite "s" { seed 1 service a { image "i" port 80 } test "t" { step x = exec a ["true"] expect x.exit == 0 } }\n',
     'suite "s" {\n  seed 1\n  service a {\n    image "i"\n    port 80\n  }\n  test "t" {\n'
     '    step x = exec a ["true"]\n    expect x.exit == 0\n  }\n}\n'),
    ("indentation-normalized",
     'suite "s" {\n\tseed 1\n        service a {\n image "i"\n\t}\n}\n',
     'suite "s" {\n  seed 1\n  service a {\n    image "i"\n  }\n}\n'),
    ("operators-spaced",
     'suite "s" {\n  test "t" {\n    expect x.exit==0\n    expect x.stdout~/a/\n    expect x.stdout   !~   /b/i\n'
     '    expect p.attr [ "k" ]>=2\n    let l=[1,2]\n  }\n}\n',
     'suite "s" {\n  test "t" {\n    expect x.exit == 0\n    expect x.stdout ~ /a/\n    expect x.stdout !~ /b/i\n'
     '    expect p.attr["k"] >= 2\n    let l = [1, 2]\n  }\n}\n'),
    ("calls-and-paths-unspaced",
     'suite "s" {\n  service c = redis ( port = 1 , )\n  test "t" {\n    expect count ( "x *" ) <= 3\n'
     '    expect s . json ( "$.a" ) == 1\n    capture v = s.json ("$.b")\n  }\n}\n',
     'suite "s" {\n  service c = redis(port = 1)\n  test "t" {\n    expect count("x *") <= 3\n'
     '    expect s.json("$.a") == 1\n    capture v = s.json("$.b")\n  }\n}\n'),
    ("inline-braces",
     'suite "s" {\n  service a {\n    env {A:"1" B : 2,}\n    env {   }\n  }\n  test "t" {\n'
     '    span r = "x"{kind server   parent p}\n    expect no span {status error}\n  }\n}\n',
     'suite "s" {\n  service a {\n    env { A: "1", B: 2 }\n    env {}\n  }\n  test "t" {\n'
     '    span r = "x" { kind server parent p }\n    expect no span { status error }\n  }\n}\n'),
    ("ranges-and-arrows",
     'suite "s" {\n  service a {\n    port 80->8080\n    volume "a"->"b" ro\n  }\n  test "t" {\n'
     '    expect p before q gap 1ms .. 2s\n    expect p before q gap .. 5ms\n    expect p before q gap 1ms ..\n  }\n}\n',
     'suite "s" {\n  service a {\n    port 80 -> 8080\n    volume "a" -> "b" ro\n  }\n  test "t" {\n'
     '    expect p before q gap 1ms..2s\n    expect p before q gap ..5ms\n    expect p before q gap 1ms..\n  }\n}\n'),
    ("statement-split-over-lines-is-joined",
     'suite "s" {\n  test "t" {\n    step x =\n      exec a\n      ["a", "b"]\n      timeout 2s\n  }\n}\n',
     'suite "s" {\n  test "t" {\n    step x = exec a ["a", "b"] timeout 2s\n  }\n}\n'),
    ("list-broken-after-bracket-is-one-item-per-line",
     'let l = [\n  "a", "b",\n    "c"]\n',
     'let l = [\n  "a",\n  "b",\n  "c",\n]\n'),
    ("list-wrapped-later-is-joined",
     'let l = ["a", "b",\n         "c"]\n',
     'let l = ["a", "b", "c"]\n'),
    ("selector-broken-after-brace",
     'suite "s" {\n  test "t" {\n    span r = "x" {\n   service "a" kind client\n  attr "k" exists }\n  }\n}\n',
     'suite "s" {\n  test "t" {\n    span r = "x" {\n      service "a"\n      kind client\n      attr "k" exists\n'
     '    }\n  }\n}\n'),
    ("template-params",
     'template t( a,b = 1 ,c="z" , ){ image "x" }\n',
     'template t(a, b = 1, c = "z") {\n  image "x"\n}\n'),
    ("blank-lines-collapsed-and-trimmed",
     '\n\nimport "std/redis"\n\n\n\nsuite "s" {\n\n  seed 1\n\n\n  seed 2\n\n}\n\n\n',
     'import "std/redis"\n\nsuite "s" {\n  seed 1\n\n  seed 2\n}\n'),
    ("string-escapes-canonical",
     'let a = "tab\there"\nlet b = "keep \\q and \\\\ and \\" and \\n"\n',
     'let a = "tab\\there"\nlet b = "keep \\\\q and \\\\ and \\" and \\n"\n'),
    ("numbers-durations-regexes-kept-as-written",
     'suite "s" {\n  timeout 1.50s\n  let n = [007, -0.50, 1.5s, /a\\/b/mi]\n}\n',
     'suite "s" {\n  timeout 1.50s\n  let n = [007, -0.50, 1.5s, /a\\/b/mi]\n}\n'),
    ("empty-blocks",
     'suite "s" {\n  service a {\n  }\n  test "t" {}\n}\n',
     'suite "s" {\n  service a {}\n  test "t" {}\n}\n'),
    ("own-line-comments-reindented",
     '# top\nsuite "s" {\n# about a\n      # more\n  service a {\n        # inside\n    image "i"\n  # before close\n  }\n}\n# end\n',
     '# top\nsuite "s" {\n  # about a\n  # more\n  service a {\n    # inside\n    image "i"\n    # before close\n  }\n}\n# end\n'),
    ("trailing-comments-kept-after-code",
     'suite "s" {   # the suite\n  seed 1# the seed\n  service a { # opens\n    image "i"    #  the image   \n  }\n}\n',
     'suite "s" {  # the suite\n  seed 1  # the seed\n  service a {  # opens\n    image "i"  #  the image\n  }\n}\n'),
    ("comment-inside-a-joined-statement-moves-above-it",
     'suite "s" {\n  test "t" {\n    step x = exec a  # why a\n      ["b"]  # and b\n  }\n}\n',
     'suite "s" {\n  test "t" {\n    # why a\n    step x = exec a ["b"]  # and b\n  }\n}\n'),
    ("comment-inside-a-list-spreads-it",
     'let l = ["a", # first\n  "b"]\n',
     'let l = [\n  "a",  # first\n  "b",\n]\n'),
    ("comment-before-a-closing-bracket",
     'let l = [\n  "a"\n  # last\n]\n',
     'let l = [\n  "a",\n  # last\n]\n'),
    ("blank-line-groups-kept-around-comments",
     'suite "s" {\n  seed 1\n\n\n  # group two\n\n  settle 1s\n}\n',
     'suite "s" {\n  seed 1\n\n  # group two\n\n  settle 1s\n}\n'),
    ("comment-only-file", "  # just a note   \n\n\n# another\n", "# just a note\n\n# another\n"),
    ("empty-file", "", ""),
    ("crlf-line-endings", 'suite "s" {\r\n  seed 1 # c\r\n}\r\n', 'suite "s" {\n  seed 1  # c\n}\n'),
    ("keywords-as-names", 'suite "s" {\n  service log {\n    image "i"\n  }\n  test "t" {\n    step status = exec log "ls"\n'
     '    expect status.exit == 0\n  }\n}\n',
     'suite "s" {\n  service log {\n    image "i"\n  }\n  test "t" {\n    step status = exec log "ls"\n'
     '    expect status.exit == 0\n  }\n}\n'),
]


@pytest.mark.parametrize(("before", "after"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_layout(before: str, after: str) -> None:
    assert format_source(before) == after
    assert format_source(after) == after
    assert comments(after) == comments(before) or before.strip() == ""


# ---------------------------------------------------------------- every real file


@pytest.mark.parametrize("name", list(SOURCES))
def test_idempotent_comments_kept_same_meaning(name: str) -> None:
    text = SOURCES[name]
    out = format_source(text, name)
    assert format_source(out, name) == out
    assert comments(out) == comments(text)
    if compiles(name, text):
        before = compile_file(path_for(name), text=text, environ={})
        after = compile_file(path_for(name), text=out, environ={})
        assert layout_free_digest(after) == layout_free_digest(before)
        if out == text:
            assert after.digest == before.digest


def test_layout_free_digest_still_sees_meaning() -> None:
    """The digest used above ignores positions only: a changed value changes it."""
    text = SOURCES["examples/hello.cr"]
    a = compile_file(str(ROOT / "examples/hello.cr"), text=text, environ={})
    moved = compile_file(str(ROOT / "examples/hello.cr"), text="\n\n" + text.replace("  ", "    "), environ={})
    changed = compile_file(str(ROOT / "examples/hello.cr"), text=text.replace("seed 7", "seed 8"), environ={})
    assert a.digest != moved.digest and layout_free_digest(a) == layout_free_digest(moved)
    assert layout_free_digest(a) != layout_free_digest(changed)


def scramble(text: str, rng: random.Random) -> str:
    """The same tokens and comments with random layout: spaces, tabs, line breaks and blank lines between
    tokens (a comment keeps a line break after it, or it would swallow code)."""
    tree = _parser().parse(text)
    layout = _Layout(text, tree)
    toks = [t for t in tree.scan_values(lambda v: True)]
    items = sorted([(t.start_pos, t.value) for t in toks] + [(c.pos, c.text) for c in layout.comments])
    out: list[str] = []
    for _, value in items:
        out.append(value)
        if value.startswith("#"):
            out.append("\n" * rng.randint(1, 3) + " " * rng.randint(0, 6))
        else:
            out.append(rng.choice([" ", "  ", "\t", "\n", "\n\n", " \n   ", "\n\n\n  "]))
    return "".join(out)


@pytest.mark.parametrize("name", [n for n in SOURCES if not n.startswith("grammar-case:")] +
                         [f"grammar-case:{k}" for k in list(GRAMMAR_CASES)[::7]])
def test_scrambled_layout_formats_to_the_same_meaning(name: str) -> None:
    text = SOURCES[name]
    rng = random.Random(name)
    for _ in range(5):
        messy = scramble(text, rng)
        out = format_source(messy, name)
        assert format_source(out, name) == out
        assert comments(out) == comments(text)
        mod_before, mod_after = parse(text, name, Diagnostics()), parse(out, name, Diagnostics())
        assert meaning(mod_after) == meaning(mod_before)
        if compiles(name, text):
            assert layout_free_digest(compile_file(path_for(name), text=out, environ={})) == \
                layout_free_digest(compile_file(path_for(name), text=text, environ={}))


def test_bad_input_is_a_located_diagnostic() -> None:
    with pytest.raises(CompileError) as e:
        format_source('suite "s" {\n  seed "x"\n}\n', "bad.cr")
    d = e.value.diagnostics[0]
    assert (d.loc.file, d.loc.line, d.loc.col) == ("bad.cr", 2, 8)
    with pytest.raises(CompileError):
        format_source('let s = "bad \\u escape is kept but this one: \n"', "bad.cr")


def test_a_layout_that_changes_meaning_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_Layout, "run", lambda self: self.text.replace("seed 1", "seed 2"))
    with pytest.raises(FormatterBug, match="change the file's meaning"):
        format_source('suite "s" {\n  seed 1\n}\n', "x.cr")


# ---------------------------------------------------------------- the command line

UGLY = 'suite "s" {\nseed 1   # keep me\n  service a { image "i" }\n}\n'
PRETTY = 'suite "s" {\n  seed 1  # keep me\n  service a {\n    image "i"\n  }\n}\n'


def test_fmt_check_exit_codes_and_diff(tmp_path: Path) -> None:
    ugly, pretty = tmp_path / "ugly.cr", tmp_path / "pretty.cr"
    ugly.write_text(UGLY)
    pretty.write_text(PRETTY)
    res = run_crc("fmt", "--check", pretty)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    res = run_crc("fmt", "--check", ugly)
    assert res.returncode == 1
    assert f"--- {ugly} (as written)" in res.stdout and f"+++ {ugly} (formatted)" in res.stdout
    assert "\n-seed 1   # keep me\n" in res.stdout and "\n+  seed 1  # keep me\n" in res.stdout
    assert ugly.read_text() == UGLY  # --check changes nothing
    res = run_crc("fmt", "--check", tmp_path)
    assert res.returncode == 1 and "would reformat 1 of 2" in res.stderr


def test_fmt_rewrites_in_place_and_says_which_changed(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    ugly, pretty = tmp_path / "sub" / "ugly.cr", tmp_path / "pretty.cr"
    hidden = tmp_path / ".hidden" / "x.cr"
    ugly.write_text(UGLY)
    pretty.write_text(PRETTY)
    hidden.write_text(UGLY)
    res = run_crc("fmt", tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"formatted {ugly}"]
    assert ugly.read_text() == PRETTY and pretty.read_text() == PRETTY and hidden.read_text() == UGLY
    assert run_crc("fmt", "--check", tmp_path).returncode == 0


def test_fmt_bad_input_exits_2_with_a_located_diagnostic(tmp_path: Path) -> None:
    bad, good = tmp_path / "bad.cr", tmp_path / "good.cr"
    bad.write_text('suite "s" {\n  servce a {}\n}\n')
    good.write_text(UGLY)
    res = run_crc("fmt", "--check", bad)
    assert res.returncode == 2
    assert f"{bad}:2:3" in res.stderr and "did you mean `service`?" in res.stderr and "^^^^^^" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_crc("fmt", tmp_path)
    assert res.returncode == 2
    assert good.read_text() == PRETTY  # the good file is still formatted
    assert bad.read_text() == 'suite "s" {\n  servce a {}\n}\n'
    assert run_crc("fmt", tmp_path / "missing.cr").returncode == 2


def test_fmt_stdin_to_stdout() -> None:
    res = run_crc("fmt", "-", input=UGLY)
    assert res.returncode == 0 and res.stdout == PRETTY
    res = run_crc("fmt", "--check", "-", input=UGLY)
    assert res.returncode == 1 and "+  seed 1  # keep me" in res.stdout
    assert run_crc("fmt", "-", input="suite {").returncode == 2
