"""Fuzz targets for the files crc reads besides `.cr` sources: recordings, JSON reports, Plans and OTLP payloads.

Seeds are real: the examples run on the scriptable fake backend (tests/fakerun.py, a virtual clock, no engine)
with steps printing JSON and ids and emitting span trees, recorded with `recording.build` and reported with
`report.to_json`; OTLP payloads are export requests built from those spans. Each input is a mutation of a
seed: the decoded data with a value replaced, deleted, duplicated, deepened or spliced from elsewhere and
encoded again (recordings with a valid checksum, so the mutation reaches what reads the data), or its bytes
flipped, cut or spliced. Each input goes through one command, in-process (`crc.cli.main`): `replay`,
`digest`, `diff`, `spans` (tree, waterfall, JSON, grep), `graph`, `report --html`; OTLP payloads through the
receiver's decoders. The property: exit 0, 1 or 2 (3 for a replayed run that recorded an environment
problem), exit 2 with a message naming the file; never a traceback (an exception escaping the command),
nor "internal error" in the output.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import io
import json
import os
import random
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Which commands each kind of file goes through (argv after `crc`; FILE and OTHER are replaced).
COMMANDS: dict[str, list[list[str]]] = {
    "recording": [["replay", "FILE"], ["digest", "FILE"], ["digest", "--items", "FILE"], ["diff", "OTHER", "FILE"],
                  ["diff", "--json", "FILE", "OTHER"], ["spans", "FILE"], ["spans", "-w", "FILE"],
                  ["spans", "--json", "-g", "a", "FILE"], ["spans", "-a", "-g", "GET|db", "FILE"],
                  ["graph", "FILE"], ["graph", "--format", "dot", "FILE"], ["report", "FILE", "--html", "OUT"]],
    "report": [["spans", "FILE"], ["spans", "-w", "FILE"], ["spans", "--json", "-g", "a", "FILE"],
               ["report", "FILE", "--html", "OUT"]],
    "plan": [["graph", "FILE"], ["graph", "--format", "dot", "FILE"]],
}

def _deep_list(depth: int = 3000) -> list[Any]:
    top: list[Any] = []
    d = top
    for _ in range(depth):
        d.append([])
        d = d[0]
    return top


def _deep_map(depth: int = 3000) -> dict[str, Any]:
    top: dict[str, Any] = {}
    m = top
    for _ in range(depth):
        m["a"] = {}
        m = m["a"]
    return top


_DEEP_LIST, _DEEP_MAP = _deep_list(), _deep_map()

HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 1e308, -1e308, 0.5, float("nan"),
    float("inf"), "", "x" * 100_000, "\x00", "é𝔘\u202e", "unset", "error", "ok", "step", "span", "service",
    "assert", "passed", "failed", "skipped", "error", "GET /r1", "a" * 33, "0" * 16, "f" * 32, "(a+)+$",
    "../../../../etc/passwd", "{{ 7*7 }}", "<script>alert(1)</script>", "%s%n", [], {}, [None], {"": None},
    [[1, 2], [3]], {"a": [1, {"b": None}]}, b"\xff\x00", _DEEP_LIST, _DEEP_MAP,
]


# ------------------------------------------------------------------------------------------------ seeds


def _stdout(k: int) -> str:
    return json.dumps({"id": f"{k:016x}", "status": "created", "items": [{"sku": k, "n": 2}], "host": "10.0.0.7"})


def _spans_script(k: int) -> tuple[Any, ...]:
    from crc.runtime.fake_backend import FakeSpan

    return (FakeSpan("GET /orders", -5, 4, "ok", "server", {"http.route": "/orders", "n": k}),
            FakeSpan("db.query", -4.5, 1, kind="client", attributes={"db.system": "postgresql"}, parent=0),
            FakeSpan("redis SET", -3, 0.5, "error", "client", {"db.system": "redis"}, parent=0),
            FakeSpan("render", -2.5, 1, parent=0), FakeSpan("template 1", -2.4, 0.5, parent=3),
            FakeSpan("queue publish", -1, 0.2, kind="producer"))


def seeds(limit: int = 12) -> dict[str, list[bytes]]:
    """Recordings, JSON reports, Plans and OTLP payloads (protobuf and JSON) of the examples run on the fake
    backend: what the mutations start from."""
    import fakerun
    from crc.compiler.compile import compile_file
    from crc.compiler.diagnostics import CompileError
    from crc.runtime import recording
    from crc.runtime.fake_backend import ExecCall, FakeBackend, FakeExec
    from crc.runtime.report import to_json
    from crc.runtime.runner import RunOptions

    calls = iter(range(10**9))

    def on_exec(call: ExecCall) -> FakeExec:
        k = next(calls)
        return FakeExec(exit_code=k % 3 == 2, stdout=_stdout(k) + "\n", stderr=f"warn {k}\n" if k % 2 else "",
                        spans=_spans_script(k))

    out: dict[str, list[bytes]] = {"recording": [], "report": [], "plan": [], "otlp-pb": [], "otlp-json": []}
    files = sorted((ROOT / "examples").rglob("*.cr"))
    for path in files[:limit]:
        try:
            plan = compile_file(str(path), environ={})
        except CompileError:
            continue
        run = fakerun.run([plan], FakeBackend(on_exec=on_exec), RunOptions(span_timeout=0.5))
        spans = [s.to_dict() for s in run.runner.spans]
        rec = recording.build(run.result, [plan], spans, RunOptions(), "fuzz")
        out["recording"].append(rec.to_bytes())
        labels = {n: {"label": n, "loc": None, "suite": d.get("suite"), "test": d.get("test")}
                  for n, d in plan.nodes.items()}
        out["report"].append(json.dumps(to_json(run.result, labels, spans), sort_keys=True).encode())
        out["plan"].append(plan.to_bytes())
        if spans:
            pb = otlp_request(spans)
            out["otlp-pb"].append(pb.SerializeToString())
            out["otlp-json"].append(otlp_json(pb))
    return out


def otlp_request(spans: list[dict[str, Any]]) -> Any:
    """An ExportTraceServiceRequest carrying `spans` (one resource per service)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    by_service: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        by_service.setdefault(s["service"], []).append(s)
    for service, group in by_service.items():
        rs = req.resource_spans.add()
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", service
        ss = rs.scope_spans.add()
        ss.scope.name = "fuzz"
        for s in group:
            sp = ss.spans.add()
            sp.trace_id, sp.span_id = bytes.fromhex(s["trace_id"]), bytes.fromhex(s["span_id"])
            if s.get("parent_span_id"):
                sp.parent_span_id = bytes.fromhex(s["parent_span_id"])
            sp.name, sp.start_time_unix_nano, sp.end_time_unix_nano = s["name"], s["start_ns"], s["end_ns"]
            sp.status.code = {"ok": 1, "error": 2}.get(s["status"], 0)
            for k, v in s["attributes"].items():
                a = sp.attributes.add()
                a.key = k
                if isinstance(v, bool):
                    a.value.bool_value = v
                elif isinstance(v, int):
                    a.value.int_value = v
                else:
                    a.value.string_value = str(v)
            ev = sp.events.add()
            ev.name, ev.time_unix_nano = "event", s["start_ns"]
            arr = ev.attributes.add()
            arr.key = "list"
            arr.value.array_value.values.add().string_value = "x"
    return req


def otlp_json(req: Any) -> bytes:
    """OTLP/JSON of a request: camelCase keys and hex ids, as SDK exporters send it."""
    from google.protobuf import json_format

    doc = json_format.MessageToDict(req)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in sp:
                        import base64

                        sp[key] = base64.b64decode(sp[key]).hex()
    return json.dumps(doc).encode()


# ------------------------------------------------------------------------------------------------ mutation


def _containers(x: Any, limit: int = 5000) -> list[Any]:
    """Up to `limit` lists and maps inside `x`, breadth first (iterative: data may be deep)."""
    out, todo = [], [x]
    while todo and len(out) < limit:
        c = todo.pop()
        if isinstance(c, dict | list):
            out.append(c)
            todo.extend(c.values() if isinstance(c, dict) else c)
    return out


def mutate_data(rng: random.Random, data: Any, n: int | None = None) -> Any:
    """A few structural edits of decoded data, in place: values replaced by hostile ones or by another part of
    the data, keys deleted or renamed, list items duplicated, dropped or reordered."""
    for _ in range(n or rng.randint(1, 4)):
        cs = _containers(data)
        if not cs:
            return data
        c = rng.choice(cs)
        keys = list(c) if isinstance(c, dict) else list(range(len(c)))
        if not keys:
            if isinstance(c, list):
                c.append(_hostile(rng))
            else:
                c[rng.choice(["", "spans", "nodes", "x"])] = _hostile(rng)
            continue
        k = rng.choice(keys)
        op = rng.random()
        if op < 0.45:
            c[k] = _hostile(rng)
        elif op < 0.6:
            other = rng.choice(cs)
            okeys = list(other) if isinstance(other, dict) else list(range(len(other)))
            if okeys:
                c[k] = _copy(other[rng.choice(okeys)])
        elif op < 0.72:
            del c[k]
        elif op < 0.8 and isinstance(c, dict):
            c[rng.choice([k + "x", k.upper(), "", k[:-1]]) if isinstance(k, str) else str(k)] = c.pop(k)
        elif op < 0.88 and isinstance(c, list):
            c.insert(rng.randrange(len(c) + 1), _copy(c[k]))
        elif op < 0.94 and isinstance(c, list):
            rng.shuffle(c)
        else:  # a plausible neighbour: numbers off by one or negated, strings cut
            v = c[k]
            if isinstance(v, bool):
                c[k] = not v
            elif isinstance(v, int):
                c[k] = rng.choice([v + 1, v - 1, -v, v * 2**32])
            elif isinstance(v, str):
                c[k] = v[: rng.randrange(len(v) + 1)]
    return data


def _hostile(rng: random.Random) -> Any:
    """One of HOSTILE_VALUES, a fresh copy of a list or map: later edits work in place, and an edit of the
    shared value would change it for every later input (it grew without bound over a long run)."""
    v = rng.choice(HOSTILE_VALUES)
    if v is _DEEP_LIST:
        return _deep_list()
    if v is _DEEP_MAP:
        return _deep_map()
    return copy.deepcopy(v) if isinstance(v, list | dict) else v


def _copy(x: Any) -> Any:
    """A copy of data (shallow below 50 levels: a hostile deep value is shared, not walked)."""
    def go(v: Any, depth: int) -> Any:
        if depth > 50:
            return v
        if isinstance(v, dict):
            return {k: go(x, depth + 1) for k, x in v.items()}
        if isinstance(v, list):
            return [go(x, depth + 1) for x in v]
        return v
    return go(x, 0)


def mutate_bytes(rng: random.Random, blob: bytes) -> bytes:
    """Bytes flipped, cut, or spliced with random bytes."""
    b = bytearray(blob)
    op = rng.random()
    if op < 0.5 and b:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op < 0.75:
        b = b[: rng.randrange(len(b) + 1)]
    else:
        i = rng.randrange(len(b) + 1)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(b)


def _pack(data: Any) -> bytes | None:
    import msgpack

    try:
        return msgpack.packb(data, use_bin_type=True)
    except (ValueError, TypeError, OverflowError):  # too deep, too big: not an input msgpack can carry
        return None


def _small_for_protobuf(doc: Any, *, depth: int = 32, size: int = 1 << 16) -> bool:
    """Whether `doc` is at most `depth` deep and its strings, keys and containers add up to at most `size`."""
    todo, total = [(doc, 0)], 0
    while todo:
        x, d = todo.pop()
        if d > depth:
            return False
        if isinstance(x, dict):
            total += len(x)
            todo.extend((k, d + 1) for k in x)
            todo.extend((v, d + 1) for v in x.values())
        elif isinstance(x, list):
            total += len(x)
            todo.extend((v, d + 1) for v in x)
        elif isinstance(x, (str, bytes)):
            total += len(x)
        elif isinstance(x, int) and not isinstance(x, bool) and x.bit_length() > 128:
            return False
        if total > size:
            return False
    return True


def mutate_file(rng: random.Random, kind: str, seed: bytes) -> bytes | None:
    """One mutated file of `kind` from `seed` (None when the mutation cannot be encoded)."""
    import msgpack
    from crc.runtime import recording

    structural = rng.random() < 0.85
    if kind == "recording":
        if not structural:
            return mutate_bytes(rng, seed)
        head = recording._HEADER
        data = msgpack.unpackb(seed[head.size:], raw=False, strict_map_key=False)
        body = _pack(mutate_data(rng, data))
        if body is None:
            return None
        version = recording.VERSION if rng.random() < 0.97 else rng.choice([0, 1, recording.VERSION + 1, 65535])
        digest = hashlib.sha256(body).digest() if rng.random() < 0.97 else os.urandom(32)
        return struct.pack(">8sHQ32s", recording.MAGIC, version, len(body), digest) + body
    if kind in ("report", "otlp-json"):
        if not structural:
            return mutate_bytes(rng, seed)
        try:
            return json.dumps(mutate_data(rng, json.loads(seed))).encode()
        except (ValueError, TypeError, RecursionError):
            return None
    if kind == "plan":
        if not structural:
            return mutate_bytes(rng, seed)
        from crc.compiler.plan import Plan

        data = Plan.from_bytes(seed).to_data()
        return _pack(mutate_data(rng, data))
    if kind == "otlp-pb":
        if structural:  # protobuf has no schema-free decoding: mutate the decoded fields through JSON
            from google.protobuf import json_format
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

            req = ExportTraceServiceRequest()
            req.ParseFromString(seed)
            doc = mutate_data(rng, json_format.MessageToDict(req))
            if not _small_for_protobuf(doc):
                # protobuf's JSON parser nests each level's error text in its parent's and repr()s the bad
                # value: a deep or huge edit costs it tens of CPU seconds before it refuses (no crc code runs)
                return mutate_bytes(rng, seed)
            try:
                json_format.ParseDict(doc, req := ExportTraceServiceRequest(), ignore_unknown_fields=True)
            except Exception:  # an edit the schema cannot hold: mutate bytes instead
                return mutate_bytes(rng, seed)
            return req.SerializeToString()
        return mutate_bytes(rng, seed)
    raise ValueError(kind)


# ------------------------------------------------------------------------------------------------ targets


class FileTargets:
    """Runs mutated files through crc's commands and the OTLP decoders; `finding(kind, data, exc, what)` is
    called for each violation of the property."""

    def __init__(self, workdir: Path, finding: Callable[[str, bytes, BaseException | None, str, str], None]) -> None:
        from crc.cli import main

        self.main, self.finding = main, finding
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.seeds = seeds()
        self.counts: dict[str, int] = {}
        self.other = self.dir / "other.crcrec"
        self.other.write_bytes(self.seeds["recording"][0])
        self.current: tuple[str, bytes, str] = ("", b"", "")  # the input running: kind, data, command
        self._parsers: Any = None  # crc's argument parsers, built once (building them is a third of a command)

    def kinds(self) -> list[str]:
        return [k for k, v in self.seeds.items() if v]

    def one(self, rng: random.Random, kind: str) -> bytes | None:
        """Mutate a seed of `kind` and run it through one of its commands (or the OTLP decoders); the input."""
        self.current = (kind, b"", f"the harness mutating a {kind} seed")  # what a stall here is filed under
        blob = mutate_file(rng, kind, rng.choice(self.seeds[kind]))
        if blob is None:
            return None
        if kind.startswith("otlp"):
            self.current = (kind, blob, "the OTLP decoder")
            self._count(kind)
            self.otlp(kind, blob)
            return blob
        argv = rng.choice(COMMANDS[kind])
        self.current = (kind, blob, f"crc {' '.join(argv)}")
        self._count(f"{kind}:{' '.join(a for a in argv if a not in ('FILE', 'OTHER', 'OUT'))}")
        self.command(kind, blob, argv)
        return blob

    def _count(self, target: str) -> None:
        self.counts[target] = self.counts.get(target, 0) + 1

    def otlp(self, kind: str, blob: bytes) -> None:
        """A payload: refused with PayloadError, or decoded into spans that a recording can hold."""
        from crc.compiler.plan import canonical_bytes
        from crc.runtime import otlpdecode as otlp
        from crc.runtime.spans import Span

        try:
            req = otlp.decode_protobuf(blob) if kind == "otlp-pb" else otlp.decode_json(blob)
            spans = otlp.normalize(req, 1, {"crc.run": "r", "crc.suite": "s"})
            canonical_bytes([Span.from_dict(s.to_dict()).to_dict() for s in spans])  # what a recording holds
        except otlp.PayloadError:
            return
        except Exception as e:
            self.finding(kind, blob, e, "", "")

    def command(self, kind: str, blob: bytes, argv: list[str]) -> None:
        """`crc ARGV` on the file in-process: an exit code and, for exit 2, a message naming the file."""
        suffix = {"recording": ".crcrec", "report": ".json", "plan": ".plan"}[kind]
        path = self.dir / f"in{suffix}"
        path.write_bytes(blob)
        out_html = self.dir / "out.html"
        args = [str(path) if a == "FILE" else str(self.other) if a == "OTHER" else str(out_html) if a == "OUT" else a
                for a in argv]
        stdout, stderr = io.TextIOWrapper(io.BytesIO(), "utf-8"), io.StringIO()  # `graph` writes bytes
        code: Any = 0
        cwd = os.getcwd()
        import crc.cli

        build = crc.cli.build_parser
        if self._parsers is None:
            self._parsers = build()
        try:
            os.chdir(self.dir)
            crc.cli.build_parser = lambda: self._parsers
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                self.main(args)
        except SystemExit as e:
            code = e.code
        except Exception as e:
            self.finding(kind, blob, e, f"crc {' '.join(argv)}", "")
            return
        finally:
            crc.cli.build_parser = build
            os.chdir(cwd)
            gc.enable()  # crc's main turns the collector off for its own short life
        stdout.flush()
        text = stdout.buffer.getvalue().decode("utf-8", "replace")  # type: ignore[attr-defined]
        err = stderr.getvalue()
        if code == 130:  # the fuzzer itself was interrupted while crc ran
            raise KeyboardInterrupt
        where = f"crc {' '.join(argv)}"
        if code not in (0, 1, 2, 3) or (code == 3 and argv[0] != "replay"):
            self.finding(kind, blob, None, f"{where}: exit {code}", err[-2000:])
        elif code == 2 and str(path) not in err and "in" + suffix not in err:
            self.finding(kind, blob, None, f"{where}: exit 2 without naming the file", err[-2000:])
        elif "internal error" in text + err or "Traceback" in err:
            self.finding(kind, blob, None, f"{where}: internal error", (text + err)[-4000:])
