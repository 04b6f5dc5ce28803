"""Property: whatever text the compiler is given, it returns a Plan or raises CompileError whose diagnostics are
all located (file, line >= 1, col >= 1) — never another exception. Inputs: random text over the language's
alphabet and keywords, and mutations (characters and tokens deleted, inserted, swapped) of the examples."""

from __future__ import annotations

import os
import re

from conftest import example_files, examples
from crc.compiler.compile import compile_file
from crc.compiler.diagnostics import CompileError
from crc.compiler.plan import Plan
from crc.grammar.keywords import ALL_KEYWORDS, OPERATORS
from hypothesis import given, settings
from hypothesis import strategies as st

# A path in a directory that does not exist, so relative imports written by a mutation find nothing.
PATH = "no-such-dir/fuzz.cr"
SOURCES = [p.read_text(encoding="utf-8") for p in example_files()]
TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|/(?:[^/\\\n]|\\.)+/[imsx]*|\d+(?:\.\d+)?[a-z]*|\w+|\s+|.')
PIECES = sorted(ALL_KEYWORDS) + list(OPERATORS) + [
    "{", "}", "[", "]", "(", ")", ",", "=", ".", ":", "#", "\n", "\t", " ", '"', "/", "\\",
    '"x"', '"{{ x }}"', '"{{"', '"{% if %}"', '"{{ fake.name() }}"', '"{{ uuid() }}"', '"$.a[0]"', '"$"',
    "/a(/", "/x/i", "1", "-1", "0", "1.5", "5ms", "2s", "1m", "99999999999999999999", "a", "p", "one", "ok",
    "error", "server", "true", "std/redis", '"std/redis"', '"std/nope"', "1ms..", "..5ms",
]
# CRC_FUZZ_EXAMPLES=5000 for a longer hunt; else as many as the Hypothesis profile says (conftest.py).
SETTINGS = settings(max_examples=int(os.environ.get("CRC_FUZZ_EXAMPLES", examples(200))), database=None)


def check(text: str) -> None:
    try:
        plan = compile_file(PATH, text=text, environ={})
    except CompileError as e:
        assert e.diagnostics, "a CompileError with no diagnostic"
        n_lines = len(text.splitlines()) + 1
        for d in e.diagnostics:
            assert d.loc is not None, d
            assert d.loc.file and d.loc.line >= 1 and d.loc.col >= 1, d
            if d.loc.file == PATH:
                assert d.loc.line <= n_lines, (d, n_lines)
            assert d.message
    else:
        assert isinstance(plan, Plan)
        Plan.from_bytes(plan.to_bytes())  # whatever compiles also serializes


@SETTINGS
@given(st.text(alphabet=st.sampled_from(sorted(set("".join(PIECES)) | set("é€\x00\r"))), max_size=300))
def test_random_characters(text: str) -> None:
    check(text)


@SETTINGS
@given(st.lists(st.sampled_from(PIECES), max_size=80).map(" ".join))
def test_random_token_soup(text: str) -> None:
    check(text)


@st.composite
def char_mutation(draw: st.DrawFn) -> str:
    chars = list(draw(st.sampled_from(SOURCES)))
    for _ in range(draw(st.integers(1, 6))):
        if not chars:
            break
        i = draw(st.integers(0, len(chars) - 1))
        op = draw(st.sampled_from(["delete", "insert", "swap", "replace"]))
        if op == "delete":
            del chars[i]
        elif op == "insert":
            chars.insert(i, draw(st.sampled_from(sorted(set("".join(PIECES))))))
        elif op == "swap":
            j = draw(st.integers(0, len(chars) - 1))
            chars[i], chars[j] = chars[j], chars[i]
        else:
            chars[i] = draw(st.characters(codec="utf-8"))
    return "".join(chars)


@st.composite
def token_mutation(draw: st.DrawFn) -> str:
    toks = TOKEN.findall(draw(st.sampled_from(SOURCES)))
    for _ in range(draw(st.integers(1, 5))):
        if not toks:
            break
        i = draw(st.integers(0, len(toks) - 1))
        op = draw(st.sampled_from(["delete", "insert", "swap", "replace", "duplicate"]))
        if op == "delete":
            del toks[i]
        elif op == "insert":
            toks.insert(i, " " + draw(st.sampled_from(PIECES)) + " ")
        elif op == "swap":
            j = draw(st.integers(0, len(toks) - 1))
            toks[i], toks[j] = toks[j], toks[i]
        elif op == "replace":
            toks[i] = draw(st.sampled_from(PIECES))
        else:
            j = draw(st.integers(i, min(len(toks), i + 40)))
            toks[i:i] = toks[i:j]
    return "".join(toks)


@SETTINGS
@given(char_mutation())
def test_character_mutations_of_examples(text: str) -> None:
    check(text)


@SETTINGS
@given(token_mutation())
def test_token_mutations_of_examples(text: str) -> None:
    check(text)


def test_examples_themselves_compile() -> None:
    assert len(SOURCES) >= 4
    for text in SOURCES:
        check(text)
