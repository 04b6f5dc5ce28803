"""`crc lsp`: the language server, over stdio (pygls).

Every feature reads one `Analysis` per open document (a compile with a trace and a name index), made on open
and, debounced, on change. A document is compiled with the editor's unsaved text of every open file it
imports, and an edit to a module re-checks the open files that import it.
"""

from __future__ import annotations

import asyncio
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from crc import __version__

from .analysis import Analysis, analyze

if TYPE_CHECKING:
    from crc.compiler.diagnostics import Diagnostic
    from crc.compiler.index import Symbol
    from crc.compiler.ir import Loc

DEBOUNCE = 0.02  # seconds of quiet after a change before the document is compiled again
_DID_YOU_MEAN = re.compile(r"did you mean `([^`]+)`\?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


class CrcServer(LanguageServer):
    """The server and what it knows: one analysis per open document, the diagnostics it last published."""

    def __init__(self) -> None:
        super().__init__("crc", __version__, text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental)
        self.debounce = DEBOUNCE
        self.analyses: dict[str, Analysis] = {}  # real path -> its latest analysis
        self.published: set[str] = set()  # real paths that have diagnostics shown
        self.pending: dict[str, asyncio.Task[None]] = {}  # checks waiting for the debounce time
        self.running: set[str] = set()  # documents being checked
        self.dirty: set[str] = set()  # documents edited while being checked
        # One compile at a time, off the event loop: requests are answered from the last analysis meanwhile.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crc-compile")

    # ------------------------------------------------------------ documents
    def open_paths(self) -> dict[str, str]:
        """Real path -> URI of every open `.cr` document."""
        out: dict[str, str] = {}
        for uri in list(self.workspace.text_documents):
            path = to_fs_path(uri)
            if path is not None:
                out[os.path.realpath(path)] = uri
        return out

    def schedule(self, uri: str, delay: float | None = None) -> None:
        """Check `uri` (and the open files importing it) once edits pause for the debounce time; edits made
        while it is being checked are taken together in one check right after."""
        path = to_fs_path(uri)
        if path is None:
            return
        real = os.path.realpath(path)
        if real in self.running:
            self.dirty.add(real)
            return
        old = self.pending.pop(real, None)
        if old is not None:
            old.cancel()
        # A bare task by necessity: pygls owns the event loop and calls each handler on its own, so no task
        # group spans the server's life. `pending` owns it: a newer edit cancels it, and it removes itself.
        self.pending[real] = asyncio.ensure_future(self._check_later(real, self.debounce if delay is None else delay))

    async def _check_later(self, real: str, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        self.pending.pop(real, None)
        self.running.add(real)
        try:
            todo = [real] + sorted(p for p, a in self.analyses.items() if p != real and real in a.closure)
            for path in todo:
                await self.check(path)
        finally:
            self.running.discard(real)
        if real in self.dirty:
            self.dirty.discard(real)
            uri = self.open_paths().get(real)
            if uri is not None:
                self.schedule(uri, delay=0)

    async def check(self, real: str) -> None:
        """Compile the open document at `real` and publish the diagnostics of every file it involves."""
        uris = self.open_paths()
        uri = uris.get(real)
        if uri is None:
            return
        doc = self.workspace.get_text_document(uri)
        text, version = doc.source, doc.version
        overlay = {p: self.workspace.get_text_document(u).source for p, u in uris.items() if p != real}
        loop = asyncio.get_running_loop()
        # pygls's loop is plain asyncio: its own single-worker executor keeps compiles one at a time, in order.
        result = await loop.run_in_executor(self.executor, analyze, real, text, version, overlay)
        now = self.workspace.get_text_document(uri)
        if now.version != version:  # edited meanwhile: it is checked again right after
            self.dirty.add(real)
            return
        previous = self.analyses.get(real)
        if previous is not None and not result.parsed:
            # Mid-edit the file often does not parse: names are then looked up in the last version that did.
            result.names_from = previous if previous.parsed else previous.names_from
        self.analyses[real] = result
        self.publish()
        await loop.run_in_executor(self.executor, lambda: result.index)  # ready before hover asks

    def publish(self) -> None:
        """Publish, for every file an analysis involves, the union of the diagnostics found in it; clear the
        files that had some and are no longer involved."""
        merged: dict[str, dict[tuple[Any, ...], lsp.Diagnostic]] = {}
        for a in self.analyses.values():
            for path in a.closure:  # every file involved is published, so fixed ones are cleared
                merged.setdefault(path, {})
            for path, diags in a.diagnostics.items():
                bucket = merged.setdefault(path, {})
                for d in diags:
                    out = to_lsp_diagnostic(d, a)
                    key = (out.range.start.line, out.range.start.character, out.message)
                    bucket.setdefault(key, out)
        for path in self.published - set(merged):
            merged[path] = {}
        for path, bucket in merged.items():
            uri = from_fs_path(path) if not path.startswith("<") else None
            if uri is None:
                continue
            items = sorted(bucket.values(), key=lambda d: (d.range.start.line, d.range.start.character))
            self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=items))
        self.published = {p for p, b in merged.items() if b}

    def analysis_of(self, uri: str) -> Analysis | None:
        path = to_fs_path(uri)
        return self.analyses.get(os.path.realpath(path)) if path is not None else None


server = CrcServer()


# ---------------------------------------------------------------- positions
def _units(text: str) -> int:
    """UTF-16 code units of `text` (LSP's default column unit)."""
    return len(text.encode("utf-16-le")) // 2


def _line_of(text: str, line: int) -> str:
    lines = text.split("\n")
    return lines[line - 1] if 0 < line <= len(lines) else ""


def to_range(loc: Loc | None, text: str) -> lsp.Range:
    """A compiler location (1-based, columns in characters, end exclusive) as an LSP range."""
    if loc is None:
        return lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))
    start = _line_of(text, loc.line)
    end = _line_of(text, loc.end_line)
    return lsp.Range(lsp.Position(loc.line - 1, _units(start[: loc.col - 1])),
                     lsp.Position(loc.end_line - 1, _units(end[: max(loc.end_col - 1, 0)])))


def from_position(pos: lsp.Position, text: str) -> tuple[int, int]:
    """An LSP position as the compiler's (line, column): 1-based, the column in characters."""
    line = _line_of(text, pos.line + 1)
    units = 0
    for i, ch in enumerate(line):
        if units >= pos.character:
            return pos.line + 1, i + 1
        units += 2 if ord(ch) > 0xFFFF else 1
    return pos.line + 1, len(line) + 1


def location(loc: Loc, a: Analysis) -> lsp.Location | None:
    real = a.real(loc.file)
    text = a.sources.get(loc.file)
    if text is None:
        return None
    return lsp.Location(uri=from_fs_path(real) or real, range=to_range(loc, text))


# ---------------------------------------------------------------- diagnostics
def to_lsp_diagnostic(d: Diagnostic, a: Analysis) -> lsp.Diagnostic:
    """The compiler's diagnostic as LSP's: notes and help as related information, did-you-mean kept as data
    for the quick fix."""
    text = a.sources.get(d.loc.file, "") if d.loc is not None else ""
    rng = to_range(d.loc, text)
    related: list[lsp.DiagnosticRelatedInformation] = []
    for note, loc in d.notes:
        where = location(loc, a)
        if where is not None:
            related.append(lsp.DiagnosticRelatedInformation(where, note))
    if d.help and d.loc is not None:
        where = location(d.loc, a)
        if where is not None:
            related.append(lsp.DiagnosticRelatedInformation(where, f"help: {d.help}"))
    m = _DID_YOU_MEAN.search(d.help or "")
    message = d.message + (f"\nhelp: {d.help}" if d.help else "")
    return lsp.Diagnostic(
        range=rng, message=message, source="crc", code=d.code,
        severity=lsp.DiagnosticSeverity.Error if d.severity == "error" else lsp.DiagnosticSeverity.Warning,
        related_information=related or None, data={"suggestion": m.group(1)} if m else None)


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
async def did_open(ls: CrcServer, params: lsp.DidOpenTextDocumentParams) -> None:
    ls.schedule(params.text_document.uri, delay=0)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
async def did_change(ls: CrcServer, params: lsp.DidChangeTextDocumentParams) -> None:
    ls.schedule(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
async def did_save(ls: CrcServer, params: lsp.DidSaveTextDocumentParams) -> None:
    ls.schedule(params.text_document.uri, delay=0)


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
async def did_close(ls: CrcServer, params: lsp.DidCloseTextDocumentParams) -> None:
    path = to_fs_path(params.text_document.uri)
    if path is None:
        return
    real = os.path.realpath(path)
    ls.analyses.pop(real, None)
    task = ls.pending.pop(real, None)
    if task is not None:
        task.cancel()
    ls.publish()  # what only this document's compile found goes away with it
    for other, a in list(ls.analyses.items()):  # importers read the file from disk again
        if real in a.closure:
            ls.schedule(ls.open_paths().get(other, ""), delay=0)


@server.feature(lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES)
async def did_change_watched_files(ls: CrcServer, params: lsp.DidChangeWatchedFilesParams) -> None:
    """A `.cr` file changed on disk (saved elsewhere, checked out): re-check the open files importing it."""
    changed = {os.path.realpath(p) for c in params.changes if (p := to_fs_path(c.uri)) is not None}
    uris = ls.open_paths()
    for path, a in list(ls.analyses.items()):
        if path in uris and (a.closure - {path}) & changed:
            ls.schedule(uris[path], delay=0)


@server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION,
                lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix]))
def code_action(ls: CrcServer, params: lsp.CodeActionParams) -> list[lsp.CodeAction] | None:
    """Did-you-mean as a quick fix: the misspelt word in the diagnostic's range becomes the suggestion; and a
    lint warning can be allowed on its line (`# crc: allow CODE`)."""
    import difflib

    doc = ls.workspace.get_text_document(params.text_document.uri)
    actions: list[lsp.CodeAction] = []
    allows = [a for d in params.context.diagnostics
              if (a := _allow_action(ls, params.text_document.uri, doc.source, d)) is not None]
    for diag in params.context.diagnostics:
        data = diag.data if isinstance(diag.data, dict) else {}
        suggestion = data.get("suggestion")
        if not suggestion:
            continue
        r = diag.range
        if r.start.line != r.end.line:
            continue
        line = doc.lines[r.start.line] if r.start.line < len(doc.lines) else ""
        (_, c0), (_, c1) = from_position(r.start, doc.source), from_position(r.end, doc.source)
        words = [m for m in _WORD.finditer(line) if m.start() >= c0 - 1 and m.end() <= c1 - 1]
        if not words:
            continue
        best = max(words, key=lambda m: difflib.SequenceMatcher(None, m.group(0), suggestion).ratio())
        start = lsp.Position(r.start.line, _units(line[: best.start()]))
        end = lsp.Position(r.start.line, _units(line[: best.end()]))
        edit = lsp.TextEdit(lsp.Range(start, end), suggestion)
        actions.append(lsp.CodeAction(
            title=f"Change `{best.group(0)}` to `{suggestion}`", kind=lsp.CodeActionKind.QuickFix,
            diagnostics=[diag], is_preferred=True,
            edit=lsp.WorkspaceEdit(changes={params.text_document.uri: [edit]})))
    return actions + allows or None


def _allow_action(ls: CrcServer, uri: str, text: str, diag: lsp.Diagnostic) -> lsp.CodeAction | None:
    """`# crc: allow CODE` written at the end of a lint warning's line (from the comments of the analysis of
    this very text: none when it is stale)."""
    from crc.compiler.lints import ALLOWABLE, allow_edit

    a = ls.analysis_of(uri)
    code = diag.code
    prog = a.trace.program if a is not None and a.trace is not None else None
    if (not isinstance(code, str) or code not in ALLOWABLE or diag.severity != lsp.DiagnosticSeverity.Warning
            or a is None or a.text != text or prog is None or prog.root is None):
        return None
    n = diag.range.start.line + 1
    line = _line_of(text, n).rstrip("\r")
    comment = next((c for c in prog.root.comments if c.loc.line == n), None)
    start, end, new = allow_edit(line, comment, code)
    edit = lsp.TextEdit(lsp.Range(lsp.Position(n - 1, _units(line[:start])), lsp.Position(n - 1, _units(line[:end]))),
                        new)
    return lsp.CodeAction(title=f"Allow `{code}` on this line", kind=lsp.CodeActionKind.QuickFix,
                          diagnostics=[diag], edit=lsp.WorkspaceEdit(changes={uri: [edit]}))


# ---------------------------------------------------------------- navigation
def symbol_at(ls: CrcServer, uri: str, pos: lsp.Position) -> tuple[Analysis, Symbol, bool] | None:
    a = ls.analysis_of(uri)
    if a is None or a.index is None:
        return None
    line, col = from_position(pos, a.text)
    shown = a.shown(a.path) or a.path
    hit = a.index.at(shown, line, col)
    return (a, *hit) if hit is not None else None


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
def definition(ls: CrcServer, params: lsp.DefinitionParams) -> list[lsp.Location] | None:
    """Where the name under the cursor is declared; on an import, the module it loads."""
    hit = symbol_at(ls, params.text_document.uri, params.position)
    if hit is None:
        return None
    a, sym, _ = hit
    if sym.kind == "import":
        if sym.target is None:
            return None
        real = a.real(sym.target)
        zero = lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))
        return [lsp.Location(uri=from_fs_path(real) or real, range=zero)]
    where = location(sym.loc, a)
    return [where] if where is not None else None


@server.feature(lsp.TEXT_DOCUMENT_REFERENCES)
def references(ls: CrcServer, params: lsp.ReferenceParams) -> list[lsp.Location] | None:
    """Every use of the name under the cursor, in this file and its imports, and in the open files that
    import the file declaring it."""
    hit = symbol_at(ls, params.text_document.uri, params.position)
    if hit is None:
        return None
    a, sym, _ = hit
    decl_real = a.real(sym.loc.file)
    out: dict[tuple[str, int, int], lsp.Location] = {}
    for other in [a, *(x for x in ls.analyses.values() if x is not a and decl_real in x.closure)]:
        if other.index is None:
            continue
        twin = next((s for s in other.index.symbols if s.kind == sym.kind and s.loc.line == sym.loc.line
                     and s.loc.col == sym.loc.col and other.real(s.loc.file) == decl_real), None)
        if twin is None:
            continue
        locs = other.index.uses_of(twin) + ([twin.loc] if params.context.include_declaration else [])
        for loc in locs:
            where = location(loc, other)
            if where is not None:
                out[(where.uri, where.range.start.line, where.range.start.character)] = where
    return [out[k] for k in sorted(out)]


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def document_symbols(ls: CrcServer, params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol] | None:
    """Suites, services, tests, steps, spans, captures, templates, parameters, lets and imports, nested."""
    a = ls.analysis_of(params.text_document.uri)
    if a is None or a.index is None:
        return None
    from .describe import symbol_detail

    shown = a.shown(a.path) or a.path
    kinds = {"suite": lsp.SymbolKind.Module, "test": lsp.SymbolKind.Method, "service": lsp.SymbolKind.Class,
             "template": lsp.SymbolKind.Interface, "param": lsp.SymbolKind.TypeParameter,
             "let": lsp.SymbolKind.Constant, "step": lsp.SymbolKind.Function, "span": lsp.SymbolKind.Event,
             "capture": lsp.SymbolKind.Variable, "import": lsp.SymbolKind.Package}
    made: dict[int, lsp.DocumentSymbol] = {}
    children: dict[int, list[lsp.DocumentSymbol]] = {}
    roots: list[lsp.DocumentSymbol] = []
    for sym in a.index.declared_in(shown):
        ds = lsp.DocumentSymbol(name=sym.name, kind=kinds[sym.kind], range=to_range(sym.decl, a.text),
                                selection_range=to_range(sym.loc, a.text), detail=symbol_detail(sym),
                                children=children.setdefault(id(sym), []))
        made[id(sym)] = ds
        if sym.owner is not None and id(sym.owner) in made:
            children[id(sym.owner)].append(ds)
        else:
            roots.append(ds)
    return roots


@server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
def formatting(ls: CrcServer, params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit] | None:
    """The whole document in `crc fmt`'s layout; nothing when it does not parse (the diagnostics say why)."""
    from crc.compiler.diagnostics import CompileError
    from crc.compiler.format import FormatterBug, format_source

    doc = ls.workspace.get_text_document(params.text_document.uri)
    try:
        out = format_source(doc.source, to_fs_path(doc.uri) or doc.uri)
    except (CompileError, FormatterBug):
        return None
    if out == doc.source:
        return []
    lines = doc.source.split("\n")
    end = lsp.Position(len(lines) - 1, _units(lines[-1]))
    return [lsp.TextEdit(lsp.Range(lsp.Position(0, 0), end), out)]


# Semantic tokens carry only what the TextMate grammar cannot know: which words are names, and of what. A
# keyword used as a name (`service log`, then `exec log [...]`) is coloured as the name it is.
TOKEN_TYPES = ["class", "function", "variable", "parameter", "event", "interface", "namespace", "property"]
TOKEN_MODIFIERS = ["declaration"]
_TOKEN_OF_KIND = {"service": "class", "step": "function", "let": "variable", "capture": "property",
                  "param": "parameter", "span": "event", "template": "interface", "suite": "namespace",
                  "test": "namespace"}


@server.feature(lsp.TEXT_DOCUMENT_SEMANTIC_TOKENS_FULL,
                lsp.SemanticTokensLegend(token_types=TOKEN_TYPES, token_modifiers=TOKEN_MODIFIERS))
def semantic_tokens(ls: CrcServer, params: lsp.SemanticTokensParams) -> lsp.SemanticTokens:
    """Every declared or used name of the document, by what it names (strings and imports left out)."""
    a = ls.analysis_of(params.text_document.uri)
    data: list[int] = []
    if a is None or a.index is None or not a.parsed:  # mid-edit: the TextMate colours stand alone meanwhile
        return lsp.SemanticTokens(data=data)
    shown = a.shown(a.path) or a.path
    lines = a.text.split("\n")
    rows = sorted({(loc.line, loc.col, loc.end_col, sym.kind, is_decl)
                   for loc, sym, is_decl in [*((s.loc, s, True) for s in a.index.symbols),
                                             *((u.loc, u.symbol, False) for u in a.index.uses)]
                   if loc.file == shown and loc.line == loc.end_line and sym.kind in _TOKEN_OF_KIND
                   and lines[loc.line - 1][loc.col - 1: loc.col] != '"'})
    prev_line, prev_char = 0, 0
    for line, col, end_col, kind, is_decl in rows:
        text = lines[line - 1]
        start, length = _units(text[: col - 1]), _units(text[col - 1: end_col - 1])
        delta_line = line - 1 - prev_line
        data += [delta_line, start - prev_char if delta_line == 0 else start, length,
                 TOKEN_TYPES.index(_TOKEN_OF_KIND[kind]), 1 if is_decl else 0]
        prev_line, prev_char = line - 1, start
    return lsp.SemanticTokens(data=data)


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def hover(ls: CrcServer, params: lsp.HoverParams) -> lsp.Hover | None:
    """Values computed by the compile, services after their template, selectors in words, keyword docs."""
    from .describe import hover_text

    a = ls.analysis_of(params.text_document.uri)
    if a is None:
        return None
    line, col = from_position(params.position, a.text)
    found = hover_text(a, line, col)
    if found is None:
        return None
    text, loc = found
    return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text),
                     range=to_range(loc, a.text) if loc is not None else None)


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION,
                lsp.CompletionOptions(trigger_characters=[".", " ", "{", "\"", "("]))
def completion(ls: CrcServer, params: lsp.CompletionParams) -> lsp.CompletionList | None:
    """Keywords the parser accepts here, names in scope, template parameters, Faker providers, span names and
    attribute keys from the last recording of the file."""
    from .complete import complete

    doc = ls.workspace.get_text_document(params.text_document.uri)
    line, col = from_position(params.position, doc.source)
    path = to_fs_path(doc.uri)
    a = ls.analysis_of(doc.uri)
    items = complete(doc.source, line, col, a, os.path.realpath(path) if path else None)
    kinds = {"keyword": lsp.CompletionItemKind.Keyword, "service": lsp.CompletionItemKind.Class,
             "template": lsp.CompletionItemKind.Interface, "param": lsp.CompletionItemKind.Property,
             "let": lsp.CompletionItemKind.Constant, "step": lsp.CompletionItemKind.Function,
             "span": lsp.CompletionItemKind.Event, "capture": lsp.CompletionItemKind.Variable,
             "constant": lsp.CompletionItemKind.EnumMember, "function": lsp.CompletionItemKind.Function,
             "provider": lsp.CompletionItemKind.Method, "recorded": lsp.CompletionItemKind.Text}
    return lsp.CompletionList(is_incomplete=False, items=[
        lsp.CompletionItem(label=i.label, kind=kinds.get(i.kind, lsp.CompletionItemKind.Text), detail=i.detail,
                           insert_text=i.insert) for i in items])


def main() -> int:
    """Serve over stdio until the client says exit."""
    import gc

    # `crc` turns the cyclic collector off for its short-lived commands; a server lives long, so it is back on,
    # with what start-up made frozen out of its way. Compiles pause it themselves.
    gc.enable()
    gc.freeze()
    server.start_io()
    return 0
