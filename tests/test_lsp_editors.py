"""The VS Code extension's client part (grammar/editors/vscode/extension.js), checked under node.

VS Code itself cannot run here: the extension is loaded with stand-ins for the `vscode` and
`vscode-languageclient/node` modules, which record what it asks of them. That checks its wiring (which
command it starts, for which documents, that it starts and stops the client), not VS Code's behaviour."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

VSCODE = Path(__file__).resolve().parent.parent / "grammar" / "editors" / "vscode"
NODE = shutil.which("node")

HARNESS = r"""
const Module = require("module");
const calls = [];
class LanguageClient {
  constructor(id, name, server, client) { calls.push(["new", id, name, server, client.documentSelector,
                                                      typeof client.synchronize.fileEvents]); }
  start() { calls.push(["start"]); return Promise.resolve(); }
  stop() { calls.push(["stop"]); return Promise.resolve(); }
  dispose() {}
}
const settings = JSON.parse(process.argv[3]);
const vscode = { workspace: {
  getConfiguration: (section) => ({ get: (key, dflt) => (section + "." + key) in settings ?
                                                         settings[section + "." + key] : dflt }),
  createFileSystemWatcher: (glob) => ({ glob }),
} };
const load = Module._load;
Module._load = function (request, parent, isMain) {
  if (request === "vscode") return vscode;
  if (request === "vscode-languageclient/node") return { LanguageClient };
  return load.call(this, request, parent, isMain);
};
const ext = require(process.argv[2]);
const context = { subscriptions: [] };
ext.activate(context).then(() => ext.deactivate()).then(() => {
  calls.push(["subscriptions", context.subscriptions.length]);
  console.log(JSON.stringify(calls));
});
"""


def run_extension(tmp_path: Path, settings: dict[str, object]) -> list[list[object]]:
    assert NODE is not None
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS, encoding="utf-8")
    out = subprocess.run([NODE, str(harness), str(VSCODE / "extension.js"), json.dumps(settings)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result: list[list[object]] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_extension_starts_crc_lsp_for_cleanroom_files(tmp_path: Path) -> None:
    calls = run_extension(tmp_path, {})
    assert calls == [
        ["new", "cleanroom", "Cleanroom language server", {"command": "crc", "args": ["lsp"]},
         [{"scheme": "file", "language": "cleanroom"}], "object"],
        ["start"], ["stop"], ["subscriptions", 1]]


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_extension_takes_the_server_command_from_settings(tmp_path: Path) -> None:
    calls = run_extension(tmp_path, {"cleanroom.server.command": "/venv/bin/crc"})
    assert calls[0][3] == {"command": "/venv/bin/crc", "args": ["lsp"]}


def test_package_json_declares_the_client() -> None:
    pkg = json.loads((VSCODE / "package.json").read_text(encoding="utf-8"))
    assert pkg["main"] == "./extension.js" and (VSCODE / pkg["main"]).is_file()
    assert pkg["activationEvents"] == ["onLanguage:cleanroom"]
    assert "vscode-languageclient" in pkg["dependencies"]
    props = pkg["contributes"]["configuration"]["properties"]
    assert props["cleanroom.server.command"]["default"] == "crc"
    assert props["cleanroom.server.args"]["default"] == ["lsp"]
