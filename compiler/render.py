"""Views of a Plan: Graphviz dot (and svg/png through it) and a terminal drawing with no dependency.

Node kinds and edge kinds are distinct in every format: shapes and colours in dot, glyphs and arrow words in
text. Verdicts (from a run or a recording) colour the nodes when given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import networkx as nx

from .plan import Plan
from .schema import bound_text, gap_text, regex_text

if TYPE_CHECKING:
    from .temporal import Window

NODE_STYLE = {
    "service": {"shape": "box3d", "style": "filled", "fillcolor": "#dbeafe", "color": "#1d4ed8"},
    "step": {"shape": "box", "style": "rounded,filled", "fillcolor": "#f3f4f6", "color": "#374151"},
    "assert": {"shape": "note", "style": "filled", "fillcolor": "#fef9c3", "color": "#a16207"},
    "span": {"shape": "ellipse", "style": "filled", "fillcolor": "#ffedd5", "color": "#c2410c"},
}
EDGE_STYLE = {
    "needs": {"color": "#1d4ed8", "penwidth": "2"},
    "after": {"color": "#111827"},
    "then": {"color": "#9ca3af", "style": "dashed"},
    "checks": {"color": "#a16207", "style": "dotted", "arrowhead": "odot"},
    "observes": {"color": "#7c3aed", "style": "dashed", "arrowhead": "vee"},
    "precedes": {"color": "#dc2626", "penwidth": "2"},
    "contains": {"color": "#15803d", "arrowhead": "odiamond"},
    "parent": {"color": "#0f766e", "arrowhead": "diamond"},
    "ancestor": {"color": "#0f766e", "style": "dashed", "arrowhead": "diamond"},
}
VERDICT_FILL = {"passed": "#bbf7d0", "failed": "#fecaca", "skipped": "#e5e7eb", "error": "#fca5a5"}
GLYPH = {"service": "■", "step": "▶", "assert": "✔", "span": "◆"}
ARROW = {"needs": "needs", "after": "after", "then": "then", "checks": "checks", "observes": "observes",
         "precedes": "precedes", "contains": "contains", "parent": "parent of", "ancestor": "ancestor of"}


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(d: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={_q(v)}" for k, v in d.items())


def span_windows(plan: Plan) -> dict[str, Window]:
    """The feasible window of each span selector of `plan`, by node id, from its test's temporal network
    (`analysis.span_windows`)."""
    from .analysis import span_windows as of_test

    spans: dict[tuple[str, str | None], list[str]] = {}
    for n, d in plan.nodes.items():
        if d["kind"] == "span":
            spans.setdefault((d["suite"], d["test"]), []).append(n)
    if not spans:
        return {}
    into: dict[str, list[tuple[str, Mapping[str, object]]]] = {}
    for u, v, e in plan.edges:  # the span edges' data, without building the networkx graph
        if e["kind"] in ("precedes", "contains"):
            into.setdefault(v, []).append((u, e))
    nodes = plan.nodes
    return {n: w for ids in spans.values() for n, w in of_test(nodes, lambda v: into.get(v, ()), ids).items()}


def node_names(plan: Plan) -> dict[str, str]:
    """Each node's name, by id (a step's caption names its service)."""
    return {n: d["name"] for n, d in plan.nodes.items()}


def window_text(w: Window) -> str:
    """A feasible window, measured from the test's start: `start ≥ 70ms, end ≥ 90ms` (or `start 0..5ms` where
    the latest side is bounded)."""
    def side(name: str, earliest: int, latest: int | None) -> str:
        return f"{name} ≥ {earliest / 1e6:g}ms" if latest is None else \
            f"{name} {earliest / 1e6:g}..{latest / 1e6:g}ms"

    return f"{side('start', *w.start)}, {side('end', *w.end)}"


def node_caption(data: Mapping[str, object], window: Window | None = None,
                 names: Mapping[str, str] | None = None) -> str:
    """A node as views label it: a step with where it runs (`names`: node ids to names, for its service), a
    span selector with its duration bounds and, given, its feasible window."""
    kind = data["kind"]
    label = str(data.get("label", ""))
    if kind == "service":
        return f"{label}\n{data.get('image') or ''}"
    if kind == "step":
        argv = data.get("argv") or []
        cmd = " ".join(str(a) for a in argv) if isinstance(argv, list) else ""
        svc = data.get("service")
        where = (names or {}).get(str(svc), str(svc)) if svc else str(data.get("image", ""))
        text = f"{label}: {data.get('action')} {where} {cmd}"
        return text if len(text) <= 60 else text[:57] + "..."
    if kind == "span":
        match = data.get("match") or {}
        assert isinstance(match, dict)
        name = match.get("name") or (regex_text(match["regex"]) if match.get("regex") else "*")
        durations = data.get("duration") or {}
        assert isinstance(durations, dict)
        bounds = [bound_text(durations[side], side) for side in ("min", "max") if durations.get(side)]
        extra = f"\n{' '.join(bounds)}" if bounds else ""
        if window is not None:
            extra += f"\n{window_text(window)}"
        if data.get("no_span") or label.startswith("count("):
            return f"{label}{extra}"  # anonymous selectors are labelled with their own text
        return f"{label}: {name}{extra}"
    return label


def edge_caption(data: Mapping[str, object]) -> str:
    if data["kind"] != "precedes":
        return ""
    lo, hi = data.get("min_gap"), data.get("max_gap")
    assert isinstance(lo, dict | None) and isinstance(hi, dict | None)
    return gap_text(lo["value"] if lo else None, hi["value"] if hi else None)


def subplan(plan: Plan, keep: set[str]) -> Plan:
    """The part of `plan` made of the nodes in `keep` (a selection of tests and their services)."""
    nodes = {n: d for n, d in plan.nodes.items() if n in keep}
    kept_tests = {(d["suite"], d.get("test")) for d in nodes.values()}
    tests = [t for t in plan.tests if (t["suite"], t["name"]) in kept_tests]
    suites = [s for s in plan.suites if any(k[0] == s["name"] for k in kept_tests)]
    return Plan.of(nodes, [e for e in plan.edges if e[0] in keep and e[1] in keep], plan.meta, suites, tests)


def to_dot(plan: Plan, verdicts: Mapping[str, str] | None = None) -> str:
    """Graphviz source laid out to be read at screen size.

    Each suite is a cluster holding a cluster of its services and a cluster per test. Edges inside a test are
    drawn one by one. The edges that repeat across tests are summarised: a test's `needs` edges become one
    edge from the services to the test ("needs api, cache"), and the `then` edges that order one test after
    another become its title ("test b (after a)"). Tests are laid out in a grid of rows (invisible edges
    order the tests of a row) so a file of many tests is about twice as wide as it is tall, not one long row.
    Given verdicts, nodes are filled by verdict and a failed test's frame and title are red.
    """
    nodes: Mapping[str, Mapping[str, Any]] = plan.nodes
    windows, named = span_windows(plan), node_names(plan)
    out = ["digraph plan {",
           '  rankdir=LR; compound=true; nodesep=0.15; ranksep=0.35; fontname="Helvetica";',
           '  node [fontname="Helvetica", fontsize=10, margin="0.08,0.03"];',
           '  edge [fontname="Helvetica", fontsize=9];']
    by_suite: dict[str, dict[str | None, list[str]]] = {}
    for n, d in nodes.items():
        by_suite.setdefault(d["suite"], {}).setdefault(d.get("test"), []).append(n)
    test_order = {(t["suite"], t["name"]): i for i, t in enumerate(plan.tests)}
    cluster: dict[tuple[str, str | None], str] = {}
    anchor: dict[tuple[str, str | None], str] = {}  # a node inside each cluster, for edges to the cluster
    bundled: list[str] = []
    services_line: dict[str, int] = {}
    for si, (suite, groups) in enumerate(by_suite.items()):
        out.append(f"  subgraph cluster_s{si} {{ label={_q('suite ' + suite)}; style=rounded; color=\"#6b7280\";")
        services = groups.get(None, [])
        if services:
            cluster[(suite, None)] = f"cluster_s{si}_services"
            anchor[(suite, None)] = services[-1]
            services_line[suite] = len(out)
            out.append(f"    subgraph cluster_s{si}_services {{ label=\"services\"; style=dashed; color=\"#1d4ed8\";")
            out.extend(f"      {_node_line(n, nodes[n], verdicts, windows, named)}" for n in services)
            out.append("    }")
        tests = sorted((t for t in groups if t is not None), key=lambda t: (test_order.get((suite, t), 1 << 30), t))
        for ti, test in enumerate(tests):
            members = groups[test]
            name = f"cluster_s{si}_t{ti}"
            cluster[(suite, test)] = name
            inside = set(members)
            anchor[(suite, test)] = next((n for n in members if not any(u in inside for u, _k in plan.in_edges(n))),
                                         members[0])  # a first node: `needs` edges then rank services before it
            failed = any((verdicts or {}).get(n) in ("failed", "error") for n in members)
            after = sorted({str(nodes[u].get("test")) for n in members for u, k in plan.in_edges(n)
                            if k == "then" and nodes[u].get("test") not in (None, test)})
            title = f"test {test}" + (f" (after {', '.join(after)})" if after else "") + (" — FAILED" if failed else "")
            color = "#dc2626" if failed else "#9ca3af"
            out.append(f"    subgraph {name} {{ label={_q(title)}; style=dashed; color=\"{color}\"; "
                       f"fontcolor=\"{'#dc2626' if failed else '#111827'}\";")
            out.extend(f"      {_node_line(n, nodes[n], verdicts, windows, named)}" for n in members)
            out.append("    }")
        out.append("  }")
        bundled.extend(_grid(plan, [groups[t] for t in tests]))
    summaries: dict[tuple[tuple[str, str | None], tuple[str, str | None]], list[str]] = {}
    for u, v, d in plan.edges:
        du, dv = nodes[u], nodes[v]
        ku, kv = (str(du["suite"]), du.get("test")), (str(dv["suite"]), dv.get("test"))
        if d["kind"] == "needs" and du["kind"] == "service" and kv[1] is not None:
            summaries.setdefault((ku, kv), []).append(str(du.get("label", u)))
            continue
        if d["kind"] == "then" and ku != kv:
            continue  # summarised in the later test's title: "(after TEST)"
        style = dict(EDGE_STYLE[d["kind"]])
        caption = edge_caption(d)
        if d["kind"] in ("precedes", "contains", "parent", "ancestor"):
            style["label"] = f"{ARROW[d['kind']]} {caption}".strip()
        out.append(f"  {_q(u)} -> {_q(v)} [{_attrs(style)}];")
    for suite in by_suite:
        sets = {frozenset(names) for (ku, kv), names in summaries.items() if ku == (suite, None)}
        waiting = [kv for (ku, kv) in summaries if ku == (suite, None)]
        if len(sets) == 1 and len(waiting) == len([t for t in by_suite[suite] if t is not None]) > 1:
            # Every test waits for the same services: say it once instead of drawing an edge per test.
            title = f"services (every test needs {', '.join(sorted(next(iter(sets))))})"
            out[services_line[suite]] = out[services_line[suite]].replace('label="services"', f"label={_q(title)}")
            summaries = {k: v for k, v in summaries.items() if k[0] != (suite, None)}
    for (ku, kv), names in summaries.items():
        if ku not in anchor or kv not in anchor:
            continue
        style = dict(EDGE_STYLE["needs"])
        style.update(ltail=cluster[ku], lhead=cluster[kv], label=f"needs {', '.join(sorted(set(names)))}")
        out.append(f"  {_q(anchor[ku])} -> {_q(anchor[kv])} [{_attrs(style)}];")
    out.extend(bundled)
    out.append("  legend [shape=plaintext, label=<" + _legend() + ">];")
    out.append("}")
    return "\n".join(out) + "\n"


def _node_line(n: str, d: Mapping[str, object], verdicts: Mapping[str, str] | None,
               windows: Mapping[str, Window], names: Mapping[str, str]) -> str:
    style = dict(NODE_STYLE[str(d["kind"])])
    if verdicts and n in verdicts:
        style["fillcolor"] = VERDICT_FILL.get(verdicts[n], style["fillcolor"])
    caption = node_caption(d, windows.get(n), names)
    if d["kind"] == "step" and len(caption) > 32:  # `name: action where` above a shortened command
        head, _, cmd = caption.partition(" ")
        parts = cmd.split(" ", 2)
        caption = f"{head} {' '.join(parts[:2])}\n{parts[2][:30] if len(parts) > 2 else ''}".rstrip()
        caption = caption if len(caption.split(chr(10))[-1]) < 30 else caption + "…"
    return f"{_q(n)} [label={_q(caption)}, {_attrs(style)}];"


def _grid(plan: Plan, tests: list[list[str]]) -> list[str]:
    """Invisible edges that put the tests of a suite in rows of about sqrt(n/2) tests, left to right: the last
    node of a test before the first node of the next one in its row."""
    per_row = max(1, math.ceil(math.sqrt(len(tests) / 2)))
    out = []
    for i in range(len(tests) - 1):
        if (i + 1) % per_row == 0:
            continue  # the next test starts a new row
        here, there = set(tests[i]), set(tests[i + 1])
        inner_sources = {u for u, v, _d in plan.edges if u in here and v in here}
        sinks = [n for n in tests[i] if n not in inner_sources]
        sources = [n for n in tests[i + 1] if not any(u in there for u, _k in plan.in_edges(n))]
        if sinks and sources:
            out.append(f"  {_q(sinks[-1])} -> {_q(sources[0])} [style=invis];")
    return out


def _legend() -> str:
    """An HTML-like Graphviz table: each node kind's look and each edge kind's colour."""
    cells = [f'<TD BGCOLOR="{NODE_STYLE[k]["fillcolor"]}">{k}</TD>' for k in ("service", "step", "assert", "span")]
    cells += [f'<TD><FONT COLOR="{EDGE_STYLE[k]["color"]}">&#8594; {ARROW[k]}</FONT></TD>'
              for k in ("needs", "after", "checks", "observes", "precedes", "contains", "parent")]
    return '<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="3"><TR>' + "".join(cells) + "</TR></TABLE>"


def to_text(plan: Plan, verdicts: Mapping[str, str] | None = None) -> str:
    """The DAG drawn as an indented list in dependency order, each node with its incoming edges."""
    g = plan.graph
    order = {n: i for i, n in enumerate(nx.lexicographical_topological_sort(g))} if nx.is_directed_acyclic_graph(g) \
        else {n: i for i, n in enumerate(sorted(g.nodes))}
    windows, names = span_windows(plan), node_names(plan)
    lines: list[str] = [f"plan {plan.meta.get('source', '')}  ({g.number_of_nodes()} nodes, "
                        f"{g.number_of_edges()} edges)"]
    mark = {"passed": " [passed]", "failed": " [FAILED]", "skipped": " [skipped]", "error": " [ERROR]"}
    suites: list[str] = [s["name"] for s in plan.suites]
    for suite in suites:
        lines.append(f"suite {suite!r}")
        tests: list[str | None] = [None, *[t["name"] for t in plan.tests if t["suite"] == suite]]
        for test in tests:
            nodes = sorted((n for n, d in g.nodes(data=True) if d["suite"] == suite and d.get("test") == test),
                           key=lambda n: order[n])
            if test is not None:
                lines.append(f"  test {test!r}")
            pad = "    " if test is not None else "  "
            for n in nodes:
                d = g.nodes[n]
                verdict = mark.get((verdicts or {}).get(n, ""), "")
                caption = node_caption(d, windows.get(n), names).replace(chr(10), "  ")
                lines.append(f"{pad}{GLYPH[d['kind']]} {d['kind']:<7} {caption}{verdict}")
                for u, _, e in sorted(g.in_edges(n, data=True), key=lambda x: (x[2]["kind"], x[0])):
                    if e["kind"] in ("then",):
                        continue
                    caption = edge_caption(e)
                    lines.append(f"{pad}    <- {ARROW[e['kind']]:<11} {g.nodes[u].get('label', u)}"
                                 f"{' (' + caption + ')' if caption else ''}")
    legend = "  ".join(f"{GLYPH[k]} {k}" for k in GLYPH)
    lines.append(f"legend: {legend}")
    return "\n".join(lines) + "\n"
