"""What changed between two recordings: verdicts, outputs, the span forest, and timings.

Outputs and spans are compared after the digest's normalization (runtime/digest.py), so two runs whose digests
are equal show no difference there. Spans are matched by their path from the root (service:name at each level);
spans sharing a path are paired in canonical order. A duration shift counts when it is both relatively larger
than `threshold` and absolutely larger than `floor_s` (sub-millisecond spans jitter by more than 50%).
Timings of tests and steps are reported the same way but never make recordings "differ": they are noise.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from typing import Any

from crc.compiler.plan import canonical_bytes

from .digest import masked_normalizer, span_shape, span_tree, spans_by_suite
from .masks import NONE, Masks
from .recording import Recording
from .spans import Span


@dataclass(frozen=True)
class RunDiff:
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # {item, before, after}
    outputs: list[dict[str, Any]] = field(default_factory=list)  # {node, field, diff}
    spans_added: list[dict[str, Any]] = field(default_factory=list)  # {path, count}
    spans_removed: list[dict[str, Any]] = field(default_factory=list)
    spans_changed: list[dict[str, Any]] = field(default_factory=list)  # {path, field, before, after}
    durations: list[dict[str, Any]] = field(default_factory=list)  # {path, before_ms, after_ms, change}
    timings: list[dict[str, Any]] = field(default_factory=list)  # {item, before_ms, after_ms, change}
    plans_differ: bool = False

    @property
    def differ(self) -> bool:
        return bool(self.verdicts or self.outputs or self.spans_added or self.spans_removed or self.spans_changed
                    or self.durations)

    def to_json(self) -> dict[str, Any]:
        return {"schema": "crc-diff", "version": 1, "differ": self.differ, "plans_differ": self.plans_differ,
                "verdicts": self.verdicts, "outputs": self.outputs,
                "spans": {"added": self.spans_added, "removed": self.spans_removed, "changed": self.spans_changed,
                          "durations": self.durations},
                "timings": self.timings}

    def to_text(self) -> str:
        lines: list[str] = []
        if self.plans_differ:
            lines.append("note: the recordings ran different Plans (the source changed)")
        if self.verdicts:
            lines.append("verdicts:")
            lines += [f"  {v['item']}: {v['before']} -> {v['after']}" for v in self.verdicts]
        if self.outputs:
            lines.append("outputs:")
            for o in self.outputs:
                lines.append(f"  {o['node']} {o['field']}:")
                lines += ["    " + ln for ln in o["diff"].splitlines()]
        if self.spans_added or self.spans_removed or self.spans_changed or self.durations:
            lines.append("spans:")
            lines += [f"  + {s['path']}" + (f" (x{s['count']})" if s["count"] > 1 else "") for s in self.spans_added]
            lines += [f"  - {s['path']}" + (f" (x{s['count']})" if s["count"] > 1 else "") for s in self.spans_removed]
            lines += [f"  ~ {s['path']}: {s['field']} {s['before']!r} -> {s['after']!r}" for s in self.spans_changed]
            lines += [f"  ~ {s['path']}: duration {s['before_ms']:.1f}ms -> {s['after_ms']:.1f}ms ({s['change']:+.0%})"
                      for s in self.durations]
        if self.timings:
            lines.append("timings (informational):")
            lines += [f"  {t['item']}: {t['before_ms']:.0f}ms -> {t['after_ms']:.0f}ms ({t['change']:+.0%})"
                      for t in self.timings]
        lines.append("the recordings differ" if self.differ else "no difference in verdicts, outputs or spans")
        return "\n".join(lines)


def _shift(before_s: float, after_s: float, threshold: float, floor_s: float) -> float | None:
    delta = after_s - before_s
    if abs(delta) <= floor_s:
        return None
    rel = delta / before_s if before_s > 0 else float("inf")
    return rel if abs(rel) > threshold else None


_SHOWN_LEVELS = 40  # a path deeper than this is shown with its middle elided


class _Paths:
    """Spans grouped by their path from the root (`service:name` at each level, a span of a parent loop marked
    as such). Paths are keyed by a digest chained from the root, so grouping is linear in the spans however deep
    they nest; a path's text is built only when it is shown."""

    def __init__(self, spans: list[Span]) -> None:
        f = span_tree(spans)
        self.spans, self.forest = spans, f
        key = [""] * len(spans)
        # The root end of each span's path (at most _SHOWN_LEVELS // 2 parts), shared down a deep chain.
        self.head: list[tuple[str, ...]] = [()] * len(spans)
        self.groups: dict[str, list[int]] = {}
        for i in f.order:  # parents first
            p = f.parent[i]
            part = self._part(i)
            h = hashlib.blake2b(digest_size=16)
            h.update(key[p].encode() if p >= 0 else b"")
            h.update(b"\0" + part.encode("utf-8", "surrogatepass"))
            key[i] = h.hexdigest()
            up = self.head[p] if p >= 0 else ()
            self.head[i] = up if len(up) >= _SHOWN_LEVELS // 2 else (*up, part)
            self.groups.setdefault(key[i], []).append(i)

    def _part(self, i: int) -> str:
        s = self.spans[i]
        return f"{s.service}:{s.name}" + (" (in a parent loop)" if self.forest.loop[i] else "")

    def text(self, key: str) -> str:
        """The path of the spans grouped under `key`, root first (elided in the middle when deep)."""
        i = self.groups[key][0]
        levels = self.forest.depth[i] + 1
        half = _SHOWN_LEVELS // 2
        if levels <= 2 * half:
            parts: list[str] = []
            while i >= 0:
                parts.append(self._part(i))
                i = self.forest.parent[i]
            return " > ".join(reversed(parts))
        tail = []
        for _ in range(half):
            tail.append(self._part(i))
            i = self.forest.parent[i]
        return " > ".join([*self.head[i], f"… {levels - 2 * half} levels …", *reversed(tail)])

    def of(self, key: str) -> list[Span]:
        return [self.spans[i] for i in self.groups.get(key, ())]


def diff(a: Recording, b: Recording, *, threshold: float = 0.5, floor_s: float = 0.005,
         masks: Masks = NONE) -> RunDiff:
    """Compare recording `a` (before) with `b` (after), ignoring what mask rules cover (both recordings' suite
    rules and `masks`)."""
    out = RunDiff(plans_differ=[p["meta"].get("source_digest") for p in a.plans]
                  != [p["meta"].get("source_digest") for p in b.plans])
    na, ma = masked_normalizer(a, masks)
    nb, mb = masked_normalizer(b, masks)
    masks = ma | mb
    ta = {(t.suite, t.name): t for t in a.tests}
    tb = {(t.suite, t.name): t for t in b.tests}
    for k in sorted(ta.keys() | tb.keys()):
        sa, sb = (ta[k].status if k in ta else "absent"), (tb[k].status if k in tb else "absent")
        if sa != sb:
            out.verdicts.append({"item": f"{k[0]} / {k[1]}", "before": sa, "after": sb})
        elif k in ta and k in tb:
            s = _shift(ta[k].duration_s, tb[k].duration_s, threshold, floor_s)
            if s is not None:
                out.timings.append({"item": f"test {k[0]} / {k[1]}", "before_ms": ta[k].duration_s * 1000,
                                    "after_ms": tb[k].duration_s * 1000, "change": s})
    ra, rb = a.results(), b.results()
    for n in sorted(ra.keys() | rb.keys()):
        x, y = ra.get(n), rb.get(n)
        sa, sb = (x.status if x else "absent"), (y.status if y else "absent")
        if sa != sb:
            out.verdicts.append({"item": n, "before": sa, "after": sb})
        if x is None or y is None or x.kind != "step":
            continue
        oa, ob = x.detail.get("output") or {}, y.detail.get("output") or {}
        if oa.get("exit_code") != ob.get("exit_code"):
            out.outputs.append({"node": n, "field": "exit code",
                                "diff": f"-{oa.get('exit_code')}\n+{ob.get('exit_code')}"})
        for fld in ("stdout", "stderr"):
            ta_, tb_ = na(masks.output(str(oa.get(fld, "")))), nb(masks.output(str(ob.get(fld, ""))))
            if ta_ != tb_:
                d = difflib.unified_diff(ta_.splitlines(keepends=True), tb_.splitlines(keepends=True),
                                         "before", "after", n=2)
                out.outputs.append({"node": n, "field": fld,
                                    "diff": "".join(ln if ln.endswith("\n") else ln + "\n" for ln in d).rstrip("\n")})
        s = _shift(x.duration_s, y.duration_s, threshold, floor_s)
        if s is not None:
            out.timings.append({"item": f"step {n}", "before_ms": x.duration_s * 1000,
                                "after_ms": y.duration_s * 1000, "change": s})
    fa, fb = spans_by_suite(a), spans_by_suite(b)
    found = RunDiff()
    for suite in sorted(fa.keys() | fb.keys()):
        pa, pb = _Paths(fa.get(suite, [])), _Paths(fb.get(suite, []))
        for key in sorted(pa.groups.keys() | pb.groups.keys()):
            xs = sorted(pa.of(key), key=lambda s: canonical_bytes(span_shape(s, na, masks)))
            ys = sorted(pb.of(key), key=lambda s: canonical_bytes(span_shape(s, nb, masks)))
            entries = RunDiff()
            if len(ys) > len(xs):
                entries.spans_added.append({"path": key, "count": len(ys) - len(xs)})
            elif len(xs) > len(ys):
                entries.spans_removed.append({"path": key, "count": len(xs) - len(ys)})
            for sx, sy in zip(xs, ys, strict=False):
                _span_changes(entries, key, span_shape(sx, na, masks), span_shape(sy, nb, masks))
                if sx.timed and sy.timed:
                    s = _shift(sx.duration_ns / 1e9, sy.duration_ns / 1e9, threshold, floor_s)
                    if s is not None:
                        entries.durations.append({"path": key, "before_ms": sx.duration_ns / 1e6,
                                                  "after_ms": sy.duration_ns / 1e6, "change": s})
            if entries.differ:  # the path's text is built only for what is shown
                path = f"{suite} > {(pa if key in pa.groups else pb).text(key)}"
                for mine, theirs in ((found.spans_added, entries.spans_added),
                                     (found.spans_removed, entries.spans_removed),
                                     (found.spans_changed, entries.spans_changed),
                                     (found.durations, entries.durations)):
                    mine.extend({**e, "path": path} for e in theirs)
    # In the order of their paths, as a reader scans them (sorted is stable: a path's own entries keep theirs).
    for mine, theirs in ((out.spans_added, found.spans_added), (out.spans_removed, found.spans_removed),
                         (out.spans_changed, found.spans_changed), (out.durations, found.durations)):
        mine.extend(sorted(theirs, key=lambda e: e["path"]))
    return out


def _span_changes(out: RunDiff, path: str, x: dict[str, Any], y: dict[str, Any]) -> None:
    for fld in ("kind", "status", "status_message"):
        if x[fld] != y[fld]:
            out.spans_changed.append({"path": path, "field": fld, "before": x[fld], "after": y[fld]})
    xa, ya = x["attributes"], y["attributes"]
    for k in sorted(xa.keys() | ya.keys()):
        if xa.get(k) != ya.get(k):
            out.spans_changed.append({"path": path, "field": f"attr {k}", "before": xa.get(k), "after": ya.get(k)})
    if x["events"] != y["events"]:
        out.spans_changed.append({"path": path, "field": "events", "before": [e["name"] for e in x["events"]],
                                  "after": [e["name"] for e in y["events"]]})
