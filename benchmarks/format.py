"""Formatting throughput of `crc fmt` against parsing alone.

Takes the realistic file of benchmarks/compile.py (N tests; default 200), scrambles its layout a little
(so the formatter has work to do), and prints, as medians of several runs measured in this one process:

    parse:          raw Lark LALR parse of the text (`crc.compiler.parser.lark_parser().parse(text)`)
    format:         `format_source(text)` as `crc fmt` runs it: parse to IR (for diagnostics), parse keeping
                    every token, lay out, then parse the result again and compare its IR (the safety check)
    format/noverify the same without the safety check
    ratios:         format / parse and format-noverify / parse, and lines formatted per second

Usage: python benchmarks/format.py [--tests N] [--runs R] [--smoke]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compile import generate, median_time  # the compile benchmark's realistic file and its timer


def scramble(text: str, seed: int = 1) -> str:
    """Re-indent lines at random and add spaces around some operators: same meaning, messier layout."""
    rng = random.Random(seed)
    out = []
    for line in text.splitlines():
        body = line.strip()
        if body and not body.startswith("#") and '"' not in body:
            body = body.replace(" == ", "==").replace(", ", " ,  ")
        out.append(" " * rng.randint(0, 6) + body)
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tests", type=int, default=200, help="tests in the generated file")
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement (the median is printed)")
    ap.add_argument("--smoke", action="store_true", help="smallest size, one run: checks the benchmark works")
    args = ap.parse_args()
    if args.smoke:
        args.tests, args.runs = 5, 1

    from crc.compiler.format import format_source
    from crc.compiler.parser import lark_parser

    text = scramble(generate(args.tests))
    lines = text.count("\n")
    formatted = format_source(text, "bench.cr")
    assert formatted != text and format_source(formatted, "bench.cr") == formatted, "formatter is not idempotent"
    lark_parser().parse(text)  # build and warm the parsers once before timing
    format_source(text, "bench.cr", verify=False)

    # Interleaved rounds, so machine noise hits every measurement alike.
    parse_t, fmt_t, raw_t = [], [], []
    for _ in range(args.runs):
        parse_t.append(median_time(lambda: lark_parser().parse(text), 1))
        fmt_t.append(median_time(lambda: format_source(text, "bench.cr"), 1))
        raw_t.append(median_time(lambda: format_source(text, "bench.cr", verify=False), 1))
    parse_s, fmt_s, raw_s = (statistics.median(x) for x in (parse_t, fmt_t, raw_t))
    print(f"file:             {args.tests} tests, {lines} lines, {len(text) / 1024:.0f} KiB (layout scrambled)")
    print(f"parse:            {parse_s * 1000:9.1f} ms")
    print(f"format:           {fmt_s * 1000:9.1f} ms   ({lines / fmt_s:,.0f} lines/s)")
    print(f"format/noverify:  {raw_s * 1000:9.1f} ms   ({lines / raw_s:,.0f} lines/s)")
    print(f"ratio format / parse:          {fmt_s / parse_s:.2f}x")
    print(f"ratio format-noverify / parse: {raw_s / parse_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
