"""A Pygments lexer for `.cr` files, built at import from the same patterns as the TextMate grammar
(`crc.grammar.generate.token_patterns`, themselves derived from cr.lark and keywords.py).

Registered as a Pygments plugin (entry point `pygments.lexers` in pyproject.toml), so
`pygmentize -l cleanroom FILE.cr` works once crc is installed. (`-l cr` names Pygments' own Crystal lexer:
Pygments looks its built-in aliases up before any plugin's.)

Token types: keywords get a subtype per role of keywords.py (`Keyword.Structure`, `Keyword.Service`,
`Keyword.Readiness`, `Keyword.Step`, `Keyword.Expectation`, `Keyword.Span`), so styles may tell them apart
and fall back to `Keyword` otherwise.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from crc.grammar.generate import DECLARATIONS, name_chars, token_patterns, words
from crc.grammar.keywords import CONSTANTS, KEYWORDS, OPERATORS
from pygments.lexer import RegexLexer, bygroups, default
from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Whitespace,
    _TokenType,
)

DURATION = Number.Duration
SIZE = Number.Size

ROLE_TOKENS: dict[str, _TokenType] = {role: getattr(Keyword, role.capitalize()) for role in KEYWORDS}
# The name a declaration introduces, by declaring keyword.
DECLARED: dict[str, _TokenType] = {
    "service": Name.Class, "step": Name.Function, "span": Name.Label, "template": Name.Function,
    "let": Name.Constant, "capture": Name.Variable,
}


def _role(word: str) -> _TokenType:
    return next(ROLE_TOKENS[r] for r, ws in KEYWORDS.items() if word in ws)


def _tokens() -> dict[str, list[Any]]:
    p = token_patterns()
    name = p["name"]
    ops = "|".join(re.escape(o) for o in sorted(OPERATORS, key=lambda o: (-len(o), o)))
    root: list[Any] = [
        (r"\s+", Whitespace),
        (p["comment"], Comment.Single),
        ('"', String.Double, "string"),
        (p["regex"], String.Regex),
    ]
    for kw, _, after in DECLARATIONS:
        root.append((f"({words([kw])})(\\s+)({name}){after}", bygroups(_role(kw), Whitespace, DECLARED[kw])))
    root += [
        (p["size"], SIZE),
        (p["duration"], DURATION),
        (p["float"], Number.Float),
        (p["int"], Number.Integer),
        (f"(?<!{name_chars()}|\\.){name}(?=\\.(?!\\.))", Name.Variable),  # `order.stdout`: a step or span
    ]
    root += [(words(list(ws)), ROLE_TOKENS[role]) for role, ws in KEYWORDS.items()]
    root += [(words(list(ws)), Keyword.Constant) for ws in CONSTANTS.values()]
    root += [
        (f"(\\.)({words(['attr'])})(?=\\s*\\[)", bygroups(Punctuation, _role("attr"))),  # `span.attr["key"]`
        (f"(\\.)({name})", bygroups(Punctuation, Name.Attribute)),
        (f"{name}(?=\\()", Name.Function),
        (name, Name),
        (ops, Operator),
        ("=", Operator),
        (r"[{}\[\](),:]", Punctuation),
    ]
    return {
        "root": root,
        "string": [
            ('"', String.Double, "#pop"),
            (p["template_open"], String.Interpol, "template"),
            (p["escape"], String.Escape),
            (r'[^"\\{\n]+', String.Double),
            (r"\{", String.Double),
            default("#pop"),  # a newline: the string was not closed (a syntax error); carry on after it
        ],
        "template": [
            (p["template_close"], String.Interpol, "#pop"),
            ('"', String.Double, "#pop:2"),  # an unescaped quote ends the whole string
            (p["escape"], String.Escape),
            (r"'[^'\\\n]*'", String.Single),
            (r"[ \t]+", String.Interpol),
            (r"[A-Za-z_]\w*(?=\s*\()", Name.Function),
            (r"[A-Za-z_]\w*", Name.Variable),
            (r"\d+(?:\.\d+)?", Number),
            (r".", String.Interpol),
            default("#pop:2"),  # a newline inside the string: see above
        ],
    }


class CleanroomLexer(RegexLexer):
    """Lexer for Cleanroom (`crc`) test files."""

    name = "Cleanroom"
    aliases: ClassVar[list[str]] = ["cleanroom", "crc", "cr"]
    filenames: ClassVar[list[str]] = ["*.cr"]
    mimetypes: ClassVar[list[str]] = ["text/x-cleanroom"]
    tokens: ClassVar[dict[str, list[Any]]] = _tokens()

    def analyse_text(text: str) -> float:  # type: ignore[override]  # Pygments calls it unbound
        """Tell a `.cr` test file from a Crystal source (which shares the extension)."""
        if re.search(r'^\s*(suite|import)\s+"', text, re.M):
            return 0.9
        if re.search(r"^\s*template\s+\w+\s*\(", text, re.M):
            return 0.5
        return 0.0


__all__ = ["CleanroomLexer"]
