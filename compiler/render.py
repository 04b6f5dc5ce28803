"""Views of a Plan: Graphviz dot (and svg/png through it) and a terminal drawing with no dependency.

Node kinds and edge kinds are distinct in every format: shapes and colours in dot, glyphs and arrow words in
text. Verdicts (from a run or a recording) colour the nodes when given.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx

from .plan import Plan

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


def node_caption(data: Mapping[str, object]) -> str:
    kind = data["kind"]
    label = str(data.get("label", ""))
    if kind == "service":
        return f"{label}\n{data.get('image') or ''}"
    if kind == "step":
        argv = data.get("argv") or []
        cmd = " ".join(str(a) for a in argv) if isinstance(argv, list) else ""
        svc = data.get("service")
        # Service node ids end in `service:NAME`; an image reference keeps its tag.
        where = str(svc).rsplit(":", 1)[-1] if svc else str(data.get("image", ""))
        text = f"{label}: {data.get('action')} {where} {cmd}"
        return text if len(text) <= 60 else text[:57] + "..."
    if kind == "span":
        match = data.get("match") or {}
        assert isinstance(match, dict)
        name = match.get("name") or (f"/{match['regex']}/" if match.get("regex") else "*")
        bounds = []
        if data.get("duration_min") is not None:
            bounds.append(f">= {float(data['duration_min']) * 1000:g}ms")  # type: ignore[arg-type]
        if data.get("duration_max") is not None:
            bounds.append(f"<= {float(data['duration_max']) * 1000:g}ms")  # type: ignore[arg-type]
        extra = f"\n{' '.join(bounds)}" if bounds else ""
        if data.get("no_span") or label.startswith("count("):
            return f"{label}{extra}"  # anonymous selectors are labelled with their own text
        return f"{label}: {name}{extra}"
    return label


def edge_caption(data: Mapping[str, object]) -> str:
    if data["kind"] != "precedes":
        return ""
    lo, hi = data.get("min_gap"), data.get("max_gap")
    if lo is None and hi is None:
        return ""
    return f"gap {'' if lo is None else f'{float(lo) * 1000:g}ms'}..{'' if hi is None else f'{float(hi) * 1000:g}ms'}"  # type: ignore[arg-type]


def to_dot(plan: Plan, verdicts: Mapping[str, str] | None = None) -> str:
    """Graphviz source: a cluster per suite and per test."""
    g = plan.graph
    out = ["digraph plan {", '  rankdir=LR; fontname="Helvetica"; node [fontname="Helvetica", fontsize=10];',
           '  edge [fontname="Helvetica", fontsize=9];']
    by_suite: dict[str, dict[str | None, list[str]]] = {}
    for n, d in sorted(g.nodes(data=True)):
        by_suite.setdefault(d["suite"], {}).setdefault(d.get("test"), []).append(n)
    for si, (suite, tests) in enumerate(by_suite.items()):
        out.append(f"  subgraph cluster_s{si} {{ label={_q('suite ' + suite)}; style=rounded; color=\"#6b7280\";")
        for ti, (test, nodes) in enumerate(sorted(tests.items(), key=lambda kv: (kv[0] is not None, kv[0] or ""))):
            indent = "    "
            if test is not None:
                out.append(f"    subgraph cluster_s{si}_t{ti} {{ label={_q('test ' + test)}; style=dashed;")
                indent = "      "
            for n in nodes:
                d = g.nodes[n]
                style = dict(NODE_STYLE[d["kind"]])
                if verdicts and n in verdicts:
                    style["fillcolor"] = VERDICT_FILL.get(verdicts[n], style["fillcolor"])
                out.append(f"{indent}{_q(n)} [label={_q(node_caption(d))}, {_attrs(style)}];")
            if test is not None:
                out.append("    }")
        out.append("  }")
    for u, v, d in sorted(g.edges(data=True), key=lambda e: (e[0], e[1], e[2]["kind"])):
        style = dict(EDGE_STYLE[d["kind"]])
        caption = edge_caption(d)
        style["label"] = f"{ARROW[d['kind']]} {caption}".strip() if d["kind"] not in ("observes", "checks") else ""
        if not style["label"]:
            del style["label"]
        out.append(f"  {_q(u)} -> {_q(v)} [{_attrs(style)}];")
    out.append("}")
    return "\n".join(out) + "\n"


def to_text(plan: Plan, verdicts: Mapping[str, str] | None = None) -> str:
    """The DAG drawn as an indented list in dependency order, each node with its incoming edges."""
    g = plan.graph
    order = {n: i for i, n in enumerate(nx.lexicographical_topological_sort(g))} if nx.is_directed_acyclic_graph(g) \
        else {n: i for i, n in enumerate(sorted(g.nodes))}
    lines: list[str] = [f"plan {plan.meta.get('source', '')}  ({g.number_of_nodes()} nodes, "
                        f"{g.number_of_edges()} edges)"]
    mark = {"passed": " [passed]", "failed": " [FAILED]", "skipped": " [skipped]", "error": " [ERROR]"}
    suites: list[str] = [s["name"] for s in plan.meta.get("suites", [])]
    for suite in suites:
        lines.append(f"suite {suite!r}")
        tests: list[str | None] = [None, *[t["name"] for t in plan.meta.get("tests", []) if t["suite"] == suite]]
        for test in tests:
            nodes = sorted((n for n, d in g.nodes(data=True) if d["suite"] == suite and d.get("test") == test),
                           key=lambda n: order[n])
            if test is not None:
                lines.append(f"  test {test!r}")
            pad = "    " if test is not None else "  "
            for n in nodes:
                d = g.nodes[n]
                verdict = mark.get((verdicts or {}).get(n, ""), "")
                caption = node_caption(d).replace(chr(10), "  ")
                lines.append(f"{pad}{GLYPH[d['kind']]} {d['kind']:<7} {caption}{verdict}")
                for u, _, e in sorted(g.in_edges(n, data=True), key=lambda x: (x[2]["kind"], x[0])):
                    if e["kind"] in ("then",):
                        continue
                    caption = edge_caption(e)
                    lines.append(f"{pad}    <- {ARROW[e['kind']]:<11} {g.nodes[u]['label']}"
                                 f"{' (' + caption + ')' if caption else ''}")
    legend = "  ".join(f"{GLYPH[k]} {k}" for k in GLYPH)
    lines.append(f"legend: {legend}")
    return "\n".join(lines) + "\n"
