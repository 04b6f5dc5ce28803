"""The command line, as a subprocess: `crc compile`, `crc check`, `crc graph`, `crc --help`; exit codes 0/2/3 and
never a Python traceback for bad input."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT, run_crc, write_files
from crc.compiler.plan import Plan
from test_plan import ALL_KINDS

GOOD = 'suite "s" {\n  service a { image "img" }\n  test "t" {\n    step one = exec a ["true"]\n  }\n}\n'
BAD = ('suite "s" {\n  service api { image "img" }\n  test "t" {\n    step one = exec apx ["true"]\n'
       '    expect onx.exit == 0\n  }\n}\n')
SYNTAX = 'suite "s" {\n  service a { image "img" }\n  test "t" {\n    stpe one = exec a ["true"]\n  }\n}\n'
MODULE = 'template t() { image "x" }\n'
HAS_DOT = shutil.which("dot") is not None


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_files(tmp_path, {"good.cr": GOOD, "sub/two.cr": GOOD.replace('"s"', '"two"'), "sub/lib.cr": MODULE,
                           "kinds.cr": ALL_KINDS})
    return tmp_path


# ---------------------------------------------------------------- help and version


def test_help() -> None:
    proc = run_crc("--help")
    assert proc.returncode == 0, proc.stderr
    for cmd in ("compile", "check", "graph"):
        assert cmd in proc.stdout
    no_traceback(proc)


def test_no_args_shows_help() -> None:
    proc = run_crc()
    assert "compile" in proc.stdout + proc.stderr
    no_traceback(proc)


def test_version() -> None:
    proc = run_crc("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("crc ")


@pytest.mark.parametrize("cmd", ["compile", "check", "graph"])
def test_command_help(cmd: str) -> None:
    proc = run_crc(cmd, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: crc {cmd}")


def test_help_imports_no_heavy_module() -> None:
    code = ("import sys\nfrom crc.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print([m for m in sys.modules if m.startswith(('aiodocker', 'opentelemetry', 'faker', 'grpc', 'networkx',"
            " 'lark', 'jinja2', 'pydantic'))])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_unknown_command_is_a_usage_error() -> None:
    proc = run_crc("nope")
    assert proc.returncode == 2
    no_traceback(proc)


def test_options_may_come_between_arguments(project: Path) -> None:
    (project / "a.cr").write_text(GOOD)
    (project / "b.cr").write_text(GOOD.replace('"s"', '"s2"'))
    proc = run_crc("compile", "a.cr", "-o", "out", "b.cr", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert (project / "out" / "a.plan").exists() and (project / "out" / "b.plan").exists()


@pytest.mark.parametrize("args", [("compile", "x.cr", "--out", "o"), ("run", "x.cr", "--rec", "r"),
                                  ("graph", "x.cr", "--form", "dot")])
def test_abbreviated_options_are_refused(project: Path, args: tuple[str, ...]) -> None:
    """A prefix of an option is not that option: adding an option must never change what a script means."""
    (project / "x.cr").write_text(GOOD)
    proc = run_crc(*args, cwd=project)
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr, proc.stderr
    no_traceback(proc)


# ---------------------------------------------------------------- compile


def test_compile_file_writes_plan_under_dot_crc(project: Path) -> None:
    proc = run_crc("compile", "good.cr", cwd=project)
    assert proc.returncode == 0, proc.stderr
    plan_file = project / ".crc" / "good.plan"
    assert plan_file.is_file()
    plan = Plan.from_bytes(plan_file.read_bytes())
    assert plan.meta["source"] == "good.cr"
    assert re.search(r"compiled good\.cr -> \.crc/good\.plan +\(2 nodes, digest [0-9a-f]{12}\)", proc.stdout)
    assert plan.digest[:12] in proc.stdout
    assert (project / ".crc" / "last").read_text().split() == [".crc/good.plan"]


def test_compile_directory(project: Path) -> None:
    proc = run_crc("compile", ".", cwd=project)
    assert proc.returncode == 0, proc.stderr
    plans = sorted(p.relative_to(project / ".crc").as_posix() for p in (project / ".crc").rglob("*.plan"))
    assert plans == ["good.plan", "kinds.plan", "sub/two.plan"], "a file with no suite is a module: skipped"
    assert len((project / ".crc" / "last").read_text().split()) == 3


def test_compile_output_file(project: Path) -> None:
    proc = run_crc("compile", "good.cr", "-o", "out/x.plan", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert Plan.from_bytes((project / "out" / "x.plan").read_bytes()).tests[0]["name"] == "t"


def test_compile_output_directory(project: Path) -> None:
    proc = run_crc("compile", "good.cr", "sub/two.cr", "--output", "plans", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert (project / "plans" / "good.plan").is_file() and (project / "plans" / "sub" / "two.plan").is_file()


def test_compile_one_plan_file_for_two_sources_is_refused(project: Path) -> None:
    proc = run_crc("compile", "good.cr", "sub/two.cr", "-o", "x.plan", cwd=project)
    assert proc.returncode == 2 and "one source" in proc.stderr
    no_traceback(proc)


def test_compile_bad_file_exits_2_and_writes_nothing(project: Path) -> None:
    (project / "bad.cr").write_text(BAD)
    proc = run_crc("compile", "bad.cr", cwd=project)
    assert proc.returncode == 2
    assert "unknown service `apx`" in proc.stderr
    assert not (project / ".crc" / "bad.plan").exists()
    no_traceback(proc)


def test_compile_is_byte_identical_twice(project: Path) -> None:
    run_crc("compile", "kinds.cr", "-o", "a.plan", cwd=project)
    run_crc("compile", "kinds.cr", "-o", "b.plan", cwd=project)
    assert (project / "a.plan").read_bytes() == (project / "b.plan").read_bytes()


# ---------------------------------------------------------------- check


def test_check_clean_exits_0_and_writes_nothing(project: Path) -> None:
    proc = run_crc("check", "good.cr", "kinds.cr", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "ok good.cr" in proc.stdout and "ok kinds.cr" in proc.stdout
    assert not (project / ".crc").exists()


def test_check_reports_every_diagnostic(project: Path) -> None:
    (project / "bad.cr").write_text(BAD)
    proc = run_crc("check", "bad.cr", cwd=project)
    assert proc.returncode == 2
    err = proc.stderr
    assert "bad.cr:4:21" in err and "unknown service `apx`" in err and "did you mean `api`?" in err
    assert "bad.cr:5:12" in err and "unknown step or span `onx`" in err and "did you mean `one`?" in err
    assert "2 error(s), 0 warning(s)" in err
    lines = err.splitlines()
    i = lines.index(next(ln for ln in lines if "step one = exec apx" in ln))
    assert lines[i + 1].index("^^^") == lines[i].index("apx")
    no_traceback(proc)


def test_check_reports_all_files_in_one_pass(project: Path) -> None:
    (project / "bad.cr").write_text(BAD)
    (project / "syntax.cr").write_text(SYNTAX)
    proc = run_crc("check", "bad.cr", "syntax.cr", "good.cr", cwd=project)
    assert proc.returncode == 2
    assert "bad.cr:4:21" in proc.stderr and "syntax.cr:4:5" in proc.stderr and "did you mean `step`?" in proc.stderr
    no_traceback(proc)


def test_check_shows_warnings_and_passes(project: Path) -> None:
    (project / "warn.cr").write_text('suite "s" {\n  service a { image "img" }\n}\n')
    proc = run_crc("check", "warn.cr", cwd=project)
    assert proc.returncode == 0
    assert "warning: suite \"s\" has no test" in proc.stderr and "0 error(s), 1 warning(s)" in proc.stderr
    assert "warn.cr:1:7" in proc.stderr and "ok warn.cr" in proc.stdout
    no_traceback(proc)


@pytest.mark.parametrize("args", [("compile", "warn.cr"), ("graph", "warn.cr")])
def test_compile_and_graph_show_warnings_too(project: Path, args: tuple[str, ...]) -> None:
    (project / "warn.cr").write_text('suite "s" {\n  service a { image "img" }\n}\n')
    proc = run_crc(*args, cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "warning: suite \"s\" has no test" in proc.stderr and "0 error(s), 1 warning(s)" in proc.stderr
    assert "warning" not in proc.stdout  # stdout keeps only the command's own output (the graph for `graph`)


def test_check_without_warnings_prints_no_summary(project: Path) -> None:
    proc = run_crc("check", "good.cr", cwd=project)
    assert proc.returncode == 0 and "warning" not in proc.stderr and "error(s)" not in proc.stderr


def test_check_examples() -> None:
    """Every example compiles."""
    proc = run_crc("check", EXAMPLES, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    n = len([p for p in EXAMPLES.rglob("*.cr") if "suite " in p.read_text()])
    assert proc.stdout.count("ok ") == n >= 4


@pytest.mark.parametrize("args", [("check", "missing.cr"), ("compile", "missing.cr"), ("graph", "missing.cr"),
                                  ("check", "empty"), ("compile", "empty"), ("check",), ("graph", "x.cr", "-f", "pdf")])
def test_bad_usage_exits_2(project: Path, args: tuple[str, ...]) -> None:
    (project / "empty").mkdir()
    (project / "x.cr").write_text(GOOD)
    proc = run_crc(*args, cwd=project)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    no_traceback(proc)


BAD_INPUTS = [b"\xff\xfe\x00 not utf-8", b"suite", b'suite "s" {', b"}}}}", b"\x00" * 20,
              b'suite "s" { test "t" { step x = exec nope ["a"] } }', b'import "nowhere"\nsuite "s" {}',
              b'import "std/nope"\nsuite "s" { service a = redis() }']


def test_bad_input_never_shows_a_traceback(project: Path) -> None:
    names = []
    for i, content in enumerate(BAD_INPUTS):
        (project / f"in{i}.cr").write_bytes(content)
        names.append(f"in{i}.cr")
    for cmd in ("check", "compile"):  # one process reports on every file
        proc = run_crc(cmd, *names, cwd=project)
        assert proc.returncode == 2, (cmd, proc.stdout, proc.stderr)
        assert proc.stderr.count("error") >= len(names)
        no_traceback(proc)
    for name in names:  # graph takes one file
        proc = run_crc("graph", name, cwd=project)
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        no_traceback(proc)


# ---------------------------------------------------------------- graph


GLYPHS = {"service": "■", "step": "▶", "assert": "✔", "span": "◆"}


def test_graph_text_distinguishes_node_and_edge_kinds(project: Path) -> None:
    proc = run_crc("graph", "kinds.cr", cwd=project)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for kind, glyph in GLYPHS.items():
        assert re.search(rf"^\s+{glyph} {kind}\b", out, re.M), kind
    for word in ("needs", "after", "checks", "observes", "precedes", "contains", "parent of", "ancestor of"):
        assert re.search(rf"<- {word}\s", out), word
    assert "(gap 1ms..5ms)" in out
    assert out.splitlines()[0].startswith("plan kinds.cr  (14 nodes")
    assert "legend: ■ service  ▶ step  ✔ assert  ◆ span" in out


def _dot_styles(dot: str) -> tuple[dict[str, dict[str, str]], dict[str, set[tuple[str, ...]]]]:
    """Node attrs by node id, and the set of edge styles seen per edge label word."""
    nodes: dict[str, dict[str, str]] = {}
    edge_styles: dict[str, set[tuple[str, ...]]] = {}
    for line in dot.splitlines():
        m = re.match(r'\s*"([^"]+)" \[(.*)\];$', line)
        if m:
            nodes[m.group(1)] = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
            continue
        m = re.match(r'\s*"([^"]+)" -> "([^"]+)" \[(.*)\];$', line)
        if m:
            attrs = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3)))
            style = (attrs.get("color", ""), attrs.get("style", ""), attrs.get("arrowhead", ""))
            edge_styles.setdefault(f"{m.group(1)}->{m.group(2)}", set()).add(style)
    return nodes, edge_styles


def test_graph_dot_distinguishes_node_and_edge_kinds(project: Path) -> None:
    proc = run_crc("graph", "kinds.cr", "--format", "dot", cwd=project)
    assert proc.returncode == 0, proc.stderr
    dot = proc.stdout
    assert dot.startswith("digraph plan {") and dot.rstrip().endswith("}")
    nodes, edges = _dot_styles(dot)
    plan = Plan.from_bytes(run_crc_compile(project))
    by_kind: dict[str, set[tuple[str, str]]] = {}
    for n, d in plan.graph.nodes(data=True):
        by_kind.setdefault(d["kind"], set()).add((nodes[n]["shape"], nodes[n]["fillcolor"]))
    assert all(len(v) == 1 for v in by_kind.values()), by_kind
    assert len({next(iter(v)) for v in by_kind.values()}) == 4, "four node kinds, four looks"
    assert len({next(iter(v))[0] for v in by_kind.values()}) == 4, "four distinct shapes"
    edge_kind_styles: dict[str, set[tuple[str, ...]]] = {}
    g = plan.graph
    for u, v, k in g.edges(keys=True):
        du, dv = g.nodes[u], g.nodes[v]
        if k == "needs" and du["kind"] == "service" and dv.get("test"):
            continue  # summarised: one edge from the services to each test (or the services' title)
        if k == "then" and du.get("test") != dv.get("test"):
            assert f"(after {du['test']})" in dot  # summarised in the later test's title
            continue
        edge_kind_styles.setdefault(k, set()).update(edges[f"{u}->{v}"])
    # each kind has one style (where two kinds join the same pair, both styles are present)
    singles = {k: next(iter(s)) for k, s in edge_kind_styles.items() if len(s) == 1}
    assert len(set(singles.values())) == len(singles), singles
    assert "subgraph cluster_s0_t1" in dot and 'label="test first"' in dot
    assert 'label="precedes gap 1ms..5ms"' in dot


def run_crc_compile(project: Path) -> bytes:
    proc = run_crc("compile", "kinds.cr", "-o", "kinds.plan", cwd=project)
    assert proc.returncode == 0, proc.stderr
    return (project / "kinds.plan").read_bytes()


def test_graph_of_a_plan_file_equals_graph_of_the_source(project: Path) -> None:
    run_crc_compile(project)
    for fmt in ("text", "dot"):
        a = run_crc("graph", "kinds.cr", "-f", fmt, cwd=project)
        b = run_crc("graph", "kinds.plan", "-f", fmt, cwd=project)
        assert a.returncode == b.returncode == 0
        assert a.stdout.replace("kinds.cr", "") == b.stdout.replace("kinds.cr", "")


def test_graph_output_option(project: Path) -> None:
    proc = run_crc("graph", "kinds.cr", "-f", "dot", "-o", "g/out.dot", cwd=project)
    assert proc.returncode == 0 and proc.stdout == ""
    assert (project / "g" / "out.dot").read_text().startswith("digraph")


def test_graph_rejects_a_file_that_is_not_a_plan(project: Path) -> None:
    (project / "x.plan").write_bytes(b"not msgpack at all \xc1")
    proc = run_crc("graph", "x.plan", cwd=project)
    assert proc.returncode == 2 and "x.plan" in proc.stderr
    no_traceback(proc)


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` is not installed")
@pytest.mark.parametrize(("fmt", "magic"), [("svg", b"<svg"), ("png", b"\x89PNG\r\n\x1a\n")])
def test_graph_svg_and_png(project: Path, fmt: str, magic: bytes) -> None:
    out = project / f"g.{fmt}"
    proc = run_crc("graph", "kinds.cr", "-f", fmt, "-o", out.name, cwd=project)
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    assert data.startswith(magic) if fmt == "png" else magic in data[:2000]


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` is not installed")
def test_graph_svg_to_a_pipe(project: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "crc", "graph", "kinds.cr", "-f", "svg"], cwd=project,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0 and b"<svg" in proc.stdout


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_graph_svg_without_dot_exits_3_and_says_how_to_install(project: Path, tmp_path: Path, fmt: str) -> None:
    empty = tmp_path / "emptybin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    proc = run_crc("graph", "kinds.cr", "-f", fmt, "-o", "x.svg", cwd=project, env=env)
    assert proc.returncode == 3, proc.stderr
    assert "dot" in proc.stderr and "apt-get install graphviz" in proc.stderr
    no_traceback(proc)
    # text and dot need no Graphviz
    assert run_crc("graph", "kinds.cr", "-f", "dot", cwd=project, env=env).returncode == 0


def test_graph_shows_the_image_of_a_run_step(project: Path) -> None:
    (project / "run.cr").write_text('suite "s" {\n  test "t" {\n    step one = run "crc/busybox:dev" ["true"]\n  }\n}\n')
    proc = run_crc("graph", "run.cr", cwd=project)
    assert "one: run crc/busybox:dev true" in proc.stdout


def test_graph_of_a_structurally_wrong_plan_exits_2(project: Path) -> None:
    from crc.compiler.plan import canonical_bytes

    (project / "w.plan").write_bytes(canonical_bytes({"format": "crc-plan", "version": 2, "meta": 5, "suites": [],
                                                      "tests": [], "nodes": [], "edges": []}))
    proc = run_crc("graph", "w.plan", cwd=project)
    assert proc.returncode == 2
    assert "w.plan: damaged Plan file: meta is not a map" in proc.stderr
    no_traceback(proc)


def test_a_plan_of_format_1_is_refused_naming_its_version(tmp_path: Path) -> None:
    from crc.compiler.plan import FORMAT, FORMAT_VERSION, canonical_bytes

    old = tmp_path / "old.plan"
    old.write_bytes(canonical_bytes({"format": FORMAT, "version": 1, "nodes": [], "edges": [],
                                     "meta": {"source": "x.cr", "suites": [], "tests": []}}))
    for command in ("run", "graph"):
        proc = run_crc(command, str(old), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert f"this Plan has format version 1, and this crc reads version {FORMAT_VERSION} only" in proc.stderr
        assert "compile the source again with `crc compile`" in proc.stderr
        no_traceback(proc)
