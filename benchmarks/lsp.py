"""Language server latency: `crc lsp` driven over stdio by a real LSP client (pygls), in one run.

For files of about 300 and 30,000 lines (the realistic file of benchmarks/compile.py), prints medians of:

    change -> diagnostics   from sending a `didChange` to receiving the `publishDiagnostics` it causes (edits
                            alternate between breaking and fixing a name, so every change publishes something
                            new); this includes the server's 20 ms debounce
    compile in-process      `crc.lsp.analysis.analyze` on the same text in this process (compile, trace, index)
    hover                   a `hover` request on a `let` (its computed value) and its answer
    start-up                spawning `crc lsp` to the `initialize` answer

and the ratios change/compile and against the goals (300 lines: 100 ms; 30,000 lines: 1 s).

Usage: python benchmarks/lsp.py [--runs R] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compile import generate  # the compile benchmark's realistic file

GOALS = {300: 0.100, 30_000: 1.0}
LINES_PER_TEST = 34  # what generate() writes per test, roughly


def sized(lines: int) -> str:
    """A generated file of at most `lines` lines (as close as whole tests allow), with a `let` to hover on."""
    n = max(1, round(lines / LINES_PER_TEST))
    while True:
        text = 'let hovered = "{{ 6 * 7 }}"\n' + generate(n)
        if text.count("\n") <= lines or n == 1:
            return text
        n -= 1


async def measure(text: str, runs: int, work: Path) -> dict[str, float]:
    from lsprotocol import types as lsp
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("crc-bench", "0")
    published: asyncio.Queue[lsp.PublishDiagnosticsParams] = asyncio.Queue()

    @client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def on_diagnostics(params: lsp.PublishDiagnosticsParams) -> None:
        published.put_nowait(params)

    path = work / "bench.cr"
    path.write_text(text, encoding="utf-8")
    uri = path.resolve().as_uri()
    t0 = time.perf_counter()
    await client.start_io(sys.executable, "-m", "crc", "lsp")
    await client.initialize_async(lsp.InitializeParams(capabilities=lsp.ClientCapabilities()))
    startup = time.perf_counter() - t0
    client.initialized(lsp.InitializedParams())

    async def diagnostics_for(want_errors: bool) -> None:
        seen: list[str] = []  # what came instead, for the message if nothing matching comes
        while True:
            try:
                p = await asyncio.wait_for(published.get(), 300)
            except TimeoutError:
                raise SystemExit(f"no diagnostics {'with' if want_errors else 'without'} errors for {uri} in "
                                 f"300 s; published: {seen}") from None
            errors = [d for d in p.diagnostics if d.severity in (None, lsp.DiagnosticSeverity.Error)]
            if p.uri == uri and bool(errors) == want_errors:  # a warning (a lint) is not an error
                return
            seen.append(f"{p.uri} v{p.version}: {[d.message.splitlines()[0] for d in p.diagnostics]}")

    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        lsp.TextDocumentItem(uri=uri, language_id="cleanroom", version=1, text=text)))
    await diagnostics_for(False)
    broken = text.replace("needs cache, db", "needs cache, dbx", 1)
    assert broken != text, "the generated file changed: pick another edit"
    changes, hovers = [], []
    version = 1
    for i in range(runs * 2):
        version += 1
        new = broken if i % 2 == 0 else text
        t = time.perf_counter()
        client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
            [lsp.TextDocumentContentChangeWholeDocument(text=new)]))
        await diagnostics_for(new is broken)
        changes.append(time.perf_counter() - t)
        t = time.perf_counter()
        h = await client.text_document_hover_async(lsp.HoverParams(
            lsp.TextDocumentIdentifier(uri), lsp.Position(0, 5)))
        hovers.append(time.perf_counter() - t)
        assert h is not None and "42" in str(h.contents), h
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()

    from crc.lsp.analysis import analyze

    analyze(str(path), text)  # warm: imports, the parser's tables
    compiles = []
    for _ in range(runs):
        t = time.perf_counter()
        analyze(str(path), text)
        compiles.append(time.perf_counter() - t)
    return {"change": statistics.median(changes), "hover": statistics.median(hovers),
            "compile": statistics.median(compiles), "startup": startup}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="edits (and hovers) per size; the median is printed")
    ap.add_argument("--smoke", action="store_true", help="the small file only, one run: checks the benchmark works")
    args = ap.parse_args()
    sizes = [300] if args.smoke else [300, 30_000]
    runs = 1 if args.smoke else args.runs
    print(f"{'lines':>7} {'change->diagnostics':>20} {'compile in-process':>19} {'ratio':>6} {'goal':>7} "
          f"{'hover':>8} {'start-up':>9}")
    with tempfile.TemporaryDirectory() as d:
        for target in sizes:
            text = sized(target)
            r = asyncio.run(measure(text, runs, Path(d)))
            lines = text.count("\n")
            goal = GOALS[target]
            print(f"{lines:>7,} {r['change'] * 1000:>17.0f} ms {r['compile'] * 1000:>16.0f} ms "
                  f"{r['change'] / r['compile']:>5.2f}x {'met' if r['change'] <= goal else 'missed':>7} "
                  f"{r['hover'] * 1000:>5.1f} ms {r['startup'] * 1000:>6.0f} ms")
    print("ratio change/compile: the server's cost over compiling alone (debounce, protocol, publishing)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
