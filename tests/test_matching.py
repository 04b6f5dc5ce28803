"""Regexes from files and recordings have a deadline: a pattern that backtracks without end gives up with a
message (a failed expectation or capture, an erring span check), and the run goes on; end to end, a run
with such an expectation ends (it hung before, deaf to timeouts and Ctrl-C)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import RunCrc
from crc.runtime import matching
from crc.runtime.checks import StepOutput, capture, evaluate
from crc.runtime.http_step import HttpOutput
from crc.runtime.matching import RegexTimeout, search
from crc.runtime.spancheck import AttrMatch, Selector
from dockerutil import docker_engine  # noqa: F401  (fixture)

EVIL = "^(a|a)*$"  # exponential in the number of a's, for `re` and for `regex` alike
VICTIM = "a" * 60 + "!"


def test_search_is_re_search() -> None:
    for pattern, text, flags in [(r"(\d+)-x", "ab 12-x", 0), ("^B$", "a\nb", re.I | re.M), ("a.b", "a\nb", re.S)]:
        want, got = re.search(pattern, text, flags), search(pattern, text, flags)
        assert (want and want.group(0)) == (got and got.group(0))


def test_a_backtracking_pattern_gives_up_once_per_length() -> None:
    with pytest.raises(RegexTimeout, match=r"gave up after 0.5s on 61 characters"):
        search(EVIL, VICTIM)
    assert matching._given_up[(EVIL, 0)] == 61
    with pytest.raises(RegexTimeout):  # as long or longer: refused at once
        search(EVIL, VICTIM + "b")
    assert search(EVIL, "aaa") is not None  # shorter texts are still tried


def test_expectation_and_capture_fail_with_the_reason() -> None:
    out = StepOutput(0, VICTIM, "", 0.1)
    v = evaluate({"field": "stdout", "op": "~", "value": {"pattern": EVIL, "flags": ""}, "label": "s.stdout"}, out)
    assert not v.passed and "s.stdout: regex /^(a|a)*$/ gave up" in v.message
    value, why = capture({"name": "c", "field": "stdout", "regex": {"pattern": EVIL, "flags": ""}}, out)
    assert value is None and why.startswith("capture c: regex /^(a|a)*$/ gave up")


def test_an_http_capture_gives_up_with_the_reason() -> None:
    out = HttpOutput(200, "OK", (), VICTIM, 0.1)
    value, why = out.capture({"name": "c", "field": "body", "regex": {"pattern": EVIL, "flags": ""}})
    assert value is None and why.startswith("capture c: regex /^(a|a)*$/ gave up"), why


def test_json_bombs_fail_the_expectation() -> None:
    out = StepOutput(0, "[" * 100_000 + "]" * 100_000, "", 0.1)
    v = evaluate({"field": "json", "op": "==", "value": 1, "path": "$[0]", "label": "s.json"}, out)
    assert not v.passed and v.message == "s.json: stdout is JSON nested too deeply to read"
    assert capture({"name": "c", "field": "json", "path": "$"}, out)[1].endswith("nested too deeply to read")


def test_span_selectors_and_attributes_give_up_too() -> None:
    with pytest.raises(RegexTimeout):
        AttrMatch("k", "~", EVIL + "|x").test({"k": VICTIM})
    with pytest.raises(RegexTimeout):
        Selector("s", "s", name_regex=EVIL + "|y").names([VICTIM])


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_a_run_with_a_backtracking_expectation_ends(tmp_path: Path, crc: RunCrc) -> None:
    f = tmp_path / "evil.cr"
    f.write_text('suite "evil" {\n  test "t" timeout 30s {\n'
                 f'    step s = run "crc/busybox:dev" ["printf", "{VICTIM}"]\n'
                 f'    expect s.stdout ~ /{EVIL}/\n'
                 '    expect s.exit == 0\n  }\n}\n', encoding="utf-8")
    proc = crc("run", f, "--no-progress", "--pull", "never", timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "regex /^(a|a)*$/ gave up after 0.5s on 61 characters" in proc.stdout + proc.stderr
