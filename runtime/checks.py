"""Step expectations and captures, evaluated on a step's captured output. Pure functions, no I/O."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crc.compiler.jsonpath import lookup

from .matching import RegexTimeout, search_regex
from .results import Verdict
from .spill import Spilled


@dataclass(frozen=True, slots=True)
class StepOutput:
    """What a step produced. `exit_code` is None when it was killed by its timeout."""

    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    stdout_cut: int = 0  # bytes the step wrote past what crc keeps of the stream (runtime/backend.OUTPUT_KEEP)
    stderr_cut: int = 0
    # The whole stream, when it was spilled to a file (runtime/spill.py); its `path` is None in a replay.
    stdout_spill: Spilled | None = None
    stderr_spill: Spilled | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"exit_code": self.exit_code, "stdout": self.stdout, "stderr": self.stderr,
                             "duration_s": self.duration_s, "timed_out": self.timed_out}
        if self.stdout_cut or self.stderr_cut:
            d.update(stdout_cut=self.stdout_cut, stderr_cut=self.stderr_cut)
        for k, sp in (("stdout_spill", self.stdout_spill), ("stderr_spill", self.stderr_spill)):
            if sp is not None:
                d[k] = sp.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepOutput:
        def spilled(k: str) -> Spilled | None:
            return Spilled.from_dict(d[k]) if isinstance(d.get(k), Mapping) else None

        return cls(d["exit_code"], d["stdout"], d["stderr"], d["duration_s"], d.get("timed_out", False),
                   int(d.get("stdout_cut", 0)), int(d.get("stderr_cut", 0)), spilled("stdout_spill"),
                   spilled("stderr_spill"))

    def spilled(self, stream: str) -> Spilled | None:
        """The whole of `stream` ("stdout"/"stderr") on disk, if it outgrew memory."""
        return self.stdout_spill if stream == "stdout" else self.stderr_spill

    def cut_message(self, stream: str, what: str) -> str | None:
        """Why `what` cannot be checked on `stream` ("stdout"/"stderr"), if crc did not keep all of it."""
        cut = self.stdout_cut if stream == "stdout" else self.stderr_cut
        if not cut or self.spilled(stream) is not None:
            return None
        from .backend import OUTPUT_KEEP

        kept = len((self.stdout if stream == "stdout" else self.stderr).encode())
        return (f"{what}: {stream} was {kept + cut:,} bytes, more than the {OUTPUT_KEEP:,} crc keeps of a "
                f"stream, so it cannot be checked\n  help: check a part of it (`| head -c`, `| grep`), or write "
                f"it to a file in a volume and check that")


def tail(text: str, lines: int = 5) -> str:
    """The last lines of a stream (stderr, a body), each on a line of its own after a newline; "" if empty."""
    last = text.strip().splitlines()[-lines:]
    return "\n" + "\n".join(last) if last else ""


def _show(value: Any, limit: int = 200) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def text_diff(expected: str, actual: str, limit: int = 20) -> str:
    """A short unified diff, the way a reviewer reads it."""
    lines = list(difflib.unified_diff(expected.splitlines(keepends=True), actual.splitlines(keepends=True),
                                      "expected", "actual", n=1))
    if len(lines) > limit:
        lines = [*lines[:limit], f"... {len(lines) - limit} more diff lines\n"]
    return "".join(x if x.endswith("\n") else x + "\n\\ no newline at end\n" for x in lines).rstrip("\n")


def _compare(op: str, actual: Any, expected: Any) -> bool:
    if op == "==":
        if isinstance(actual, bool) or isinstance(expected, bool):  # 1 == true would be a surprise
            return type(actual) is type(expected) and actual == expected
        return bool(actual == expected)
    if op == "!=":
        return not _compare("==", actual, expected)
    try:
        return bool({"<": actual < expected, "<=": actual <= expected, ">": actual > expected,
                     ">=": actual >= expected}[op])
    except TypeError:
        return False


def output_from_dict(d: Mapping[str, Any]) -> Any:
    """A recorded step output: a command's (`StepOutput`) or an http step's response (`HttpOutput`)."""
    if d.get("type") == "http":
        from .http_step import HttpOutput

        return HttpOutput.from_dict(d)
    return StepOutput.from_dict(d)


def evaluate(assertion: Mapping[str, Any], out: Any, expected: Any = None) -> Verdict:
    """Check one step assertion node (`field`, `op`, `value`, `path`) against a step's output.

    `expected` overrides the node's value (used when the value was a template rendered at run time).
    """
    if not isinstance(out, StepOutput):  # an http step's response checks itself
        return out.evaluate(assertion, expected)  # type: ignore[no-any-return]
    field, op = assertion["field"], assertion["op"]
    value = assertion["value"] if expected is None else expected
    text = assertion.get("label", f"{field} {op}")
    if out.timed_out:
        return Verdict.of(False, f"{text}: the step timed out after {out.duration_s:.2f}s, so it has no {field}")
    if field == "exit":
        ok = _compare(op, out.exit_code, value)
        return Verdict.of(ok, f"{text}: exit code was {out.exit_code}" + (tail(out.stderr) if not ok else ""))
    if field == "duration":
        ok = _compare(op, out.duration_s, value)
        return Verdict.of(ok, f"{text}: the step took {out.duration_s * 1000:.0f}ms")
    stream = "stderr" if field == "stderr" else "stdout"
    if (why := out.cut_message(stream, text)) is not None:
        return Verdict.of(False, why)
    if (sp := out.spilled(stream)) is not None:
        if field == "json":
            return Verdict.of(False, too_big_for_json(text, sp))
        return _spilled_text(text, op, sp, stream, value)
    if field == "json":
        try:
            doc = json.loads(out.stdout)
        except json.JSONDecodeError as e:
            return Verdict.of(False, f"{text}: stdout is not JSON ({e.msg} at line {e.lineno} col {e.colno}): "
                                  f"{_show(out.stdout)}")
        except RecursionError:  # a JSON bomb: nested deeper than the parser recurses
            return Verdict.of(False, f"{text}: stdout is JSON nested too deeply to read")
        try:
            actual = lookup(doc, assertion["path"])
        except KeyError as e:
            return Verdict.of(False, f"{text}: {e.args[0]} in {_show(doc)}")
        return _text_or_value(text, op, actual, value)
    actual_text = out.stdout if field == "stdout" else out.stderr
    return _text_or_value(text, op, actual_text, value)


def _text_or_value(text: str, op: str, actual: Any, value: Any) -> Verdict:
    if isinstance(value, dict) and "pattern" in value:
        try:
            found = search_regex(value, actual if isinstance(actual, str) else json.dumps(actual)) is not None
        except RegexTimeout as e:
            return Verdict.of(False, f"{text}: {e}")
        ok = found if op == "~" else not found
        what = "does not match" if op == "~" else "matches"
        return Verdict.of(ok, f"{text}: {_show(actual)} {what} /{value['pattern']}/")
    if op in ("contains", "not contains"):
        hay = actual if isinstance(actual, str) else json.dumps(actual)
        needle = value if isinstance(value, str) else json.dumps(value)
        found = needle in hay
        ok = found if op == "contains" else not found
        what = "does not contain" if op == "contains" else "contains"
        return Verdict.of(ok, f"{text}: {_show(hay)} {what} {_show(needle)}")
    ok = _compare(op, actual, value)
    if ok:
        return Verdict.of(True)
    if op == "==" and isinstance(actual, str) and isinstance(value, str):
        return Verdict.of(False, f"{text}: output differs\n{text_diff(value, actual)}")
    return Verdict.of(False, f"{text}: actual {_show(actual)}, expected {op} {_show(value)}")


def too_big_for_json(what: str, sp: Spilled) -> str:
    """Why a JSON path cannot be read from a spilled stream: a document is parsed whole, in memory."""
    from .backend import OUTPUT_KEEP

    return (f"{what}: stdout was {sp.size:,} bytes, more than the {OUTPUT_KEEP:,} crc parses as JSON\n"
            "  help: check it as text (contains, ~), or print a smaller document")


def _spilled_text(text: str, op: str, sp: Spilled, stream: str, value: Any) -> Verdict:
    """A text check on the whole of a spilled stream, read from its file in bounded memory.

    Raises NotKept when the file is gone (replay: the caller reuses the recorded verdict)."""
    from . import spill

    size = f"{stream} ({sp.size:,} bytes)"
    if isinstance(value, dict) and "pattern" in value:
        try:
            found = spill.search(sp, stream, value) is not None
        except RegexTimeout as e:
            return Verdict.of(False, f"{text}: {e}")
        except ValueError as e:
            return Verdict.of(False, f"{text}: {e}")
        ok = found if op == "~" else not found
        return Verdict.of(ok, f"{text}: {size} {'does not match' if op == '~' else 'matches'} /{value['pattern']}/")
    needle = value if isinstance(value, str) else json.dumps(value)
    if op in ("contains", "not contains"):
        found = spill.contains(sp, stream, needle)
        ok = found if op == "contains" else not found
        return Verdict.of(ok, f"{text}: {size} {'does not contain' if op == 'contains' else 'contains'} "
                              f"{_show(needle)}")
    same = spill.equals(sp, stream, needle)
    if op == "==":
        return Verdict.of(same, f"{text}: output differs: {size}, expected {len(needle.encode()):,} bytes"
                                f" {_show(needle)}")
    return Verdict.of(not same, f"{text}: {size} is {_show(needle)}")


def capture(spec: Mapping[str, Any], out: Any) -> tuple[str | None, str]:
    """The captured value (first group of the regex, or the whole match; or the JSON value), or an error."""
    if not isinstance(out, StepOutput):
        return out.capture(spec)  # type: ignore[no-any-return]
    stream = "stderr" if spec["field"] == "stderr" else "stdout"
    if (why := out.cut_message(stream, f"capture {spec['name']}")) is not None:
        return None, why
    if (sp := out.spilled(stream)) is not None:
        return _spilled_capture(spec, sp, stream)
    if spec["field"] == "json":
        try:
            value = lookup(json.loads(out.stdout), spec["path"])
        except ValueError:
            return None, f"capture {spec['name']}: stdout is not JSON"
        except RecursionError:
            return None, f"capture {spec['name']}: stdout is JSON nested too deeply to read"
        except KeyError as e:
            return None, f"capture {spec['name']}: {e.args[0]}"
        return (value if isinstance(value, str) else json.dumps(value)), ""
    text = out.stdout if spec["field"] == "stdout" else out.stderr
    rx = spec["regex"]
    try:
        m = search_regex(rx, text)
    except RegexTimeout as e:
        return None, f"capture {spec['name']}: {e}"
    if m is None:
        return None, f"capture {spec['name']}: /{rx['pattern']}/ does not match {spec['field']} {_show(text)}"
    return (m.group(1) if m.groups() else m.group(0)), ""


def _spilled_capture(spec: Mapping[str, Any], sp: Spilled, stream: str) -> tuple[str | None, str]:
    """`capture` on the whole of a spilled stream (raises NotKept when its file is gone)."""
    from . import spill

    what = f"capture {spec['name']}"
    if spec["field"] == "json":
        return None, too_big_for_json(what, sp)
    rx = spec["regex"]
    try:
        found = spill.search(sp, stream, rx)
    except (RegexTimeout, ValueError) as e:
        return None, f"{what}: {e}"
    if found is None:
        return None, f"{what}: /{rx['pattern']}/ does not match {spec['field']} ({sp.size:,} bytes)"
    return found[0], ""

