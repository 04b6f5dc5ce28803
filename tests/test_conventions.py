"""Small conventions: `.crc/` ignores itself, FORCE_COLOR/NO_COLOR, usage errors as `crc: error:`, and one
progress line per finished test (every node with -v)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from crc.runtime.report import Progress
from crc.runtime.results import FAILED, PASSED, NodeResult

from crc.cli import main

GOOD = 'suite "s" {\n  service b { image "crc/busybox:dev" }\n  test "t" {\n    step x = exec b ["true"]\n  }\n}\n'


def crc(*args: str) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return int(e.value.code or 0)


def test_crc_dir_ignores_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.cr").write_text(GOOD)
    assert crc("compile", "a.cr") == 0
    assert (tmp_path / ".crc" / ".gitignore").read_text().splitlines()[-1] == "*"
    (tmp_path / ".crc" / ".gitignore").unlink()
    from crc.commands_run import resolve_plans

    resolve_plans([Path("a.cr")], cache=False)  # `crc run`'s compile cache writes .crc/ too
    assert (tmp_path / ".crc" / ".gitignore").exists()


@pytest.mark.parametrize(("env", "colored"), [({}, False), ({"FORCE_COLOR": "1"}, True),
                                              ({"FORCE_COLOR": "0"}, False),
                                              ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, False)])
def test_force_color(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                     env: dict[str, str], colored: bool) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "bad.cr").write_text('suite "s" {\n  servce b { image "x" }\n}\n')
    assert crc("check", "bad.cr") == 2
    assert ("\x1b[" in capsys.readouterr().err) is colored


@pytest.mark.parametrize(("args", "message"), [
    (("run", "--jobs", "0", "x.cr"), "crc: error: run: argument -j/--jobs: 0 is smaller than 1"),
    (("run", "--rec", "r"), "crc: error: run: unrecognized arguments: --rec"),
    (("nope",), "crc: error: argument COMMAND: invalid choice: 'nope'"),
])
def test_usage_errors_use_the_documented_format(capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                                                message: str) -> None:
    assert crc(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "  help: see `crc" in err and "usage:" not in err


LABELS = {
    "svc": {"kind": "service", "label": "web", "suite": "s"},
    "a1": {"kind": "step", "label": "get", "suite": "s", "test": "one"},
    "a2": {"kind": "assert", "label": "get.exit == 0", "suite": "s", "test": "one"},
    "b1": {"kind": "step", "label": "put", "suite": "s", "test": "two"},
}


def _feed(verbose: bool) -> list[str]:
    out = io.StringIO()
    p = Progress(LABELS, live=False, stream=out, verbose=verbose)
    with p:
        p.finished_node(NodeResult("svc", "service", PASSED, "", 1, 2))
        p.finished_node(NodeResult("a1", "step", PASSED, "", 10, 20_000_000))
        p.finished_node(NodeResult("b1", "step", FAILED, "exit 1\nmore", 10, 30_000_000))
        p.finished_node(NodeResult("a2", "assert", PASSED, "", 20_000_000, 40_000_000))
    return out.getvalue().splitlines()


def test_one_progress_line_per_finished_test() -> None:
    assert _feed(verbose=False) == [" FAIL  test s / two  30ms", "       exit 1", "   ok  test s / one  40ms"]


def test_verbose_progress_prints_every_node() -> None:
    lines = _feed(verbose=True)
    assert [line.split()[0] for line in lines if not line.startswith("       ")] == ["ok", "ok", "FAIL", "ok"]
    assert "   ok  service web (s)  0ms" in lines and "   ok  assert get.exit == 0 (s / one)  20ms" in lines
