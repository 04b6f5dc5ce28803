"""The compile cache of `crc run FILE.cr`: a hit is the Plan a fresh compile gives, loaded without the compiler,
lark, jinja2 or networkx; any change to what compiling reads (the file, an import, an environment variable a
template reads) recompiles; a damaged entry or an unwritable directory only means compiling as before."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import run_crc, write_files
from crc.compiler.compile import compile_file
from dockerutil import docker_engine  # noqa: F401

HEAVY = ("crc.compiler.compile", "lark", "jinja2", "networkx")

LIB = '''let word = "one"

template box() {
  image "crc/busybox:dev" command ["sleep", "300"]  # stays up: a service that exits fails the tests waiting for it
}
'''

MAIN = '''import "lib.cr"

suite "cache" {
  service b = box()
  test "t" {
    step say = run "crc/busybox:dev" ["echo", "{{ word }}", "{{ env('CRC_CACHE_TEST_VAR', 'unset') }}"]
    expect say.exit == 0
  }
}
'''

# Two warnings: one in the file, one in the file it imports (its suite is not run by the importer).
WARNED_LIB = '''suite "lib" {
  service x { image "crc/busybox:dev" }
}
'''

WARNED = '''import "wlib.cr"

suite "w" {
  service b { image "crc/busybox:dev" }
}
'''

# Resolves the Plans `crc run ARGS` would run (the CLI's own code), then says what it imported.
RESOLVE = f"""
import json, sys
from pathlib import Path
import crc.cli
from crc.commands_run import resolve_plans
args = sys.argv[1:]
plans = resolve_plans([Path(a) for a in args if a != "--no-cache"], cache="--no-cache" not in args)
print(json.dumps({{"digests": [p.digest for p in plans], "imported": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def resolve(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """What `crc run ARGS` would run, from `cwd`: {digests, imported} and what it printed to stderr."""
    environ = {k: v for k, v in os.environ.items() if k != "CRC_CACHE_TEST_VAR"} | (env or {})
    proc = subprocess.run([sys.executable, "-c", RESOLVE, *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def hit(out: dict[str, Any]) -> bool:
    assert out["imported"] in ([], list(HEAVY)), out["imported"]
    return out["imported"] == []


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_files(tmp_path, {"main.cr": MAIN, "lib.cr": LIB})
    return tmp_path


def entries(project: Path) -> list[Path]:
    return sorted((project / ".crc" / "cache").glob("*.cache"))


def test_a_hit_is_the_plan_a_fresh_compile_gives(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, _ = resolve(project, "main.cr")
    assert not hit(first) and len(entries(project)) == 1
    second, _ = resolve(project, "main.cr")
    assert hit(second)
    fresh, _ = resolve(project, "main.cr", "--no-cache")
    assert not hit(fresh)
    monkeypatch.chdir(project)
    monkeypatch.delenv("CRC_CACHE_TEST_VAR", raising=False)
    assert first["digests"] == second["digests"] == fresh["digests"] == [compile_file("main.cr").digest]
    # a directory target goes through the cache too
    assert hit(resolve(project, ".")[0])


def test_editing_the_file_recompiles(project: Path) -> None:
    before, _ = resolve(project, "main.cr")
    (project / "main.cr").write_text(MAIN.replace('"echo"', '"printf"'), encoding="utf-8")
    after, _ = resolve(project, "main.cr")
    assert not hit(after) and after["digests"] != before["digests"]
    again, _ = resolve(project, "main.cr")
    assert hit(again) and again["digests"] == after["digests"]


def test_editing_an_imported_file_recompiles(project: Path) -> None:
    before, _ = resolve(project, "main.cr")
    (project / "lib.cr").write_text(LIB.replace('"one"', '"two"'), encoding="utf-8")
    after, _ = resolve(project, "main.cr")
    assert not hit(after) and after["digests"] != before["digests"]
    assert hit(resolve(project, "main.cr")[0])


def test_an_environment_variable_a_template_reads_recompiles(project: Path) -> None:
    unset, _ = resolve(project, "main.cr")
    assert hit(resolve(project, "main.cr")[0])
    other, _ = resolve(project, "main.cr", env={"CRC_CACHE_TEST_VAR": "x"})
    assert not hit(other) and other["digests"] != unset["digests"]
    assert hit(resolve(project, "main.cr", env={"CRC_CACHE_TEST_VAR": "x"})[0])
    # set to the template's default: the same Plan, but compiled again (the entry knows the variable was unset)
    default, _ = resolve(project, "main.cr", env={"CRC_CACHE_TEST_VAR": "unset"})
    assert not hit(default) and default["digests"] == unset["digests"]
    back, _ = resolve(project, "main.cr")
    assert not hit(back) and back["digests"] == unset["digests"]
    # a variable no template reads changes nothing
    assert hit(resolve(project, "main.cr", env={"CRC_SOMETHING_ELSE": "1"})[0])


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "not-an-entry", "bad-plan", "other-crc",
                                    "directory"])
def test_a_damaged_entry_recompiles_silently(project: Path, damage: str) -> None:
    import msgpack

    first, _ = resolve(project, "main.cr")
    (entry,) = entries(project)
    blob = entry.read_bytes()
    if damage == "directory":
        entry.unlink()
        entry.mkdir()
    else:
        data = msgpack.unpackb(blob)
        entry.write_bytes({"garbage": os.urandom(300), "truncated": blob[: len(blob) // 2], "empty": b"",
                           "not-an-entry": msgpack.packb([1, 2, 3]),
                           "bad-plan": msgpack.packb({**data, "plan": data["plan"][:-9]}),
                           "other-crc": msgpack.packb({**data, "stamp": "0" * 64})}[damage])
    out, err = resolve(project, "main.cr")
    assert not hit(out) and out["digests"] == first["digests"] and err == ""
    if damage != "directory":  # the entry is written again
        assert hit(resolve(project, "main.cr")[0])


def _read_only(project: Path) -> list[str]:
    """A command prefix that runs with `project` read-only: a read-only bind mount when root can make one
    (root ignores file modes), else the directory's write bits removed."""
    if os.geteuid() != 0:
        project.chmod(0o555)
        return []
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {project} {project} && "
                            f"mount -o remount,bind,ro {project} {project} && ! touch {project}/x"],
                           capture_output=True) if shutil.which("unshare") else None
    if probe is None or probe.returncode != 0:
        pytest.skip("cannot make a read-only directory here (root, and no read-only bind mount)")
    return ["unshare", "-m", "sh", "-c",
            f'mount --bind {project} {project} && mount -o remount,bind,ro {project} {project} && cd {project} && '
            'exec "$@"', "-"]  # cd again: the working directory crc starts in must be the read-only mount


def test_a_read_only_checkout_runs_without_caching(project: Path) -> None:
    prefix = _read_only(project)
    try:
        for _ in range(2):
            proc = subprocess.run([*prefix, sys.executable, "-c", RESOLVE, "main.cr"], cwd=project,
                                  capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0 and proc.stderr == "", proc.stderr
            assert not hit(json.loads(proc.stdout))
    finally:
        project.chmod(0o755)
    assert not (project / ".crc").exists()


def test_an_unwritable_cache_directory_is_not_an_error(project: Path) -> None:
    (project / ".crc").write_text("a file where the cache directory would be", encoding="utf-8")
    for _ in range(2):
        out, err = resolve(project, "main.cr")
        assert not hit(out) and err == ""


def test_warnings_are_shown_on_a_hit(tmp_path: Path) -> None:
    write_files(tmp_path, {"w.cr": WARNED, "wlib.cr": WARNED_LIB})
    miss, compiled_err = resolve(tmp_path, "w.cr")
    hit_, cached_err = resolve(tmp_path, "w.cr")
    assert not hit(miss) and hit(hit_)
    assert 'warning: suite "w" has no test' in compiled_err
    assert "suites in an imported file are not run by the importer" in compiled_err and "wlib.cr:1:1" in compiled_err
    assert cached_err == compiled_err


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_crc_run_from_the_cache_imports_no_compiler(project: Path) -> None:
    """The real command line: the second run of a file loads its Plan without importing the compiler, lark,
    jinja2 or networkx, and passes the same; `--no-cache` compiles again."""
    args = ("run", "main.cr", "--no-progress", "--pull", "never")
    first = run_crc(*args, cwd=project)
    assert first.returncode == 0, first.stdout + first.stderr
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "crc", *args], cwd=project,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert "crc.runtime.runner" in imported
    assert not imported & {"lark", "jinja2", "networkx", "crc.compiler.compile", "crc.compiler.templates"}
    def counts(out: str) -> str:  # the summary line's counts (its timing and the critical path's differ)
        return next(ln for ln in out.splitlines() if " passed, " in ln).split(" in ")[0]

    assert "1 passed" in proc.stdout and counts(proc.stdout) == counts(first.stdout)
    fresh = subprocess.run([sys.executable, "-X", "importtime", "-m", "crc", *args, "--no-cache"], cwd=project,
                           capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "crc.compiler.compile" in fresh.stderr


def test_a_compiled_plan_is_recompiled_when_an_env_var_it_read_now_differs(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`crc compile && crc run`: the Plan file is reused only while what it was compiled from still holds."""
    from crc.compiler.compile import compile_file

    from crc.commands_run import resolve_plans

    src = project / "e.cr"
    src.write_text('suite "s" {\n  service a { image "{{ env(\\"CRC_T_IMG\\", \\"img\\") }}" }\n'
                   '  test "t" { step x = exec a ["true"] }\n}\n')
    monkeypatch.chdir(project)
    monkeypatch.delenv("CRC_T_IMG", raising=False)
    plan_file = project / "e.plan"
    plan_file.write_bytes(compile_file("e.cr").to_bytes())

    def image() -> str:
        (plan,) = resolve_plans([plan_file], cache=False)
        return str(plan.node("s::service:a")["image"])

    assert image() == "img"  # unchanged: the Plan file as written
    monkeypatch.setenv("CRC_T_IMG", "other")
    assert image() == "other"  # the variable now differs from what the Plan was compiled with
    monkeypatch.setenv("CRC_T_IMG", "img")
    assert image() == "img"
