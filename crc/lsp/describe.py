"""Hover texts: what the compile computed for the name or string under the cursor, a service after its
template, a span selector in words, a keyword's documentation."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crc.compiler.values import probe_text, value_text

from .analysis import Analysis
from .complete import in_code

if TYPE_CHECKING:
    from crc.compiler import ir
    from crc.compiler.index import Symbol

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def hover_text(a: Analysis, line: int, col: int) -> tuple[str, ir.Loc | None] | None:
    """Markdown for the position, and the range it is about."""
    shown = a.shown(a.path) or a.path
    if a.index is not None:
        hit = a.index.at(shown, line, col)
        if hit is not None:
            sym, _ = hit
            loc = next((u.loc for u in a.index.uses if u.symbol is sym and _inside(u.loc, line, col)), sym.loc)
            return describe_symbol(sym, a), loc
    if a.trace is not None:
        for loc, values in a.trace.values.items():
            if loc.file == shown and _inside(loc, line, col) and isinstance(values[0].value, str) and \
                    loc.line == loc.end_line and loc.end_col - loc.col > 1 and _is_string(a.text, loc):
                return "**rendered**\n\n" + _values(values), loc
    word = _word_at(a.text, line, col)
    if word is not None and in_code(_line(a.text, line)[: word[1].col - 1]):
        from crc.grammar.keywords import ALL_KEYWORDS

        from .keyword_docs import keyword_doc

        if word[0] in ALL_KEYWORDS:
            doc = keyword_doc(word[0])
            if doc is not None:
                return f"keyword `{word[0]}`\n\n{doc}", word[1]
    return None


def describe_symbol(sym: Symbol, a: Analysis) -> str:
    from crc.compiler import ir

    head = f"({sym.kind}) **{sym.name}**" + (f" — {sym.container}" if sym.container else "")
    values = a.trace.values.get(sym.loc, []) if a.trace is not None else []
    node = sym.node
    if sym.kind == "let":
        body = _values(values) if values else "_not evaluated: the file has errors before it_"
        return f"{head}\n\n```cr\nlet {sym.name} = {_source(a, node.value.loc)}\n```\n\n{body}"
    if sym.kind == "param":
        default = f" = {_source(a, node.default.loc)}" if node.default is not None else " (required)"
        body = _values(values) if values else "_no service in this file uses the template_"
        return f"{head}\n\n```cr\n{sym.name}{default}\n```\n\nbound to:\n\n{body}"
    if sym.kind == "service":
        if not values:
            return f"{head}\n\n_not compiled: the file has errors before it_"
        return f"{head}\n\n" + "\n\n".join(f"```cr\n{service_text(sym.name, r.value)}\n```"
                                           + (f"\n\nfrom template `{r.value['template']}`" if r.value.get(
                                               "template") else "") for r in values[:3])
    if sym.kind == "span":
        assert isinstance(node, ir.SpanDecl)
        words = describe_match(node.match, lambda loc: _source(a, loc))
        return f"{head}\n\n{words}; at least one such span must arrive, unless a `count` expectation on it " \
               "says otherwise."
    if sym.kind == "template":
        params = ", ".join(p.name.name + (f" = {_source(a, p.default.loc)}" if p.default else "")
                           for p in node.params)
        return f"{head}\n\n```cr\ntemplate {sym.name}({params})\n```\n\ndeclared in `{sym.loc.file}`"
    if sym.kind == "import":
        return f"{head}\n\nloads `{a.real(sym.target) if sym.target else '(not found)'}`"
    if sym.kind == "capture":
        assert isinstance(node, ir.Capture)
        how = f"the regex `/{node.regex.pattern}/`" if node.regex else f"the JSON path `{node.path.value}`" \
            if node.path else "?"
        return f"{head}\n\nread from `{node.step.name}.{node.field.name}` by {how} once that step ran"
    return f"{head}\n\n```cr\n{_source(a, sym.decl).split(chr(10))[0]}\n```"


def symbol_detail(sym: Symbol) -> str:
    """A short description for an outline."""
    return {"suite": "suite", "test": "test", "service": "service", "template": "template", "param": "parameter",
            "let": "let", "step": "step", "span": "span selector", "capture": "capture",
            "import": "import"}[sym.kind]


def describe_match(m: ir.SpanMatch, source: Callable[[ir.Loc], str]) -> str:
    """A span selector in words; `source` gives the text written at a location (attribute values as written)."""
    from crc.compiler import ir

    parts: list[str] = []
    if isinstance(m.name, ir.Str):
        glob = any(ch in m.name.value for ch in "*?[")
        parts.append(f'spans whose name matches the glob "{m.name.value}"' if glob else
                     f'spans named exactly "{m.name.value}"')
    elif isinstance(m.name, ir.Regex):
        parts.append(f"spans whose name contains a match of `/{m.name.pattern}/{m.name.flags}`")
    else:
        parts.append("spans of any name")
    if m.service is not None:
        parts.append(f'emitted by service "{m.service.value}"')
    if m.kind is not None:
        parts.append(f"of kind {m.kind.name}")
    if m.status is not None:
        parts.append(f"with status {m.status.name}")
    for attr in m.attrs:
        key = f'"{attr.key.value}"'
        if attr.op == "exists":
            parts.append(f"that have attribute {key}")
        elif attr.op == "missing":
            parts.append(f"that lack attribute {key}")
        else:
            val = source(attr.value.loc) if attr.value is not None else ""
            parts.append(f"whose attribute {key} {attr.op} {val}")
    if m.parent is not None:
        parts.append(f"whose parent is one of the `{m.parent.name}` spans")
    if m.ancestor is not None:
        parts.append(f"with one of the `{m.ancestor.name}` spans up their parent chain")
    text = ", ".join(parts)
    return text[0].upper() + text[1:]


def service_text(name: str, node: dict[str, Any]) -> str:
    """A compiled service node written back as a `.cr` service body."""
    lines = [f"service {name} {{"]
    if node.get("image") is not None:
        lines.append(f"  image {value_text(node['image'])}")
    if node.get("command") is not None:
        lines.append(f"  command {value_text(node['command'])}")
    if node.get("workdir") is not None:
        lines.append(f"  workdir {value_text(node['workdir'])}")
    if node.get("env"):
        lines.append("  env { " + ", ".join(f"{k}: {value_text(v)}" for k, v in node["env"].items()) + " }")
    for port in node.get("ports") or []:
        lines.append(f"  port {port['container']}" + (f" -> {port['host']}" if port["host"] else ""))
    for vol in node.get("volumes") or []:
        lines.append(f"  volume {value_text(vol['source'])} -> {value_text(vol['target'])}"
                     + (" ro" if vol["read_only"] else ""))
    for p in node.get("probes") or []:
        lines.append(f"  ready {probe_text(p)} within {p['within']:g}s")
    lines.append("}")
    return "\n".join(lines)


def _values(values: list[Any]) -> str:
    """Values computed per suite or service: one line each, duplicates shown once."""
    rows: dict[str, list[str]] = {}
    for r in values:
        rows.setdefault(value_text(r.value), []).append(r.where)
    return "\n".join(f"- `{v}`" + (f" — {', '.join(dict.fromkeys(w))}" if any(w) else "")
                     for v, w in list(rows.items())[:8])


def _source(a: Analysis, loc: ir.Loc) -> str:
    """The source text of a location (its first line when it spans several)."""
    text = a.sources.get(loc.file, "")
    lines = text.split("\n")
    if not 0 < loc.line <= len(lines):
        return ""
    if loc.end_line == loc.line:
        return lines[loc.line - 1][loc.col - 1: loc.end_col - 1]
    return "\n".join([lines[loc.line - 1][loc.col - 1:], *lines[loc.line: loc.end_line]])


def _line(text: str, line: int) -> str:
    lines = text.split("\n")
    return lines[line - 1] if 0 < line <= len(lines) else ""


def _is_string(text: str, loc: ir.Loc) -> bool:
    lines = text.split("\n")
    return 0 < loc.line <= len(lines) and lines[loc.line - 1][loc.col - 1: loc.col] == '"'


def _inside(loc: ir.Loc, line: int, col: int) -> bool:
    return (loc.line, loc.col) <= (line, col) <= (loc.end_line, loc.end_col)


def _word_at(text: str, line: int, col: int) -> tuple[str, ir.Loc] | None:
    from crc.compiler import ir

    lines = text.split("\n")
    if not 0 < line <= len(lines):
        return None
    for m in _WORD.finditer(lines[line - 1]):
        if m.start() + 1 <= col <= m.end() + 1:
            return m.group(0), ir.Loc("", line, m.start() + 1, line, m.end() + 1)
    return None
