"""`crc graph` of a large file: clusters per test, the edges that repeat across tests summarised, tests in a
grid, one suite or test drawn alone with --select. The PNG is rendered by Graphviz's real `dot` and measured."""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import pytest
from conftest import run_crc

HEAD = '''import "std/redis"

suite "shop" {
  service cache = redis()
  service db {
    image "crc/python:dev"
    port 5432
  }
  service api {
    image "crc/demo:dev"
    port 8080
    needs cache, db
  }
'''
TEST = '''
  test "case {i}" {{
    step create = exec api ["wget", "-qO-", "http://localhost:8080/orders?sku={i}"]
    expect create.exit == 0
    step check after create = exec api ["wget", "-qO-", "http://localhost:8080/orders"]
    expect check.stdout contains "{i}"
    span request = "GET /orders" {{ service "api" }}
    span set = "redis SET" {{ parent request }}
    expect request.duration < 250ms
    expect request contains set
  }}
'''


@pytest.fixture
def big(tmp_path: Path) -> Path:
    """A file of 15 tests sharing three services (the size the old layout drew 12,846 px wide)."""
    p = tmp_path / "big.cr"
    p.write_text(HEAD + "".join(TEST.format(i=i) for i in range(15)) + "}\n", encoding="utf-8")
    return p


def test_dot_summarises_repeated_edges(big: Path) -> None:
    proc = run_crc("graph", big, "-f", "dot")
    assert proc.returncode == 0, proc.stderr
    dot = proc.stdout
    assert len(re.findall(r"subgraph cluster_s0_t\d+ ", dot)) == 15
    # Every test needs the same services: said once, no edge per test (45 before), no `then` edge (15 before).
    assert 'label="services (every test needs api, cache, db)"' in dot
    assert not re.search(r'"shop::service:\w+" -> "shop::case', dot)
    assert 'label="then"' not in dot and "(after case 13)" in dot
    # Edges inside a test are all drawn: 6 per test here (after, 2 checks, observes x2 ... and span relations).
    assert len(re.findall(r'"shop::case 7::[^"]+" -> "shop::case 7::', dot)) >= 6


def test_a_needs_edge_per_test_when_tests_need_different_services(tmp_path: Path) -> None:
    src = tmp_path / "mixed.cr"
    src.write_text(HEAD + TEST.format(i=0) + '''
  test "only cache" {
    step ping = exec cache ["redis-cli", "ping"]
  }
}
''', encoding="utf-8")
    proc = run_crc("graph", src, "-f", "dot")
    assert proc.returncode == 0, proc.stderr
    bundled = re.findall(r'-> "[^"]+" \[([^\]]*lhead="cluster_s0_t\d+"[^\]]*)\]', proc.stdout)
    assert len(bundled) == 2 and all('ltail="cluster_s0_services"' in b for b in bundled), bundled
    assert any('label="needs api, cache, db"' in b for b in bundled)
    assert any('label="needs cache"' in b for b in bundled)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_a_15_test_file_fits_a_screen(big: Path, tmp_path: Path) -> None:
    out = tmp_path / "big.png"
    proc = run_crc("graph", big, "-f", "png", "-o", out)
    assert proc.returncode == 0, proc.stderr
    width, height = struct.unpack(">II", out.read_bytes()[16:24])
    # Two to three screens' worth at 100%, about 3:1, instead of 12,846 x 2,497 px in one row of tests.
    assert width < 4500 and height < 2000 and width / height < 4, (width, height)


def test_select_draws_one_test(big: Path) -> None:
    proc = run_crc("graph", big, "-f", "dot", "-k", "shop/case 7")
    assert proc.returncode == 0, proc.stderr
    assert re.findall(r'label="test ([^"]+)"', proc.stdout) == ["case 7"]
    assert "shop::case 8::" not in proc.stdout and "shop::service:api" in proc.stdout
    text = run_crc("graph", big, "--select", "case 1*")
    assert re.findall(r"^  test '([^']+)'", text.stdout, re.M) == [f"case {i}" for i in (1, 10, 11, 12, 13, 14)]


def test_select_matching_nothing_exits_2(big: Path) -> None:
    proc = run_crc("graph", big, "-k", "nope")
    assert proc.returncode == 2 and "-k 'nope' matched no test" in proc.stderr
    proc = run_crc("graph", big, "-k", "case and")
    assert proc.returncode == 2 and "expected a name, found the end at column 9" in proc.stderr
    assert "Traceback" not in proc.stderr
