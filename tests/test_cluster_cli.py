"""`crc run --cluster/--workers`: option combinations that make no sense exit 2 before anything starts."""

from __future__ import annotations

from pathlib import Path

from conftest import RunCrc, write_files

SOURCE = """suite "s" {
  service box { image "crc/busybox:dev" command ["sleep", "300"] }
  test "a" { step s = exec box ["true"] }
}
"""


def test_cluster_options_bad_combinations_exit_2(crc: RunCrc, tmp_path: Path) -> None:
    write_files(tmp_path, {"t.cr": SOURCE})
    for args, message in ((["--cluster", "tcp://127.0.0.1:9", "--workers", "2"], "not both"),
                          (["--workers", "2", "--interactive"], "drop --cluster/--workers"),
                          (["--workers", "0"], "smaller than 1")):
        proc = crc("run", "t.cr", *args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
