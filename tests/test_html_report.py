"""The HTML report: its model, its escaping, `crc report` on good and bad input, and the page in a real
Chromium (console clean, one bar per span, failures shown on selection, a screenshot kept as an artifact).

The run drawn here is the benchmark's synthetic recording (benchmarks/html_report.py): a real compiled Plan and
a recording built and read by the real code, with spans made up; the Docker test at the end draws a real run.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from browserutil import Page, artifacts_dir, browser  # noqa: F401
from conftest import ROOT, run_crc
from crc.runtime import recording
from crc.runtime.html_report import build_model, from_recording, render
from crc.runtime.runner import RunOptions
from crc.runtime.spans import Span

PAYLOAD = '</script><script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">&amp;'


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_html_report", ROOT / "benchmarks" / "html_report.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, recording.Recording]:
    """A recording of 12 tests x 8 spans with markup in names, attributes, outputs and logs, on disk."""
    work = tmp_path_factory.mktemp("synthetic")
    rec = _bench().synthetic_recording(12, 8, work, payload=PAYLOAD)
    path = work / "run.crcrec"
    recording.write(path, rec)
    return path, recording.read(path)


def test_model_gives_each_test_its_window_checks_and_dag(synthetic: tuple[Path, recording.Recording]) -> None:
    _, rec = synthetic
    model = build_model(from_recording(rec))
    assert len(model["spans"]) == 12 * 8
    assert [t["st"] for t in model["tests"]][:2] == ["failed", "failed"]  # failed first (tests 0 and 10)
    assert {t["name"].split(" ")[1] for t in model["tests"][:2]} == {"000", "010"}
    for t in model["tests"]:
        assert len(t["spans"]) == 8  # exactly its own trace
        assert {model["spans"][i]["tr"] for i in t["spans"]} == {model["spans"][t["spans"][0]]["tr"]}
        kinds = {c["k"] for c in t["checks"]}
        assert {"duration", "contains", "count"} <= kinds
        kinds = {e[2] for e in t["dag"]["edges"]}
        assert {"needs", "checks", "observes", "contains"} <= kinds
        dur = next(c for c in t["checks"] if c["k"] == "duration" and "request" in c["text"])
        assert dur["ok"] == (t["st"] == "passed"), dur  # the failing tests' request lasts 1.2s
    # the failing tests' `db query` with status error is one of the spans drawn, with its status
    # span selectors show their feasible window in the DAG (`crc graph` does too)
    caps = [n["cap"] for n in model["nodes"] if n["k"] == "span" and n.get("cap")]
    assert caps and any("start ≥ 0ms, end ≥ " in c for c in caps), caps[:3]
    failing = model["tests"][0]
    assert any(model["spans"][i]["st"] == "error" for i in failing["spans"])
    assert failing["fail"] and "output differs" in failing["fail"][0]


def test_every_value_is_escaped(synthetic: tuple[Path, recording.Recording]) -> None:
    _, rec = synthetic
    page = render(build_model(from_recording(rec)))
    # Exactly the two script elements of the template: the data and the code; the payload never closes one.
    assert page.count("<script") == 2 and page.count("</script") == 2
    assert "window.__pwned" in page  # the payload is there, as data
    assert "<img" not in page and "onerror=" not in page.replace("onerror=\\", "")
    data = re.search(r'<script type="application/json" id="crc-data">(.*?)</script>', page, re.S)
    assert data is not None
    model = json.loads(data.group(1))
    assert PAYLOAD in model["tests"][0]["name"] or PAYLOAD in model["tests"][1]["name"]
    # The page allows only its own script (by hash) and fetches nothing.
    assert "default-src 'none'" in page and "script-src 'sha256-" in page
    code = page.split("<script>")[1]
    assert re.findall(r"https?://[^\s\"']+", code) == ["http://www.w3.org/2000/svg"]  # a namespace, not a fetch


def test_crc_report_writes_html_from_a_recording(synthetic: tuple[Path, recording.Recording], tmp_path: Path
                                                 ) -> None:
    path, _ = synthetic
    out = tmp_path / "r" / "report.html"
    proc = run_crc("report", path, "--html", out)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stderr and "12 tests, 96 spans" in proc.stderr
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(("content", "expected"), [
    ('{\n  "schema": "crc-report",\n  "tests": [1,,]\n}\n', r"bad\.json:3:15: invalid JSON: Expecting value"),
    ('{"schema": "something else"}', r"bad\.json: not a crc JSON report"),
    ('{"schema": "crc-report", "run_id": "x", "started_ns": 1, "ended_ns": 2, "exit_code": 0, "tests": [], '
     '"nodes": [{"node": "a", "kind": "step"}], "spans": []}', r"bad\.json: nodes\[0\]\.status: missing"),
    ('{"schema": "crc-report", "run_id": "x", "started_ns": 1, "ended_ns": 2, "exit_code": 0, "tests": [], '
     '"nodes": [], "spans": [{"name": 3}]}', r"bad\.json: spans\[0\]\.trace_id: missing"),
    ("CRC-REC\n\x00", r"bad\.json: truncated recording"),
])
def test_crc_report_bad_input_exits_2_and_says_where(tmp_path: Path, content: str, expected: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    proc = run_crc("report", bad, "--html", tmp_path / "out.html", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert re.search(expected, proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.html").exists()


def test_crc_report_of_a_missing_file_exits_2(tmp_path: Path) -> None:
    proc = run_crc("report", tmp_path / "nope.json", "--html", tmp_path / "out.html")
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_crc_report_from_a_json_report(synthetic: tuple[Path, recording.Recording], tmp_path: Path) -> None:
    """A JSON report has no Plan: its source is compiled again when it still exists (here it does)."""
    _, rec = synthetic
    from crc.runtime.report import to_json
    from crc.runtime.results import RunResult, labels_of

    labels = labels_of(rec.plan_objects())
    result = RunResult(rec.run_id, rec.started_ns, rec.ended_ns, rec.tests, rec.results(),
                       tuple(p["meta"]["source"] for p in rec.plans))
    report = tmp_path / "run.json"
    report.write_text(json.dumps(to_json(result, labels, [s.to_dict() for s in rec.spans])), encoding="utf-8")
    out = tmp_path / "from-json.html"
    proc = run_crc("report", report, "--html", out)
    assert proc.returncode == 0, proc.stderr
    model = json.loads(re.search(r'id="crc-data">(.*?)</script>', out.read_text(encoding="utf-8"), re.S)
                       .group(1))  # type: ignore[union-attr]
    assert model["run"]["dag"] is True and all(t["dag"] for t in model["tests"])
    assert [len(t["spans"]) for t in model["tests"]] == [8] * 12


# ------------------------------------------------------------------------------------------ in a browser


Synthetic = tuple[Path, recording.Recording]


def test_report_in_chromium(synthetic: Synthetic, tmp_path: Path, browser: Any) -> None:  # noqa: F811
    path, rec = synthetic
    out = tmp_path / "report.html"
    assert run_crc("report", path, "--html", out).returncode == 0
    p = Page(browser, out)
    try:
        page = p.page
        # The first failed test is shown at once; its failures, steps' diffs and DAG are drawn.
        assert page.locator("#main .test-view").get_attribute("data-status") == "failed"
        assert page.locator(".wf .bar.span").count() == 8
        # The run timeline has one bar per span of the recording.
        page.click("#tests li[data-view='run']")
        assert page.locator(".wf .bar.span").count() == len(rec.spans)
        # Selecting a failed test shows its failure message.
        failed = page.locator("#tests li.test.failed").nth(1)
        name = failed.locator(".name").inner_text()
        failed.click()
        main = page.locator("#main").inner_text()
        assert name.split("/ ")[-1].strip() in main
        assert "output differs" in main and "duration < 900ms" in main
        assert page.locator("pre.failure .add").count() >= 1  # the diff's added lines, coloured
        assert page.locator(".dag-svg .dnode").count() >= 5
        assert page.locator(".ov.dur.bad").count() >= 1 or page.locator(".ov.dur.ok").count() >= 1
        # Attributes on demand: a bar opens the inspector, where markup is shown as text and never runs.
        page.locator(".wf .bar.span").nth(1).click()
        inspector = page.locator("#inspector")
        assert inspector.is_visible()
        assert "db.statement" in inspector.inner_text()
        assert "<script>window.__pwned=1</script>" in inspector.inner_text()
        assert page.evaluate("window.__pwned") is None
        # The filter narrows the list.
        page.fill("#filter", "test 003")
        assert page.locator("#tests li.test:visible").count() == 1
        page.fill("#filter", "")
        page.select_option("#status-filter", "failed")
        assert page.locator("#tests li.test:visible").count() == 2
        shot = artifacts_dir() / "html-report-synthetic.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        assert p.errors == []
    finally:
        p.close()


@pytest.mark.docker
def test_run_html_of_a_real_run_in_chromium(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    """`crc run --html` on real spans from the demo service: one bar per span, the failed test's message."""
    from dockerutil import engine_answers

    if not engine_answers():
        pytest.skip("no Docker engine answers (run `bash .ci/setup`)")
    out, rec_path = tmp_path / "run.html", tmp_path / "run.crcrec"
    proc = run_crc("run", ROOT / "examples" / "failing" / "span_wrong_order.cr", "--no-progress",
                   "--html", out, "--record", rec_path, cwd=tmp_path, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rec = recording.read(rec_path)
    model = build_model(from_recording(rec))
    p = Page(browser, out)
    try:
        page = p.page
        page.click("#tests li[data-view='run']")
        assert page.locator(".wf .bar.span").count() == len(rec.spans) > 0
        for i, t in enumerate(model["tests"]):
            page.click(f"#tests li[data-view='{i}']")
            assert page.locator(".wf .bar.span").count() == len(t["spans"]) > 0
        wrong_parent = page.locator("#tests li.test", has_text="a wrong parent")
        wrong_parent.click()
        assert "is not the parent of" in page.locator("#main .failures").inner_text()
        assert page.locator(".services pre.log").count() >= 1  # the services' logs were kept
        page.locator("#tests li.test", has_text="a gap that is too long").click()
        # The gap bound lies past the drawn spans: the row says where the allowed start is, in red.
        assert "allowed start: +1.000s after" in page.locator(".wf .ov.flag.bad").inner_text()
        assert page.locator(".wf .ov.gap.bad").count() == 1
        page.screenshot(path=str(artifacts_dir() / "html-report-span-wrong-order.png"), full_page=True)
        assert p.errors == []
    finally:
        p.close()


def test_a_chain_deeper_than_the_browser_recurses_is_drawn(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    """The waterfall walks span trees with a stack of its own: a 12,000-deep chain is drawn whole."""
    spans = tuple(Span("a" * 32, f"{i:016x}", f"{i - 1:016x}" if i else None, f"level {i}", "internal", "unset",
                       "", 1_000 + i, 2_000 + i, "api") for i in range(12_000))
    path = tmp_path / "deep.crcrec"
    recording.write(path, recording.Recording("t", "run-1", 0, 1, False, 0, RunOptions().recorded(), (), (), (),
                                              spans))
    out = tmp_path / "deep.html"
    assert run_crc("report", path, "--html", out).returncode == 0
    p = Page(browser, out)
    try:
        p.page.click("#tests li[data-view='run']")
        assert p.page.locator(".wf .bar.span").count() == len(spans)
        assert p.errors == []
    finally:
        p.close()


def test_a_report_naming_a_source_the_os_refuses_is_drawn_without_its_dag(tmp_path: Path) -> None:
    """Found by the fuzzer: a source path longer than the OS allows raised OSError."""
    data = {"schema": "crc-report", "run_id": "x", "started_ns": 1, "ended_ns": 2, "exit_code": 0, "tests": [],
            "nodes": [], "spans": [], "plans": ["x" * 5000, "a\0b"]}
    p = tmp_path / "r.json"
    p.write_text(json.dumps(data))
    proc = run_crc("report", p, "--html", tmp_path / "r.html")
    assert proc.returncode == 0, proc.stderr
