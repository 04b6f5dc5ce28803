"""Volatile values: what a run's digest, `crc diff` and `--repeat` ignore because the system makes it anew
every run (random ids, timestamps, tokens).

Rules come from the suites of a file (`mask /order-[0-9a-f]{8}/`, `mask attr "order.id"`, `mask json "$.id"`)
and from the command line (`--mask` with the same words). A regex rule replaces what it matches in step
outputs, captures, argv, span names, status messages and attribute values; an attr rule replaces the value
of that span attribute; a json rule replaces the value at that path in a step's stdout when it is JSON. The
replacement is the text `<masked>`: the structure around it still counts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from crc.compiler.jsonpath import JsonPathError, parse_path

from .matching import flags_of

MASKED = "<masked>"


class MaskError(ValueError):
    """A mask rule that cannot be read (the message says how to write one)."""


@dataclass(frozen=True)
class Masks:
    regexes: tuple[re.Pattern[str], ...] = ()
    attrs: frozenset[str] = frozenset()
    json_paths: tuple[tuple[str | int, ...], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.regexes or self.attrs or self.json_paths)

    def __or__(self, other: Masks) -> Masks:
        return Masks(self.regexes + other.regexes, self.attrs | other.attrs, self.json_paths + other.json_paths)

    # ------------------------------------------------------------ reading rules
    @classmethod
    def of_rules(cls, rules: Iterable[Mapping[str, Any]]) -> Masks:
        """From the Plan's form: {"kind": "regex", "pattern", "flags"} | {"kind": "attr"|"json", "value"}."""
        out = cls()
        for r in rules:
            if not isinstance(r, Mapping):
                continue
            try:
                if r.get("kind") == "regex":
                    rx = re.compile(str(r["pattern"]), flags_of(str(r.get("flags", ""))))
                    out = out | cls(regexes=(rx,))
                elif r.get("kind") == "attr":
                    out = out | cls(attrs=frozenset({str(r["value"])}))
                elif r.get("kind") == "json":
                    out = out | cls(json_paths=(parse_path(str(r["value"])),))
            except (re.error, JsonPathError, KeyError):
                continue  # the compiler checked the file's rules; a damaged recording's are ignored
        return out

    @classmethod
    def of_plans(cls, plans: Iterable[Mapping[str, Any]]) -> Masks:
        """Every rule of every suite of these Plans (as `Plan.to_data` gives them)."""
        return cls.of_rules(m for p in plans for s in p.get("suites", [])
                            if isinstance(s, Mapping) for m in s.get("masks") or [])

    @classmethod
    def parse(cls, rule: str) -> Masks:
        """One command-line rule: `/REGEX/FLAGS`, `attr KEY` or `json $.PATH`."""
        text = rule.strip()
        m = re.fullmatch(r"/(.+)/([imsx]*)", text, re.S)
        if m:
            try:
                return cls(regexes=(re.compile(m.group(1), flags_of(m.group(2))),))
            except re.error as e:
                raise MaskError(f"mask {rule!r}: invalid regex: {e}") from None
        word, _, rest = text.partition(" ")
        rest = rest.strip().strip('"')
        if word == "attr" and rest:
            return cls(attrs=frozenset({rest}))
        if word == "json" and rest:
            try:
                return cls(json_paths=(parse_path(rest),))
            except JsonPathError as e:
                raise MaskError(f"mask {rule!r}: {e}") from None
        raise MaskError(f"cannot read the mask rule {rule!r}: write /REGEX/, attr KEY or json $.PATH")

    # ------------------------------------------------------------ applying them
    def text(self, s: str) -> str:
        """`s` with every regex match replaced."""
        for rx in self.regexes:
            s = rx.sub(MASKED, s)
        return s

    def output(self, s: str) -> str:
        """A step's output: JSON paths replaced when it is a JSON document, then the regexes."""
        if self.json_paths and s.lstrip()[:1] in ("{", "["):
            try:
                doc = json.loads(s)
            except ValueError:
                pass
            else:
                for path in self.json_paths:
                    doc = _replace(doc, path)
                s = json.dumps(doc, sort_keys=True)
        return self.text(s)

    def attribute(self, key: str, value: Any) -> Any:
        """A span attribute's value as comparisons see it."""
        if key in self.attrs:
            return MASKED
        return self.value(value)

    def value(self, v: Any) -> Any:
        """Plain data with the regexes applied to every string in it."""
        if not self.regexes:
            return v
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, list | tuple):
            return [self.value(x) for x in v]
        if isinstance(v, dict):
            return {k: self.value(x) for k, x in v.items()}
        return v


NONE = Masks()


def _replace(doc: Any, path: tuple[str | int, ...]) -> Any:
    """`doc` with the value at `path` replaced by MASKED (unchanged when the path does not exist)."""
    if not path:
        return MASKED
    head, rest = path[0], path[1:]
    if isinstance(head, int) and isinstance(doc, list) and -len(doc) <= head < len(doc):
        out = list(doc)
        out[head] = _replace(doc[head], rest)
        return out
    if isinstance(head, str) and isinstance(doc, dict) and head in doc:
        return {**doc, head: _replace(doc[head], rest)}
    return doc
