"""Lints (compiler/lints.py): located warnings with a stable code and a did-you-mean, and the fix that makes a
module's relative paths relative to the module."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import crc_command
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import CompileError, Diagnostic, render
from crc.compiler.lints import BIND_SOURCE, CODES, HOST_NEAR_MISS, PROBE_PORT, UNDECLARED_NEED
from crc.compiler.plan import Plan


def compiled(tmp_path: Path, body: str, name: str = "t.cr") -> Plan:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return compile_file(str(path), environ={})


def lints(p: Plan) -> list[tuple[str | None, int, int, str, str | None]]:
    """(code, line, col, message, help) of each warning that carries a code."""
    return [(w.code, w.loc.line, w.loc.col, w.message, w.help) for w in p.warnings if w.code and w.loc]


def suite(services: str, test: str = 'step s = exec cache ["true"]') -> str:
    return f'suite "s" {{\n{services}\n  test "t" {{\n    {test}\n  }}\n}}\n'


# ---------------------------------------------------------------- near misses
def test_a_host_that_nearly_names_a_service_in_a_command_or_argv_is_a_warning(tmp_path: Path) -> None:
    p = compiled(tmp_path, suite(
        '  service cache { image "img" }\n'
        '  service api { image "img" command ["serve", "--redis", "redis://cahce:6379"] needs cache }',
        'step s = exec api ["wget", "-qO-", "http://apl:8080/x"]\n'
        '    step t = exec api sh "nc -z cahe:6379 && echo ok"\n'
        '    step u = exec api ["curl", "http://localhost:8080/", "10.0.0.1:80", "http://api:8080/", "apl:1"]'))
    assert lints(p) == [
        (HOST_NEAR_MISS, 3, 58, "`cahce` is not a service of this suite", "did you mean `cache`?"),
        (HOST_NEAR_MISS, 5, 40, "`apl` is not a service of this suite", "did you mean `api`?"),
        (HOST_NEAR_MISS, 6, 26, "`cahe` is not a service of this suite", "did you mean `cache`?"),
    ]


def test_a_host_far_from_every_service_is_not_a_near_miss(tmp_path: Path) -> None:
    p = compiled(tmp_path, suite('  service cache { image "img" env { U: "http://elsewhere:80/" } }'))
    assert lints(p) == []


# ---------------------------------------------------------------- needs
def test_a_service_naming_another_it_does_not_need_is_a_warning(tmp_path: Path) -> None:
    p = compiled(tmp_path, suite(
        '  service cache { image "img" }\n'
        '  service db { image "img" }\n'
        '  service api { image "img" env { REDIS: "redis://cache:6379", DB_HOST: "db" } }'))
    assert lints(p) == [
        (UNDECLARED_NEED, 4, 42, "service `api` names service `cache` but does not need it: it may start before "
         "`cache` is ready", "add `needs cache` to service `api`"),
        (UNDECLARED_NEED, 4, 73, "service `api` names service `db` but does not need it: it may start before "
         "`db` is ready", "add `needs db` to service `api`"),
    ]


def test_a_need_direct_transitive_or_the_other_way_round_is_enough(tmp_path: Path) -> None:
    p = compiled(tmp_path, suite(
        '  service cache { image "img" }\n'
        '  service db { image "img" needs cache }\n'
        '  service api { image "img" command ["serve", "cache:6379", "db:5432"] needs db }\n'
        '  service worker { image "img" needs api }\n'
        '  service hub { image "img" env { W: "http://worker:1/" } }\n'
        '  service sink { image "img" needs hub env { H: "hub:9" } }'))
    # api needs db, db needs cache; hub names worker (a warning), and sink needs the hub it names.
    assert [(c, line) for c, line, *_ in lints(p)] == [(UNDECLARED_NEED, 6)]


def test_a_service_named_by_the_other_that_needs_it_is_not_asked_to_need_it_back(tmp_path: Path) -> None:
    p = compiled(tmp_path, suite(
        '  service cache { image "img" env { PEER: "api:8080" } }\n'
        '  service api { image "img" env { R: "cache:6379" } needs cache }'))
    assert lints(p) == []


# ---------------------------------------------------------------- probe ports
def test_a_probe_on_a_port_the_service_does_not_declare_is_a_warning(tmp_path: Path) -> None:
    p = compiled(tmp_path, suite(
        '  service cache { image "img" port 6379 port 6380 ready tcp 6739 }\n'
        '  service api { image "img" ready http 8080 "/healthz" }\n'
        '  service web { image "img" port 80 ready http 80 "/" }'))
    assert lints(p) == [(PROBE_PORT, 2, 61, "the probe checks port 6739, which service `cache` does not declare",
                         "its ports: 6379, 6380; probe one of them, or add `port 6739`")]


# ---------------------------------------------------------------- volumes
def test_a_missing_bind_mount_source_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    p = compiled(tmp_path, suite(
        '  service cache { image "img" volume "./conf" -> "/conf" ro volume "./data" -> "/data" }'))
    assert lints(p) == [(BIND_SOURCE, 2, 68, "volume source `./data` does not exist",
                         f"create it, or fix the path (it is {(tmp_path / 'data').resolve()})")]


MODULE = '''template store(dir = "{{ 'x' }}") {
  image "img"
  volume "./conf" -> "/conf" ro
  volume "{{ dir }}" -> "/data"
  volume "../shared/keys" -> "/keys"
}
template built() {
  build "./image"
}
'''


def test_relative_paths_of_an_imported_module_are_relative_to_the_module(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    for d in (lib / "conf", lib / "image", tmp_path / "shared" / "keys", tmp_path / "data"):
        d.mkdir(parents=True)
    (lib / "image" / "Dockerfile").write_text("FROM scratch\n", encoding="utf-8")
    (lib / "store.cr").write_text(MODULE, encoding="utf-8")
    p = compiled(tmp_path, 'import "lib/store"\n' + suite(
        '  service cache = store(dir = "./data")\n  service b = built()'))
    assert lints(p) == []
    svc = p.nodes['s::service:cache']
    # The module's own paths are from lib/; the path given by the importer keeps the importer's meaning.
    assert [v["source"] for v in svc["volumes"]] == ["lib/conf", "./data", "shared/keys"]
    assert p.nodes['s::service:b']["build"]["context"] == "lib/image"


def test_a_missing_module_path_is_reported_in_the_module(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "store.cr").write_text(MODULE, encoding="utf-8")
    (tmp_path / "conf").mkdir()  # beside the importer: not what the module means
    (tmp_path / "data").mkdir()
    (tmp_path / "shared" / "keys").mkdir(parents=True)
    (tmp_path / "image").mkdir()
    with pytest.raises(CompileError) as exc:
        compiled(tmp_path, 'import "lib/store"\n' + suite(
            '  service cache = store(dir = "./data")\n  service b = built()'))
    got = [(d.severity, Path(d.loc.file).name, d.loc.line, d.message) for d in exc.value.diagnostics if d.loc]
    assert got == [("warning", "store.cr", 3, "volume source `lib/conf` does not exist"),
                   ("error", "store.cr", 8, "build context `lib/image` is not a directory")]


# ---------------------------------------------------------------- shown and checked
def test_the_code_is_shown_and_every_code_is_documented() -> None:
    d = Diagnostic("`cahce` is not a service of this suite", None, "warning", "did you mean `cache`?",
                   code=HOST_NEAR_MISS)
    assert render(d, {}).splitlines()[0] == "warning[host-near-miss]: `cahce` is not a service of this suite"
    docs = (Path(__file__).parent.parent / "docs" / "language.md").read_text(encoding="utf-8")
    for code in CODES:
        assert f"`{code}`" in docs, code


def test_crc_check_shows_lint_warnings_and_passes(tmp_path: Path) -> None:
    path = tmp_path / "t.cr"
    path.write_text(suite('  service cache { image "img" }\n  service api { image "img" env { R: "cahce:6379" } }'),
                    encoding="utf-8")
    out = subprocess.run([*crc_command(), "check", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "warning[host-near-miss]: `cahce` is not a service of this suite" in out.stderr
    assert f"--> {path}:3:38" in out.stderr and "help: did you mean `cache`?" in out.stderr
