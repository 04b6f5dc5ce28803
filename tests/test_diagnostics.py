"""Diagnostics: a table of bad snippets with the line, column and message (and help) each must produce; several
errors in one pass; rendering with the source line and a caret; imports that cycle or are missing.

Snippets written with `in_test` put their lines after a fixed preamble: suite (line 1), service `a` (2),
test (3), step `one` (4), span `p` (5), span `q` (6); the snippet starts on line 7, column 5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import write_files
from crc.compiler.compile import compile_file, sources_of
from crc.compiler.diagnostics import CompileError, Diagnostic, did_you_mean, render, sorted_diagnostics
from crc.compiler.ir import Loc


def in_test(lines: str) -> str:
    return ('suite "s" {\n  service a { image "img" }\n  test "t" {\n    step one = exec a ["true"]\n'
            '    span p = "P"\n    span q = "Q"\n' + lines + "\n  }\n}\n")


def in_suite(lines: str) -> str:
    """Suite items starting on line 2."""
    return 'suite "s" {\n' + lines + '\n  test "t" { step one = exec a ["true"] }\n}\n'


def diagnostics_of(text: str, path: str = "t.cr") -> list[Diagnostic]:
    with pytest.raises(CompileError) as exc:
        compile_file(path, text=text, environ={})
    return exc.value.diagnostics


# (source, line, col, message fragment, help fragment or None), or (source, {(line, col), ...}, message, help) when
# several places would be right (cycles: the one reported is fixed, see test_cycle_report_is_deterministic and
# test_cycle_starts_at_the_earliest_declared_node, but any edge of a cycle is a fair place to point at).
Where = int | set[tuple[int, int]]
BAD: dict[str, tuple[Any, ...]] = {
    # ---- syntax
    "syntax-missing-brace-eof": ('suite "s" {\n  service a { image "x" }\n', 2, 26, "unexpected end of file",
                                 "`}` missing"),
    "syntax-unexpected-token": (in_test("    expect one.exit = 0"), 7, 21, "unexpected `=`", None),
    "syntax-expected-list": ('suite "s" {\n  service a { image "x" }\n  test "t" { step one = exec a }\n}\n',
                             3, 32, "expected", None),
    "syntax-single-quotes": ("suite 's' {}\n", 1, 7, "unexpected character `'`", "double quotes"),
    "syntax-unterminated-string": ('suite "s" {\n  service a { image "x }\n}\n', 2, 21, "unexpected character `\"`",
                                   "closing"),
    "syntax-bad-duration-unit": (in_suite('  timeout 5x\n  service a { image "x" }'), 2, 11, "expected a duration",
                                 None),
    "syntax-regex-flag": (in_test("    expect one.stdout ~ /ab/q"), 7, 29, "unexpected `q`", None),
    "syntax-port-string": (in_suite('  service a { image "x" port "80" }'), 2, 30, "unexpected `\"80\"`", None),
    # ---- misspelt keywords: did-you-mean
    "kw-suite": ('suit "s" {}\n', 1, 1, "unexpected `suit`", "did you mean `suite`?"),
    "kw-step": (in_test('    stpe two = exec a ["true"]'), 7, 5, "unexpected `stpe`", "did you mean `step`?"),
    "kw-expect": (in_test("    expct one.exit == 0"), 7, 5, "unexpected `expct`", "did you mean `expect`?"),
    "kw-image": (in_suite('  service a { imgae "x" }'), 2, 15, "unexpected `imgae`", "did you mean `image`?"),
    "kw-needs": (in_suite('  service a { image "x" nedes b }'), 2, 25, "unexpected `nedes`", "did you mean `needs`?"),
    "kw-within": (in_suite('  service a { image "x" ready tcp 80 withn 2s }'), 2, 38, "unexpected `withn`",
                  "did you mean `within`?"),
    "kw-ready-probe": (in_suite('  service a { image "x" ready tpc 80 }'), 2, 31, "unexpected `tpc`",
                       "did you mean `tcp`?"),
    "kw-contains": (in_test("    expect one.stdout contain \"x\""), 7, 23, "unexpected `contain`",
                    "did you mean `contains`?"),
    # ---- unknown names: did-you-mean
    "unknown-service-exec": (in_test('    step two = exec aa ["true"]'), 7, 21, "unknown service `aa`",
                             "did you mean `a`?"),
    "unknown-service-needs": (in_suite('  service api { image "x" }\n  service w { image "x" needs apu }\n'
                                       '  service a { image "x" }'), 3, 31, "unknown service `apu`",
                              "did you mean `api`?"),
    "unknown-step-after": (in_test('    step two after onx = exec a ["true"]'), 7, 20, "unknown step `onx`",
                           "did you mean `one`?"),
    "unknown-step-expect": (in_test("    expect onx.exit == 0"), 7, 12, "unknown step or span `onx`",
                            "did you mean `one`?"),
    "unknown-step-capture": (in_test("    capture c = onx.stdout ~ /(x)/"), 7, 17, "unknown step `onx`",
                             "did you mean `one`?"),
    "unknown-span-before": (in_test("    expect pp before q"), 7, 12, "unknown span `pp`", "did you mean `p`?"),
    "unknown-span-parent-clause": (in_test('    span r = "R" { parent qq }'), 7, 27, "unknown span `qq`",
                                   "did you mean `q`?"),
    "unknown-span-count": (in_test("    expect count(pq) == 1"), 7, 18, "unknown span `pq`", None),
    "step-used-as-span": (in_test('    step two = exec a ["true"]\n    expect one before two'), 8, 12,
                          "unknown span `one`", "is a step"),
    "unknown-template": ('template redis_x() { image "x" }\nsuite "s" {\n  service c = redis_y()\n'
                         '  test "t" { step one = exec c ["true"] }\n}\n', 3, 15, "unknown template `redis_y`",
                         "did you mean `redis_x`?"),
    "unknown-template-std": ('import "std/redis"\nsuite "s" {\n  service c = redsi()\n'
                             '  test "t" { step one = exec c ["true"] }\n}\n', 3, 15, "unknown template `redsi`",
                             "did you mean `redis`?"),
    "unknown-template-param": ('import "std/redis"\nsuite "s" {\n  service c = redis(prot = 1)\n'
                               '  test "t" { step one = exec c ["true"] }\n}\n', 3, 21, "no parameter `prot`",
                               "did you mean `port`?"),
    "missing-template-param": ('template t(img) { image img }\nsuite "s" {\n  service c = t()\n'
                               '  test "t" { step one = exec c ["true"] }\n}\n', 3, 15, "needs parameter `img`",
                               "t(img = ...)"),
    "too-many-template-args": ('template t(img) { image img }\nsuite "s" {\n  service c = t("a", "b")\n'
                               '  test "t" { step one = exec c ["true"] }\n}\n', 3, 22, "takes 1 argument", None),
    "unknown-let": (in_suite('  let image_name = "x"\n  service a { image image_nam }'), 3, 21,
                    "unknown name `image_nam`", "did you mean `image_name`?"),
    "unknown-span-service": (in_test('    span r = "R" { service "aa" }'), 7, 28, "no service `aa`",
                             "did you mean `a`?"),
    "unknown-span-kind": (in_test('    span r = "R" { kind servr }'), 7, 25, "unknown span kind `servr`",
                          "did you mean `server`?"),
    "unknown-span-status": (in_test('    span r = "R" { status eror }'), 7, 27, "unknown span status `eror`",
                            "did you mean `error`?"),
    "unknown-step-field": (in_test('    expect one.stdot == "x"'), 7, 16, "no field `stdot`", "did you mean `stdout`?"),
    "unknown-span-field": (in_test("    expect p.duraton < 1s"), 7, 14, "no field `duraton`",
                           "did you mean `duration`?"),
    "missing-stdlib-module": ('import "std/rediss"\n' + in_suite('  service a { image "x" }'), 1, 8,
                              "no stdlib module `std/rediss`", "did you mean `redis`?"),
    # ---- duplicates
    "dup-service": (in_suite('  service a { image "x" }\n  service a { image "y" }'), 3, 11,
                    "service `a` is declared twice", None),
    "dup-step": (in_test('    step one = exec a ["true"]'), 7, 10, "`one` is declared twice", None),
    "dup-span": (in_test('    span p = "other"'), 7, 10, "`p` is declared twice", None),
    "dup-step-and-span": (in_test('    step p = exec a ["true"]'), 7, 10, "`p` is declared twice", None),
    "dup-test": (in_suite('  service a { image "x" }\n  test "t" { step one = exec a ["true"] }'), 4, 8,
                 'test "t" is declared twice', None),
    "dup-suite": (in_suite('  service a { image "x" }') + in_suite('  service a { image "x" }'), 5, 7,
                  'suite "s" is declared twice', None),
    "dup-seed": (in_suite('  seed 1\n  seed 2\n  service a { image "x" }'), 3, 8, "`seed` is set twice", "keep one"),
    "dup-template": ('template t() { image "x" }\ntemplate t() { image "y" }\n' + in_suite("  service a = t()"), 2, 10,
                     "template `t` is defined twice", None),
    "dup-selector-clause": (in_test('    span r = "R" { kind server kind client }'), 7, 37,
                            "`kind` appears twice", "keep one"),
    "dup-param": ('template t(img) { image img }\n' + in_suite('  service a = t(img = "x", img = "y")'), 3, 28,
                  "parameter `img` is given twice", None),
    "dup-order-expectation": (in_test("    expect p before q\n    expect p before q within 5ms"), 8, 12,
                              "stated twice", None),
    # ---- wrong kinds
    "exit-vs-text": (in_test('    expect one.exit == "zero"'), 7, 12, "exit code is compared with a number", None),
    "text-ordered": (in_test('    expect one.stdout < "x"'), 7, 12, "`<` does not compare text", None),
    "regex-with-eq": (in_test("    expect one.stdout == /x/"), 7, 12, "matched with `~`", None),
    "step-duration-number": (in_test("    expect one.duration < 5"), 7, 27, "compared with a duration", None),
    "span-duration-number": (in_test("    expect p.duration < 5"), 7, 12, "span duration is bounded", None),
    "span-duration-eq": (in_test("    expect p.duration == 1s"), 7, 12, "span duration is bounded", None),
    "span-status-value": (in_test("    expect p.status == eror"), 7, 12, "span status is compared",
                          "did you mean `error`?"),
    "span-json": (in_test('    expect p.json("$.a") == 1'), 7, 12, "a span has no JSON fields", None),
    "step-attr": (in_test('    expect one.attr["k"] == 1'), 7, 12, "reads span attributes", None),
    "count-of-step": (in_test("    expect count(one) == 1"), 7, 18, "unknown span `one`", "is a step"),
    "count-float": (in_test('    expect count("x") == 1.5'), 7, 12, "whole number", None),
    "count-negative": (in_test('    expect count("x") == -1'), 7, 12, "whole number", None),
    "capture-regex-json-field": (in_test("    capture c = one.json ~ /(x)/"), 7, 21, "reads stdout or stderr", None),
    "capture-path-stdout": (in_test('    capture c = one.stdout("$.a")'), 7, 21, "a path capture reads `json`", None),
    "capture-as-step": (in_test('    capture c = one.stdout ~ /(x)/\n    expect c.exit == 0'), 8, 12,
                        "unknown step or span `c`", "captures are values"),
    "argv-not-text": (in_test('    step two = exec a ["echo", ["nested"]]'), 7, 32, "must be text", None),
    "argv-boolean": (in_test('    step two = exec a ["echo", true]'), 7, 32, "not a boolean", None),
    "image-not-text": (in_suite('  service a { image ["x"] }'), 2, 21, "an image must be text", None),
    "attr-not-literal": (in_test('    span r = "R" { attr "k" == [1] }'), 7, 32, "attribute values are text, numbers", None),
    "no-image": (in_suite("  service a { port 80 }"), 2, 11, "service `a` has no image", "add one"),
    "empty-argv": (in_test("    step two = exec a []"), 7, 23, "an empty command", None),
    "unclosed-quote-split": (in_test("    step two = exec a \"echo 'hi\""), 7, 23, "cannot split", "close the quote"),
    "needs-itself": (in_suite('  service a { image "x" needs a }'), 2, 31, "needs itself", None),
    "after-itself": (in_test('    step two after two = exec a ["true"]'), 7, 20, "cannot run after itself", None),
    "span-own-parent": (in_test('    span r = "R" { parent r }'), 7, 27, "its own parent", None),
    "span-before-itself": (in_test("    expect p before p"), 7, 12, "cannot be before itself", None),
    "no-suite": ('template t() { image "x" }\n', 1, 1, "declares no suite", 'suite "name"'),
    "test-without-step": ('suite "s" {\n  service a { image "x" }\n  test "t" { }\n}\n', 3, 8, "has no step", None),
    # ---- bad values
    "bad-regex": (in_test("    expect one.stdout ~ /a(b/"), 7, 25, "invalid regex", None),
    "bad-regex-selector": (in_test('    span r = /(/'), 7, 14, "invalid regex", None),
    "bad-regex-capture": (in_test("    capture c = one.stdout ~ /[x/"), 7, 30, "invalid regex", None),
    "bad-jsonpath-no-dollar": (in_test('    expect one.json("items") == 1'), 7, 21, "bad JSON path", None),
    "bad-jsonpath-bracket": (in_test('    capture c = one.json("$.a[")'), 7, 26, "bad JSON path", None),
    "bad-port-too-big": (in_suite('  service a { image "x" port 70000 }'), 2, 30, "`70000` is not a port",
                         "1 to 65535"),
    "bad-port-zero": (in_suite('  service a { image "x" port 0 }'), 2, 30, "`0` is not a port", None),
    "bad-port-host": (in_suite('  service a { image "x" port 80 -> 99999 }'), 2, 36, "`99999` is not a port", None),
    "bad-port-negative": (in_suite('  service a { image "x" port 80 -> -1 }'), 2, 36, "`-1` is not a port", None),
    "bad-port-let": (in_suite('  let p = "abc"\n  service a { image "x" port p }'), 3, 30, "`abc` is not a port", None),
    "bad-probe-port": (in_suite('  service a { image "x" ready tcp 0 }'), 2, 35, "not a port", None),
    "bad-http-path": (in_suite('  service a { image "x" ready http 80 "health" }'), 2, 39, "starts with `/`", None),
    "bad-probe-within": (in_suite('  service a { image "x" ready tcp 80 within 0s }'), 2, 45, "must be positive", None),
    "bad-step-timeout": (in_test('    step two = exec a ["true"] timeout 0ms'), 7, 40, "must be positive", None),
    "bad-clock": (in_suite('  clock "yesterday"\n  service a { image "x" }'), 2, 9, "cannot read the clock", "ISO-8601"),
    "bad-template-syntax": (in_suite('  service a { image "{{ x" }'), 2, 21, "template syntax error", None),
    "template-undefined": (in_suite('  service a { image "{{ nope }}" }'), 2, 21, "'nope' is undefined", None),
    "template-unsafe": (in_suite('  service a { image "{{ fake.__class__ }}" }'), 2, 21, "not allowed", None),
    "template-raises": (in_suite('  service a { image "{{ 1 / 0 }}" }'), 2, 21, "ZeroDivisionError", None),
    "env-unset": (in_suite('  service a { image "{{ env(\'CRC_TEST_SURELY_UNSET\') }}" }'), 2, 21,
                  "CRC_TEST_SURELY_UNSET is not set", "give a default"),
    # ---- contradictory span constraints
    "duration-min-gt-max": (in_test("    expect p.duration > 2s\n    expect p.duration < 1s"), 8, 12,
                            "duration bounds of span `p` contradict", None),
    "duration-strict-equal": (in_test("    expect p.duration > 1s\n    expect p.duration <= 1s"), 8, 12,
                              "duration bounds", None),
    "duration-strict-equal-2": (in_test("    expect p.duration >= 1s\n    expect p.duration < 1s"), 8, 12,
                                "duration bounds", None),
    "count-bounds": (in_test("    expect count(p) >= 3\n    expect count(p) < 2"), 8, 12,
                     "count bounds of span `p` contradict", None),
    "count-two-exact": (in_test("    expect count(p) == 1\n    expect count(p) == 2"), 8, 12, "count bounds", None),
    "count-gt-and-le": (in_test("    expect count(p) > 2\n    expect count(p) <= 2"), 8, 12, "count bounds", None),
    "gap-min-gt-max": (in_test("    expect p before q gap 5ms..1ms"), 7, 27, "the gap can never hold", None),
    "contains-inner-outlasts": (in_test("    expect p.duration < 10ms\n    expect q.duration > 20ms\n"
                                        "    expect p contains q"), 9, 12, "`p` cannot contain `q`", None),
    "before-and-contains": (in_test("    expect p before q\n    expect p contains q"), 7, 12,
                            "must end before `q` starts", None),
    "after-and-contains": (in_test("    expect q after p\n    expect q contains p"), 7, 12,
                           "so one cannot contain the other", None),
    # ---- cycles
    "cycle-needs": (in_suite('  service a { image "x" needs b }\n  service b { image "x" needs a }'), {(2, 31), (3, 31)},
                    "cycle of needs edges", "remove one"),
    "cycle-needs-three": (in_suite('  service a { image "x" needs c }\n  service b { image "x" needs a }\n'
                                   '  service c { image "x" needs b }'), {(2, 31), (3, 31), (4, 31)}, "cycle of needs edges", None),
    "cycle-after": ('suite "s" {\n  service a { image "x" }\n  test "t" {\n    step one after two = exec a ["true"]\n'
                    '    step two after one = exec a ["true"]\n  }\n}\n', {(4, 5), (5, 5)}, "cycle of after edges", None),
    "cycle-precedes": (in_test("    expect p before q\n    expect q before p"), {(7, 12), (8, 12)}, "cycle of precedes edges", None),
    "cycle-before-after": (in_test("    expect p before q\n    expect p after q"), {(7, 12), (8, 12)}, "cycle of precedes", None),
    "cycle-precedes-parent": (in_test('    span r = "R" { parent p }\n    expect r before p'), {(7, 27), (8, 12)},
                              "cycle of parent/precedes edges", None),
    "cycle-ancestor": (in_test('    span r = "R" { ancestor s }\n    span s = "S" { ancestor r }'), {(7, 29), (8, 29)},
                       "cycle of ancestor edges", None),
    "cycle-capture-order": ('suite "s" {\n  service a { image "x" }\n  test "t" {\n'
                            '    step one = exec a ["echo", "{{ d }}"]\n    step two = exec a ["echo", "{{ c }}"]\n'
                            '    capture c = one.stdout ~ /(.*)/\n    capture d = two.stdout ~ /(.*)/\n  }\n}\n',
                            {(4, 5), (5, 5)}, "cycle of after edges", None),
    "missing-import": ('import "nope"\n' + in_suite('  service a { image "x" }'), 1, 8, "cannot import `nope`",
                       "relative to the importing file"),
}


def _cases() -> list[tuple[str, set[tuple[int, int]], str, str | None]]:
    out = []
    for case in BAD.values():
        if isinstance(case[1], set):
            src, where, message, hint = case
        else:
            src, line, col, message, hint = case
            where = {(line, col)}
        out.append((src, where, message, hint))
    return out


@pytest.mark.parametrize(("source", "where", "message", "hint"), _cases(), ids=list(BAD))
def test_bad_snippet(source: str, where: set[tuple[int, int]], message: str, hint: str | None) -> None:
    diags = diagnostics_of(source)
    errors = [d for d in diags if d.severity == "error"]
    assert errors
    for d in diags:  # every diagnostic is located
        assert d.loc is not None and d.loc.file == "t.cr" and d.loc.line >= 1 and d.loc.col >= 1, d
    found = [d for d in errors if message in d.message]
    assert found, f"no error containing {message!r}; got {[(str(d.loc), d.message) for d in errors]}"
    assert any((d.loc.line, d.loc.col) in where for d in found), \
        [(d.loc.line, d.loc.col, d.message) for d in found]
    if hint is not None:
        d = next(d for d in found if (d.loc.line, d.loc.col) in where)
        assert d.help is not None and hint in d.help, d.help


# ---------------------------------------------------------------- several errors in one pass


def test_several_syntax_errors_in_one_pass() -> None:
    src = in_test('    stpe two = exec a ["true"]\n    expect one.exit == 0\n    expct one.exit == 0\n'
                  '    span r = "R" { kindd server }')
    got = [(d.loc.line, d.loc.col) for d in diagnostics_of(src)]
    assert got[:2] == [(7, 5), (9, 5)] and got[2][0] == 10


def test_several_semantic_errors_in_one_pass() -> None:
    src = in_test('    step two = exec b ["true"]\n    expect three.exit == 0\n    span r = "R" { kind servr }\n'
                  '    expect p before qq\n    expect p.duration > 2s\n    expect p.duration < 1s')
    diags = diagnostics_of(src)
    msgs = [m for d in diags for m in [d.message]]
    assert len([d for d in diags if d.severity == "error"]) == 5, msgs
    assert [d.loc.line for d in diags] == sorted(d.loc.line for d in diags), "source order"


def test_errors_in_several_suites_and_tests_are_all_reported() -> None:
    src = ('suite "one" {\n  service a { image "x" }\n  test "t1" { step s = exec zz ["true"] }\n'
           '  test "t2" { step s = exec yy ["true"] }\n}\n'
           'suite "two" {\n  service b { image "x" needs nope }\n  test "t" { step s = exec b ["true"] }\n}\n')
    lines = [d.loc.line for d in diagnostics_of(src)]
    assert lines == [3, 4, 7]


def test_warnings_alone_do_not_fail() -> None:
    """A suite with no test is a warning: the file still compiles."""
    plan = compile_file("t.cr", text='suite "s" {\n  service a { image "x" }\n}\n', environ={})
    assert plan.tests == ()


def test_warning_next_to_an_error_is_reported_too() -> None:
    src = 'suite "empty" { service a { image "x" } }\n' + in_test("    expect nope.exit == 0")
    diags = diagnostics_of(src)
    assert {d.severity for d in diags} == {"warning", "error"}


# ---------------------------------------------------------------- imports


def test_import_cycle(tmp_path: Path) -> None:
    files = write_files(tmp_path, {
        "a.cr": 'import "b"\nsuite "s" {\n  service a { image "x" }\n  test "t" { step one = exec a ["true"] }\n}\n',
        "b.cr": 'import "c.cr"\ntemplate tb() { image "x" }\n',
        "c.cr": 'import "b"\ntemplate tc() { image "x" }\n',
    })
    with pytest.raises(CompileError) as exc:
        compile_file(str(files["a.cr"]))
    (d,) = exc.value.diagnostics
    assert "import cycle" in d.message and "b.cr -> " in d.message and "c.cr" in d.message
    assert d.loc is not None and d.loc.file.endswith("c.cr") and (d.loc.line, d.loc.col) == (1, 8)


def test_import_of_the_importer_is_a_cycle(tmp_path: Path) -> None:
    files = write_files(tmp_path, {
        "a.cr": 'import "b"\nsuite "s" {\n  service a { image "x" }\n  test "t" { step one = exec a ["true"] }\n}\n',
        "b.cr": 'import "a"\n',
    })
    with pytest.raises(CompileError) as exc:
        compile_file(str(files["a.cr"]))
    assert any("import cycle" in d.message for d in exc.value.diagnostics)


def test_import_cycle_through_a_non_canonical_path(tmp_path: Path) -> None:
    files = write_files(tmp_path, {
        "d/a.cr": 'import "b"\nsuite "s" {\n  service a { image "x" }\n  test "t" { step one = exec a ["true"] }\n'
                  '}\n',
        "d/b.cr": 'import "../d/a"\n',
    })
    with pytest.raises(CompileError) as exc:
        compile_file(str(files["d/a.cr"]))
    (d,) = exc.value.diagnostics
    a, b = files["d/a.cr"].as_posix(), files["d/b.cr"].as_posix()
    assert d.message == f"import cycle: {a} -> {b} -> {a}"  # paths shown normalized, not as `d/../d/a.cr`
    assert d.loc is not None and d.loc.file == b and (d.loc.line, d.loc.col) == (1, 8)


def test_a_module_imported_under_two_spellings_is_loaded_once(tmp_path: Path) -> None:
    files = write_files(tmp_path, {
        "d/a.cr": 'import "lib"\nimport "../d/lib.cr"\nsuite "s" {\n  service a = t()\n'
                  '  test "t" { step one = exec a ["true"] }\n}\n',
        "d/lib.cr": 'template t() { image "x" }\n',
    })
    plan = compile_file(str(files["d/a.cr"]))  # a second load would define template `t` twice
    assert [Path(i["path"]).name for i in plan.meta["imports"]] == ["lib.cr"]


def test_missing_import_relative_to_the_importer(tmp_path: Path) -> None:
    files = write_files(tmp_path, {
        "sub/a.cr": 'import "lib/x"\nsuite "s" {\n  service a { image "x" }\n'
                    '  test "t" { step one = exec a ["true"] }\n}\n',
        "lib/x.cr": 'template t() { image "x" }\n',  # exists, but not next to sub/a.cr
    })
    with pytest.raises(CompileError) as exc:
        compile_file(str(files["sub/a.cr"]))
    (d,) = exc.value.diagnostics
    assert "cannot import `lib/x`" in d.message and (d.loc.line, d.loc.col) == (1, 8)


def test_errors_inside_an_imported_file_name_that_file(tmp_path: Path) -> None:
    files = write_files(tmp_path, {
        "a.cr": 'import "lib"\nsuite "s" {\n  service a = t()\n  test "t" { step one = exec a ["true"] }\n}\n',
        "lib.cr": "template t( {\n}\n",
    })
    with pytest.raises(CompileError) as exc:
        compile_file(str(files["a.cr"]))
    d = next(d for d in exc.value.diagnostics if d.loc is not None and d.loc.file.endswith("lib.cr"))
    assert (d.loc.line, d.loc.col) == (1, 13) and "unexpected `{`" in d.message
    text = render(d, sources_of(str(files["a.cr"])))
    assert "template t( {" in text


def test_imports_resolve_templates_and_lets(tmp_path: Path) -> None:
    files = write_files(tmp_path, {
        "a.cr": 'import "lib/common"\nimport "std/redis"\nimport "std/redis"\nsuite "s" {\n  service w = web()\n'
                '  service c = redis()\n  test "t" { step one = exec w ["echo", base] }\n}\n',
        "lib/common.cr": 'let base = "from-lib"\ntemplate web() { image base }\n',
    })
    plan = compile_file(str(files["a.cr"]))
    assert plan.graph.nodes["s::service:w"]["image"] == "from-lib"
    assert plan.graph.nodes["s::t::step:one"]["argv"] == ["echo", "from-lib"]
    assert [Path(i["path"]).name for i in plan.meta["imports"]] == ["common.cr", "redis.cr"]


def test_suites_in_an_imported_file_are_a_warning(tmp_path: Path) -> None:
    files = write_files(tmp_path, {
        "a.cr": 'import "b"\n' + in_suite('  service a { image "x" }'),
        "b.cr": in_suite('  service a { image "x" }'),
    })
    compile_file(str(files["a.cr"]))  # a warning only: compiles


# ---------------------------------------------------------------- rendering


def test_render_shows_location_source_line_caret_and_help() -> None:
    src = in_test('    step two = exec aa ["true"]')
    (d,) = diagnostics_of(src)
    text = render(d, {"t.cr": src})
    lines = text.splitlines()
    assert lines[0] == "error: unknown service `aa`"
    assert lines[1].strip() == "--> t.cr:7:21"
    src_line = next(ln for ln in lines if "step two = exec aa" in ln)
    caret_line = lines[lines.index(src_line) + 1]
    # the caret sits under the faulty token, in the same column as in the echoed source line
    code_start = src_line.index("|") + 2
    assert src_line[code_start:] == '    step two = exec aa ["true"]'
    assert caret_line.index("^") == code_start + 20
    assert caret_line.strip().endswith("| ^^") or caret_line.rstrip().endswith("^^")
    assert lines[-1].strip() == "help: did you mean `a`?"
    assert "Traceback" not in text


def test_render_underlines_a_whole_token_and_notes_other_locations() -> None:
    src = in_suite('  service a { image "x" }\n  service a { image "y" }')
    (d,) = diagnostics_of(src)
    text = render(d, {"t.cr": src})
    assert "note: first declared at t.cr:2:11" in text


def test_render_with_color_and_without_source() -> None:
    d = Diagnostic("boom", Loc("gone.cr", 3, 4, 3, 5), help="try again")
    plain = render(d, {})
    assert "gone.cr:3:4" in plain and "help: try again" in plain
    colored = render(d, {}, color=True)
    assert "\x1b[" in colored and "\x1b[" not in plain


def test_eof_error_points_past_the_last_character() -> None:
    src = 'suite "s" {\n  service a { image "x" }'
    (d,) = diagnostics_of(src)
    assert (d.loc.line, d.loc.col) == (2, 26)
    text = render(d, {"t.cr": src})
    assert text.splitlines()[4].endswith(" " * 25 + "^")


def test_caret_aligns_when_the_line_has_tabs() -> None:
    src = in_test('\tstpe two = exec a ["true"]')
    (d,) = diagnostics_of(src)
    lines = render(d, {"t.cr": src}).splitlines()
    i = next(i for i, ln in enumerate(lines) if "stpe two" in ln)
    shown, caret = lines[i].expandtabs(8), lines[i + 1].expandtabs(8)
    assert caret.index("^") == shown.index("stpe")


def test_sorted_diagnostics_dedupes_and_orders() -> None:
    a = Diagnostic("x", Loc("f", 2, 1, 2, 2))
    b = Diagnostic("y", Loc("f", 1, 5, 1, 6))
    assert sorted_diagnostics([a, b, a]) == [b, a]


def test_did_you_mean() -> None:
    assert did_you_mean("stpe", ["step", "span"]) == "did you mean `step`?"
    assert did_you_mean("zzzz", ["step"]) is None


# ---------------------------------------------------------------- bugs found earlier (regression tests)


def only_error(src: str) -> Diagnostic:
    """The one diagnostic `src` gives, which must be an error."""
    diags = diagnostics_of(src)
    assert len(diags) == 1, [(str(d.loc), d.message) for d in diags]
    assert diags[0].severity == "error"
    return diags[0]


@pytest.mark.parametrize("lines", ["    expect p.duration < 1s\n    expect p.duration >= 1s",
                                   "    expect p.duration >= 1s\n    expect p.duration < 1s",
                                   "    expect p.duration <= 1s\n    expect p.duration > 1s",
                                   "    expect p.duration < 0s\n    expect p.duration < 5s"])
def test_duration_bounds_that_meet_with_a_strict_side(lines: str) -> None:
    d = only_error(in_test(lines))
    assert "duration bounds of span `p` contradict" in d.message
    # reported once, where the bounds stop being satisfiable
    assert (d.loc.line, d.loc.col) == ((7, 12) if "0s" in lines else (8, 12))


@pytest.mark.parametrize("lines", ["    expect p.duration <= 1s\n    expect p.duration >= 1s",
                                   "    expect p.duration <= 0s"])
def test_duration_bounds_that_meet_inclusively_compile(lines: str) -> None:
    compile_file("t.cr", text=in_test(lines), environ={})


def test_contains_inner_strictly_longer_than_outer_max() -> None:
    d = only_error(in_test("    expect p.duration <= 10ms\n    expect q.duration > 10ms\n    expect p contains q"))
    assert (d.loc.line, d.loc.col) == (9, 12)
    assert "`p` cannot contain `q`: the inner span must last more than 10ms but the outer at most 10ms" in d.message


def test_contains_with_equal_inclusive_bounds_compiles() -> None:
    compile_file("t.cr", text=in_test("    expect p.duration <= 10ms\n    expect q.duration >= 10ms\n"
                                      "    expect p contains q"), environ={})


@pytest.mark.parametrize(("src", "where", "what"), [
    (in_suite('  timeout 0s\n  service a { image "x" }'), (2, 11), "a suite timeout must be positive"),
    ('suite "s" {\n  service a { image "x" }\n  test "t" timeout 0ms {\n    step one = exec a ["true"]\n  }\n}\n',
     (3, 20), "a test timeout must be positive")])
def test_zero_suite_or_test_timeout(src: str, where: tuple[int, int], what: str) -> None:
    d = only_error(src)
    assert (d.loc.line, d.loc.col) == where and what in d.message


@pytest.mark.parametrize("cmd", ['""', '"   "'])
def test_empty_split_command(cmd: str) -> None:
    d = only_error(in_test(f"    step two = exec a {cmd}"))
    assert "an empty command" in d.message and (d.loc.line, d.loc.col) == (7, 23)


def test_unsplittable_command_is_one_error() -> None:
    d = only_error(in_test('    step two = exec a "echo \'oops"'))
    assert "cannot split this command" in d.message


def test_step_using_its_own_capture() -> None:
    d = only_error(in_test('    step two = exec a ["echo", "{{ c }}"]\n    capture c = two.stdout ~ /(.*)/'))
    assert "step `two` uses the capture `c`, which is read from its own output" in d.message
    assert (d.loc.line, d.loc.col) == (7, 10)
    assert [(text, (loc.line, loc.col)) for text, loc in d.notes] == [("captured", (8, 5))]


@pytest.mark.parametrize(("use", "col", "what"), [('step two = run "{{ c }}" ["true"]', 20, "image"),
                                                  ('step two = exec a ["true"] workdir c', 40, "workdir"),
                                                  ('step two = exec a ["true"] workdir "/tmp/{{ c }}"', 40, "workdir")])
def test_capture_where_the_runtime_does_not_render(use: str, col: int, what: str) -> None:
    d = only_error(in_test(f"    capture c = one.stdout ~ /(.*)/\n    {use}"))
    assert d.message == f"a capture cannot be used in a step's {what}"
    assert (d.loc.line, d.loc.col) == (8, col) and d.help and "argv and env only" in d.help


def test_capture_in_argv_and_env_is_rendered_at_run_time() -> None:
    plan = compile_file("t.cr", text=in_test('    capture c = one.stdout ~ /(.*)/\n'
                                             '    step two = exec a ["echo", "{{ c }}"] env { X: c }'), environ={})
    node = plan.graph.nodes["s::t::step:two"]
    assert node["deferred_argv"] == [1] and node["deferred_env"] == ["X"]


@pytest.mark.parametrize(("src", "message"), [
    ('suite "s" {\n  service a = nope()\n  test "t" { step one = exec a ["true"] }\n}\n', "unknown template `nope`"),
    (in_suite('  service a { image "{{ nope }}" }'), "'nope' is undefined")])
def test_no_cascading_error_after_a_failed_image(src: str, message: str) -> None:
    assert message in only_error(src).message


def test_a_service_without_image_is_still_an_error() -> None:
    assert "service `a` has no image" in only_error(in_suite("  service a { port 80 }")).message


@pytest.mark.parametrize(("src", "where", "word", "keyword"), [
    ('suite "s" {\n  servicea { image "x" }\n  test "t" { step one = exec a ["true"] }\n}\n', (2, 3), "servicea",
     "service"),
    ('suite "s" {\n  service a { image "x" }\n  test "t" { stepone = exec a ["true"] }\n}\n', (3, 14), "stepone",
     "step"),
    (in_suite('  timeout5s\n  service a { image "x" }'), (2, 3), "timeout5s", "timeout"),
    (in_suite('  service a { image "x" ready tcp 80 within2s }'), (2, 38), "within2s", "within")])
def test_keyword_glued_to_a_name_is_an_error(src: str, where: tuple[int, int], word: str, keyword: str) -> None:
    d = only_error(src)
    assert d.message.startswith(f"unexpected `{word}`, expected ") and (d.loc.line, d.loc.col) == where
    assert d.loc.end_col == d.loc.col + len(word)  # the whole word is underlined
    assert d.help == f"did you mean `{keyword}`?"


def test_keywords_next_to_punctuation_still_parse() -> None:
    plan = compile_file("t.cr", text='suite "s"{\n  service a{image"x"}\n  test "t"{step one=exec a["true"]}\n}\n',
                        environ={})
    assert plan.graph.nodes["s::t::step:one"]["argv"] == ["true"]


def test_misspelt_keyword_longer_than_the_keyword() -> None:
    d = only_error(in_test('    span r = "R" { kindd server }'))
    assert (d.loc.line, d.loc.col) == (7, 20) and d.help == "did you mean `kind`?"
    assert d.message.startswith("unexpected `kindd`")


CYCLE = 'suite "s" {\n  service a { image "x" needs b }\n  service b { image "x" needs a }\n' \
        '  test "t" { step one = exec a ["true"] }\n}\n'


def test_cycle_report_is_deterministic(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / "c.cr").write_text(CYCLE)
    code = ("from crc.compiler.compile import compile_file\nfrom crc.compiler.diagnostics import CompileError\n"
            "try:\n    compile_file('c.cr')\nexcept CompileError as e:\n"
            "    print([(str(d.loc), d.message) for d in e.diagnostics])\n")
    outs = set()
    for seed in range(1, 7):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        outs.add(subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                                text=True, check=True).stdout)
    assert len(outs) == 1, outs


def test_cycle_starts_at_the_earliest_declared_node() -> None:
    d = only_error(in_suite('  service a { image "x" needs c }\n  service b { image "x" needs a }\n'
                            '  service c { image "x" needs b }'))
    # a -> b (b needs a, line 3) -> c (c needs b, line 4) -> a (a needs c, line 2): the first edge with a place
    assert d.message == "cycle of needs edges: a -> b -> c -> a" and (d.loc.line, d.loc.col) == (3, 31)
