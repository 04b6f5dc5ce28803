"""The config file: discovery, precedence, located errors, and `crc config`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from crc.runtime.options import DEFAULTS

from crc.cli import main
from crc.config import ConfigError, load


def crc(*args: str) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return int(e.value.code or 0)


def test_defaults_without_a_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load(environ={})
    assert cfg.file is None
    assert (cfg["jobs"], cfg["span_timeout"], cfg["pull"], cfg["paths"]) == (
        DEFAULTS.jobs, DEFAULTS.span_timeout, "missing", ())
    assert {v.source for v in cfg.values.values()} == {"default"}


def test_precedence_cli_then_environment_then_file_then_default(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.crc]\njobs = 3\nspan_timeout = 4\n'
                                             'paths = ["tests"]\n')
    sub = tmp_path / "tests"
    sub.mkdir()
    monkeypatch.chdir(sub)  # found from a subdirectory; paths stay relative to the file
    cfg = load({"jobs": (5, "--jobs"), "span_timeout": (None, "--span-timeout")},
               environ={"CRC_SPAN_TIMEOUT": "2.5"})
    assert cfg.values["jobs"].value == 5 and cfg.values["jobs"].source == "command line (--jobs)"
    assert cfg.values["span_timeout"].value == 2.5
    assert cfg.values["span_timeout"].source == "environment (CRC_SPAN_TIMEOUT)"
    assert cfg["paths"] == (".",)  # tests/, shown relative to the working directory
    assert cfg.values["paths"].source.endswith("pyproject.toml:7")
    cfg = load(environ={})
    assert cfg.values["jobs"].value == 3 and cfg.values["jobs"].source.endswith("pyproject.toml:5")
    assert cfg.values["pull"].source == "default"


def test_crc_toml_wins_over_pyproject_in_the_same_directory(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.crc]\njobs = 3\n")
    (tmp_path / "crc.toml").write_text("jobs = 2\npull = \"never\"\n")
    monkeypatch.chdir(tmp_path)
    cfg = load(environ={})
    assert (cfg["jobs"], cfg["pull"], cfg.file) == (2, "never", tmp_path / "crc.toml")
    # a pyproject.toml without [tool.crc] is no config file
    (tmp_path / "crc.toml").unlink()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert load(environ={}).file is None


def test_unknown_key_is_a_located_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.crc]\njobs = 3\n  span_timout = 5\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        load(environ={})
    assert (e.value.line, e.value.col, e.value.end_col) == (6, 3, 14)
    assert crc("config") == 2
    err = capsys.readouterr().err
    assert "unknown key `span_timout` in [tool.crc]" in err
    assert "pyproject.toml:6:3" in err and "  ^^^^^^^^^^^" in err
    assert "did you mean `span_timeout`?" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("text", "message", "where"), [
    ("jobs = 0\n", "`jobs`: 0 is smaller than 1", "crc.toml:1:1"),
    ("jobs = true\n", "`jobs`: True is not an integer", "crc.toml:1:1"),
    ("\nspan_timeout = \"soon\"\n", "`span_timeout`: 'soon' is not a number of seconds", "crc.toml:2:1"),
    ("pull = \"sometimes\"\n", "`pull`: 'sometimes' is not one of missing, never, always", "crc.toml:1:1"),
    ("paths = []\n", "`paths`: expected a list of paths", "crc.toml:1:1"),
    ("jobs = 2\n  masks = [\"token\"]\n", "`masks`: cannot read the mask rule 'token'", "crc.toml:2:3"),
    ("masks = [3]\n", "`masks`: expected a list of mask rules", "crc.toml:1:1"),
    ("jobs = \n", "not valid TOML", "crc.toml:1:8"),
])
def test_bad_values_are_located_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str], text: str, message: str,
                                       where: str) -> None:
    (tmp_path / "crc.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert crc("config") == 2
    err = capsys.readouterr().err
    assert message in err and where in err


def test_bad_environment_value_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRC_JOBS", "many")
    assert crc("config") == 2
    assert "crc: error: CRC_JOBS: 'many' is not an integer" in capsys.readouterr().err


def test_crc_config_shows_values_and_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "crc.toml").write_text("# settings\njobs = 4\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRC_PULL", "never")
    assert crc("config") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"config file: {tmp_path / 'crc.toml'}"
    rows = {line.split()[0]: line for line in out[1:]}
    assert rows["jobs"].split() == ["jobs", "4", "#", "crc.toml:2"]
    assert rows["pull"].split() == ["pull", '"never"', "#", "environment", "(CRC_PULL)"]
    assert rows["span_timeout"].split() == ["span_timeout", f"{DEFAULTS.span_timeout:g}", "#", "default"]
    assert crc("config", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["settings"]["jobs"] == {"value": 4, "source": "crc.toml:2"}


def test_crc_run_reads_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A bad config stops `crc run` before anything runs; `paths` is where it looks when given no target."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "crc.toml").write_text("jobs = -1\n")
    assert crc("run") == 2
    assert "crc.toml:1:1" in capsys.readouterr().err
    (tmp_path / "crc.toml").write_text('paths = ["nowhere"]\n')
    assert crc("run") == 2
    assert "no such file or directory: nowhere" in capsys.readouterr().err


def test_every_setting_of_the_issue_is_a_config_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test paths, jobs, span timeout, pull policy and masks, each read from the file with its line."""
    (tmp_path / "crc.toml").write_text('paths = ["t"]\njobs = 2\nspan_timeout = 1.5\npull = "never"\n'
                                       'masks = ["/id-[0-9]+/", "attr order.id", "json $.id"]\n')
    monkeypatch.chdir(tmp_path)
    cfg = load(environ={})
    assert [cfg[k] for k in ("paths", "jobs", "span_timeout", "pull", "masks")] == [
        ("t",), 2, 1.5, "never", ("/id-[0-9]+/", "attr order.id", "json $.id")]
    assert [cfg.values[k].source for k in ("paths", "masks")] == ["crc.toml:1", "crc.toml:5"]
    env = load(environ={"CRC_MASKS": "/a/\nattr b\n"})
    assert env["masks"] == ("/a/", "attr b") and env.values["masks"].source == "environment (CRC_MASKS)"
    assert load({"masks": (["/c/"], "--mask")}, environ={})["masks"] == ["/c/"]


def test_masks_from_the_config_reach_the_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crc.commands_replay import parse_masks

    monkeypatch.chdir(tmp_path)
    assert not parse_masks(None)
    (tmp_path / "crc.toml").write_text('masks = ["/id-[0-9]+/", "attr order.id"]\n')
    masks = parse_masks(None)
    assert masks.text("id-42 ok") == "<masked> ok" and masks.attrs == {"order.id"}
    only = parse_masks(["attr other"])  # the command line replaces the config's rules
    assert only.text("id-42") == "id-42" and only.attrs == {"other"}
