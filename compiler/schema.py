"""The Plan's schema, declared once: every node, edge, suite and test entry as a TypedDict.

TypedDicts rather than dataclasses because a Plan is plain data: msgpack on disk, the same dicts in memory.
The runtime reads node attributes on its hot path (`d["argv"]`), recordings mask and compare the very dicts
they store, and a cached run loads a Plan without building an object per node; TypedDicts are those dicts,
so decoding is a check rather than a conversion, while mypy checks every consumer's reads against the
declarations here. The structure check (`checker`) and the schema tables of docs/architecture.md
(`schema_markdown`) are derived from these classes, so neither can drift from them.

Conventions: every location is a `Loc`; every duration or gap bound is a `Bound` (seconds, inclusive or not),
so no consumer re-derives inclusivity from an operator; every regex is a `Regex` (pattern and flags apart);
node ids are the only references between entries (a test lists its nodes and the service nodes it waits
for; nothing is joined by names).

This module deliberately has no `from __future__ import annotations`: the checker reads the annotations.
"""

import math
import reprlib
import sys
import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, Literal, TypedDict, Union

FORMAT = "crc-plan"
FORMAT_VERSION = 2

# Marks the fields whose text may hold secret placeholders (`⟦secret:NAME⟧`, compiler/secrets.py): the runtime
# reveals them where it hands them to the engine, and the compiler refuses a placeholder anywhere else.
REVEALED = "revealed"


# ---------------------------------------------------------------- shared shapes
class Loc(TypedDict):
    """A source span: 1-based line and column of its first character, and of the position just after its last."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int


class Bound(TypedDict):
    """One side of a range, in seconds: `< 5ms` is `{value: 0.005, inclusive: false}`."""

    value: float
    inclusive: bool


class Regex(TypedDict):
    """A regular expression (Python syntax) and its flags, a subset of `imsx`."""

    pattern: str
    flags: str


class Port(TypedDict):
    """A published port: the container's, and the host's (null: not published)."""

    container: int | None
    host: int | None


class Volume(TypedDict):
    """A bind mount; `source` is relative to the `.cr` file."""

    source: str | None
    target: str | None
    read_only: bool


class Build(TypedDict):
    """`build`: an image built from a context directory (relative to the `.cr` file) before the service
    starts."""

    context: str
    dockerfile: str
    target: str | None
    args: dict[str, str]
    network: str | None


class Gpus(TypedDict):
    """`gpus`: how many (null: all) or which devices, with optional memory (bytes), CUDA and driver needs."""

    count: int | None
    devices: list[str] | None
    memory: int | None
    cuda: str | None
    driver: str | None


class HostGrant(TypedDict):
    """`allow host "GRANT"` as a service uses it: where it was written and what it allows (`privileged`,
    `host-network`, `docker-socket` or a host path)."""

    grant: str
    loc: Loc
    uses: list[str]


class Tls(TypedDict):
    """How an https request verifies the service's certificate: against the system's authorities, or a CA file
    (`ca`, relative to the `.cr` file), or not at all (`insecure`)."""

    ca: str | None
    insecure: bool


class RegexMask(TypedDict):
    """`mask /re/`: text matching it is volatile (ignored by comparisons of runs)."""

    kind: Literal["regex"]
    pattern: str
    flags: str


class ValueMask(TypedDict):
    """`mask attr "key"` or `mask json "$.path"`: a volatile span attribute or JSON value."""

    kind: Literal["attr", "json"]
    value: str


# ---------------------------------------------------------------- readiness probes
class _ProbeBase(TypedDict):
    within: float
    loc: Loc


class TcpProbe(_ProbeBase):
    """Ready when the port accepts a connection."""

    type: Literal["tcp"]
    port: int | None


class HttpProbe(_ProbeBase):
    """Ready when `GET path` answers `status` (null: any 2xx or 3xx)."""

    type: Literal["http"]
    port: int | None
    path: str
    status: int | None


class ExecProbe(_ProbeBase):
    """Ready when the command exits 0 in the container."""

    type: Literal["exec"]
    argv: list[str]


class LogProbe(_ProbeBase):
    """Ready when a log line contains `text`, or matches `regex` (exactly one is set)."""

    type: Literal["log"]
    text: str | None
    regex: Regex | None


class SpanProbe(_ProbeBase):
    """Ready when the service has emitted a span of this name."""

    type: Literal["span"]
    span: str


Probe = TcpProbe | HttpProbe | ExecProbe | LogProbe | SpanProbe


# ---------------------------------------------------------------- step parts
class Capture(TypedDict):
    """A value read from a step's output: `regex` on stdout/stderr (an http step's body; first group, else the
    match), a JSON `path` on stdout or the body (`field: "json"`), or an http response header (`field:
    "headers"`, `key`)."""

    name: str
    loc: Loc
    field: Literal["stdout", "stderr", "body", "json", "headers"]
    regex: Regex | None
    path: str | None
    key: str | None


class Eventually(TypedDict):
    """`expect ... eventually`: the step is re-run every `every` seconds until the expectations `asserts`
    (node ids) hold, for at most `within` seconds."""

    within: float
    every: float
    asserts: list[str]


# ---------------------------------------------------------------- span parts
class TemplateValue(TypedDict):
    """An attribute value that uses captures: rendered when the test's span phase starts (with the node's
    `template_values` and the captures), then regex-escaped if `escape` (`contains`)."""

    template: str
    escape: bool


AttrValue = Regex | TemplateValue | str | int | float | bool | None


class AttrMatch(TypedDict):
    """One attribute clause of a selector; `value` is a `Regex` for `~`/`!~`, null for `exists`/`missing`."""

    key: str
    op: Literal["exists", "missing", "==", "!=", "<", "<=", ">", ">=", "~", "!~"]
    value: AttrValue


class SpanMatch(TypedDict):
    """What a selector matches: a name (exact, glob, or regex), the emitting service's OTel name, kind,
    status, attribute clauses, parent/ancestor as span node ids, and `trace_of`: the step node whose trace
    the span is in (`in STEP`)."""

    name: str | None
    glob: bool
    regex: Regex | None
    service: str | None
    kind: str | None
    status: str | None
    attrs: list[AttrMatch]
    parent: str | None
    ancestor: str | None
    trace_of: str | None


class _ConstraintBase(TypedDict):
    id: str
    loc: Loc
    text: str


class CountConstraint(_ConstraintBase):
    """How many spans match, inclusive on both sides (`max` null: unbounded). A declared span carries an
    implicit `min: 1` (`implicit: true`) that an explicit count replaces."""

    check: Literal["count"]
    min: int
    max: int | None
    implicit: bool


class DurationConstraint(_ConstraintBase):
    """Every matched span's duration lies within the bounds."""

    check: Literal["duration"]
    min: Bound | None
    max: Bound | None


class StatusConstraint(_ConstraintBase):
    """Every matched span's status is (`==`) or is not (`!=`) `value`."""

    check: Literal["status"]
    op: Literal["==", "!="]
    value: str


class AttrConstraint(_ConstraintBase):
    """Every matched span's attribute `key` compares with `value` (a `Regex` for `~`/`!~`)."""

    check: Literal["attr"]
    key: str
    op: Literal["==", "!=", "<", "<=", ">", ">=", "~", "!~"]
    value: AttrValue


SpanConstraint = CountConstraint | DurationConstraint | StatusConstraint | AttrConstraint


class Window(TypedDict):
    """A range of durations (null: unbounded on that side)."""

    min: Bound | None
    max: Bound | None


# ---------------------------------------------------------------- nodes
class _NodeBase(TypedDict):
    suite: str
    test: str | None
    name: str
    label: str
    loc: Loc


class ServiceNode(_NodeBase):
    """A container; id `SUITE::service:NAME`. `test` is null. `network: "host"`: it shares the host's network
    (no suite network, aliases or published ports); `host_access`: the grants it uses."""

    kind: Literal["service"]
    image: str | None
    command: Annotated[list[str] | None, REVEALED]
    env: Annotated[dict[str, str], REVEALED]
    ports: list[Port]
    volumes: list[Volume]
    workdir: str | None
    probes: list[Probe]
    template: str | None
    otel_name: str
    build: Build | None
    cpus: float | None
    memory: int | None
    gpus: Gpus | None
    privileged: bool
    network: Literal["host"] | None
    host_access: list[HostGrant]


class StepNode(_NodeBase):
    """A command, `exec` in a service (`service`: its node id) or `run` in a new container of `image`; id
    `SUITE::TEST::step:NAME`. `deferred_argv`/`deferred_env` name the strings that are templates still
    (they use a capture), rendered at run time with `template_values` and the captures."""

    kind: Literal["step"]
    action: Literal["exec", "run"]
    service: str | None
    image: str | None
    argv: Annotated[list[str] | None, REVEALED]
    env: Annotated[dict[str, str], REVEALED]
    workdir: str | None
    timeout: float | None
    implicit_exit: bool
    captures: list[Capture]
    deferred: bool
    deferred_argv: list[int]
    deferred_env: list[str]
    template_values: Annotated[dict[str, Any], REVEALED]
    eventually: Eventually | None


class HttpStepNode(_NodeBase):
    """`step NAME = http METHOD URL ...`: a request from crc to a service (`service`: its node id, from the
    URL's host). `body` is text, a JSON value or null as `body_type` says; `deferred_http` (`url`, `body`,
    `json`), `deferred_headers` and `deferred_json` (paths into the JSON body) name what is rendered at run
    time. `implicit_status`: no expectation reads the status, so a non-2xx answer fails the step. `tls`: for
    https URLs (null for http)."""

    kind: Literal["step"]
    action: Literal["http"]
    service: str | None
    image: None
    argv: None
    env: dict[str, str]
    workdir: None
    method: str
    url: str
    headers: dict[str, str]
    body: Any
    body_type: Literal["text", "json", "json-text"] | None
    allow: list[str]
    tls: Tls | None
    timeout: float
    implicit_status: bool
    implicit_exit: bool
    captures: list[Capture]
    deferred: bool
    deferred_http: list[str]
    deferred_headers: list[str]
    deferred_json: list[list[Any]]
    template_values: dict[str, Any]
    eventually: Eventually | None


class StepAssertNode(_NodeBase):
    """An expectation on a step's result (`step`: its node id); id `SUITE::TEST::assert:N`. `value` is a
    `Regex` for `~`/`!~`; with `deferred` it is a template rendered at run time. `eventually`: the step is
    re-run until it holds (the step's `eventually` says how)."""

    kind: Literal["assert"]
    check: Literal["step"]
    step: str
    field: Literal["exit", "stdout", "stderr", "duration", "json", "status", "body", "headers"]
    path: str | None
    key: str | None
    op: str
    value: Any
    deferred: bool
    template_values: dict[str, Any]
    eventually: bool


class HermeticNode(_NodeBase):
    """`expect hermetic`: spans reach only these hosts (the `allow` list, service names, OTel names)."""

    kind: Literal["assert"]
    check: Literal["hermetic"]
    allow: list[str]


class SpanNode(_NodeBase):
    """A span selector; id `SUITE::TEST::span:NAME`, anonymous ones (`count(...)`, `no span`) `span:#N`.
    `duration` is the range every duration constraint leaves; `template_values`: the lets its
    `TemplateValue`s read."""

    kind: Literal["span"]
    match: SpanMatch
    constraints: list[SpanConstraint]
    no_span: bool
    duration: Window
    template_values: dict[str, Any]


Node = ServiceNode | StepNode | HttpStepNode | StepAssertNode | HermeticNode | SpanNode
NODE_TYPES: tuple[type, ...] = (ServiceNode, StepNode, HttpStepNode, StepAssertNode, HermeticNode, SpanNode)


# ---------------------------------------------------------------- edges
class NeedsEdge(TypedDict):
    """service → service (`loc`: the `needs` clause), or service → first steps of a test that waits for it."""

    kind: Literal["needs"]
    loc: Loc | None


class AfterEdge(TypedDict):
    """step → step inside a test: `after`, source order, or a capture's producer (`capture`: its name)."""

    kind: Literal["after"]
    capture: str | None


class ThenEdge(TypedDict):
    """Last nodes of a test → first steps of the next test sharing a service; waits without propagating
    failure."""

    kind: Literal["then"]


class ChecksEdge(TypedDict):
    """step → assert: an expectation on the step's result; exit (or http status) assert → the step's other
    asserts: they wait for it and are skipped when it fails (the real error first)."""

    kind: Literal["checks"]


class ObservesEdge(TypedDict):
    """Last steps of a test → span / hermetic assert: span checks look at spans arriving once they ran."""

    kind: Literal["observes"]


class _SpanEdgeBase(TypedDict):
    loc: Loc
    expected: bool


class PrecedesEdge(_SpanEdgeBase):
    """`expect A before B` (or `B after A`): some A ends before B starts, the gap within `min_gap` (at least
    an inclusive 0) and `max_gap`."""

    kind: Literal["precedes"]
    min_gap: Bound
    max_gap: Bound | None
    written: Literal["before", "after"]


class ContainsEdge(_SpanEdgeBase):
    """`expect A contains B`: B lies within some A's time window."""

    kind: Literal["contains"]


class ParentEdge(_SpanEdgeBase):
    """B's parent is an A: a selector's `parent` clause (`selector`, a filter) and/or `expect A parent of B`
    (`expected`, checked)."""

    kind: Literal["parent"]
    selector: bool


class AncestorEdge(_SpanEdgeBase):
    """A selector's `ancestor` clause: a filter, never checked on its own."""

    kind: Literal["ancestor"]
    selector: bool


Edge = NeedsEdge | AfterEdge | ThenEdge | ChecksEdge | ObservesEdge | PrecedesEdge | ContainsEdge | ParentEdge \
    | AncestorEdge
EDGE_TYPES: tuple[type, ...] = (NeedsEdge, AfterEdge, ThenEdge, ChecksEdge, ObservesEdge, PrecedesEdge,
                                ContainsEdge, ParentEdge, AncestorEdge)


# ---------------------------------------------------------------- suites, tests, metadata
class SuiteEntry(TypedDict):
    """A suite: its seeds and clock, timeouts in seconds, its service node ids, the OTel names of its
    services, the environment variables its templates read (null: unset), its test ids, its masks, and its
    network (`internal`: no route out of it)."""

    name: str
    seed: int
    faker_seed: int
    clock: str
    timeout: float
    settle: float
    services: list[str]
    otel_services: list[str]
    env_reads: dict[str, str | None]
    loc: Loc
    tests: list[str]
    masks: list[RegexMask | ValueMask]
    network: Literal["internal", "bridge"]


class TestEntry(TypedDict):
    """A test, id `SUITE::TEST`: its nodes, the service nodes it uses (holds, in source order with other
    tests using them) and those it waits for (what it uses and every service no test uses); `by_trace`:
    its span selectors are all scoped to its steps' traces, so it need not run alone."""

    id: str
    suite: str
    name: str
    timeout: float | None
    loc: Loc
    nodes: list[str]
    uses: list[str]
    waits: list[str]
    by_trace: bool


class Import(TypedDict):
    """A file the source imports (stdlib modules as `<std>/NAME.cr`) and the SHA-256 of its text."""

    path: str
    digest: str


class Meta(TypedDict):
    """Where the Plan came from: the source path as given, the SHA-256 of its text, its imports, and the
    crc that compiled it."""

    source: str
    source_digest: str
    imports: list[Import]
    crc_version: str


NODE_KINDS = tuple(sorted({typing.get_args(typing.get_type_hints(t)["kind"])[0] for t in NODE_TYPES}))
EDGE_KINDS = tuple(typing.get_args(typing.get_type_hints(t)["kind"])[0] for t in EDGE_TYPES)


# ---------------------------------------------------------------- helpers every consumer shares
@cache
def revealed() -> dict[str, tuple[str, ...]]:
    """The fields of each node kind that may hold secret placeholders (annotated `REVEALED` above)."""
    out: dict[str, set[str]] = {}
    for t in NODE_TYPES:
        hints = typing.get_type_hints(t, include_extras=True)
        kind = typing.get_args(hints["kind"])[0]
        out.setdefault(kind, set()).update(k for k, h in hints.items() if REVEALED in getattr(h, "__metadata__", ()))
    return {k: tuple(sorted(v)) for k, v in out.items() if v}


def loc_text(loc: Loc | None) -> str:
    """`file:line:col`, the form messages and reports show ("" for none)."""
    return f"{loc['file']}:{loc['line']}:{loc['col']}" if loc else ""


def regex_source(r: Regex) -> str:
    """One pattern string with the flags inline (`(?i)x`), for matchers that take a single string."""
    return f"(?{r['flags']}){r['pattern']}" if r["flags"] else r["pattern"]


def regex_text(r: Regex) -> str:
    """The regex as written in `.cr` (`/x/i`)."""
    return f"/{r['pattern']}/{r['flags']}"


def gap_text(lo: float | None, hi: float | None) -> str:
    """A `before` gap in seconds as written (`gap 50ms..`, `gap ..2s` as `gap ..2000ms`); "" when there is
    none (a zero minimum is no minimum). Both ends are inclusive, as the language has them."""
    low = f"{lo * 1000:g}ms" if lo else ""
    high = "" if hi is None else f"{hi * 1000:g}ms"
    return f"gap {low}..{high}" if low or high else ""


def bound_text(b: Bound, side: Literal["min", "max"]) -> str:
    """A bound as a comparison: `> 20ms`, `<= 1s`."""
    op = (">" if side == "min" else "<") + ("=" if b["inclusive"] else "")
    return f"{op} {b['value'] * 1000:g}ms"


# ---------------------------------------------------------------- the structure check
class SchemaError(ValueError):
    """Data that is not shaped as the schema says; the message names where."""


# Where a value is: text, or (where its container is, key or index), joined into text only for a message.
Where = Any
Check = Callable[[Any, Where], None]


def _at(where: Where) -> str:
    """`nodes[3].match.attrs[0]` from the nested pairs the checkers pass down."""
    if isinstance(where, str):
        return where
    parent, part = where
    return f"{_at(parent)}[{part}]" if isinstance(part, int) else f"{_at(parent)}.{part}"


@cache
def checker(tp: Any) -> Check:
    """A function that raises SchemaError unless a value decoded from msgpack has type `tp` (a TypedDict,
    union, list, dict, Literal or scalar of this module). Built once per type."""
    if tp is Any:
        return lambda v, where: None
    if tp is type(None):
        return _expect(lambda v: v is None, "null")
    if tp is bool:
        return _expect(lambda v: isinstance(v, bool), "a boolean")
    if tp is int:
        return _expect(lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number")
    if tp is float:
        return _expect(lambda v: (isinstance(v, int) and not isinstance(v, bool))
                       or (isinstance(v, float) and math.isfinite(v)), "a finite number")
    if tp is str:
        return _expect(lambda v: isinstance(v, str), "text")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return _expect(lambda v: v in args and not isinstance(v, bool), " or ".join(map(repr, args)))
    if origin is list:
        item = checker(args[0])

        def check_list(v: Any, where: Where) -> None:
            if not isinstance(v, list | tuple):
                raise SchemaError(f"{_at(where)} is not a list")
            for i, x in enumerate(v):
                item(x, (where, i))
        return check_list
    if origin is dict:
        value = checker(args[1])

        def check_dict(v: Any, where: Where) -> None:
            if not isinstance(v, dict):
                raise SchemaError(f"{_at(where)} is not a map")
            for k, x in v.items():
                if not isinstance(k, str):
                    raise SchemaError(f"{_at(where)} has a key that is not text")
                value(x, (where, k))
        return check_dict
    if origin in (Union, types.UnionType):
        return _union(args)
    if typing.is_typeddict(tp):
        return _typeddict(tp)
    raise TypeError(f"the schema uses a type the checker does not know: {tp!r}")  # pragma: no cover


def _expect(ok: Callable[[Any], bool], what: str) -> Check:
    def check(v: Any, where: Where) -> None:
        if not ok(v):
            raise SchemaError(f"{_at(where)} is not {what}: {short_repr(v)}")
    return check


def _exact(tp: Any) -> frozenset[type]:
    """The exact types whose every value `checker(tp)` accepts without looking further (empty: none), so a
    TypedDict's check passes most scalar fields with one set lookup instead of a call."""
    if tp is str or tp is bool or tp is type(None):
        return frozenset([tp])
    if tp is int:
        return frozenset([int])  # `type(True) is bool`, so booleans still go to the full check
    if typing.get_origin(tp) in (Union, types.UnionType):  # a type one member accepts whole, the union does
        return frozenset().union(*(_exact(a) for a in typing.get_args(tp)))
    return frozenset()


def _texts(tp: Any) -> frozenset[str]:
    """The texts a Literal field accepts as they are (its tags, such as `kind`); empty for other types."""
    args = typing.get_args(tp) if typing.get_origin(tp) is Literal else ()
    return frozenset(a for a in args if isinstance(a, str))


def _typeddict(tp: Any) -> Check:
    hints = typing.get_type_hints(tp)
    fields = {k: checker(t) for k, t in hints.items()}
    exact = {k: _exact(t) for k, t in hints.items()}
    texts = {k: _texts(t) for k, t in hints.items()}
    required = frozenset(tp.__required_keys__)

    def check(v: Any, where: Where) -> None:
        if not isinstance(v, dict):
            raise SchemaError(f"{_at(where)} is not a map")
        missing = required.difference(v)
        if missing:
            raise SchemaError(f"{_at(where)} lacks {', '.join(sorted(missing))}")
        for k, x in v.items():
            f = fields.get(k)
            if f is None:
                raise SchemaError(f"{_at(where)} has an unknown field {short_repr(k)}")
            if type(x) not in exact[k] and not (type(x) is str and x in texts[k]):
                f(x, (where, k))
    return check


def _literals(tp: Any) -> dict[str, tuple[Any, ...]]:
    """The Literal-typed fields of a TypedDict (its tags, such as `kind`)."""
    if not typing.is_typeddict(tp):
        return {}
    return {k: typing.get_args(t) for k, t in typing.get_type_hints(tp).items()
            if typing.get_origin(t) is Literal}


def _union(members: tuple[Any, ...]) -> Check:
    """A union is checked as the member its tags select (so the message is that member's), else as the first
    member that accepts the value."""
    checks = [(checker(m), _literals(m)) for m in members]
    fields = sorted({k for _, tags in checks for k in tags})
    chosen: dict[tuple[Any, ...], Check] = {}  # tag values -> the one member they select (few: kept)

    def check(v: Any, where: Where) -> None:
        if isinstance(v, dict) and fields:
            key = tuple(v.get(k) for k in fields)
            c = chosen.get(key) if all(isinstance(x, str | None) for x in key) else None
            if c is not None:
                c(v, where)
                return
            tagged = [c for c, tags in checks if tags and all(v.get(k) in allowed for k, allowed in tags.items())]
            if len(tagged) == 1:
                if all(isinstance(x, str | None) for x in key):
                    chosen[key] = tagged[0]
                tagged[0](v, where)
                return
        problems = []
        for c, _ in checks:
            try:
                c(v, where)
                return
            except SchemaError as e:
                problems.append(str(e))
        raise SchemaError(problems[0] if len(problems) == 1 else f"{_at(where)} is none of the allowed shapes: "
                          f"{problems[0]}")
    return check


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60  # a crafted Plan may nest data 1,000 levels deep


def short_repr(x: Any) -> str:
    """`repr(x)` cut to 60 characters, at most 3 levels deep: safe on any data a damaged file holds."""
    text = _REPR.repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------- documentation
def type_text(tp: Any) -> str:
    """A schema type as the docs write it: `Bound | null`, `list[Probe]`, `"exec" | "run"`."""
    if tp is Any:
        return "any"
    if tp is type(None):
        return "null"
    if tp in (bool, int, float, str):
        return {bool: "bool", int: "int", float: "number", str: "text"}[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " \\| ".join(f'`"{a}"`' for a in args)
    if origin is list:
        return f"list[{type_text(args[0])}]"
    if origin is dict:
        return f"map[{type_text(args[0])}, {type_text(args[1])}]"
    if origin in (Union, types.UnionType):
        named = {id(t): n for n, t in _UNIONS.items()}
        if id(tp) in named:
            return named[id(tp)]
        return " \\| ".join(type_text(a) for a in args)
    return str(getattr(tp, "__name__", tp))


_UNIONS = {"Probe": Probe, "SpanConstraint": SpanConstraint, "AttrValue": AttrValue}


def schema_markdown() -> str:
    """The schema as Markdown tables, one per entry type: what docs/architecture.md shows between its
    `schema:begin` and `schema:end` markers (a test keeps the two equal)."""
    groups = [
        ("Plan entries", [Meta, SuiteEntry, TestEntry, Import]),
        ("Nodes", list(NODE_TYPES)),
        ("Edges", list(EDGE_TYPES)),
        ("Parts", [Loc, Bound, Regex, Window, Port, Volume, Build, Gpus, Tls, RegexMask, ValueMask, Eventually,
                   TemplateValue, HostGrant, TcpProbe,
                   HttpProbe, ExecProbe, LogProbe,
                   SpanProbe, Capture, SpanMatch, AttrMatch, CountConstraint, DurationConstraint,
                   StatusConstraint, AttrConstraint]),
    ]
    common = typing.get_type_hints(_NodeBase)
    out: list[str] = []
    for title, classes in groups:
        out.append(f"#### {title}\n")
        if title == "Nodes":
            out.append("Every node also has " + ", ".join(f"`{k}`: {type_text(t)}" for k, t in common.items())
                       + " (`test` is null for services).\n")
        out.append("| Type | Fields | Meaning |")
        out.append("|---|---|---|")
        for cls in classes:
            hints = typing.get_type_hints(cls)
            if title == "Nodes":
                hints = {"kind": hints["kind"], **{k: t for k, t in hints.items() if k not in common}}
            secret = set(revealed().get(typing.get_args(hints["kind"])[0], ())) if title == "Nodes" else set()
            fields = ", ".join(f"`{k}`: {type_text(t)}" + (" (may hold secrets)" if k in secret else "")
                               for k, t in hints.items())
            doc = " ".join((cls.__doc__ or "").split())
            out.append(f"| `{cls.__name__}` | {fields} | {doc} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover - `python -m crc.compiler.schema` prints the tables
    sys.stdout.write(schema_markdown())
