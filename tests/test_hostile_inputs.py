"""Hostile inputs get located errors and exit 2, never a traceback, a hang or another file's contents."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import RunCrc, write_files
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import CompileError
from crc.compiler.source import MAX_SOURCE_BYTES


def errors(path: Path) -> list[tuple[str, str]]:
    """(location, message) of every error compiling `path`."""
    with pytest.raises(CompileError) as info:
        compile_file(str(path))
    return [(str(d.loc) if d.loc else "", d.message) for d in info.value.diagnostics if d.severity == "error"]


def test_invalid_utf8_is_located_at_its_byte(tmp_path: Path, crc: RunCrc) -> None:
    f = tmp_path / "bad.cr"
    f.write_bytes(b'suite "\xc3\xa9" {\n  let x = "ab\xffc"\n}\n')
    assert errors(f) == [(f"{f}:2:14", "invalid UTF-8: byte 0xff cannot start or continue a character")]
    proc = crc("check", f)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert '  2 |   let x = "ab\N{REPLACEMENT CHARACTER}c"' in proc.stderr and "help: save the file as UTF-8" in proc.stderr


def test_an_undecodable_import_is_located_in_the_imported_file(tmp_path: Path) -> None:
    files = write_files(tmp_path, {"main.cr": 'import "lib"\nsuite "s" {}\n'})
    (tmp_path / "lib.cr").write_bytes(b"# ok\n\x80\n")
    assert errors(files["main.cr"]) == [
        (f"{tmp_path}/lib.cr:2:1", "invalid UTF-8: byte 0x80 cannot start or continue a character"),
        (f"{files['main.cr']}:1:8", "cannot import `lib`: invalid UTF-8: byte 0x80 cannot start or continue a character"),
    ]


@pytest.mark.parametrize("how", ["named", "symlink in a directory", "import"])
def test_special_files_are_refused_without_reading(tmp_path: Path, crc: RunCrc, how: str) -> None:
    (tmp_path / ".git").mkdir()  # the project: symlinks inside it are followed, and checked
    (tmp_path / "zero.cr").symlink_to("/dev/zero")
    (tmp_path / "fifo.cr").unlink(missing_ok=True)
    os.mkfifo(tmp_path / "fifo.cr")  # opening it for reading would block without O_NONBLOCK
    write_files(tmp_path, {"imp.cr": 'import "fifo"\nsuite "s" {}\n'})
    target = {"named": "/dev/zero", "symlink in a directory": str(tmp_path), "import": str(tmp_path / "imp.cr")}[how]
    proc = crc("check", target, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "not a regular file" in proc.stderr


def test_oversized_sources_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "big.cr"
    f.write_bytes(b"#" * (MAX_SOURCE_BYTES + 1))
    assert errors(f) == [("", f"cannot read {f}: {MAX_SOURCE_BYTES + 1} bytes, more than the {MAX_SOURCE_BYTES} "
                              "allowed")]


def test_imports_outside_the_project_are_refused_and_never_shown(tmp_path: Path, crc: RunCrc) -> None:
    secret = tmp_path / "outside" / "secret.cr"
    write_files(tmp_path, {"outside/secret.cr": "TOP-SECRET-LINE {\n", "proj/.git/HEAD": "",
                           "proj/sub/main.cr": 'import "/etc/shadow"\nimport "../../outside/secret"\n'
                                               'import "link"\nimport "../lib"\nsuite "s" {}\n',
                           "proj/lib.cr": "let ok = 1\n"})
    (tmp_path / "proj/sub/link.cr").symlink_to(secret)
    main = tmp_path / "proj/sub/main.cr"
    root = tmp_path / "proj"
    assert errors(main) == [
        (f"{main}:1:8", f"cannot import `/etc/shadow`: it is outside the project ({root})"),
        (f"{main}:2:8", f"cannot import `../../outside/secret`: it is outside the project ({root})"),
        (f"{main}:3:8", f"cannot import `link`: it is outside the project ({root})"),
    ]  # `../lib` stays inside the project (the directory holding .git): accepted
    proc = crc("check", main)
    assert proc.returncode == 2 and "TOP-SECRET" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("target", ["a" * 5000, "x/" * 600 + "y", "b" * 300])
def test_import_paths_the_os_refuses_are_located(tmp_path: Path, target: str) -> None:
    files = write_files(tmp_path, {"main.cr": f'import "{target}"\nsuite "s" {{}}\n'})
    [(loc, msg)] = errors(files["main.cr"])
    assert loc == f"{files['main.cr']}:1:8" and msg.startswith("cannot import `")
    assert "longer than 1024 characters" in msg or "file name too long" in msg
