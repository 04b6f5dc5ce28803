"""Strings that use captures are rendered by the runner at run time (the template engine is loaded only
then): a rendered command and expectation work, and one that cannot be rendered errs with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from dockerutil import docker_engine, run_json  # noqa: F401

pytestmark = [pytest.mark.docker]

SOURCE = '''suite "render" {
  test "t" {
    step a = run "crc/busybox:dev" ["echo", "word"]
    capture c = a.stdout ~ /(\\w+)/
    step good = run "crc/busybox:dev" ["echo", "{{ c }}-{{ c | upper }}"]
    expect good.stdout == "{{ c }}-WORD\\n"
    step bad after good = run "crc/busybox:dev" ["echo", "{{ c + 1 }}"]
  }
}
'''


@pytest.mark.usefixtures("docker_engine")
def test_capture_templates_render_at_run_time_or_err_with_the_reason(tmp_path: Path) -> None:
    src = tmp_path / "render.cr"
    src.write_text(SOURCE, encoding="utf-8")
    proc, report = run_json(src, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    nodes = {n["node"].rsplit(":", 1)[1]: n for n in report["nodes"]}
    assert nodes["good"]["status"] == "passed" and nodes["good"]["detail"]["argv"] == ["echo", "word-WORD"]
    assert nodes["1"]["status"] == "passed"  # the expectation's rendered value
    assert nodes["bad"]["status"] == "error"
    assert nodes["bad"]["message"].startswith("cannot render the command: template error: TypeError")
