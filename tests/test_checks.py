"""Step expectations and captures on captured output (pure logic)."""

from __future__ import annotations

import pytest
from crc.runtime.checks import StepOutput, capture, evaluate

OUT = StepOutput(0, '{"status": "created", "items": [{"id": 7}], "ok": true}', "warn: x\n", 0.25)


@pytest.mark.parametrize(
    ("field", "op", "value", "path", "passed", "fragment"),
    [
        ("exit", "==", 0, None, True, ""),
        ("exit", "!=", 0, None, False, "exit code was 0"),
        ("stdout", "contains", "created", None, True, ""),
        ("stdout", "contains", "deleted", None, False, "does not contain 'deleted'"),
        ("stdout", "not contains", "created", None, False, "contains 'created'"),
        ("stderr", "~", {"pattern": "^warn", "flags": ""}, None, True, ""),
        ("stderr", "!~", {"pattern": "^warn", "flags": ""}, None, False, "matches /^warn/"),
        ("stdout", "~", {"pattern": "CREATED", "flags": "i"}, None, True, ""),
        ("json", "==", "created", "$.status", True, ""),
        ("json", "==", 7, "$.items[0].id", True, ""),
        ("json", "==", 8, "$.items[0].id", False, "actual 7, expected == 8"),
        ("json", "==", 1, "$.ok", False, "actual true"),
        ("json", "==", "x", "$.missing", False, "has no key 'missing'"),
        ("duration", "<", 1.0, None, True, ""),
        ("duration", "<", 0.1, None, False, "took 250ms"),
    ],
)
def test_evaluate(field, op, value, path, passed, fragment) -> None:  # type: ignore[no-untyped-def]
    v = evaluate({"field": field, "op": op, "value": value, "path": path, "label": "x"}, OUT)
    assert v.passed is passed
    assert fragment in v.message


def test_text_equality_failure_shows_a_diff() -> None:
    v = evaluate({"field": "stdout", "op": "==", "value": "hello, there\n", "label": "greet.stdout"},
                 StepOutput(0, "hello, world\n", "", 0.1))
    assert not v.passed
    assert "-hello, there" in v.message and "+hello, world" in v.message


def test_timed_out_step_fails_every_expectation() -> None:
    v = evaluate({"field": "exit", "op": "==", "value": 0, "label": "s.exit"}, StepOutput(None, "", "", 2.0, True))
    assert not v.passed and "timed out" in v.message


def test_captures() -> None:
    assert capture({"name": "s", "field": "json", "path": "$.status"}, OUT) == ("created", "")
    assert capture({"name": "i", "field": "json", "path": "$.items"}, OUT) == ('[{"id": 7}]', "")
    assert capture({"name": "w", "field": "stderr", "regex": {"pattern": r"warn: (\w+)", "flags": ""}}, OUT) == ("x", "")
    value, err = capture({"name": "w", "field": "stdout", "regex": {"pattern": "nope", "flags": ""}}, OUT)
    assert value is None and "does not match" in err
