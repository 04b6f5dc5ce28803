"""One regex form (the Plan's `{"pattern", "flags"}`), one matcher (runtime/matching.py) and one printer
(`regex_text`): every reader keeps a regex's flags and every match has a deadline."""

from __future__ import annotations

import re

from crc.compiler import ir
from crc.compiler.values import probe_text, regex, value_text
from crc.runtime.http_step import HttpOutput
from crc.runtime.masks import Masks
from crc.runtime.matching import flags_of, search_regex

from crc.lsp.describe import describe_match

LOC = ir.Loc("t.cr", 1, 1, 1, 2)


def test_flags_of_reads_every_letter_the_compiler_admits() -> None:
    assert flags_of("imsx") == re.I | re.M | re.S | re.X
    assert search_regex({"pattern": "^b$", "flags": "im"}, "a\nB") is not None
    assert search_regex({"pattern": "^b$", "flags": ""}, "a\nB") is None


def test_an_http_capture_keeps_the_flags_and_prints_them() -> None:
    out = HttpOutput(200, "OK", (), "ID=7", 0.01)
    assert out.capture({"name": "c", "field": "body", "regex": {"pattern": r"id=(\d)", "flags": "i"}}) == ("7", "")
    got, why = out.capture({"name": "c", "field": "body", "regex": {"pattern": "x", "flags": "i"}})
    assert got is None and "/x/i does not match" in why, why


def test_printers_keep_the_flags() -> None:
    rx = ir.Regex("ab", "is", LOC)
    assert value_text(regex(rx)) == "/ab/is"
    m = ir.SpanMatch(name=rx, service=None, kind=None, status=None, attrs=(), parent=None, ancestor=None,
                     loc=LOC)
    assert "`/ab/is`" in describe_match(m, lambda loc: "")
    probe = {"type": "log", "regex": regex(rx), "text": None}
    assert probe_text(probe) == "log /ab/is"


def test_masks_read_flags_from_both_forms() -> None:
    plan_rule = Masks.of_rules([{"kind": "regex", "pattern": "order-x", "flags": "i"}])
    assert plan_rule.text("ORDER-X!") == "<masked>!"
    assert Masks.parse("/order-x/i").text("ORDER-X!") == "<masked>!"
