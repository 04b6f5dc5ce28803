"""No silent literal: a `{{ ... }}` in a string crc takes as written is a located compile error, in every such
position (compiler/literals.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import CompileError

SOURCE = '''import "{{ x }}lib"
suite "s-{{ n }}" {
  mask attr "{{ a }}"
  mask json "$.{{ b }}"
  service api {
    image "img"
    env { "K_{{ c }}": "v" }
    build "ctx" { args { "A{{ d }}": "1" } }
  }
  test "t {{ e }}" {
    step s = http POST "http://api:80/" headers { "X-{{ f }}": "1" } json { "{{ g }}": 1 } allow "{{ h }}"
    step r = exec api ["true"] env { "E{{ i }}": "1" }
    capture c = s.json("$.{{ j }}")
    capture k = s.headers["{{ k }}"]
    span p = "x" { attr "{{ l }}" == 1 }
    expect s.json("$.{{ m }}") == 1
    expect s.headers["{{ o }}"] == "1"
    expect p.attr["{{ q }}"] == 1
    expect count("y" { attr "{{ r }}" exists }) == 1
    expect no span { attr "{% if t %}t{% endif %}" exists }
  }
}
'''
MODULE = 'template t() {\n  image "img"\n  env { "M{{ u }}": "1" }\n}\n'

EXPECTED = [  # (file, line, col, what)
    ("t.cr", 1, 8, "an import path"),
    ("t.cr", 2, 7, "a suite name"),
    ("t.cr", 3, 13, "a masked attribute name"),
    ("t.cr", 4, 13, "a masked JSON path"),
    ("t.cr", 7, 11, "an env name"),
    ("t.cr", 8, 26, "a build arg name"),
    ("t.cr", 10, 8, "the name of a test without parameters"),
    ("t.cr", 11, 51, "a header name"),
    ("t.cr", 11, 75, "the JSON key `{{ g }}`"),
    ("t.cr", 11, 98, "an allowed host"),
    ("t.cr", 12, 38, "an env name"),
    ("t.cr", 13, 24, "a JSON path"),
    ("t.cr", 14, 27, "a header name"),
    ("t.cr", 15, 25, "an attribute name"),
    ("t.cr", 16, 19, "a JSON path"),
    ("t.cr", 17, 22, "a header name"),
    ("t.cr", 18, 19, "an attribute name"),
    ("t.cr", 19, 29, "an attribute name"),
    ("t.cr", 20, 27, "an attribute name"),
    ("{{ x }}lib.cr", 3, 9, "an env name"),
]


def test_every_literal_position_refuses_a_template(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\n", encoding="utf-8")
    (tmp_path / "{{ x }}lib.cr").write_text(MODULE, encoding="utf-8")
    src = tmp_path / "t.cr"
    src.write_text(SOURCE, encoding="utf-8")
    with pytest.raises(CompileError) as exc:
        compile_file(str(src), environ={})
    suffix = " is taken as written: crc does not render `{{ ... }}` there"
    got = [(Path(d.loc.file).name, d.loc.line, d.loc.col, d.message.removesuffix(suffix))
           for d in exc.value.diagnostics if d.loc and d.message.endswith(suffix)]
    assert sorted(got) == sorted(EXPECTED)
    # A path holding a template is reported once, as such, not again as a path that cannot be read.
    assert not [d.message for d in exc.value.diagnostics if "JSON path" in d.message and not d.message.endswith(suffix)]
    test_name = next(d for d in exc.value.diagnostics if d.message.startswith("the name of a test"))
    assert test_name.help == "a test name is a template only in a parametrised test (`for x in [...]`)"


def test_templates_where_they_are_rendered_are_no_error(tmp_path: Path) -> None:
    src = tmp_path / "t.cr"
    src.write_text('''suite "s" {
  let n = "x"
  service api { image "img" env { K: "{{ n }}" } }
  test "t {{ v }}" for v in [1, 2] {
    step s = http GET "http://api:80/{{ n }}" headers { H: "{{ n }}" }
    capture id = s.json("$.id")
    span p = "GET {{ n }}" { service "{{ 'api' }}" attr "k" == "{{ id }}" }
    expect s.body contains "{{ id }}"
    expect hermetic allow "{{ n }}"
  }
}
''', encoding="utf-8")
    p = compile_file(str(src), environ={})
    assert sorted(t["name"] for t in p.tests) == ["t 1", "t 2"]
