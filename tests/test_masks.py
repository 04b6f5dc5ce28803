"""Volatile values: mask rules in a file and on the command line make digests, `crc diff` and `--repeat`
ignore what the system makes anew each run, and nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import CompileError
from crc.runtime.masks import MASKED, MaskError, Masks

# ---------------------------------------------------------------- the rules


def test_parse_and_apply() -> None:
    m = Masks.parse("/order-[0-9]+/") | Masks.parse("attr order.id") | Masks.parse('json "$.items[0].id"')
    assert m.text("order-42 and order-7") == f"{MASKED} and {MASKED}"
    doc = json.dumps({"items": [{"id": "x1", "n": 2}], "status": "ok", "ref": "order-9"})
    assert json.loads(m.output(doc)) == {"items": [{"id": MASKED, "n": 2}], "status": "ok", "ref": MASKED}
    assert m.output("not json: order-1") == f"not json: {MASKED}"
    assert m.output('{"broken": ') == '{"broken": '
    assert m.attribute("order.id", 5) == MASKED and m.attribute("other", "order-3") == MASKED
    assert m.attribute("other", 3) == 3
    assert Masks.parse("/ID/i").text("id Id") == f"{MASKED} {MASKED}"
    assert not Masks() and m


@pytest.mark.parametrize("rule", ["order", "/(/", "json items", "attr", "json $.[x"])
def test_bad_rules_say_how_to_write_one(rule: str) -> None:
    with pytest.raises(MaskError):
        Masks.parse(rule)


def test_a_missing_json_path_changes_nothing() -> None:
    m = Masks.parse("json $.a.b")
    assert json.loads(m.output('{"a": 1, "c": {"b": 2}}')) == {"a": 1, "c": {"b": 2}}


def test_file_rules_reach_the_plan_and_bad_ones_are_located(tmp_path: Path) -> None:
    src = tmp_path / "m.cr"
    src.write_text('suite "s" {\n  mask /id-[0-9]+/i\n  mask attr "order.id"\n  mask json "$.id"\n'
                   '  service a { image "x" }\n  test "t" { step s = exec a ["true"] }\n}\n')
    plan = compile_file(str(src))
    assert plan.suites[0]["masks"] == [{"kind": "regex", "pattern": "id-[0-9]+", "flags": "i"},
                                               {"kind": "attr", "value": "order.id"},
                                               {"kind": "json", "value": "$.id"}]
    masks = Masks.of_plans([plan.to_data()])
    assert masks.text("ID-7") == MASKED and masks.attrs == {"order.id"}
    src.write_text('suite "s" {\n  mask /(/\n  mask json "id"\n  service a { image "x" }\n'
                   '  test "t" { step s = exec a ["true"] }\n}\n')
    with pytest.raises(CompileError) as e:
        compile_file(str(src))
    assert [(d.loc.line, d.message.split(":")[0]) for d in e.value.diagnostics if d.loc] == [
        (2, "invalid regex"), (3, "a JSON path starts with `$`, like $.items[0].id")]


# ---------------------------------------------------------------- end to end

SOURCE = r"""suite "masks-e2e" {
  mask json "$.id"
  service app { image "crc/busybox:dev" command ["sleep", "100"] }
  test "random ids" {
    step s = exec app ["sh", "-c", "echo \"{\\\"id\\\": \\\"$RANDOM$RANDOM\\\", \\\"status\\\": \\\"ok\\\"}\""]
    expect s.json("$.status") == "ok"
    step t = exec app ["sh", "-c", "echo token-$RANDOM$RANDOM; echo stable"]
  }
}
"""


@pytest.fixture
def e2e(tmp_path: Path) -> Iterator[Path]:
    from dockerutil import crc_resources, engine_answers, remove_resources

    if not engine_answers():
        pytest.skip("no Docker engine answers (run `bash .ci/setup`)")
    (tmp_path / "m.cr").write_text(SOURCE)
    yield tmp_path
    left = crc_resources("masks-e2e")
    remove_resources(left)
    assert not left


@pytest.mark.docker
def test_repeat_digest_and_diff_ignore_only_masked_values(e2e: Path) -> None:
    from dockerutil import crc

    flaky = crc("run", "m.cr", "--no-progress", "--pull", "never", "--repeat", "2", "--record", "r.crcrec",
                cwd=e2e)
    # The file masks the JSON id; the token of step t is not masked: that is what differs.
    assert flaky.returncode == 1, flaky.stdout + flaky.stderr
    assert "flaky: 1 item(s)" in flaky.stdout and "step:t: output differs" in flaky.stdout
    steady = crc("run", "m.cr", "--no-progress", "--pull", "never", "--repeat", "2", "--mask", "/token-[0-9]+/",
                 cwd=e2e)
    assert steady.returncode == 0 and "not flaky" in steady.stdout, steady.stdout
    a, b = "r.1.crcrec", "r.2.crcrec"
    plain = crc("diff", a, b, cwd=e2e)
    assert plain.returncode == 1 and "token-" in plain.stdout and "\"id\"" not in plain.stdout
    masked = crc("diff", a, b, "--mask", "/token-[0-9]+/", cwd=e2e)
    assert masked.returncode == 0, masked.stdout
    digests = [crc("digest", r, "--mask", "/token-[0-9]+/", cwd=e2e).stdout for r in (a, b)]
    assert digests[0] == digests[1] and len(digests[0].strip()) == 64
    assert crc("digest", a, cwd=e2e).stdout != crc("digest", b, cwd=e2e).stdout
    bad = crc("diff", a, b, "--mask", "token", cwd=e2e)
    assert bad.returncode == 2 and "cannot read the mask rule" in bad.stderr
    # `masks` in the config applies like --mask; a --mask given replaces it (command line > config)
    (e2e / "crc.toml").write_text('masks = ["/token-[0-9]+/"]\n')
    assert crc("diff", a, b, cwd=e2e).returncode == 0
    assert crc("digest", a, cwd=e2e).stdout == crc("digest", b, cwd=e2e).stdout
    assert crc("diff", a, b, "--mask", "attr nothing.here", cwd=e2e).returncode == 1
