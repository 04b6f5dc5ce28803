"""The recording format: everything a run observed, so `crc replay`, `crc digest` and `crc diff` need no engine.

A file is a fixed header then one msgpack document (docs/recording.md):

    magic  b"CRC-REC\\n"   8 bytes
    version              2 bytes, big endian
    length               8 bytes, big endian: the document's size
    sha256               32 bytes of the document
    document             canonical msgpack (sorted keys), see `Recording.to_data`

The header is checked before anything is decoded, so a newer, truncated or corrupt file gets a precise message.
Secrets are masked when a recording is built (`mask_data`), never later: nothing unmasked reaches the disk.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgpack
from crc.compiler.plan import Plan, PlanFormatError, canonical_bytes

from . import plaindata as pd
from .options import RunOptions
from .results import NodeResult, TestResult
from .spans import Span

FORMAT = "crc-recording"
# 2: node results carry their cause; span windows how long the phase waited. 3: Plans of format 2. 4: a step
# output past the in-memory bound is spilled: the recording keeps its first part, size and sha256, and replay
# keeps the live verdicts of the checks on it (a version 3 reader would fail them as cut short).
VERSION = 4
MAGIC = b"CRC-REC\n"
_HEADER = struct.Struct(">8sHQ32s")
MASK = "<masked>"
SECRET_KEY = re.compile(r"TOKEN|PASSWORD|SECRET|KEY", re.I)
MIN_SECRET_LEN = 4  # shorter values are masked where they are set, not searched for in outputs


class RecordingError(Exception):
    """A file that is not a recording this crc can read (exit 2)."""


@dataclass(frozen=True)
class Recording:
    """One recorded run. `plans` are Plan data (`Plan.to_data`); span nodes' details refer to `spans` by index."""

    crc_version: str
    run_id: str
    started_ns: int
    ended_ns: int
    interrupted: bool
    exit_code: int
    options: RunOptions  # its recorded projection (`RunOptions.recorded`)
    plans: tuple[dict[str, Any], ...]
    nodes: tuple[NodeResult, ...]
    tests: tuple[TestResult, ...]
    spans: tuple[Span, ...]
    images: dict[str, str] = field(default_factory=dict)
    masked_keys: tuple[str, ...] = ()
    gpus: dict[str, Any] = field(default_factory=dict)  # GPU samples of the run (`gpu.Samples.to_dict`), if any

    # ---------------------------------------------------------------- views
    def plan_objects(self) -> list[Plan]:
        """The recorded Plans as objects, each checked against the schema once per recording."""
        cached = self.__dict__.get("_plan_objects")
        if cached is None:
            try:
                cached = [Plan.from_data(p) for p in self.plans]
            except PlanFormatError as e:
                raise RecordingError(f"the recorded Plan is damaged: {e}") from e
            object.__setattr__(self, "_plan_objects", cached)  # frozen: the cache is not a field
        return list(cached)

    def results(self) -> dict[str, NodeResult]:
        return {r.node: r for r in self.nodes}

    @property
    def seeds(self) -> list[dict[str, Any]]:
        return [{"source": p["meta"].get("source"), "suite": s.get("name"), "seed": s.get("seed"),
                 "faker_seed": s.get("faker_seed"), "clock": s.get("clock")}
                for p in self.plans for s in p.get("suites", [])]

    def captured_bytes(self) -> int:
        """What the run captured, in bytes of text: outputs, messages, log tails and span content."""
        n = 0
        for r in self.nodes:
            out = r.detail.get("output") or {}
            n += len(str(out.get("stdout", "")).encode()) + len(str(out.get("stderr", "")).encode())
            n += len(str(out.get("body", "")).encode())
            n += len(r.message.encode()) + len(str(r.detail.get("log_tail", "")).encode())
        for s in self.spans:
            n += len(_pack(s.to_dict()))
        return n

    # ---------------------------------------------------------------- plain data
    def to_data(self) -> dict[str, Any]:
        index = {(s.trace_id, s.span_id): i for i, s in enumerate(self.spans)}
        return {
            "format": FORMAT,
            "version": VERSION,
            "crc_version": self.crc_version,
            "run": {"run_id": self.run_id, "started_ns": self.started_ns, "ended_ns": self.ended_ns,
                    "interrupted": self.interrupted, "exit_code": self.exit_code},
            "options": self.options.to_data(),
            "seeds": self.seeds,
            "images": dict(self.images),
            "masked_keys": list(self.masked_keys),
            "gpus": dict(self.gpus),
            "plans": list(self.plans),
            "nodes": [_node_out(r, index) for r in self.nodes],
            "tests": [t.to_dict() for t in self.tests],
            "spans": [s.to_dict() for s in self.spans],
        }

    @classmethod
    def from_data(cls, data: Any) -> Recording:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise RecordingError("not a crc recording")
        _check_version(data.get("version"))
        try:
            spans = tuple(Span.from_dict(s) for s in _list(data, "spans"))
            run = data["run"]
            plans = tuple(_list(data, "plans"))
            objects = [Plan.from_data(p) for p in plans]  # validates the Plans' own format and version
            rec = cls(
                crc_version=str(data.get("crc_version", "")),
                run_id=str(run["run_id"]), started_ns=pd.integer(run, "started_ns"),
                ended_ns=pd.integer(run, "ended_ns"), interrupted=bool(run["interrupted"]),
                exit_code=pd.integer(run, "exit_code"),
                options=RunOptions.from_data(data["options"]),
                plans=plans,
                nodes=tuple(_node_in(d, spans) for d in _list(data, "nodes")),
                tests=tuple(TestResult.from_dict(t) for t in _list(data, "tests")),
                spans=spans,
                images={str(k): str(v) for k, v in dict(data.get("images", {})).items()},
                masked_keys=tuple(str(k) for k in data.get("masked_keys", ())),
                gpus=dict(data.get("gpus") or {}),
            )
        except PlanFormatError as e:
            raise RecordingError(f"the recorded Plan is damaged: {e}") from e
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as e:
            raise RecordingError(f"damaged recording: bad or missing field {e}") from e
        object.__setattr__(rec, "_plan_objects", objects)  # checked once: plan_objects() reuses them
        return rec

    # ---------------------------------------------------------------- bytes
    def to_bytes(self) -> bytes:
        body = canonical_bytes(self.to_data())
        return _HEADER.pack(MAGIC, VERSION, len(body), hashlib.sha256(body).digest()) + body

    @classmethod
    def from_bytes(cls, blob: bytes) -> Recording:
        if len(blob) < len(MAGIC) or not blob.startswith(MAGIC):
            raise RecordingError("not a crc recording (no CRC-REC header)")
        if len(blob) < _HEADER.size:
            raise RecordingError(f"truncated recording: {len(blob)} bytes, shorter than its header")
        _magic, version, length, digest = _HEADER.unpack_from(blob)
        _check_version(version)
        body = blob[_HEADER.size:]
        if len(body) < length:
            raise RecordingError(f"truncated recording: {len(body)} of {length} bytes of data")
        if len(body) > length:
            raise RecordingError(f"corrupt recording: {len(body) - length} unexpected bytes after the data")
        if hashlib.sha256(body).digest() != digest:
            raise RecordingError("corrupt recording: the checksum does not match the data")
        try:
            data = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as e:  # msgpack raises several unrelated types for damaged input
            raise RecordingError(f"corrupt recording: {e}") from e
        return cls.from_data(data)


def is_recording(path: Path) -> bool:
    """True when the file starts with the recording magic (cheap: reads 8 bytes)."""
    try:
        with path.open("rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read(path: Path) -> Recording:
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise RecordingError(f"cannot read {path}: {e.strerror or e}") from e
    return Recording.from_bytes(blob)


def write(path: Path, rec: Recording) -> int:
    """Write atomically (a reader never sees half a file); returns the size in bytes."""
    blob = rec.to_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)
    return len(blob)


def _check_version(version: Any) -> None:
    if not isinstance(version, int):
        raise RecordingError("damaged recording: no format version")
    if version > VERSION:
        raise RecordingError(f"recording format version {version} was written by a newer crc; this crc reads "
                             f"version {VERSION} and older: upgrade crc")
    if version < 1:
        raise RecordingError(f"damaged recording: format version {version}")
    if version < VERSION:
        # Version 1 results had no cause: replay could not tell a timeout from a failed check. Version 2 holds
        # Plans of format 1, which this crc does not read. Version 3 knows nothing of spilled streams: one
        # version read means one meaning of a recorded output.
        raise RecordingError(f"recording format version {version} was written by an older crc; this crc reads "
                             f"version {VERSION} only: record the run again with `crc run --record FILE`")


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    v = data[key]
    if not isinstance(v, list):
        raise TypeError(f"{key!r} is not a list")
    return v


def _pack(x: Any) -> bytes:
    return msgpack.packb(x, use_bin_type=True)


def _node_out(r: NodeResult, index: Mapping[tuple[str, str], int]) -> dict[str, Any]:
    d = r.to_dict()
    spans = d["detail"].get("spans")
    if spans is not None:
        # Span nodes name the spans they matched; store indexes so each span is stored once.
        detail = {k: v for k, v in d["detail"].items() if k != "spans"}
        detail["span_refs"] = [index[(s["trace_id"], s["span_id"])] for s in spans
                               if (s["trace_id"], s["span_id"]) in index]
        d["detail"] = detail
    return d


def _node_in(d: Mapping[str, Any], spans: tuple[Span, ...]) -> NodeResult:
    r = NodeResult.from_dict(dict(d))
    if not isinstance(r.detail, dict):
        raise TypeError("node detail is not a map")
    refs = r.detail.get("span_refs")
    if "spans" in r.detail:
        raise TypeError("'spans' in a node's detail (a recording refers to its spans by index)")
    if refs is None:
        return r
    detail = {k: v for k, v in r.detail.items() if k != "span_refs"}
    detail["spans"] = [spans[i].to_dict() for i in refs]
    return replace(r, detail=detail)


# -------------------------------------------------------------------- masking


def secret_keys_and_values(plans: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """Env keys that look secret (TOKEN, PASSWORD, SECRET, KEY) in any service or step, and their values.

    Values still holding a template (`{{ }}`) are rendered only at run time and cannot be known here.
    """
    keys: set[str] = set()
    values: set[str] = set()
    for p in plans:
        for _n, attrs in p["nodes"]:
            for k, v in (attrs.get("env") or {}).items():
                if SECRET_KEY.search(str(k)):
                    keys.add(str(k))
                    if isinstance(v, str) and v and "{{" not in v:
                        values.add(v)
    return sorted(keys), sorted(values, key=lambda s: (-len(s), s))  # longest first: no partial masks


def mask_data(x: Any, keys: Iterable[str], values: Iterable[str]) -> Any:
    """A copy of plain data with secret env entries set to MASK and secret values replaced in every string."""
    key_set = set(keys)
    needles = [v for v in values if len(v) >= MIN_SECRET_LEN]
    rx = re.compile("|".join(re.escape(v) for v in needles)) if needles else None

    def walk(v: Any, secret: bool = False) -> Any:
        if isinstance(v, str):
            if secret:
                return MASK
            return rx.sub(MASK, v) if rx is not None and rx.search(v) else v
        if isinstance(v, dict):
            return {k: walk(val, secret or (k in key_set and isinstance(val, str))) for k, val in v.items()}
        if isinstance(v, list | tuple):
            return [walk(i) for i in v]
        return v

    return walk(x)


def mask_plan(plan: Plan) -> tuple[Plan, list[str]]:
    """The Plan as a recording stores it (secrets masked), and the secret keys found."""
    data = plan.to_data()
    keys, values = secret_keys_and_values([data])
    return Plan.from_data(mask_data(data, keys, values)), keys


def build(result: Any, plans: list[Plan], spans: list[dict[str, Any]], options: Any, crc_version: str) -> Recording:
    """A masked recording of a finished run (`RunResult`, its Plans, every span collected, the run's options)."""
    plan_data = [p.to_data() for p in plans]
    keys, values = secret_keys_and_values(plan_data)
    nodes = [r.to_dict() for _, r in sorted(result.nodes.items())]
    images: dict[str, str] = {}
    by_image = {d["image"]: True for p in plans for d in p.nodes.values() if d.get("image")}
    for r in result.nodes.values():
        iid = r.detail.get("image_id")
        if iid:
            node = next((p.node(r.node) for p in plans if r.node in p.nodes), None)
            if node is not None and node.get("image") in by_image:
                images[node["image"]] = iid
    raw = {"plans": plan_data, "nodes": nodes, "tests": [t.to_dict() for t in result.tests], "spans": spans}
    m = mask_data(raw, keys, values)
    rec_spans = tuple(Span.from_dict(s) for s in m["spans"])
    return Recording(
        crc_version=crc_version, run_id=result.run_id, started_ns=result.started_ns, ended_ns=result.ended_ns,
        interrupted=result.interrupted, exit_code=130 if result.interrupted else result.exit_code(),
        options=options.recorded(), plans=tuple(m["plans"]),
        nodes=tuple(NodeResult.from_dict(d) for d in m["nodes"]),
        tests=tuple(TestResult.from_dict(t) for t in m["tests"]),
        spans=rec_spans, images=images, masked_keys=tuple(keys))
