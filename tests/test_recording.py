"""Recordings: the format (validation, masking), replay, digests, flaky detection and `crc diff`.

Unit tests build recordings from compiled Plans and hand-made results; Docker-backed tests record real runs
and replay them with the engine unreachable.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from crc.compiler.compile import compile_file
from crc.compiler.plan import canonical_bytes
from crc.runtime import recording as rf
from crc.runtime import results as res
from crc.runtime.digest import digest, item_digests
from crc.runtime.replay import replay
from crc.runtime.results import FAILED, PASSED, NodeResult, RunResult
from crc.runtime.rundiff import diff
from crc.runtime.runner import RunOptions
from dockerutil import ROOT, crc, docker_engine  # noqa: F401

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent"}

SMALL = """suite "small" {
  service box {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
    env { API_TOKEN: "tok-123456789", MODE: "plain" }
  }
  test "t" {
    step say = exec box ["echo", "hello"]
    expect say.stdout == "hello\\n"
    capture word = say.stdout ~ /(h\\w+)/
    step again = exec box ["echo", "{{ word }}"]
    expect again.stdout contains "hello"
  }
}
"""


def _fake_run(tmp_path: Path, stdout: str = "hello\n", token_in_output: bool = False
              ) -> tuple[rf.Recording, Any]:
    """A recording of a run that never happened: the SMALL file compiled, outputs made up."""
    src = tmp_path / "small.cr"
    src.write_text(SMALL, encoding="utf-8")
    plan = compile_file(str(src))
    g = plan.graph
    say, again = "small::t::step:say", "small::t::step:again"
    assert say in g and again in g, sorted(g.nodes)
    out = stdout + ("tok-123456789 leaked\n" if token_in_output else "")

    def step(n: str, text: str, caps: dict[str, str]) -> NodeResult:
        return NodeResult(n, "step", PASSED, "", 10, 20, {"argv": ["echo", text], "captures": caps,
                                                          "output": {"exit_code": 0, "stdout": text, "stderr": "",
                                                                     "duration_s": 0.01, "timed_out": False}})

    nodes = {"small::service:box": NodeResult("small::service:box", "service", PASSED, "", 1, 5,
                                              {"container": "c" * 64, "suite_key": "s0"}),
             say: step(say, out, {"word": "hello"}), again: step(again, "hello\n", {})}
    for n, d in g.nodes(data=True):
        if d["kind"] == "assert":
            nodes[n] = NodeResult(n, "assert", PASSED if "hello" in out else FAILED, "", 21, 22)
    tests = (res.TestResult("small", "t", PASSED, 0.1, (), tuple(sorted(n for n in g if "::t::" in n))),)
    result = RunResult("run-1", 0, 100, tests, nodes, (str(src),))
    return rf.build(result, [plan], [], RunOptions(shuffle_seed=7), "test"), plan


# ----------------------------------------------------------------------------- format, masking (no engine)


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    rec, _ = _fake_run(tmp_path)
    back = rf.Recording.from_bytes(rec.to_bytes())
    assert back == rec
    assert back.options.shuffle_seed == 7
    assert back.seeds and back.seeds[0]["suite"] == "small"
    assert rec.to_bytes() == back.to_bytes(), "the encoding is canonical"


def test_secrets_are_masked_everywhere(tmp_path: Path) -> None:
    rec, _ = _fake_run(tmp_path, token_in_output=True)
    blob = rec.to_bytes()
    assert b"tok-123456789" not in blob
    assert b"plain" in blob, "only secret-looking keys are masked"
    assert rec.masked_keys == ("API_TOKEN",)
    say = rec.results()["small::t::step:say"]
    assert "<masked> leaked" in say.detail["output"]["stdout"]
    env = next(d for n, d in rec.plans[0]["nodes"] if n == "small::service:box")["env"]
    assert env == {"API_TOKEN": rf.MASK, "MODE": "plain"}


def test_mask_data_rules() -> None:
    keys, values = rf.secret_keys_and_values([{"nodes": [
        ["a", {"env": {"DB_PASSWORD": "hunter2-long", "secret_key": "abc", "X": "hunter2-long-not", "T": "{{ x }}"}}],
        ["b", {"env": {"GITHUB_TOKEN": "{{ env.T }}"}}]]}])
    assert keys == ["DB_PASSWORD", "GITHUB_TOKEN", "secret_key"]
    assert values == ["hunter2-long", "abc"], "templates cannot be known before the run"
    masked = rf.mask_data({"env": {"secret_key": "abc", "X": "abc"}, "out": ["pw=hunter2-long;", 3, None]},
                          keys, values)
    # "abc" is too short to search for, but masked where it is set.
    assert masked == {"env": {"secret_key": rf.MASK, "X": "abc"}, "out": ["pw=<masked>;", 3, None]}


def _with_header(body: bytes, version: int = rf.VERSION) -> bytes:
    import hashlib

    return struct.pack(">8sHQ32s", rf.MAGIC, version, len(body), hashlib.sha256(body).digest()) + body


@pytest.mark.parametrize("damage", ["truncated", "flipped", "newer", "not", "empty", "garbage-body",
                                    "wrong-format", "bad-field", "bad-plan", "extra"])
def test_damaged_files_raise_recording_error(tmp_path: Path, damage: str) -> None:
    rec, _ = _fake_run(tmp_path)
    good = rec.to_bytes()
    data = rec.to_data()
    blob = {
        "truncated": good[: len(good) - 7],
        "flipped": good[:60] + bytes([good[60] ^ 0x01]) + good[61:],
        "newer": _with_header(canonical_bytes({**data, "version": rf.VERSION + 1}), rf.VERSION + 1),
        "not": b"\x82\xa6format\xa8crc-plan",
        "empty": b"",
        "garbage-body": _with_header(b"\xc1\xc1\xc1"),
        "wrong-format": _with_header(canonical_bytes({**data, "format": "something"})),
        "bad-field": _with_header(canonical_bytes({**data, "nodes": [{"node": 1}]})),
        "bad-plan": _with_header(canonical_bytes({**data, "plans": [{"format": "crc-plan", "version": 1}]})),
        "extra": good + b"x",
    }[damage]
    with pytest.raises(rf.RecordingError) as e:
        rf.Recording.from_bytes(blob)
    word = {"truncated": "truncated", "newer": "newer crc", "not": "not a crc recording",
            "empty": "not a crc recording", "flipped": "checksum"}.get(damage, "")
    assert word in str(e.value)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_an_older_recording_is_refused_with_exit_2_saying_what_to_do(tmp_path: Path, version: int) -> None:
    """Version 1 results carry no cause, so replay could not tell a timeout from a failed check; version 2
    holds Plans of format 1; version 3 knows nothing of spilled step output."""
    rec, _ = _fake_run(tmp_path)
    old = tmp_path / "old.crcrec"
    old.write_bytes(_with_header(canonical_bytes({**rec.to_data(), "version": version}), version))
    proc = crc("replay", str(old), env=NO_ENGINE)
    assert proc.returncode == 2, proc.stderr
    assert f"recording format version {version} was written by an older crc" in proc.stderr
    assert f"this crc reads version {rf.VERSION}" in proc.stderr and "crc run --record FILE" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_replay_of_a_made_up_run_recomputes_verdicts(tmp_path: Path) -> None:
    rec, _ = _fake_run(tmp_path, stdout="hullo\n")
    r = replay(rec)
    st = {n: x.status for n, x in r.result.nodes.items()}
    # The first expectation fails on the recorded output, and the capture /(h\w+)/ takes "hullo".
    assert st["small::t::assert:1"] == FAILED
    assert st["small::t::step:say"] == PASSED
    assert [t.status for t in r.result.tests] == [FAILED]
    assert r.shuffle_seed == 7


def test_digest_ignores_ids_and_times_but_not_outputs(tmp_path: Path) -> None:
    a, _ = _fake_run(tmp_path)
    b = rf.Recording(**{**a.__dict__, "run_id": "other", "started_ns": 5, "ended_ns": 999})
    assert digest(a) == digest(b)
    c, _ = _fake_run(tmp_path, stdout="hello!\n")
    assert digest(a) != digest(c)
    changed = {k for k, v in item_digests(c).items() if item_digests(a).get(k) != v}
    assert "node:small::t::step:say" in changed
    assert "node:small::t::step:again" not in changed
    d = diff(a, c)
    assert d.differ and any(o["node"] == "small::t::step:say" for o in d.outputs)
    assert not diff(a, b).differ


# ----------------------------------------------------------------------------- real runs (Docker)


def _run(tmp_path: Path, name: str, *files: Path | str, extra: tuple[str, ...] = ()) -> tuple[Any, Path, dict]:
    rec = tmp_path / f"{name}.crcrec"
    report = tmp_path / f"{name}.json"
    proc = crc("run", *map(str, files), "--no-progress", "--pull", "never", "--json", str(report),
               "--record", str(rec), *extra)
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc, rec, data


def _replay(rec: Path, *extra: str, tmp: Path) -> tuple[Any, dict]:
    report = tmp / (rec.stem + f".replay{len(extra)}.json")
    proc = crc("replay", str(rec), *extra, "--json", str(report), env=NO_ENGINE)
    return proc, (json.loads(report.read_text()) if report.exists() else {})


def _verdicts(report: dict) -> tuple[dict, dict]:
    return ({n["node"]: n["status"] for n in report["nodes"]},
            {(t["suite"], t["name"]): t["status"] for t in report["tests"]})


@pytest.fixture(scope="module")
def recorded(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("rec")
    ex = ROOT / "examples"
    ok = _run(tmp, "ok", ex / "multi.cr", ex / "hello.cr", ex / "otel" / "orders.cr", extra=("--shuffle-seed", "5"))
    bad = _run(tmp, "bad", ex / "failing" / "wrong_expectation.cr")
    return {"tmp": tmp, "ok": ok, "bad": bad}


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("which", ["ok", "bad"])
def test_replay_without_engine_gives_the_same_verdicts(recorded: dict[str, Any], which: str) -> None:
    proc, rec, live = recorded[which]
    assert proc.returncode == (0 if which == "ok" else 1), proc.stdout + proc.stderr
    assert rec.exists() and rec.read_bytes().startswith(rf.MAGIC)
    rp, replayed = _replay(rec, tmp=recorded["tmp"])
    assert rp.returncode == proc.returncode, rp.stdout + rp.stderr
    assert "Traceback" not in rp.stderr
    assert _verdicts(replayed) == _verdicts(live)
    assert replayed["nodes"] == live["nodes"], "the same details: outputs, matched spans, messages"
    if which == "ok":
        assert len(replayed["spans"]) == len(live["spans"]) > 0
        assert "shuffle seed 5" in rp.stdout
        assert replayed["replay"]["shuffle_seed"] == 5
        assert rf.read(rec).options.shuffle_seed == 5
    else:
        assert "hello, there" in rp.stdout, "the failure message is shown again"
    junit = recorded["tmp"] / f"{which}.xml"
    assert crc("replay", str(rec), "--junit", str(junit), env=NO_ENGINE).returncode == proc.returncode
    assert "<testsuites" in junit.read_text()


@pytest.mark.docker
@pytest.mark.slow
def test_recording_holds_what_the_run_captured(recorded: dict[str, Any]) -> None:
    _, path, live = recorded["ok"]
    rec = rf.read(path)
    res = rec.results()
    stored = res["shop::orders are stored::step:read"]
    assert stored.detail["captures"] == {"stored": stored.detail["output"]["stdout"].strip()}
    svc = res["shop::service:cache"]
    assert svc.detail["image_id"].startswith("sha256:") and svc.detail["log_tail"]
    assert rec.images.get("crc/python:dev") == svc.detail["image_id"]
    assert len(rec.spans) == len(live["spans"])
    span = res["orders emit the right spans::an order is placed::span:request"]
    assert span.detail["spans"] and span.detail["spans"][0]["name"] == "GET /orders"
    # Size: proportional to what was captured (Plans and framing on top), not a multiple of it.
    assert path.stat().st_size < 4 * rec.captured_bytes() + 64 * 1024


@pytest.mark.docker
@pytest.mark.slow
def test_replay_of_edited_sources(recorded: dict[str, Any], tmp_path: Path) -> None:
    _, bad, _ = recorded["bad"]
    src = (ROOT / "examples" / "failing" / "wrong_expectation.cr").read_text()
    fixed = tmp_path / "wrong_expectation.cr"
    fixed.write_text(src.replace("hello, there", "hello, world"))
    proc, rep = _replay(bad, str(fixed), tmp=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "recorded failed, now passed" in proc.stdout
    assert {t["status"] for t in rep["tests"]} == {"passed"}

    grown = tmp_path / "grown" / "wrong_expectation.cr"
    grown.parent.mkdir()
    grown.write_text(src.replace("hello, there", "hello, world").replace(
        "expect greet.exit == 0", 'expect greet.exit == 0\n    step bye = exec box ["echo", "bye"]\n'
                                  '    expect bye.stdout == "bye\\n"'))
    proc, rep = _replay(bad, str(grown), tmp=tmp_path)
    assert proc.returncode == 1, "a test with unchecked nodes does not pass"
    assert "no recorded data" in proc.stdout and "step bye" in proc.stdout
    nodes = {n["node"]: n for n in rep["nodes"]}
    assert nodes["fails on purpose::a wrong expectation::step:bye"]["status"] == "skipped"
    assert nodes["fails on purpose::a wrong expectation::step:bye"]["message"].startswith("no recorded data")
    assert rep["tests"][0]["status"] != "passed"
    assert [x["node"] for x in rep["replay"]["no_data"]] == [
        "fails on purpose::a wrong expectation::assert:3", "fails on purpose::a wrong expectation::step:bye"]

    # A changed span expectation is checked against the recorded spans.
    _, ok, _ = recorded["ok"]
    orders = tmp_path / "orders.cr"
    text = (ROOT / "examples" / "otel" / "orders.cr").read_text()
    orders.write_text(text.replace('expect count("redis *") == 2', 'expect count("redis *") == 3'))
    proc = crc("replay", str(ok), str(orders), env=NO_ENGINE)
    assert proc.returncode == 1 and "expected exactly 3, found 2" in proc.stdout, proc.stdout + proc.stderr
    broken = tmp_path / "broken.cr"
    broken.write_text("suite {")
    assert crc("replay", str(ok), str(broken), env=NO_ENGINE).returncode == 2


@pytest.mark.docker
@pytest.mark.slow
def test_bad_recordings_exit_2(recorded: dict[str, Any], tmp_path: Path) -> None:
    _, ok, _ = recorded["ok"]
    good = ok.read_bytes()
    newer = bytearray(good)
    newer[8:10] = (rf.VERSION + 1).to_bytes(2, "big")
    cases = {"truncated": good[: len(good) // 2], "corrupt": good[:100] + b"\x00" * 50 + good[150:],
             "newer": bytes(newer), "plan": (ROOT / "examples" / "hello.cr").read_bytes()}
    for name, blob in cases.items():
        p = tmp_path / f"{name}.crcrec"
        p.write_bytes(blob)
        for cmd in (("replay", str(p)), ("digest", str(p)), ("diff", str(p), str(ok)), ("graph", str(p))):
            proc = crc(*cmd, env=NO_ENGINE)
            if cmd[0] == "graph" and name == "plan":
                continue  # a .cr source is a valid graph target
            assert proc.returncode == 2, (name, cmd, proc.stdout, proc.stderr)
            assert "Traceback" not in proc.stderr and "error" in proc.stderr
    assert "newer crc" in crc("replay", str(tmp_path / "newer.crcrec")).stderr
    assert "truncated" in crc("replay", str(tmp_path / "truncated.crcrec")).stderr


@pytest.mark.docker
@pytest.mark.slow
def test_graph_colours_by_recorded_verdicts(recorded: dict[str, Any]) -> None:
    _, bad, _ = recorded["bad"]
    text = crc("graph", str(bad), env=NO_ENGINE)
    assert text.returncode == 0, text.stderr
    assert "[FAILED]" in text.stdout and "[passed]" in text.stdout
    dot = crc("graph", str(bad), "--format", "dot", env=NO_ENGINE)
    assert dot.returncode == 0 and "#fecaca" in dot.stdout  # the failed fill
    assert "— FAILED\"; style=dashed; color=\"#dc2626\"" in dot.stdout  # and the failed test's red frame


DET = """suite "det" {
  service box {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
  }
  test "say" {
    step say = exec box ["echo", "WORD"]
    expect say.exit == 0
    step host = exec box ["hostname"]
  }
}
"""


@pytest.mark.docker
@pytest.mark.slow
def test_digest_and_diff_of_real_runs(docker_engine: None, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    same = tmp_path / "a" / "det.cr"
    same.write_text(DET.replace("WORD", "one"))
    other = tmp_path / "b" / "det.cr"
    other.write_text(DET.replace("WORD", "two"))
    runs = [_run(tmp_path, "d1", same, ROOT / "examples" / "multi.cr"),
            _run(tmp_path, "d2", same, ROOT / "examples" / "multi.cr"),
            _run(tmp_path, "d3", other, ROOT / "examples" / "multi.cr")]
    for proc, _, _ in runs:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    digests = [crc("digest", str(r), env=NO_ENGINE).stdout.strip() for _, r, _ in runs]
    assert all(len(d) == 64 for d in digests)
    # The `hostname` step prints the container id, which differs every run: normalized away.
    assert digests[0] == digests[1], "same file, same seed, deterministic system"
    assert digests[0] != digests[2], "an output changed"
    same_diff = crc("diff", str(runs[0][1]), str(runs[1][1]), "--json", env=NO_ENGINE)
    assert same_diff.returncode == 0, same_diff.stdout
    assert json.loads(same_diff.stdout)["differ"] is False
    d = crc("diff", str(runs[0][1]), str(runs[2][1]), env=NO_ENGINE)
    assert d.returncode == 1
    assert "-one" in d.stdout and "+two" in d.stdout
    j = json.loads(crc("diff", str(runs[0][1]), str(runs[2][1]), "--json", env=NO_ENGINE).stdout)
    assert j["differ"] and j["outputs"][0]["node"] == "det::say::step:say" and j["plans_differ"]


COIN = """suite "coin" {
  service box {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
    env { SERVICE_TOKEN: "very-secret-token-42" }
  }
  test "toss" {
    step toss = exec box ["cat", "/proc/sys/kernel/random/uuid"]
    expect toss.stdout ~ /^[0-7]/
    step tell = exec box ["sh", "-c", "echo token=$SERVICE_TOKEN"]
    expect tell.stdout contains "very-secret-token-42"
  }
}
"""


@pytest.mark.docker
@pytest.mark.slow
def test_repeat_detects_a_flaky_test(docker_engine: None, tmp_path: Path) -> None:  # noqa: F811
    src = tmp_path / "coin.cr"
    src.write_text(COIN)
    rec = tmp_path / "coin.crcrec"
    proc = crc("run", str(src), "--no-progress", "--pull", "never", "--repeat", "3", "--record", str(rec))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # The uuid differs every run, so the step's output digest always does; the verdict half of the time.
    assert "flaky" in proc.stdout and "node:coin::toss::step:toss: output differs" in proc.stdout
    assert "node:coin::toss::step:tell" not in proc.stdout, "a stable step is not reported"
    paths = [tmp_path / f"coin.{i}.crcrec" for i in (1, 2, 3)]
    assert all(p.exists() for p in paths)
    for p in paths:
        assert b"very-secret-token-42" not in p.read_bytes(), "secrets never reach the disk"
        rp = crc("replay", str(p), env=NO_ENGINE)
        assert "Traceback" not in rp.stderr
        tell = [ln for ln in rp.stdout.splitlines() if "tell" in ln]
        assert not tell, "the masked expectation still holds on the masked output"
    assert crc("diff", str(paths[0]), str(paths[1]), env=NO_ENGINE).returncode == 1
