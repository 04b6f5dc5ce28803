"""Step output is kept up to a bound (runtime/backend.OUTPUT_KEEP, 8 MiB per stream): what a step prints past it
is counted, not kept, and an expectation or capture on a stream cut short fails saying so, live and replayed
alike. The Docker test measures the memory of a run whose step prints 200 MB."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from crc.runtime import recording
from crc.runtime.backend import OUTPUT_KEEP, OutputCapture
from crc.runtime.fake_backend import FakeBackend, FakeExec
from crc.runtime.replay import replay
from crc.runtime.results import FAILED, PASSED
from crc.runtime.runner import RunOptions
from dockerutil import ROOT, crc_resources, docker_engine  # noqa: F401
from fakerun import compile_source, run

BIG = """suite "s" {
  service box {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
  }
  test "t" {
    step big = exec box ["big"]
    expect big.exit == 0
    expect big.stdout contains "x"
    expect big.stderr == ""
    step cap = exec box ["big"]
    capture word = cap.stdout ~ /(x+)/
  }
}
"""


def test_a_capture_keeps_the_first_bytes_and_counts_the_rest() -> None:
    c = OutputCapture(keep=10)
    for chunk in (b"abcd", b"efghij", b"klm", b"", b"nop"):
        c.add(chunk)
    assert (c.data, c.cut) == (b"abcdefghij", 6)


def test_checks_on_a_stream_cut_short_fail_saying_so_live_and_replayed(tmp_path: Path) -> None:
    plan = compile_source(tmp_path, BIG)
    printed = "x" * (OUTPUT_KEEP + 1000)
    r = run([plan], FakeBackend(on_exec=lambda call: FakeExec(stdout=printed)))
    out = r.node("step:big").detail["output"]
    assert len(out["stdout"]) == OUTPUT_KEEP and out["stdout_cut"] == 1000
    by_label = {n.split("::")[-1]: x for n, x in r.nodes.items()}
    assert by_label["assert:1"].status == PASSED, "the exit code is not cut"
    cut = by_label["assert:2"]
    assert cut.status == FAILED and cut.message.startswith(
        f"big.stdout contains \"x\": stdout was {OUTPUT_KEEP + 1000:,} bytes, more than the {OUTPUT_KEEP:,} "
        "crc keeps of a stream, so it cannot be checked")
    assert "help: check a part of it" in cut.message
    assert by_label["assert:3"].status == PASSED, "stderr was kept whole"
    cap = r.node("step:cap")
    assert cap.status == FAILED and cap.message.startswith("capture word: stdout was ")
    rec = recording.Recording.from_bytes(recording.build(r.result, [plan], [], RunOptions(), "t").to_bytes())
    again = replay(rec).result
    assert {n: (x.status, x.message) for n, x in again.nodes.items()} == \
        {n: (x.status, x.message) for n, x in r.result.nodes.items()}


def test_no_secret_is_kept_in_part_where_a_stream_is_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRC_TEST_TOKEN", "s3cret-value-0123456789")
    src = BIG.replace('["sleep", "3600"]', '["sleep", "3600"]\n    env { API_TOKEN: "{{ secret(\'CRC_TEST_TOKEN\') }}" }')
    plan = compile_source(tmp_path, src)
    printed = "x" * (OUTPUT_KEEP - 10) + "s3cret-value-0123456789" + "y" * 100  # the secret straddles the bound
    r = run([plan], FakeBackend(on_exec=lambda call: FakeExec(stdout=printed)))
    out = r.node("step:big").detail["output"]
    assert "s3cret" not in out["stdout"] and out["stdout"].endswith("x")
    assert len(out["stdout"]) + out["stdout_cut"] == len(printed)


@pytest.mark.docker
def test_a_step_printing_200_mb_costs_crc_little_memory(docker_engine: None, tmp_path: Path) -> None:  # noqa: F811
    src = tmp_path / "big.cr"
    src.write_text('''suite "bigout" {
  service box {
    image "crc/busybox:dev"
    command ["sleep", "3600"]
  }
  test "t" {
    step big = exec box ["sh", "-c", "yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx | head -c 200000000"]
    expect big.exit == 0
    expect big.stdout contains "x"
  }
}
''', encoding="utf-8")
    # A parent of its own reads crc's peak (RUSAGE_CHILDREN of this process would be the largest of every
    # child the test session ever ran).
    peak_of_child = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
                     "print('peak-kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
                     "sys.exit(r.returncode)")
    proc = subprocess.run([sys.executable, "-c", peak_of_child, sys.executable, "-m", "crc", "run", str(src),
                           "--no-progress", "--pull", "never", "--record", str(tmp_path / "r.crcrec")],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "stdout was 200,000,000 bytes, more than the 8,388,608 crc keeps of a stream" in proc.stdout
    peak_mb = int(proc.stderr.rsplit("peak-kb ", 1)[1].split()[0]) / 1024
    assert peak_mb < 300, f"crc run took {peak_mb:.0f} MB for a step printing 200 MB"
    assert (tmp_path / "r.crcrec").stat().st_size < 20_000_000
    assert not crc_resources("bigout")
