// Tokenize files with a TextMate grammar exactly the way VS Code does (vscode-textmate + vscode-oniguruma).
// usage: node tokenize.mjs GRAMMAR.json FILE...   (FILE `-` reads standard input)
// prints JSON: {"FILE": [[{"text": ..., "scopes": [...]}, ...one array per line], ...}
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import vsctm from "vscode-textmate";
import oniguruma from "vscode-oniguruma";

const require = createRequire(import.meta.url);
const [grammarPath, ...files] = process.argv.slice(2);
if (!grammarPath || files.length === 0) {
  console.error("usage: node tokenize.mjs GRAMMAR.json FILE...");
  process.exit(2);
}

const wasm = readFileSync(require.resolve("vscode-oniguruma/release/onig.wasm")).buffer;
await oniguruma.loadWASM(wasm);
const grammarText = readFileSync(grammarPath, "utf8");
const scopeName = JSON.parse(grammarText).scopeName;

const registry = new vsctm.Registry({
  onigLib: Promise.resolve({
    createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
    createOnigString: (s) => new oniguruma.OnigString(s),
  }),
  loadGrammar: async (name) => (name === scopeName ? vsctm.parseRawGrammar(grammarText, grammarPath) : null),
});
const grammar = await registry.loadGrammar(scopeName);

const out = {};
for (const file of files) {
  const text = readFileSync(file === "-" ? 0 : file, "utf8");
  let state = vsctm.INITIAL;
  const lines = [];
  for (const line of text.split(/\r?\n/)) {
    const result = grammar.tokenizeLine(line, state);
    lines.push(result.tokens.map((t) => ({ text: line.slice(t.startIndex, t.endIndex), scopes: t.scopes })));
    state = result.ruleStack;
  }
  out[file] = lines;
}
process.stdout.write(JSON.stringify(out));
