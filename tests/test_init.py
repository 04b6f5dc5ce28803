"""`crc init`: what it writes compiles, configures and runs; it never overwrites a file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from crc.compiler.compile import compile_file
from dockerutil import docker_engine  # noqa: F401

from crc.cli import main
from crc.config import load


def crc(*args: str) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return int(e.value.code or 0)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_fresh_directory_gets_a_working_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "proj"
    assert crc("init", str(root), "--service", "crc/busybox:dev") == 0
    out = capsys.readouterr().out
    assert set(snapshot(root)) == {"crc.toml", "tests/smoke.cr", ".gitignore", ".github/workflows/crc.yml",
                                   ".gitlab-ci.yml"}
    for name in ("crc.toml", "tests/smoke.cr", ".gitignore", ".github/workflows/crc.yml", ".gitlab-ci.yml"):
        assert f"wrote  {root / name}" in out
    assert f"next: cd {root} && crc run tests/" in out
    assert (root / ".gitignore").read_text() == ".crc/\n"
    monkeypatch.chdir(root)
    cfg = load(environ={})
    assert cfg.file == root / "crc.toml" and cfg["paths"] == ("tests",)
    plan = compile_file("tests/smoke.cr")
    assert [t["name"] for t in plan.tests] == ["the service answers"] and not plan.warnings
    assert plan.node("smoke::service:app")["image"] == "crc/busybox:dev"
    github = yaml.safe_load((root / ".github/workflows/crc.yml").read_text())
    assert any("crc run" in str(s.get("run", "")) for s in github["jobs"]["crc"]["steps"])
    gitlab = yaml.safe_load((root / ".gitlab-ci.yml").read_text())
    assert any(line.startswith("crc run") for line in gitlab["crc"]["script"])


@pytest.mark.parametrize("image", [None, "registry.example.internal:5000/team/api:1.2", "redis@sha256:" + "a" * 64])
def test_the_example_compiles_for_any_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], image: str | None) -> None:
    monkeypatch.chdir(tmp_path)
    assert crc("init", "--ci", "none", *(["--service", image] if image else [])) == 0
    assert not (tmp_path / ".github").exists() and not (tmp_path / ".gitlab-ci.yml").exists()
    assert "next: crc run tests/" in capsys.readouterr().out
    plan = compile_file("tests/smoke.cr")
    assert plan.node("smoke::service:app")["image"] == (image or "busybox:stable")
    assert not plan.warnings


def test_no_file_that_existed_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    files = {"crc.toml": "jobs = 2\n", "tests/smoke.cr": "# mine\n", ".gitignore": "build/\n/.crc/\n",
             ".github/workflows/crc.yml": "name: mine\n", ".gitlab-ci.yml": "stages: [test]\n",
             "pyproject.toml": '[project]\nname = "x"\n'}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert crc("init", "--service", "crc/busybox:dev") == 0
    assert snapshot(tmp_path) == before
    out = capsys.readouterr().out
    assert "wrote" not in out and "added" not in out
    for name in ("crc.toml", "tests/smoke.cr", ".github/workflows/crc.yml", ".gitlab-ci.yml"):
        assert f"kept   {name} (it exists)" in out
    assert "kept   .gitignore (it ignores .crc/)" in out
    # what the kept CI files would have held is printed, to be merged by hand
    assert ".gitlab-ci.yml exists: add this job to it:" in out and "    crc:\n      image: python:3.12" in out
    assert ".github/workflows/crc.yml exists: this is what it would hold:" in out


def test_gitignore_and_pyproject_are_only_appended_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ignore, project = b"node_modules", b'[project]\nname = "x"\n'
    (tmp_path / ".gitignore").write_bytes(ignore)  # no newline at its end
    (tmp_path / "pyproject.toml").write_bytes(project)
    monkeypatch.chdir(tmp_path)
    assert crc("init", "--ci", "none") == 0
    assert (tmp_path / ".gitignore").read_bytes() == ignore + b"\n.crc/\n"
    # without --pyproject, pyproject.toml is not touched and no crc.toml competes with it: the table is printed
    assert (tmp_path / "pyproject.toml").read_bytes() == project and not (tmp_path / "crc.toml").exists()
    out = capsys.readouterr().out
    assert "pyproject.toml exists: add this table to it (or run `crc init --pyproject`):" in out
    assert '    [tool.crc]\n    paths = ["tests"]' in out
    assert crc("init", "--ci", "none", "--pyproject") == 0
    text = (tmp_path / "pyproject.toml").read_bytes()
    assert text.startswith(project) and b"\n[tool.crc]\npaths = [\"tests\"]" in text
    assert "added  [tool.crc] to pyproject.toml" in capsys.readouterr().out
    cfg = load(environ={})
    assert cfg.file == tmp_path / "pyproject.toml" and cfg["paths"] == ("tests",)
    assert (tmp_path / ".gitignore").read_bytes() == ignore + b"\n.crc/\n"  # not twice
    before = snapshot(tmp_path)
    assert crc("init", "--ci", "none", "--pyproject") == 0
    assert snapshot(tmp_path) == before
    assert "kept   pyproject.toml (it has [tool.crc])" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--service", "Not An Image"], "--service 'Not An Image' is not an image reference"),
    (["--service", 'x"; rm'], "is not an image reference"),
    (["--ci", "jenkins"], "argument --ci: invalid choice: 'jenkins'"),
])
def test_bad_input_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                           args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert crc("init", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("crc: error:") and message in err
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    assert crc("init", "file") == 2
    assert "file is not a directory" in capsys.readouterr().err


@pytest.mark.docker
def test_the_example_passes_crc_run(tmp_path: Path, docker_engine: None) -> None:  # noqa: F811
    from dockerutil import crc as run_crc

    assert run_crc("init", str(tmp_path), "--service", "crc/busybox:dev", "--ci", "none").returncode == 0
    proc = run_crc("run", "--no-progress", "--pull", "never", cwd=tmp_path)  # `paths` in the written crc.toml
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 0 failed" in proc.stdout and "smoke / the service answers" in proc.stdout
    run_id = re.search(r"\(run ([\w-]+)\)", proc.stdout)
    assert run_id is not None
    for kind in (["ps", "-a"], ["network", "ls"]):  # nothing of this run is left
        left = subprocess.run(["docker", *kind, "-q", "--filter", f"label=io.crc.run={run_id[1]}"],
                              capture_output=True, text=True, check=True)
        assert left.stdout.strip() == ""
