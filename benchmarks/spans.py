"""Cost of checking span expectations (crc.runtime.spancheck.evaluate) as the number of spans grows.

Synthetic but test-shaped spans: traces of 10 spans (a server span under one of 50 routes, with validate,
db, redis, render, queue and template children; ~170 distinct names, 5 services, 1% errors), checked against
50 constraints of every kind: counts, durations, statuses and attributes on exact, glob, regex, name-less,
parent- and ancestor-qualified selectors, and precedes/contains/parent relations with many spans on each
side (a tenth of all spans per side), plus a hermeticity check. Some constraints fail on purpose, so the
cost of writing failure messages is included.

Per size it prints: evaluate() CPU time of this process (best of --repeat; CPU time because the machine is
shared and wall time swings with other load; wall time is printed beside it), the part spent indexing
(evaluate with no constraint), cost per span and per span per constraint, and the growth ratio to the previous
size normalized to a 10x step (10 is linear). Goal: near-linear growth (<= 13 per 10x on the largest step).

OTLP receiver ingest throughput is measured by benchmarks/ingest.py (OTLP/HTTP and OTLP/gRPC from the real
SDK exporters), not here.

Usage: python benchmarks/spans.py [--smoke] [--sizes 10000,100000,1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from typing import Any

from crc.runtime import spancheck as sc
from crc.runtime.spans import Span

T0 = 1_750_000_000_000_000_000
MS = 1_000_000
ROUTES = 50
TEMPLATES = 100
SERVICES = ["api", "orders", "billing", "search", "gateway"]
GOAL_RATIO = 13.0  # per 10x: linear is 10, n log n at these sizes is ~12


def make_spans(n: int) -> list[Span]:
    """`n` spans in traces of 10; trace k starts at k ms and its children follow one another inside it."""
    out: list[Span] = []
    k = 0
    while len(out) < n:
        out.extend(_trace(k)[: n - len(out)])
        k += 1
    return out


def _trace(k: int) -> list[Span]:
    route = k % ROUTES
    svc = SERVICES[route % len(SERVICES)]
    trace = f"{k:032x}"
    t = T0 + k * MS
    err = k % 100 == 99
    root_id = f"{k * 16:016x}"
    res = {"service.name": svc, "deployment.environment": "ci"}

    def child(i: int, name: str, start: int, dur: int, kind: str = "internal", parent: str = root_id,
              status: str = "unset", **attrs: Any) -> Span:
        # Offsets are in units of 10 us: a trace lasts 90 ms and a new one starts every 1 ms, so traces overlap
        # like concurrent requests do.
        return Span(trace, f"{k * 16 + i:016x}", parent, name, kind, status, "", t + start * 100,
                    t + (start + dur) * 100, svc, attrs, res)

    return [
        Span(trace, root_id, None, f"GET /r{route}", "server", "error" if err else "unset", "", t, t + 90 * MS,
             svc, {"http.request.method": "GET", "http.route": f"/r{route}",
                   "http.response.status_code": 500 if err else 200}, res),
        child(1, "validate", 10_000, 50_000, **{"order.sku": k % 1000}),
        child(2, "db.query", 70_000, 100_000, "client", **{"db.system": "postgresql", "server.address": "db"}),
        child(3, "db.query", 180_000, 80_000, "client", **{"db.system": "postgresql", "server.address": "db"}),
        child(4, "redis SET", 270_000, 30_000, "client", **{"db.system": "redis", "server.address": "cache"}),
        child(5, "redis GET", 310_000, 20_000, "client", **{"db.system": "redis", "server.address": "cache"}),
        child(6, "render", 340_000, 300_000),
        child(7, f"template {k % TEMPLATES}", 350_000, 200_000, parent=f"{k * 16 + 6:016x}"),
        child(8, "queue publish", 660_000, 40_000, "producer", **{"messaging.system": "kafka",
                                                                  "server.address": "mq"}),
        child(9, "auth.check", 710_000, 150_000, status="error" if err else "ok"),
    ]


def make_checks() -> tuple[list[sc.Selector], list[Any]]:
    """50 constraints over 20 selectors, mixed kinds; a few fail on purpose."""
    A = sc.AttrMatch
    sels = [
        sc.Selector("req", "req", name="GET /*", name_is_glob=True, kind="server"),
        sc.Selector("r7", "r7", name="GET /r7"),
        sc.Selector("validate", "validate", name="validate", parent="req"),
        sc.Selector("db", "db", name="db.query", kind="client", attrs=(A("db.system", "==", "postgresql"),)),
        sc.Selector("db_in_req", "db_in_req", name="db.query", ancestor="req"),
        sc.Selector("set", "set", name="redis SET", parent="req"),
        sc.Selector("get", "get", name="redis GET"),
        sc.Selector("redis", "redis", name="redis *", name_is_glob=True),
        sc.Selector("render", "render", name="render"),
        sc.Selector("tmpl", "tmpl", name_regex=r"^template \d+$"),
        sc.Selector("tmpl_under", "tmpl_under", name="template *", name_is_glob=True, ancestor="req"),
        sc.Selector("publish", "publish", name="queue publish", kind="producer"),
        sc.Selector("auth", "auth", name="auth.check"),
        sc.Selector("errors", "errors", status="error"),
        sc.Selector("api", "api", service="api"),
        sc.Selector("ok500", "ok500", name="GET /*", name_is_glob=True,
                    attrs=(A("http.response.status_code", ">=", 500),)),
        sc.Selector("sku", "sku", name="validate", attrs=(A("order.sku", "<", 10),)),
        sc.Selector("env", "env", attrs=(A("deployment.environment", "==", "ci"), A("db.system", "exists"))),
        sc.Selector("missing", "missing", name="GET /nope"),
        sc.Selector("route_rx", "route_rx", name="GET /r1", attrs=(A("http.route", "~", r"^/r\d$"),)),
    ]
    cs: list[Any] = []

    def add(c: Any) -> None:
        cs.append(c)

    n = 0

    def cid() -> str:
        nonlocal n
        n += 1
        return f"c{n}"

    for s in ("req", "r7", "validate", "db", "db_in_req", "set", "get", "render", "tmpl", "tmpl_under",
              "publish", "auth", "api", "env"):
        add(sc.Count(cid(), "", s, min=1))
    add(sc.Count(cid(), "", "redis", min=2))
    add(sc.Count(cid(), "", "errors", max=0))          # fails: 1% of traces have errors
    add(sc.Count(cid(), "", "missing", min=1))         # fails: did-you-mean over ~170 names
    add(sc.Count(cid(), "", "sku", min=1, max=10**9))
    for s, hi in (("req", 1.0), ("validate", 0.1), ("db", 0.2), ("set", 0.05), ("get", 0.05), ("render", 0.5),
                  ("tmpl", 0.015), ("auth", 0.2)):                           # tmpl fails: 20 ms > 15 ms
        add(sc.Duration(cid(), "", s, min_s=0.0, max_s=hi))
    add(sc.Status(cid(), "", "auth", "ok"))            # fails on the 1% errors
    add(sc.Status(cid(), "", "get", "unset"))
    add(sc.Status(cid(), "", "req", "unset"))          # fails
    add(sc.Attr(cid(), "", "req", A("http.request.method", "==", "GET")))
    add(sc.Attr(cid(), "", "req", A("http.response.status_code", "==", 200)))  # fails
    add(sc.Attr(cid(), "", "db", A("server.address", "!~", r"\.")))
    add(sc.Attr(cid(), "", "redis", A("db.system", "==", "redis")))
    add(sc.Attr(cid(), "", "route_rx", A("http.route", "exists")))
    add(sc.Precedes(cid(), "", "validate", "set"))
    add(sc.Precedes(cid(), "", "set", "get", None, 0.05))
    add(sc.Precedes(cid(), "", "db", "set", 0.0, 1.0))
    add(sc.Precedes(cid(), "", "validate", "db"))
    add(sc.Precedes(cid(), "", "render", "publish", 0.001, 0.1))
    add(sc.Precedes(cid(), "", "publish", "validate"))   # fails for the first ~70 traces
    add(sc.Precedes(cid(), "", "auth", "get"))           # fails for the first ~55 traces
    add(sc.Contains(cid(), "", "req", "get"))
    add(sc.Contains(cid(), "", "render", "tmpl"))
    add(sc.Contains(cid(), "", "req", "redis"))
    add(sc.Contains(cid(), "", "validate", "db"))        # fails: db runs after validate
    add(sc.Parent(cid(), "", "req", "validate"))
    add(sc.Parent(cid(), "", "render", "tmpl"))
    add(sc.Parent(cid(), "", "req", "db"))
    add(sc.Parent(cid(), "", "req", "tmpl"))             # fails: templates are grandchildren
    add(sc.Hermetic(cid(), "", frozenset({"db", "cache", "mq"})))
    assert len(cs) == 50, len(cs)
    return sels, cs


def _best(fn: Any, repeat: int) -> tuple[float, float, Any]:
    """Best CPU seconds, the wall seconds of that same run, and the result."""
    best, wall, out = float("inf"), 0.0, None
    for _ in range(repeat):
        gc.collect()
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        cpu = time.process_time() - c
        if cpu < best:
            best, wall = cpu, time.perf_counter() - w
    return best, wall, out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when growth is clearly worse than linear (or results change)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="smallest size only (10000 spans), no goal check")
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated span counts")
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings per size (1 for >= 1M spans)")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    if args.smoke:
        sizes = sizes[:1]
    sels, cs = make_checks()
    kinds: dict[str, int] = {}
    for c in cs:
        kinds[type(c).__name__] = kinds.get(type(c).__name__, 0) + 1
    print(f"{len(cs)} constraints ({', '.join(f'{v} {k}' for k, v in kinds.items())}) over {len(sels)} selectors")
    print(f"{'spans':>9} {'make':>7} {'index cpu':>9} {'eval cpu':>9} {'eval wall':>9} {'us/span':>8} "
          f"{'ns/span/check':>14} {'failed':>6} {'ratio':>6}")
    prev: tuple[int, float] | None = None
    ratios: list[float] = []
    verdicts: list[tuple[bool, ...]] = []
    for n in sizes:
        t = time.perf_counter()
        spans = make_spans(n)
        made = time.perf_counter() - t
        repeat = 1 if n >= 1_000_000 else max(1, args.repeat)
        idx_s, _, _ = _best(lambda spans=spans: sc.evaluate(spans, sels, []), repeat)
        ev_s, ev_wall, results = _best(lambda spans=spans: sc.evaluate(spans, sels, cs), repeat)
        failed = sum(not r.passed for r in results)
        verdicts.append(tuple(r.passed for r in results))
        ratio = ""
        if prev is not None:
            r = (ev_s / prev[1]) / (n / prev[0]) * 10  # normalized to a 10x step
            ratios.append(r)
            ratio = f"{r:6.1f}"
        print(f"{n:>9,} {made:6.2f}s {idx_s:8.3f}s {ev_s:8.3f}s {ev_wall:8.3f}s {ev_s / n * 1e6:8.2f} "
              f"{ev_s / n / len(cs) * 1e9:14.1f} {failed:>6} {ratio:>6}", flush=True)
        prev = (n, ev_s)
        del spans, results
    if ratios:
        print("growth per 10x (linear = 10): " + ", ".join(f"{r:.1f}" for r in ratios))
    ok = True
    if len(set(verdicts)) > 1:  # the synthetic data is periodic: every size must give the same verdicts
        print("  !! verdicts differ between sizes", file=sys.stderr)
        ok = False
    if not args.smoke and ratios and ratios[-1] > GOAL_RATIO:
        print(f"  !! growth {ratios[-1]:.1f} per 10x exceeds {GOAL_RATIO}", file=sys.stderr)
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
