"""Syntax error recovery in one pass (compiler/parser.py `syntax_errors`) reports exactly what the former
recovery reported, which parsed the whole file again after blanking out each erroneous statement; it is
checked against that definition on mutations of the examples. benchmarks/recovery.py measures the cost."""

from __future__ import annotations

import random

import fuzz
import pytest
from crc.compiler.diagnostics import Diagnostics
from crc.compiler.parser import MAX_SYNTAX_ERRORS, _blank_statement, _report_syntax, parse_tree, syntax_errors
from lark.exceptions import UnexpectedEOF, UnexpectedInput, UnexpectedToken


def reparsing_errors(text: str) -> list[UnexpectedInput]:
    """The definition: parse; on an error, blank out its statement and parse the whole text again."""
    errors: list[UnexpectedInput] = []
    work = text
    while len(errors) < MAX_SYNTAX_ERRORS:
        try:
            parse_tree(work)
            break
        except UnexpectedInput as e:
            errors.append(e)
            if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
                break
            blanked = _blank_statement(work, getattr(e, "line", 1) or 1)
            if blanked == work:
                break
            work = blanked
    return errors


def rendered(errors: list[UnexpectedInput], text: str) -> list[tuple[object, str, str | None]]:
    diags = Diagnostics()
    _report_syntax(errors, "t.cr", text, diags)
    return [(d.loc, d.message, d.help) for d in diags.items]


@pytest.mark.parametrize("seed", range(4))
def test_one_pass_recovery_reports_what_reparsing_reported(seed: int) -> None:
    rng = random.Random(seed)
    seeds, words = fuzz.sources(), fuzz.pieces()
    compared = 0
    for _ in range(150):
        text = fuzz.mutate(rng, seeds, words)
        if len(text) > 20_000:
            continue
        want = rendered(reparsing_errors(text), text)
        assert rendered(syntax_errors(text), text) == want, text
        compared += bool(want)
    assert compared > 50, "most mutations are syntax errors"


def test_twenty_errors_are_reported_and_no_more() -> None:
    text = 'suite "s" {\n' + "".join(f'  step a{i} = exec x ["a" "b"]\n' for i in range(30)) + "}\n"
    errors = syntax_errors(text)
    assert len(errors) == MAX_SYNTAX_ERRORS == len(reparsing_errors(text))
    assert [e.line for e in errors] == list(range(2, 22))
