"""`crc dev` as a user runs it, on the real engine: a subprocess watching a temporary project, scripted edits
(an expectation, an imported value, a step, a mounted file, a service, a syntax error and its fix), each
verdict read from its output as it comes; then Ctrl-C removes everything, and a SIGKILLed `crc dev` is reaped
by `crc clean` like a killed run."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dockerutil import ROOT, crc_resources, docker_engine, remove_resources  # noqa: F401  (fixture)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DEADLINE = 180.0  # seconds for one expected line: generous, the machine is shared

SOURCE = """import "lib.cr"

suite "SUITE" {
  service web {
    image "crc/busybox:dev"
    command ["httpd", "-f", "-p", "8080", "-h", "/www"]
    volume "www" -> "/www" ro
    ready tcp 8080 within 30s
  }

  test "page" {
    step get = exec web ["wget", "-qO-", "http://127.0.0.1:8080/"]
    expect get.stdout contains "hello"
  }

  test "echo" {
    step e = exec web ["echo", "hi"]
    expect e.stdout contains word
  }
}
"""


class Dev:
    """A `crc dev` subprocess whose output lines are read as they come."""

    def __init__(self, project: Path, env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "crc", "dev", "app.cr", "--pull", "never"],
                                     cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<eof>")
            self._cond.notify_all()

    def mark(self) -> int:
        """Where the next screen starts: lines before it are not searched by `wait_for(..., since=mark)`."""
        with self._cond:
            return len(self.lines)

    def wait_for(self, pattern: str, since: int = 0) -> int:
        """The index of the first line from `since` on matching `pattern`; fails with the output at the deadline
        or when the process ends first."""
        rx = re.compile(pattern)
        end = time.monotonic() + DEADLINE
        with self._cond:
            while True:
                for i in range(since, len(self.lines)):
                    if rx.search(self.lines[i]):
                        return i
                    if self.lines[i] == "<eof>":
                        pytest.fail(f"crc dev ended before {pattern!r}:\n" + "\n".join(self.lines))
                left = end - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no line matched {pattern!r} within {DEADLINE}s:\n" + "\n".join(self.lines))
                self._cond.wait(left)

    def screen(self, since: int, until: int) -> list[str]:
        with self._cond:
            return self.lines[since:until + 1]


def container_of(suite: str, service: str) -> str:
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=io.crc.suite={suite}", "--filter",
                          f"label=io.crc.service={service}"], capture_output=True, text=True).stdout.split()
    assert len(out) == 1, out
    return out[0]


@pytest.fixture
def project(tmp_path: Path, docker_engine: None) -> tuple[Path, str, dict[str, str]]:  # noqa: F811
    suite = f"devtest-{secrets.token_hex(3)}"
    (tmp_path / "app.cr").write_text(SOURCE.replace("SUITE", suite), encoding="utf-8")
    (tmp_path / "lib.cr").write_text('let word = "hi"\n', encoding="utf-8")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("hello from a mounted file\n", encoding="utf-8")
    env = {**os.environ, "CRC_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)}
    env.pop("FORCE_COLOR", None)
    yield tmp_path, suite, env
    left = crc_resources(suite)
    remove_resources(left)  # a failed test must not pollute the next ones


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_scripted_edits_each_get_their_verdict_and_ctrl_c_leaves_nothing(
        project: tuple[Path, str, dict[str, str]]) -> None:
    root, suite, env = project
    app = root / "app.cr"
    dev = Dev(root, env)
    try:
        dev.wait_for(r"^2 passed, 0 failed, 0 skipped in .*; running: web$")
        web = container_of(suite, "web")

        # An expectation alone: answered from the last run, marked so, then confirmed by a real run.
        at = dev.mark()
        edit(app, 'contains "hello"', 'contains "bye"')
        i = dev.wait_for(rf"^ FAIL  {suite} / page  \[re-checked from the last run\]$", at)
        j = dev.wait_for(rf"^ FAIL  {suite} / page  \d+ms$", i)
        end = dev.wait_for(r"^0 passed, 1 failed, 0 skipped in .*after the edit\); running: web$", j)
        screen = dev.screen(at, end)
        assert f'  test `{suite} / page`: expectation `get.stdout contains "bye"` changed' in screen
        assert any("does not contain 'bye'" in line for line in dev.screen(i, j))
        assert f"re-running: {suite} / page" in screen and not any("starting:" in s for s in screen)
        assert container_of(suite, "web") == web  # kept warm

        # A value from an imported file: the import is watched; the expectation using it is re-checked.
        at = dev.mark()
        edit(root / "lib.cr", '"hi"', '"nope"')
        dev.wait_for(rf"^ FAIL  {suite} / echo  \[re-checked from the last run\]$", at)
        dev.wait_for(rf"^ FAIL  {suite} / echo  \d+ms$", at)
        dev.wait_for(r"^0 passed, 1 failed", at)

        # A step: no answer from the last run (its output would be another), a real run of that test only.
        at = dev.mark()
        edit(app, '["echo", "hi"]', '["echo", "nope"]')
        dev.wait_for(rf"^   ok  {suite} / echo  \d+ms$", at)
        end = dev.wait_for(r"^1 passed, 0 failed", at)
        screen = dev.screen(at, end)
        assert f"  test `{suite} / echo`: step `e` changed" in screen
        assert not any("re-checked" in s for s in screen) and f"re-running: {suite} / echo" in screen
        assert container_of(suite, "web") == web

        # A mounted file: the service that mounts it starts anew; the tests using it run.
        at = dev.mark()
        (root / "www" / "index.html").write_text("bye from a mounted file\n", encoding="utf-8")
        end = dev.wait_for(r"^2 passed, 0 failed", at)
        screen = dev.screen(at, end)
        assert "  service `web`: a file it mounts or is built from changed" in screen and "starting: web" in screen
        web2 = container_of(suite, "web")
        assert web2 != web

        # The service's definition.
        at = dev.mark()
        edit(app, '"-h", "/www"]', '"-h", "/www", "-v"]')
        end = dev.wait_for(r"^2 passed, 0 failed", at)
        assert "  service `web`: its definition changed" in dev.screen(at, end)
        assert container_of(suite, "web") != web2

        # A syntax error: the diagnostics, the watch goes on; the fix compiles again.
        at = dev.mark()
        edit(app, 'test "echo" {', 'test "echo" {{')
        dev.wait_for(r"^  --> app\.cr:16:\d+$", at)
        dev.wait_for(r"^does not compile: app\.cr; the services keep running", at)
        dev.wait_for(r"^watching ", at)
        at = dev.mark()
        edit(app, 'test "echo" {{', 'test "echo" {')
        dev.wait_for(r"^compiles again: app\.cr$", at)
        dev.wait_for(r"^no change to what runs: nothing re-ran$", at)
        dev.wait_for(r"^watching ", at)
        assert crc_resources(suite) != []
    finally:
        dev.proc.send_signal(signal.SIGINT)
        code = dev.proc.wait(timeout=DEADLINE)
    assert code == 0, "\n".join(dev.lines)
    dev.wait_for(r"^crc dev: stopped; nothing left running \(run ")
    assert crc_resources(suite) == []
    assert list((root / "state" / "leases").glob("*.lease")) == []
    assert not any("\x1b[2J" in line for line in dev.lines)  # piped: screens follow one another, never cleared


def test_a_save_during_a_run_supersedes_it(project: tuple[Path, str, dict[str, str]]) -> None:
    """A save while a step runs (an hour-long sleep) cancels that run at once: its exec's process is killed, the
    service keeps running, and the newer save's change runs and gives its verdict."""
    root, suite, env = project
    app = root / "app.cr"
    dev = Dev(root, env)
    try:
        dev.wait_for(r"^2 passed, 0 failed, 0 skipped in .*; running: web$")
        dev.wait_for(r"^watching ")
        web = container_of(suite, "web")
        at = dev.mark()
        edit(app, '["echo", "hi"]', '["sleep", "3600"]')
        dev.wait_for(rf"^re-running: {suite} / echo$", at)
        ps = ""
        for _ in range(int(DEADLINE * 10)):  # the exec has started in the container
            ps = subprocess.run(["docker", "exec", web, "ps"], capture_output=True, text=True).stdout
            if "sleep 3600" in ps:
                break
            time.sleep(0.1)
        assert "sleep 3600" in ps, ps
        at = dev.mark()
        edit(app, '["sleep", "3600"]', '["echo", "hi there"]')
        i = dev.wait_for(r"^superseded: a newer save came; change 1 was cancelled \(its tests keep their last "
                         r"verdicts\); running: web$", at)
        dev.wait_for(r"^── crc dev · change 2 · ", i)
        dev.wait_for(rf"^   ok  {suite} / echo  \d+ms$", i)
        dev.wait_for(r"^1 passed, 0 failed, 0 skipped in .*; running: web$", i)
        assert container_of(suite, "web") == web  # kept warm through the cancellation
        ps = subprocess.run(["docker", "exec", web, "ps"], capture_output=True, text=True).stdout
        assert "sleep 3600" not in ps, ps  # the cancelled step's process did not outlive its run
    finally:
        dev.proc.send_signal(signal.SIGINT)
        code = dev.proc.wait(timeout=DEADLINE)
    assert code == 0, "\n".join(dev.lines)
    assert crc_resources(suite) == []


SPANS = """suite "SUITE" {
  service api {
    image "crc/demo:dev"
    port 8080
    ready span "startup" within 30s
  }

  test "order" {
    step order = exec api ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/orders?sku=42')"]
    expect order.exit == 0
    span request = "GET /orders" { service "api" }
  }
}
"""


def test_the_confirming_run_of_a_misspelt_span_ends_its_wait_early_with_crc_runs_verdict(
        project: tuple[Path, str, dict[str, str]]) -> None:
    """An instrumented service (real OTel SDK and exporter): a misspelt span name is re-checked, then confirmed
    by a run whose span wait ends before the span timeout, with the failure `crc run` gives for the same file."""
    root, suite, env = project
    app = root / "app.cr"
    app.write_text(SPANS.replace("SUITE", suite), encoding="utf-8")
    dev = Dev(root, env)
    try:
        dev.wait_for(r"^1 passed, 0 failed, 0 skipped in .*; running: api$")
        dev.wait_for(r"^watching ")
        at = dev.mark()
        edit(app, '"GET /orders"', '"GET /ordrs"')
        dev.wait_for(rf"^ FAIL  {suite} / order  \[re-checked from the last run\]$", at)
        i = dev.wait_for(rf"^       {suite} / order: span wait ended after [0-9.]+s: steps done, the receiver quiet, no "
                         r"span pending \(`crc run` would wait up to [0-9.]+s\)$", at)
        end = dev.wait_for(r"^0 passed, 1 failed, 0 skipped in ", i)
        screen = dev.screen(i, end)
    finally:
        dev.proc.send_signal(signal.SIGINT)
        code = dev.proc.wait(timeout=DEADLINE)
    assert code == 0, "\n".join(dev.lines)
    run = subprocess.run([sys.executable, "-m", "crc", "run", "app.cr", "--pull", "never", "--no-progress"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=DEADLINE)
    assert run.returncode == 1, run.stdout + run.stderr
    failure = next(line for line in run.stdout.splitlines() if "span `request`" in line).strip()
    assert failure.endswith('span `request`: expected at least 1, found 0; did you mean: "GET /orders"')
    assert any(line.endswith(failure) for line in screen), screen  # the same failure, word for word
    waits = [line for line in screen if "(waited " in line]
    assert len(waits) == 1 and "(waited " in run.stdout  # only how long each waited differs


def test_a_killed_crc_dev_is_reaped_by_crc_clean(project: tuple[Path, str, dict[str, str]]) -> None:
    root, suite, env = project
    dev = Dev(root, env)
    try:
        dev.wait_for(r"^2 passed, 0 failed, 0 skipped in .*; running: web$")
        assert crc_resources(suite) != []
    finally:
        os.kill(dev.proc.pid, signal.SIGKILL)
        dev.proc.wait(timeout=DEADLINE)
    assert crc_resources(suite) != []  # nothing removed them: the process died at once
    clean = subprocess.run([sys.executable, "-m", "crc", "clean"], cwd=root, env=env, capture_output=True,
                           text=True, timeout=DEADLINE)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "dead run" in clean.stdout
    assert crc_resources(suite) == []
