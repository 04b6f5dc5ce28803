"""The IR: what a `.cr` file says, as frozen dataclasses, each node carrying its source location.

The parser builds it, the compiler reads it; nothing here knows about templates, seeds or the DAG.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Loc:
    """A source span: 1-based line and column of the first and last character."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


# ---------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Str:
    """A string literal, unescaped; `{{ ... }}` in it is a template."""

    value: str
    loc: Loc


@dataclass(frozen=True, slots=True)
class Int:
    value: int
    loc: Loc


@dataclass(frozen=True, slots=True)
class Float:
    value: float
    loc: Loc


@dataclass(frozen=True, slots=True)
class Duration:
    """A duration literal; `seconds` is exact for ms/s/m/h inputs written with at most 3 decimals."""

    seconds: float
    text: str
    loc: Loc


@dataclass(frozen=True, slots=True)
class Regex:
    pattern: str
    flags: str
    loc: Loc


@dataclass(frozen=True, slots=True)
class Ref:
    """A bare name used as a value: a `let`, a template parameter, a constant such as `ok` or `true`."""

    name: str
    loc: Loc


@dataclass(frozen=True, slots=True)
class List:
    items: tuple[Value, ...]
    loc: Loc


Value = Str | Int | Float | Duration | Regex | Ref | List


@dataclass(frozen=True, slots=True)
class Name:
    """An identifier at a position (a declaration or a reference to one)."""

    name: str
    loc: Loc


# ---------------------------------------------------------------- argv


@dataclass(frozen=True, slots=True)
class Argv:
    """A command. `form` is "list" (argv as written), "split" (a string split like a shell would, never
    run through one) or "sh" (run by `sh -c`)."""

    form: str
    items: tuple[Value, ...]
    loc: Loc


# ---------------------------------------------------------------- services


@dataclass(frozen=True, slots=True)
class EnvPair:
    key: str
    value: Value
    loc: Loc


@dataclass(frozen=True, slots=True)
class Probe:
    """A readiness probe: kind is tcp, http, exec, log or span."""

    kind: str
    port: Int | Ref | None
    path: Value | None
    status: int | None
    argv: Argv | None
    pattern: Str | Regex | None
    within: Duration | None
    loc: Loc


@dataclass(frozen=True, slots=True)
class Port:
    container: Int | Ref
    host: Int | Ref | None
    loc: Loc


@dataclass(frozen=True, slots=True)
class Volume:
    source: Value
    target: Value
    read_only: bool
    loc: Loc


@dataclass(frozen=True, slots=True)
class Build:
    """`build CONTEXT { dockerfile F target T args { K: V } }`: the image is built from a directory."""

    context: Value
    dockerfile: Value | None
    target: Value | None
    args: tuple[EnvPair, ...]
    network: Value | None
    loc: Loc


@dataclass(frozen=True, slots=True)
class Gpus:
    """`gpus N | all | [ids] { memory SIZE cuda "V" driver "V" }`: GPUs and what each must offer."""

    request: Value | None  # None: `all`
    memory: Value | None
    cuda: Value | None
    driver: Value | None
    loc: Loc


@dataclass(frozen=True, slots=True)
class HostGrant:
    """`allow host "privileged", "/data", ...`: host access a service may take (see compiler/host_access.py)."""

    grants: tuple[Str, ...]
    loc: Loc


@dataclass(frozen=True, slots=True)
class ServiceBody:
    """The items of a service or template body, in source order (later items override earlier ones)."""

    image: tuple[Value, ...]
    command: tuple[Argv, ...]
    env: tuple[EnvPair, ...]
    ports: tuple[Port, ...]
    volumes: tuple[Volume, ...]
    needs: tuple[Name, ...]
    ready: tuple[Probe, ...]
    workdir: tuple[Value, ...]
    build: tuple[Build, ...]
    cpus: tuple[Value, ...]
    memory: tuple[Value, ...]
    gpus: tuple[Gpus, ...]
    loc: Loc
    privileged: tuple[Loc, ...] = ()  # where `privileged` is written
    host_network: tuple[Loc, ...] = ()  # where `network host` is written
    grants: tuple[HostGrant, ...] = ()


@dataclass(frozen=True, slots=True)
class Arg:
    name: str | None
    value: Value
    loc: Loc


@dataclass(frozen=True, slots=True)
class Service:
    """`service NAME { ... }` or `service NAME = template(args) { overrides }`."""

    name: Name
    template: Name | None
    args: tuple[Arg, ...]
    body: ServiceBody
    loc: Loc


@dataclass(frozen=True, slots=True)
class Param:
    name: Name
    default: Value | None
    loc: Loc


@dataclass(frozen=True, slots=True)
class Template:
    name: Name
    params: tuple[Param, ...]
    body: ServiceBody
    loc: Loc


# ---------------------------------------------------------------- tests


@dataclass(frozen=True, slots=True)
class JsonObject:
    """`{ key: value, ... }` written as an http step's JSON body; values may be objects again."""

    pairs: tuple[tuple[str, Value | JsonObject], ...]
    loc: Loc


@dataclass(frozen=True, slots=True)
class Step:
    """`step NAME [after a, b] = exec SERVICE ARGV | run IMAGE [ARGV] | http METHOD URL`, with options."""

    name: Name
    after: tuple[Name, ...]
    action: str  # "exec" | "run" | "http"
    service: Name | None
    image: Value | None
    argv: Argv | None
    timeout: Duration | None
    env: tuple[EnvPair, ...]
    workdir: Value | None
    loc: Loc
    method: Name | None = None  # http: the request method as written
    url: Value | None = None  # http
    headers: tuple[EnvPair, ...] = ()  # http
    body: Value | None = None  # http: a text body
    json: Value | JsonObject | None = None  # http: a JSON body (JSON text, or an object written in place)
    allow: tuple[Str, ...] = ()  # http: hosts besides the suite's services the URL may name
    tls: Tls | None = None  # http: how an https URL's certificate is trusted


@dataclass(frozen=True, slots=True)
class Tls:
    """`tls ca "FILE"` (verify with this CA) or `tls insecure` (no verification) on an http step."""

    ca: Value | None
    insecure: bool
    loc: Loc


@dataclass(frozen=True, slots=True)
class Capture:
    """`capture NAME = STEP.stream ~ /re/`, `capture NAME = STEP.json("$.path")` or
    `capture NAME = STEP.headers["key"]`."""

    name: Name
    step: Name
    field: Name
    regex: Regex | None
    path: Str | None
    loc: Loc
    key: Str | None = None


@dataclass(frozen=True, slots=True)
class AttrClause:
    key: Str
    op: str  # comparison, "~", "!~", "exists", "missing"
    value: Value | None
    loc: Loc


@dataclass(frozen=True, slots=True)
class SpanMatch:
    """A span selector: a name (exact, glob or regex) and clauses."""

    name: Str | Regex | None
    service: Str | None
    kind: Name | None
    status: Name | None
    attrs: tuple[AttrClause, ...]
    parent: Name | None
    ancestor: Name | None
    loc: Loc
    trace_of: Name | None = None  # `in STEP`: the span is in the trace crc started for that step


@dataclass(frozen=True, slots=True)
class SpanDecl:
    name: Name
    match: SpanMatch
    loc: Loc


@dataclass(frozen=True, slots=True)
class Subject:
    """What an expectation looks at: `x.field`, `x.json("$.p")`, `x.attr["k"]`, `x.headers["k"]` or
    `count(...)`."""

    kind: str  # "field" | "path" | "attr" | "index" | "count"
    target: Name | None
    field: Name | None
    arg: Str | None
    count_of: SpanMatch | None
    loc: Loc


@dataclass(frozen=True, slots=True)
class Compare:
    """`expect SUBJECT OP VALUE`; op is a comparison, "contains", "not contains", "~" or "!~"."""

    subject: Subject
    op: str
    value: Value
    loc: Loc
    eventually: Eventually | None = None


@dataclass(frozen=True, slots=True)
class Eventually:
    """`eventually [within D] [every D]` after a step expectation: poll the step until it holds."""

    within: Duration | None
    every: Duration | None
    loc: Loc


@dataclass(frozen=True, slots=True)
class Order:
    """`expect A before B [within D | gap MIN..MAX]` (`after` is stored swapped)."""

    first: Name
    second: Name
    min_gap: Duration | None
    max_gap: Duration | None
    written: str  # "before" | "after", for messages and formatting
    loc: Loc


@dataclass(frozen=True, slots=True)
class Relation:
    """`expect A contains B` or `expect A parent of B`."""

    kind: str  # "contains" | "parent"
    outer: Name
    inner: Name
    loc: Loc


@dataclass(frozen=True, slots=True)
class NoSpan:
    match: SpanMatch
    loc: Loc


@dataclass(frozen=True, slots=True)
class Hermetic:
    allow: tuple[Str, ...]
    loc: Loc


Expectation = Compare | Order | Relation | NoSpan | Hermetic


@dataclass(frozen=True, slots=True)
class Let:
    name: Name
    value: Value
    loc: Loc


TestItem = Step | Capture | Expectation | SpanDecl | Let


@dataclass(frozen=True, slots=True)
class Test:
    name: Str
    timeout: Duration | None
    items: tuple[TestItem, ...]
    loc: Loc
    uses: tuple[Name, ...] = ()  # services named in `uses`, besides those the steps run in or name
    params: tuple[tuple[Name, Value], ...] = ()  # `for NAME in VALUES, ...`: one test per combination


@dataclass(frozen=True, slots=True)
class Mask:
    """`mask /re/`, `mask attr "key"` or `mask json "$.path"`: a volatile value comparisons ignore."""

    kind: str  # "regex" | "attr" | "json"
    value: Regex | Str
    loc: Loc


@dataclass(frozen=True, slots=True)
class Suite:
    name: Str
    seed: Int | None
    clock: Str | None
    timeout: Duration | None
    settle: Duration | None
    masks: tuple[Mask, ...]
    lets: tuple[Let, ...]
    services: tuple[Service, ...]
    tests: tuple[Test, ...]
    loc: Loc
    internal: Loc | None = None  # where `network internal` is written


@dataclass(frozen=True, slots=True)
class Import:
    path: Str
    loc: Loc


@dataclass(frozen=True, slots=True)
class Comment:
    """A `# ...` comment as written (the grammar ignores them; `# crc: allow CODE` silences lints)."""

    text: str
    loc: Loc


@dataclass(frozen=True, slots=True)
class Module:
    """One parsed `.cr` file."""

    path: str
    imports: tuple[Import, ...]
    templates: tuple[Template, ...]
    lets: tuple[Let, ...]
    suites: tuple[Suite, ...]
    comments: tuple[Comment, ...] = ()
