"""`crc lsp` end to end: a real LSP client (pytest-lsp) talks to `crc lsp` over stdio."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import pytest_lsp
from conftest import crc_command
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEADLINE = 60.0  # seconds; generous: the machine is shared

HELLO = '''import "std/redis"
let greeting = "hi"

suite "shop" {
  seed 42
  let customer = "{{ fake.name() }}"
  service cache = redis(port = 6380)
  service api {
    image "crc/demo:dev"
    env { WHO: customer, ID: "{{ greeting }}-{{ uuid() }}" }
    needs cache
  }

  test "order" {
    step order = exec api ["echo", customer]
    capture id = order.stdout ~ /(\\d+)/
    step again after order = exec api ["echo", "{{ id }}"]
    span post = "GET /orders" { service "api" kind server }
    span set = "redis SET" { parent post attr "db.system" == "redis" }
    expect order.exit == 0
    expect post before set
  }
}
'''


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[*crc_command(), "lsp"]), scope="module")
async def client(lsp_client: LanguageClient) -> Any:
    await lsp_client.initialize_session(lsp.InitializeParams(
        capabilities=pytest_lsp.client_capabilities("visual-studio-code")))
    yield
    await lsp_client.shutdown_session()


def uri_of(path: Path) -> str:
    return path.resolve().as_uri()


async def until(client: LanguageClient, check: Callable[[], Any]) -> Any:
    """Wait for a notification from the server until `check()` is truthy; returns its value."""
    end = time.monotonic() + DEADLINE
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out; diagnostics so far: {client.diagnostics}")
        try:
            await asyncio.wait_for(client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS), 1.0)
        except TimeoutError:
            pass


def cleared(client: LanguageClient, path: Path) -> bool:
    """Diagnostics were published for `path`, and there are none."""
    got = client.diagnostics.get(uri_of(path))
    return got is not None and len(got) == 0


async def open_doc(client: LanguageClient, path: Path, text: str | None = None) -> None:
    if text is None:
        text = path.read_text(encoding="utf-8")
    client.diagnostics.pop(uri_of(path), None)
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        lsp.TextDocumentItem(uri=uri_of(path), language_id="cleanroom", version=1, text=text)))
    await until(client, lambda: uri_of(path) in client.diagnostics)


def change(client: LanguageClient, path: Path, version: int, text: str) -> None:
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(uri=uri_of(path), version=version),
        [lsp.TextDocumentContentChangeWholeDocument(text=text)]))


def pos_of(text: str, needle: str, offset: int = 0, nth: int = 0) -> lsp.Position:
    """The LSP position of the `nth` occurrence of `needle` in `text`, plus `offset` characters."""
    i = -1
    for _ in range(nth + 1):
        i = text.index(needle, i + 1)
    i += offset
    line = text.count("\n", 0, i)
    return lsp.Position(line, i - (text.rfind("\n", 0, i) + 1))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lsp")


# ---------------------------------------------------------------- diagnostics
async def test_clean_file_has_no_diagnostics(client: LanguageClient, work: Path) -> None:
    p = work / "hello.cr"
    p.write_text(HELLO, encoding="utf-8")
    await open_doc(client, p)
    assert cleared(client, p)


async def test_errors_on_change_with_range_severity_help_and_quick_fix(client: LanguageClient, work: Path) -> None:
    p = work / "typo.cr"
    p.write_text(HELLO, encoding="utf-8")
    await open_doc(client, p)
    bad = HELLO.replace("needs cache", "needs cahce")
    change(client, p, 2, bad)
    diags = await until(client, lambda: client.diagnostics.get(uri_of(p)))
    assert len(diags) == 1
    d = diags[0]
    assert d.message.startswith("unknown service `cahce`")
    assert d.severity == lsp.DiagnosticSeverity.Error
    start = pos_of(bad, "cahce")
    assert (d.range.start, d.range.end) == (start, lsp.Position(start.line, start.character + 5))
    assert d.related_information is not None
    assert any(r.message == "help: did you mean `cache`?" for r in d.related_information)

    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        lsp.TextDocumentIdentifier(uri_of(p)), d.range, lsp.CodeActionContext(diagnostics=[d])))
    assert actions is not None and len(actions) == 1
    action = actions[0]
    assert isinstance(action, lsp.CodeAction) and action.edit is not None and action.edit.changes is not None
    (edit,) = action.edit.changes[uri_of(p)]
    assert edit.new_text == "cache" and edit.range == d.range

    change(client, p, 3, HELLO)  # fixed: the diagnostics are cleared
    await until(client, lambda: cleared(client, p))


async def test_syntax_errors_mid_edit_then_recovered(client: LanguageClient, work: Path) -> None:
    p = work / "typing.cr"
    p.write_text(HELLO, encoding="utf-8")
    await open_doc(client, p)
    # Typing a new step: the statement is half-written, and a keyword is misspelt further down.
    half = HELLO.replace('    expect order.exit == 0\n', '    step x = exec\n    expect order.exit == 0\n')
    half = half.replace("  service api {", "  servce api {")
    change(client, p, 2, half)
    diags = await until(client, lambda: client.diagnostics.get(uri_of(p)))
    got = sorted((d.range.start.line, d.message.split("\n")[0]) for d in diags)
    assert got[0][0] == pos_of(half, "servce").line
    assert got[0][1].startswith("unexpected `servce`, expected ") and "`service`" in got[0][1]
    # The half-written step is reported where the parser sees it go wrong: `expect` reads as the service name
    # of `exec`, so the next word is where a command was expected.
    assert got[1] == (pos_of(half, "step x").line + 1, "unexpected `order`, expected `[`, `sh` or a string")
    assert any("did you mean `service`?" in d.message for d in diags)
    keyword_fix = next(d for d in diags if "servce" in d.message)
    assert keyword_fix.data == {"suggestion": "service"}
    change(client, p, 3, HELLO)
    await until(client, lambda: cleared(client, p))


async def test_warning_severity(client: LanguageClient, work: Path) -> None:
    p = work / "warn.cr"
    text = 'suite "empty" {\n}\n'
    p.write_text(text, encoding="utf-8")
    await open_doc(client, p)
    diags = client.diagnostics[uri_of(p)]
    assert [(d.severity, d.message) for d in diags] == [
        (lsp.DiagnosticSeverity.Warning, 'suite "empty" has no test')]


async def test_a_lint_is_a_warning_with_its_code(client: LanguageClient, work: Path) -> None:
    p = work / "lint.cr"
    text = HELLO.replace('WHO: customer,', 'WHO: customer, R: "redis://cahce:6379",')
    p.write_text(text, encoding="utf-8")
    await open_doc(client, p)
    diags = client.diagnostics[uri_of(p)]
    assert [(d.severity, d.code, d.message, d.range.start) for d in diags] == [
        (lsp.DiagnosticSeverity.Warning, "host-near-miss",
         "`cahce` is not a service of this suite\nhelp: did you mean `cache`?", pos_of(text, '"redis://'))]
    # The quick fix changes the misspelt host only, not the whole string.
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        lsp.TextDocumentIdentifier(uri_of(p)), diags[0].range, lsp.CodeActionContext(diagnostics=diags)))
    assert actions is not None and len(actions) == 2 and isinstance(actions[0], lsp.CodeAction)
    assert actions[0].edit is not None and actions[0].edit.changes is not None
    (edit,) = actions[0].edit.changes[uri_of(p)]
    start = pos_of(text, "cahce")
    assert (edit.new_text, edit.range) == ("cache", lsp.Range(start, lsp.Position(start.line, start.character + 5)))
    # or the lint is allowed on its line: the comment goes at the line's end
    assert isinstance(actions[1], lsp.CodeAction) and actions[1].title == "Allow `host-near-miss` on this line"
    assert actions[1].edit is not None and actions[1].edit.changes is not None
    (edit,) = actions[1].edit.changes[uri_of(p)]
    end = pos_of(text, "}\n    needs cache", 1)
    assert (edit.new_text, edit.range) == ("  # crc: allow host-near-miss", lsp.Range(end, end))


async def test_allow_comments_and_the_projects_ignore_silence_lints(client: LanguageClient, work: Path) -> None:
    project = work / "allowing"  # its crc.toml is found from the document's directory
    project.mkdir()
    p = project / "allow.cr"
    near = 'WHO: customer, R: "redis://cahce:6379" }'
    text = HELLO.replace('WHO: customer, ID: "{{ greeting }}-{{ uuid() }}" }', near + "  # crc: allow host-near-miss")
    text = text.replace('kind server }', 'kind server }  # crc: allow probe-prot')
    p.write_text(text, encoding="utf-8")
    await open_doc(client, p)
    assert [(d.code, d.message, d.range.start) for d in client.diagnostics[uri_of(p)]] == [
        ("unknown-lint", "`probe-prot` is not a lint code\nhelp: did you mean `probe-port`?",
         pos_of(text, "probe-prot"))]
    # without the comment, the lint is back; the project's `[lints] ignore` silences it too
    text = text.replace("  # crc: allow probe-prot", "").replace("  # crc: allow host-near-miss", "")
    change(client, p, 2, text)
    await until(client, lambda: [d.code for d in client.diagnostics.get(uri_of(p), [])] == ["host-near-miss"])
    (project / "crc.toml").write_text('[lints]\nignore = ["host-near-miss"]\n', encoding="utf-8")
    change(client, p, 3, text + "\n")
    await until(client, lambda: cleared(client, p))


async def test_edit_to_a_module_rechecks_its_importer(client: LanguageClient, work: Path) -> None:
    lib = work / "lib" / "common.cr"
    lib.parent.mkdir()
    module = 'template box(image = "crc/busybox:dev") {\n  image image\n  command ["sleep", "3600"]\n}\n'
    lib.write_text(module, encoding="utf-8")
    main = work / "uses_lib.cr"
    main.write_text('import "lib/common"\n\nsuite "s" {\n  service b = box()\n\n  test "t" {\n'
                    '    step hi = exec b ["echo", "hi"]\n  }\n}\n', encoding="utf-8")
    await open_doc(client, main)
    assert cleared(client, main)
    await open_doc(client, lib)
    assert cleared(client, lib)  # a module alone is not faulted for declaring no suite
    # Renaming the template in the unsaved module breaks the importer.
    change(client, lib, 2, module.replace("template box(", "template boxes("))
    diags = await until(client, lambda: client.diagnostics.get(uri_of(main)))
    assert diags[0].message == "unknown template `box`\nhelp: did you mean `boxes`?"
    change(client, lib, 3, module)
    await until(client, lambda: cleared(client, main))


async def test_import_cycle(client: LanguageClient, work: Path) -> None:
    a, b = work / "cyc_a.cr", work / "cyc_b.cr"
    a.write_text('import "cyc_b"\n\nsuite "a" {\n  test "t" {\n    step s = run "crc/busybox:dev" ["true"]\n'
                 '  }\n}\n', encoding="utf-8")
    b.write_text('import "cyc_a"\nlet x = 1\n', encoding="utf-8")
    await open_doc(client, a)
    diags = client.diagnostics[uri_of(b)] if client.diagnostics.get(uri_of(b)) else await until(
        client, lambda: client.diagnostics.get(uri_of(b)))
    assert [d.message.split("\n")[0] for d in diags] == [f"import cycle: {a.resolve()} -> {b.resolve()} -> "
                                                         f"{a.resolve()}"]
    assert diags[0].range.start == lsp.Position(0, 7)


# ---------------------------------------------------------------- start-up
async def test_server_starts_without_the_compiler_or_heavy_modules() -> None:
    """`crc lsp` answers `initialize` before importing the compiler, Faker, networkx, Jinja or the runtime."""
    import asyncio
    import subprocess

    code = ("import sys, runpy; from crc.lsp import server as s; "
            "print(sorted(m for m in sys.modules if m.startswith(('faker', 'networkx', 'jinja2', 'lark', "
            "'crc.compiler', 'crc.runtime', 'aiodocker', 'opentelemetry'))))")
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True,
                                  timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _names(items: Sequence[lsp.CompletionItem]) -> set[str]:
    return {i.label for i in items}


# ---------------------------------------------------------------- hover
async def hover_at(client: LanguageClient, path: Path, text: str, needle: str, offset: int = 1,
                   nth: int = 0) -> str:
    h = await client.text_document_hover_async(lsp.HoverParams(
        lsp.TextDocumentIdentifier(uri_of(path)), pos_of(text, needle, offset, nth)))
    assert h is not None, f"no hover at {needle!r}"
    assert isinstance(h.contents, lsp.MarkupContent)
    return h.contents.value


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hello(client: LanguageClient, work: Path) -> Path:
    p = work / "hover.cr"
    p.write_text(HELLO, encoding="utf-8")
    await open_doc(client, p)
    return p


def _expected_values() -> dict[str, Any]:
    """What a compile of HELLO computes, straight from the compiler: the server must show exactly this."""
    import tempfile

    from crc.compiler.compile import compile_file

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.cr"
        p.write_text(HELLO, encoding="utf-8")
        plan = compile_file(str(p))
    api = plan.nodes["shop::service:api"]
    return {"customer": api["env"]["WHO"], "id": api["env"]["ID"]}


async def test_hover_let_shows_the_seeded_value_a_run_uses(client: LanguageClient, hello: Path) -> None:
    want = _expected_values()
    text = await hover_at(client, hello, HELLO, "customer =")
    assert "(let) **customer**" in text
    assert f'`"{want["customer"]}"` — suite "shop"' in text
    # A use of the name shows the same value.
    text = await hover_at(client, hello, HELLO, "customer, ID")
    assert f'"{want["customer"]}"' in text


async def test_hover_template_expression_shows_rendered_text(client: LanguageClient, hello: Path) -> None:
    want = _expected_values()
    text = await hover_at(client, hello, HELLO, "-{{ uuid() }}", offset=5)
    assert text.startswith("**rendered**")
    assert f'`"{want["id"]}"`' in text  # the seeded uuid(), as the run would use it


async def test_hover_template_parameter_and_service_after_template(client: LanguageClient, hello: Path) -> None:
    text = await hover_at(client, hello, HELLO, "port = 6380")
    assert "(param) **port**" in text and "`6380` — service cache in suite \"shop\"" in text
    text = await hover_at(client, hello, HELLO, "cache = redis")
    assert "(service) **cache**" in text
    assert 'image "crc/python:dev"' in text
    assert 'command ["redis-server", "--port", "6380"' in text
    assert 'ready exec ["redis-cli", "-p", "6380", "ping"] within 20s' in text
    assert "from template `redis`" in text


async def test_hover_span_selector_in_words(client: LanguageClient, hello: Path) -> None:
    text = await hover_at(client, hello, HELLO, "set = ")
    assert 'Spans named exactly "redis SET", whose attribute "db.system" == "redis", whose parent is one of ' \
           "the `post` spans" in text
    text = await hover_at(client, hello, HELLO, "post = ")
    assert 'emitted by service "api", of kind server' in text


async def test_hover_keyword_doc_from_the_language_reference(client: LanguageClient, hello: Path) -> None:
    text = await hover_at(client, hello, HELLO, "seed 42")
    reference = (Path(__file__).parent.parent / "docs" / "language.md").read_text(encoding="utf-8")
    assert text.startswith("keyword `seed`")
    row = next(line for line in reference.splitlines() if line.startswith("| `seed` |"))
    assert row.split(" | ")[1].rstrip(" |") in text
    text = await hover_at(client, hello, HELLO, "needs cache")
    assert "`needs A, B`" in text


# ---------------------------------------------------------------- definition and references
async def definition_at(client: LanguageClient, path: Path, text: str, needle: str, offset: int = 1,
                        nth: int = 0) -> list[lsp.Location]:
    got = await client.text_document_definition_async(lsp.DefinitionParams(
        lsp.TextDocumentIdentifier(uri_of(path)), pos_of(text, needle, offset, nth)))
    assert isinstance(got, list)
    return [x for x in got if isinstance(x, lsp.Location)]


@pytest.mark.parametrize(("use", "nth", "decl"), [
    ("cache\n", 0, "cache = redis"),                  # service, from `needs`
    ("api [", 0, "api {"),                           # service, from `exec`
    ("customer,", 0, "customer ="),                  # let, from an env map
    ("customer]", 0, "customer ="),                  # let, from an argv
    ("greeting }}", 0, "greeting ="),                # top-level let, inside a template expression
    ("order = exec", 0, "order = exec"),             # a declaration is its own definition
    ("order.stdout", 0, "order = exec"),             # step, from a capture
    ("id }}", 0, "id = order"),                      # capture, from a template expression
    ("post attr", 0, "post = "),                     # span, from a selector's parent clause
    ("set\n", 0, "set = "),                          # span, from an order expectation
])
async def test_definition_in_file(client: LanguageClient, hello: Path, use: str, nth: int, decl: str) -> None:
    (loc,) = await definition_at(client, hello, HELLO, use, 0, nth)
    assert loc.uri == uri_of(hello)
    assert loc.range.start == pos_of(HELLO, decl)


async def test_definition_of_a_stdlib_template_and_its_parameter(client: LanguageClient, hello: Path) -> None:
    from crc.compiler.loader import std_file

    std = Path(std_file("redis"))
    (loc,) = await definition_at(client, hello, HELLO, "redis(")
    assert loc.uri == uri_of(std)
    std_text = std.read_text(encoding="utf-8")
    assert loc.range.start == pos_of(std_text, "redis(port")
    (loc,) = await definition_at(client, hello, HELLO, "port = 6380")
    assert loc.uri == uri_of(std) and loc.range.start == pos_of(std_text, "port = 6379")
    (loc,) = await definition_at(client, hello, HELLO, '"std/redis"', 2)  # the import itself
    assert loc.uri == uri_of(std) and loc.range.start == lsp.Position(0, 0)


async def test_references_of_a_let_and_a_step(client: LanguageClient, hello: Path) -> None:
    refs = await client.text_document_references_async(lsp.ReferenceParams(
        text_document=lsp.TextDocumentIdentifier(uri_of(hello)), position=pos_of(HELLO, "customer ="),
        context=lsp.ReferenceContext(include_declaration=True)))
    assert refs is not None
    assert [r.range.start for r in refs] == [pos_of(HELLO, "customer ="), pos_of(HELLO, "customer,"),
                                             pos_of(HELLO, "customer]")]
    refs = await client.text_document_references_async(lsp.ReferenceParams(
        text_document=lsp.TextDocumentIdentifier(uri_of(hello)), position=pos_of(HELLO, "order.exit"),
        context=lsp.ReferenceContext(include_declaration=False)))
    assert refs is not None
    assert [r.range.start for r in refs] == [pos_of(HELLO, "order.stdout"), pos_of(HELLO, "after order", 6), pos_of(HELLO, "order.exit")]


async def test_references_of_a_template_from_its_module(client: LanguageClient, work: Path) -> None:
    lib = work / "lib2" / "tpl.cr"
    lib.parent.mkdir()
    module = 'template box(image = "crc/busybox:dev") {\n  image image\n}\n'
    lib.write_text(module, encoding="utf-8")
    user = work / "uses_lib2.cr"
    user_text = ('import "lib2/tpl"\n\nsuite "s" {\n  service b = box()\n  service c = box(image = "x")\n\n'
                 '  test "t" {\n    step hi = exec b ["echo", "hi"]\n  }\n}\n')
    user.write_text(user_text, encoding="utf-8")
    await open_doc(client, user)
    await open_doc(client, lib)
    refs = await client.text_document_references_async(lsp.ReferenceParams(
        text_document=lsp.TextDocumentIdentifier(uri_of(lib)), position=pos_of(module, "box"),
        context=lsp.ReferenceContext(include_declaration=False)))
    assert refs is not None
    assert [(r.uri, r.range.start) for r in refs] == [(uri_of(user), pos_of(user_text, "box()")),
                                                       (uri_of(user), pos_of(user_text, "box(image"))]


# ---------------------------------------------------------------- completion
async def complete_at(client: LanguageClient, path: Path, text: str, version: int) -> set[str]:
    """Change the document to `text`, whose cursor is marked `|`, and complete there."""
    cursor = pos_of(text, "|")
    text = text.replace("|", "", 1)
    change(client, path, version, text)
    got = await client.text_document_completion_async(lsp.CompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri_of(path)), position=cursor))
    assert got is not None
    return _names(got.items if isinstance(got, lsp.CompletionList) else got)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def completing(client: LanguageClient, work: Path) -> Path:
    p = work / "complete.cr"
    p.write_text(HELLO, encoding="utf-8")
    await open_doc(client, p)
    return p


async def test_completion_keywords_the_parser_accepts(client: LanguageClient, completing: Path) -> None:
    text = HELLO.replace("    needs cache\n", "    needs cache\n    |\n")
    got = await complete_at(client, completing, text, 10)
    assert {"command", "env", "image", "needs", "port", "ready", "volume", "workdir"} <= got
    assert not got & {"suite", "test", "step", "seed", "expect", "span"}  # only what a service body takes
    text = HELLO.replace("  seed 42\n", "  seed 42\n  se|\n")
    assert {"seed", "service", "settle", "test", "let"} <= await complete_at(client, completing, text, 11)
    # Even with a syntax error above the cursor.
    text = HELLO.replace("  seed 42\n", "  sed 42\n").replace("    expect post before set\n",
                                                              "    expect post before set\n    |\n")
    got = await complete_at(client, completing, text, 12)
    assert {"step", "expect", "span", "capture", "let"} <= got and "service" not in got


async def test_completion_names_by_context(client: LanguageClient, completing: Path) -> None:
    # Wait for an analysis of the intact file, so names are known.
    change(client, completing, 20, HELLO)
    await until(client, lambda: cleared(client, completing))
    text = HELLO.replace("    needs cache\n", "    needs |\n")
    assert await complete_at(client, completing, text, 21) == {"cache", "api"}
    text = HELLO.replace("    expect post before set\n", "    expect post before |\n")
    assert await complete_at(client, completing, text, 22) == {"post", "set"}
    text = HELLO.replace('    step again after order', '    step again after |')
    assert await complete_at(client, completing, text, 23) == {"order", "again"}
    text = HELLO.replace("  service cache = redis(port = 6380)", "  service cache = redis(|)")
    assert {"port", "image", "customer", "greeting"} <= await complete_at(client, completing, text, 24)
    text = HELLO.replace('    step order = exec api ["echo", customer]', '    step order = exec api ["echo", |]')
    got = await complete_at(client, completing, text, 25)
    assert {"customer", "greeting", "id", "true", "false"} <= got and "order" not in got
    text = HELLO.replace("kind server", "kind |")
    assert await complete_at(client, completing, text, 26) == {"server", "client", "internal", "producer",
                                                               "consumer"}


async def test_completion_inside_template_expressions(client: LanguageClient, completing: Path) -> None:
    text = HELLO.replace('"{{ fake.name() }}"', '"{{ fake.|')
    got = await complete_at(client, completing, text, 30)
    assert {"name", "email", "random_int", "uuid4"} <= got and "seed_instance" not in got
    text = HELLO.replace('"{{ greeting }}-{{ uuid() }}"', '"{{ |')
    got = await complete_at(client, completing, text, 31)
    assert {"customer", "greeting", "fake", "uuid", "now", "env", "sha256"} <= got


async def test_completion_span_names_and_attributes_from_the_last_recording(
        client: LanguageClient, work: Path) -> None:
    from crc.runtime.options import RunOptions
    from crc.runtime.recording import Recording, write
    from crc.runtime.spans import Span

    d = work / "recorded"
    d.mkdir()
    p = d / "rec.cr"
    p.write_text(HELLO, encoding="utf-8")
    span = Span(trace_id="1" * 32, span_id="2" * 16, parent_span_id=None, name="GET /checkout", kind="server",
                status="ok", status_message="", start_ns=1, end_ns=2, service="api",
                attributes={"http.route": "/checkout", "order.id": 7})
    from crc.compiler.compile import compile_file

    plan = compile_file(str(p)).to_data()
    rec = Recording(crc_version="0", run_id="r", started_ns=0, ended_ns=1, interrupted=False, exit_code=0,
                    options=RunOptions(), plans=(plan,), nodes=(), tests=(), spans=(span,))
    write(d / "last.crrec", rec)
    await open_doc(client, p)
    text = HELLO.replace('span post = "GET /orders"', 'span post = "|')
    assert await complete_at(client, p, text, 2) == {"GET /checkout"}
    text = HELLO.replace('attr "db.system"', 'attr "|')
    assert await complete_at(client, p, text, 3) == {"http.route", "order.id"}


# ---------------------------------------------------------------- outline and formatting
async def test_document_symbols(client: LanguageClient, hello: Path) -> None:
    got = await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(
        text_document=lsp.TextDocumentIdentifier(uri_of(hello))))
    assert got is not None

    def tree(items: Sequence[Any]) -> list[Any]:
        return [(s.name, s.kind, tree(s.children or [])) if s.children else (s.name, s.kind) for s in items]

    K = lsp.SymbolKind
    assert tree(got) == [
        ("std/redis", K.Package), ("greeting", K.Constant),
        ("shop", K.Module, [("customer", K.Constant), ("cache", K.Class), ("api", K.Class),
                            ("order", K.Method, [("order", K.Function), ("id", K.Variable), ("again", K.Function),
                                                 ("post", K.Event), ("set", K.Event)])])]


async def test_formatting_through_crc_fmt(client: LanguageClient, work: Path) -> None:
    from crc.compiler.format import format_source

    p = work / "fmt.cr"
    messy = HELLO.replace("  seed 42\n", "seed   42\n").replace("needs cache", "needs    cache")
    p.write_text(messy, encoding="utf-8")
    await open_doc(client, p)
    edits = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        text_document=lsp.TextDocumentIdentifier(uri_of(p)),
        options=lsp.FormattingOptions(tab_size=2, insert_spaces=True)))
    assert edits is not None and len(edits) == 1
    assert edits[0].new_text == format_source(messy, str(p)) == HELLO
    assert edits[0].range.start == lsp.Position(0, 0)
    assert edits[0].range.end == lsp.Position(messy.count("\n"), 0)
    change(client, p, 2, messy + "}\n")  # does not parse: no edit (the diagnostics say why)
    edits = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        text_document=lsp.TextDocumentIdentifier(uri_of(p)),
        options=lsp.FormattingOptions(tab_size=2, insert_spaces=True)))
    assert not edits


async def test_a_module_changed_on_disk_rechecks_its_importer(client: LanguageClient, work: Path) -> None:
    lib = work / "lib3" / "box.cr"
    lib.parent.mkdir()
    module = 'template box3() {\n  image "crc/busybox:dev"\n}\n'
    lib.write_text(module, encoding="utf-8")
    main = work / "uses_lib3.cr"
    main.write_text('import "lib3/box"\n\nsuite "s" {\n  service b = box3()\n\n  test "t" {\n'
                    '    step hi = exec b ["echo", "hi"]\n  }\n}\n', encoding="utf-8")
    await open_doc(client, main)
    assert cleared(client, main)
    # Not open in the editor: changed on disk (a checkout, another editor), the client reports it.
    lib.write_text(module.replace("box3", "box4"), encoding="utf-8")
    client.workspace_did_change_watched_files(lsp.DidChangeWatchedFilesParams(
        changes=[lsp.FileEvent(uri=uri_of(lib), type=lsp.FileChangeType.Changed)]))
    diags = await until(client, lambda: client.diagnostics.get(uri_of(main)))
    assert diags[0].message == "unknown template `box3`\nhelp: did you mean `box4`?"


async def test_no_keyword_doc_in_comments_or_strings(client: LanguageClient, work: Path) -> None:
    p = work / "words.cr"
    text = HELLO.replace("  seed 42\n", "  seed 42  # the seed of this suite\n")
    text = text.replace('image "crc/demo:dev"', 'image "crc/demo:dev"\n    workdir "/seed"')
    p.write_text(text, encoding="utf-8")
    await open_doc(client, p)
    for needle in ("seed of", 'seed"'):
        h = await client.text_document_hover_async(lsp.HoverParams(
            lsp.TextDocumentIdentifier(uri_of(p)), pos_of(text, needle, 1)))
        assert h is None, needle
    assert await hover_at(client, p, text, "seed 42")  # the keyword itself still has its doc


async def test_semantic_tokens_mark_names_even_when_they_are_keywords(client: LanguageClient, work: Path) -> None:
    from crc.lsp.server import TOKEN_TYPES

    p = work / "tokens.cr"
    text = ('suite "s" {\n  service log {\n    image "crc/busybox:dev"\n  }\n\n  test "t" {\n'
            '    step run1 = exec log ["true"]\n    expect run1.exit == 0\n  }\n}\n')
    p.write_text(text, encoding="utf-8")
    await open_doc(client, p)
    got = await client.text_document_semantic_tokens_full_async(lsp.SemanticTokensParams(
        text_document=lsp.TextDocumentIdentifier(uri_of(p))))
    assert got is not None
    tokens, line, char = [], 0, 0
    for i in range(0, len(got.data), 5):
        dl, dc, length, kind, mods = got.data[i: i + 5]
        line, char = line + dl, (char + dc if dl == 0 else dc)
        tokens.append((text.split("\n")[line][char: char + length], TOKEN_TYPES[kind], mods))
    assert tokens == [("log", "class", 1), ("run1", "function", 1), ("log", "class", 0), ("run1", "function", 0)]


async def test_names_stay_known_while_the_file_does_not_parse(client: LanguageClient, work: Path) -> None:
    p = work / "midedit.cr"
    p.write_text(HELLO, encoding="utf-8")
    await open_doc(client, p)
    text = HELLO.replace("    needs cache\n", "    needs |\n")
    cursor = pos_of(text, "|")
    change(client, p, 2, text.replace("|", "", 1))
    await until(client, lambda: client.diagnostics.get(uri_of(p)))  # the half-written line has been checked
    got = await client.text_document_completion_async(lsp.CompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri_of(p)), position=cursor))
    assert got is not None
    assert _names(got.items if isinstance(got, lsp.CompletionList) else got) == {"cache", "api"}


async def test_definition_from_an_http_step_and_a_trace_scoped_selector(client: LanguageClient, work: Path) -> None:
    p = work / "http.cr"
    text = ('suite "s" {\n  let sku = "42"\n  service api {\n    image "crc/demo:dev"\n  }\n\n  test "t" {\n'
            '    step order = http POST "http://api:8080/orders" headers { X-Sku: sku } json { sku: sku }\n'
            '    span req = "POST /orders" { in order }\n  }\n}\n')
    p.write_text(text, encoding="utf-8")
    await open_doc(client, p)
    for use, decl in (("sku }", "sku ="), ("sku: sku", "sku ="), ("order }", "order =")):
        offset = 6 if use == "sku: sku" else 1
        (loc,) = await definition_at(client, p, text, use, offset)
        assert loc.range.start == pos_of(text, decl), use
