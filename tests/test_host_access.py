"""Host access is explicit: what needs a grant, where the error points, what a grant covers, what the Plan keeps
and lists, how the runner asks the engine for it, and `network internal` (engine-free; the Docker tests are in
test_hostnet_docker.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from crc.compiler import host_access
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import CompileError, Diagnostic
from crc.compiler.format import format_source
from crc.runtime.fake_backend import FakeBackend
from crc.runtime.results import ERROR, PASSED, Cause
from fakerun import compile_source, run

BOX = 'image "crc/busybox:dev"\n    command ["sleep", "300"]'


def source(items: str, suite_items: str = "") -> str:
    return f'''suite "s" {{
{suite_items}  service agent {{
    {BOX}
{items}  }}
  test "t" {{
    step a = exec agent ["true"]
  }}
}}
'''


def diagnostics(tmp_path: Path, text: str, name: str = "t.cr") -> list[Diagnostic]:
    path = tmp_path / name
    path.write_text(text)
    try:
        return list(compile_file(str(path)).warnings)
    except CompileError as e:
        return e.diagnostics


def errors(tmp_path: Path, text: str) -> list[tuple[str, int, int, str | None, str | None]]:
    return [(d.message, d.loc.line, d.loc.col, d.code, d.help) for d in diagnostics(tmp_path, text)
            if d.severity == "error" and d.loc is not None]


@pytest.mark.parametrize(("item", "col", "message", "grant"), [
    ('    volume "/var/run/docker.sock" -> "/var/run/docker.sock"\n', 12,
     f"binds the Docker socket ({os.path.realpath('/var/run/docker.sock')})", "docker-socket"),
    ('    volume "/proc" -> "/hostproc" ro\n', 12, "binds /proc, in the host's /proc", "/proc"),
    ('    volume "/etc/passwd" -> "/p" ro\n', 12, "binds /etc/passwd, in the host's /etc", "/etc/passwd"),
    ('    volume "/sys/fs" -> "/s" ro\n', 12, "binds /sys/fs, in the host's /sys", "/sys/fs"),
    ("    privileged\n", 5, "runs privileged (every device and capability of the host)", "privileged"),
    ("    network host\n", 5, "shares the host's network", "host-network"),
])
def test_host_access_without_a_grant_is_a_located_error_saying_how_to_grant_it(
        tmp_path: Path, item: str, col: int, message: str, grant: str) -> None:
    (err,) = errors(tmp_path, source(item))
    assert err == (f"service `agent` {message}: host access needs a grant", 5, col, "host-access",
                   f'if it should have it, grant it in the service: allow host "{grant}"')
    granted = source(item + f'    allow host "{grant}"\n')
    assert errors(tmp_path, granted) == []


def test_binding_root_needs_the_root_and_the_docker_socket(tmp_path: Path) -> None:
    errs = errors(tmp_path, source('    volume "/" -> "/host" ro\n'))
    assert [e[0] for e in errs] == ["service `agent` binds /, which holds the Docker socket: host access needs a grant",
                                    "service `agent` binds the host's root directory /: host access needs a grant"]
    assert [e[4] for e in errs] == ['if it should have it, grant it in the service: allow host "docker-socket"',
                                    'if it should have it, grant it in the service: allow host "/"']
    assert errors(tmp_path, source('    volume "/" -> "/host" ro\n    allow host "/", "docker-socket"\n')) == []


def test_a_bind_outside_the_project_needs_a_path_grant_at_or_above_it(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()
    outside = tmp_path / "data" / "set"
    outside.mkdir(parents=True)
    (project / "inside").mkdir()
    text = source(f'    volume "{outside}" -> "/data"\n    volume "inside" -> "/in"\n')
    (err,) = errors(project, text)
    assert err[0] == f"service `agent` binds {outside}, outside the project ({project}): host access needs a grant"
    assert errors(project, text.replace("    volume \"inside\"", f'    allow host "{tmp_path / "data"}"\n    volume "inside"')) == []
    # A relative path that climbs out is outside too, and a symlink inside the project to /etc is /etc.
    (project / "etc-link").symlink_to("/etc")
    errs = errors(project, source('    volume "../data" -> "/d"\n    volume "etc-link/hostname" -> "/h"\n'))
    assert [e[0] for e in errs] == [
        f"service `agent` binds {tmp_path / 'data'}, outside the project ({project}): host access needs a grant",
        "service `agent` binds /etc/hostname, in the host's /etc: host access needs a grant"]


def test_a_grant_nothing_needs_is_a_warning_and_a_bad_one_an_error(tmp_path: Path) -> None:
    diags = diagnostics(tmp_path, source('    allow host "privileged", "docker-sock", "relative/path"\n'))
    got = [(d.severity, d.message, d.loc.col if d.loc else 0, d.code, d.help) for d in diags]
    assert ("warning", 'grant "privileged" is not needed by service `agent`', 16, "unused-grant",
            "remove it: grants should say exactly what the service takes") in got
    assert ("error", "`docker-sock` is not a host access grant", 30, None, "did you mean `docker-socket`?") in got
    assert ("error", "`relative/path` is not a host access grant", 45, None,
            'grants are "privileged", "host-network", "docker-socket" or an absolute host path') in got


def test_a_grant_counts_only_in_the_compiled_file(tmp_path: Path) -> None:
    (tmp_path / "lib.cr").write_text('template agent_tpl() {\n  image "crc/busybox:dev"\n  privileged\n'
                                     '  allow host "privileged"\n}\n')
    text = 'import "lib.cr"\nsuite "s" {\n  service agent = agent_tpl()\n  test "t" { step a = exec agent ["x"] }\n}\n'
    errs = [(d.message, d.loc.file.endswith("lib.cr"), d.loc.line) for d in diagnostics(tmp_path, text)
            if d.severity == "error" and d.loc]
    assert ("host access is granted in the compiled file only", True, 4) in errs
    assert ("service `agent` runs privileged (every device and capability of the host): host access needs a grant",
            True, 3) in errs
    # The importer grants it where its reviewer sees it.
    ok = text.replace("agent_tpl()", 'agent_tpl() { allow host "privileged" }')
    assert [d for d in diagnostics(tmp_path, ok) if d.severity == "error" and not d.loc.file.endswith("lib.cr")] == []


def test_network_modes_refuse_what_they_cannot_do(tmp_path: Path) -> None:
    errs = errors(tmp_path, source('    network host\n    allow host "host-network"\n    port 80 -> 8080\n',
                                   "  network internal\n"))
    assert [(e[0], e[1]) for e in errs] == [
        ("service `agent` shares the host's network in a suite whose network is internal", 6),
        ("service `agent` shares the host's network: it publishes no ports", 8)]
    (err,) = errors(tmp_path, source("    port 80 -> 8080\n", "  network internal\n"))
    assert err[:3] == ("service `agent` is on an internal network: it publishes no ports", 6, 5)
    assert err[4] == "write `port 80` without `-> HOST`: crc reaches the port at the container's address"
    assert errors(tmp_path, source("    port 80\n", "  network internal\n")) == []


def test_the_plan_keeps_grants_and_check_lists_them_one_line_each(tmp_path: Path) -> None:
    plan = compile_source(tmp_path, source('    volume "/var/run/docker.sock" -> "/var/run/docker.sock"\n'
                                           "    privileged\n    network host\n"
                                           '    allow host "docker-socket", "privileged", "host-network"\n',
                                           "  network internal\n").replace("  network internal\n", ""))
    d = plan.node("s::service:agent")
    assert (d["privileged"], d["network"]) == (True, "host")
    assert [g["grant"] for g in d["host_access"]] == ["docker-socket", "privileged", "host-network"]
    path = tmp_path / "t.cr"
    assert host_access.listing(plan.nodes.items()) == [
        f'{path}:8:16: host access "docker-socket" for service `agent` of suite "s": binds the Docker socket '
        f"({os.path.realpath('/var/run/docker.sock')})",
        f'{path}:8:33: host access "privileged" for service `agent` of suite "s": runs privileged (every device '
        "and capability of the host)",
        f"{path}:8:47: host access \"host-network\" for service `agent` of suite \"s\": shares the host's network"]
    assert plan.suites[0]["network"] == "bridge"


def test_the_syntax_formats_and_keeps_names_that_are_keywords_elsewhere(tmp_path: Path) -> None:
    messy = ('suite "s" {\n    network   internal\n  service host {\n image "x"\n   privileged\n network    host\n'
             '  allow host "privileged" ,"host-network"\n  }\n  test "t" {\n    span a = "x" { kind internal }\n'
             '    expect count(a) == 1\n  }\n}\n')
    assert format_source(messy) == ('suite "s" {\n  network internal\n  service host {\n    image "x"\n'
                                    '    privileged\n    network host\n    allow host "privileged", "host-network"\n'
                                    '  }\n  test "t" {\n    span a = "x" { kind internal }\n'
                                    '    expect count(a) == 1\n  }\n}\n')


def test_the_runner_asks_the_engine_for_what_the_plan_says(tmp_path: Path) -> None:
    plan = compile_source(tmp_path, '''suite "s" {
  network internal
  service agent {
    image "crc/busybox:dev"
    privileged
    allow host "privileged"
  }
  test "t" {
    step a = exec agent ["true"]
    step b = run "crc/busybox:dev" ["true"]
  }
}
suite "open" {
  service onhost {
    image "crc/busybox:dev"
    network host
    port 80
    allow host "host-network"
  }
  test "u" { step c = exec onhost ["true"] }
}
''')
    backend = FakeBackend()
    r = run([plan], backend)
    assert [t.status for t in r.result.tests] == [PASSED, PASSED]
    specs = {c.spec.name.rsplit("-", 1)[-1] if "step" not in c.spec.name else "step": c.spec
             for c in backend.containers.values()}
    agent, step, onhost = specs["agent"], specs["step"], specs["onhost"]
    assert (agent.privileged, agent.hermetic, agent.aliases) == (True, True, ("agent",))
    assert step.hermetic and not step.privileged
    assert (onhost.network, onhost.aliases, onhost.ports, onhost.hermetic) == ("host", (), (), False)
    internal = [n for n in backend.calls if n[0] == "create_network" and n[1] in backend.internal]
    assert len(internal) == 1 and internal[0][2].endswith("-s0")


def test_a_bind_that_resolves_elsewhere_at_run_time_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    plan = compile_source(tmp_path, source('    volume "data" -> "/data"\n'))
    # Between compiling and running, the directory became a link to the host's /etc.
    (tmp_path / "data").rmdir()
    (tmp_path / "data").symlink_to("/etc")
    r = run([plan], FakeBackend())
    svc = r.node("service:agent")
    assert (svc.status, svc.cause) == (ERROR, Cause.ENVIRONMENT)
    assert svc.message == ("service `agent` binds /etc, in the host's /etc: host access no grant of it allows "
                           "(it resolved elsewhere when its file was compiled)")
    assert r.backend.alive() == []


def test_a_hard_link_to_the_docker_socket_is_the_docker_socket(tmp_path: Path) -> None:
    sock = next((s for s in host_access.DOCKER_SOCKETS if os.path.exists(s)), None)
    if sock is None:
        pytest.skip("no Docker socket on this machine")
    link = tmp_path / "innocent"
    try:
        os.link(os.path.realpath(sock), link)
    except OSError as e:  # another filesystem: a hard link cannot be made from here
        pytest.skip(f"cannot hard-link the socket into {tmp_path}: {e}")
    try:
        (err,) = errors(tmp_path, source('    volume "innocent" -> "/var/run/docker.sock"\n'))
        assert err[0] == f"service `agent` binds the Docker socket ({link}): host access needs a grant"
    finally:
        link.unlink()
