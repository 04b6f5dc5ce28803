"""Parametrised tests (`for NAME in [...]`): one test per value or combination, each named by its values,
with its own lets and seeded values; what the clause refuses, located; fmt keeps it."""

from __future__ import annotations

import pytest
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import CompileError
from crc.compiler.format import format_source

HEAD = 'suite "s" {\n  seed 3\n  service box { image "crc/busybox:dev" command ["sleep", "300"] }\n'


def plan(tests: str) -> object:
    return compile_file("t.cr", text=HEAD + tests + "}\n", environ={})


def test_one_test_per_combination_named_by_its_values() -> None:
    p = plan('  test "echo" for word in ["a", "b"], n in [1, 2] {\n'
             '    let who = "{{ uuid() }}"\n    step s = exec box ["echo", word, n, who]\n  }\n'
             '  test "sku {{ sku }}" for sku in [7, 8] {\n    step s = exec box ["echo", sku]\n  }\n')
    names = [t["name"] for t in p.tests]  # type: ignore[attr-defined]
    assert names == ['echo [word="a", n=1]', 'echo [word="a", n=2]', 'echo [word="b", n=1]', 'echo [word="b", n=2]',
                     "sku 7", "sku 8"]
    argv = [d["argv"] for n, d in p.nodes.items() if d["kind"] == "step"]  # type: ignore[attr-defined]
    assert [a[1:3] for a in argv[:4]] == [["a", "1"], ["a", "2"], ["b", "1"], ["b", "2"]]
    assert len({a[3] for a in argv[:4]}) == 4  # each instance draws its own seeded value
    assert argv[4:] == [["echo", "7"], ["echo", "8"]]


@pytest.mark.parametrize(("clause", "message"), [
    ('for x in []', "takes a non-empty list of values"),
    ('for x in "a"', "takes a non-empty list of values"),
    ('for x in [1], x in [2]', "parameter `x` is given twice"),
])
def test_what_a_for_clause_refuses(clause: str, message: str) -> None:
    with pytest.raises(CompileError) as e:
        plan(f'  test "t" {clause} {{\n    step s = exec box ["true"]\n  }}\n')
    assert any(message in d.message and d.loc.line == 4 for d in e.value.diagnostics), e.value.diagnostics


def test_two_instances_with_the_same_name_are_reported() -> None:
    with pytest.raises(CompileError) as e:
        plan('  test "same" for x in [1, 1] {\n    step s = exec box ["true"]\n  }\n')
    assert any("declared twice" in d.message for d in e.value.diagnostics)


def test_format_keeps_the_for_clause() -> None:
    src = HEAD + '  test "t"   for  a in [1,2] , b in ["x"] {\n    step s = exec box ["true"]\n  }\n}\n'
    assert '  test "t" for a in [1, 2], b in ["x"] {\n' in format_source(src)
