"""A fuzz harness for everything crc reads: `.cr` sources (compile, fmt, graph), Plans, recordings, JSON reports
and OTLP payloads.

Sources are grammar-aware mutations of the examples and of the `cr` snippets in docs/: tokens deleted,
duplicated, swapped or replaced by keywords, operators and hostile pieces (huge numbers, long names, deep
nesting of lists, braces and template expressions, NULs, invalid UTF-8), plus Plans compiled from them with
their bytes mutated. The property: a Plan, or a located error (CompileError with located diagnostics,
PlanFormatError); any other exception, one input taking more than `--slow` seconds of CPU, or one blocked for
`--stall` seconds (the watchdog, `Watchdog`: interrupted, and saved with every thread's stack), is a finding.
Recordings, JSON reports, Plans and OTLP payloads are mutated structurally and bytewise and run through
`crc replay`, `digest`, `diff`, `spans`, `graph`, `report --html` and the OTLP decoders (tests/fuzz_files.py
says how and what the property is there).

    python tests/fuzz.py --seconds 3600 --seed 1     # hours: prints inputs run per target and findings
    python tests/fuzz.py --inputs 2000               # what CI runs (tests/test_fuzz_harness.py)

Findings are written to `--out` (default .crc/fuzz/) as the input that caused them, with the traceback. Progress
lines (every minute) give inputs per wall and per CPU second and the share of the time spent waiting for a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|/(?:[^/\\\n]|\\.)+/[imsx]*|\d+(?:\.\d+)?[a-z]*|\w+|\s+|.')
HOSTILE = [
    "9" * 30, "9" * 5000, "1e999", "-" + "9" * 400, "99999999999h", "1" * 25 + "ms", "0.0000001us",
    "a" * 300, '"' + "x" * 5000 + '"', '"\\0"', "\x00", "\ufeff", "\u202e", '"{{ 10**10 }}"',
    "[" * 400 + "]" * 400, "{" * 400, "}" * 50, "(" * 300, '"' + "{{ " + "[" * 300 + "]" * 300 + " }}" + '"',
    '"{{ \'a\' * 100000000 }}"', '"{% for i in range(10**9) %}x{% endfor %}"', '"{{ \'a\'.zfill(10**9) }}"',
    '"{{ fake.factories }}"', '"{{ x.__class__ }}"', "/(a+)+$/", "/" + "(" * 200 + "a" + ")" * 200 + "/",
    '"$' + ".a" * 500 + '"', '"$[' + "9" * 40 + ']"', 'import "' + "a/" * 700 + '"', 'import "/dev/zero"',
    'import "../../../../etc/passwd"', "\t", "\r", "\r\n", "é", "𝔘", "#" * 10,
]


def sources() -> list[str]:
    """The examples and every ```cr block of the docs: the seeds to mutate."""
    out = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "examples").rglob("*.cr"))]
    out += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "stdlib").glob("*.cr"))]
    for md in sorted((ROOT / "docs").glob("*.md")):
        out += re.findall(r"```cr\n(.*?)```", md.read_text(encoding="utf-8"), re.S)
    return out


def pieces() -> list[str]:
    from crc.grammar.keywords import ALL_KEYWORDS, OPERATORS

    return sorted(ALL_KEYWORDS) + list(OPERATORS) + list("{}[](),=.:#\n\"/\\") + HOSTILE


def mutate(rng: random.Random, seeds: list[str], words: list[str]) -> str:
    """One grammar-aware mutation: a few token edits of a seed, sometimes spliced with another seed."""
    toks = TOKEN.findall(rng.choice(seeds))
    for _ in range(rng.randint(1, 6)):
        if not toks:
            toks = [rng.choice(words)]
        i = rng.randrange(len(toks))
        op = rng.random()
        if op < 0.2:
            del toks[i]
        elif op < 0.45:
            toks.insert(i, f" {rng.choice(words)} ")
        elif op < 0.6:
            j = rng.randrange(len(toks))
            toks[i], toks[j] = toks[j], toks[i]
        elif op < 0.75:
            toks[i] = rng.choice(words)
        elif op < 0.85:
            toks[i:i] = toks[i:rng.randint(i, min(len(toks), i + 40))]
        elif op < 0.92:  # nest: wrap a token many times
            o, c = rng.choice([("[", "]"), ("{", "}"), ("(", ")"), ("[[", "]]")])
            n = rng.choice([3, 50, 300, 3000])
            toks[i] = o * n + toks[i] + c * n
        else:
            toks[i:i] = TOKEN.findall(rng.choice(seeds))[: rng.randint(1, 200)]
    return "".join(toks)


class Stalled(BaseException):
    """Raised in the main thread by the watchdog when an input blocks past its deadline (a BaseException, so
    that no `except Exception` in crc takes it for an error of its own and waits on)."""


def _sched() -> tuple[float, float] | None:
    """The main thread's (CPU, run-queue wait) seconds from the kernel's schedstat, or None where there is none."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            run, wait = f.read().split()[:2]
        return int(run) / 1e9, int(wait) / 1e9
    except (OSError, ValueError):
        return None


class Watchdog:
    """A wall-clock deadline for each input, run in the main thread (`with watchdog:`).

    A SIGALRM interval timer fires at the deadline; the handler measures how long the input has been blocked:
    wall time minus the CPU time and the time spent waiting for a CPU (a loaded or niced machine starves, it
    does not block). An input blocked for `stall` seconds (a read of a FIFO, a wait on a lock, a socket, a
    subprocess or a sleep) is interrupted with `Stalled`, which signals also pull out of blocking system calls;
    one that has used more than `cpu` seconds of CPU is interrupted likewise (`--slow` reports it, this bounds
    it). Otherwise the timer is set again for what remains, and `note` is told how the input's time went (a
    starved input shows as waiting for a CPU, so a progress line standing still is explained). The stacks of every thread at that moment are
    kept in `report` for the finding. The handler fires again every second until the input is unwound, in case
    something catches `Stalled`. As a last resort, should the main thread be stuck where no Python code runs,
    faulthandler dumps every thread's stack on stderr two minutes after the deadline unless `heartbeat` (the
    loop calls it every minute) put its timer back first: arming it costs a thread, too much for every input."""

    def __init__(self, stall: float, cpu: float, note: Callable[[str], None] = lambda s: None) -> None:
        self.stall, self.cpu, self.note = stall, cpu, note
        self.report = ""
        self.stalls = 0  # inputs interrupted
        self._armed = False
        self._start: tuple[float, float, tuple[float, float] | None] = (0.0, 0.0, None)
        self._stderr = sys.__stderr__ if sys.__stderr__ is not None and _has_fileno(sys.__stderr__) else None
        self._previous = signal.signal(signal.SIGALRM, self._alarm)
        self.heartbeat()

    def close(self) -> None:
        """Disarm and give SIGALRM back."""
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
        if self._stderr is not None:
            faulthandler.cancel_dump_traceback_later()

    def heartbeat(self) -> None:
        """The loop is alive: put faulthandler's timer back."""
        if self._stderr is not None:
            faulthandler.dump_traceback_later(self.stall + 120, file=self._stderr)

    def __enter__(self) -> Watchdog:
        self.report = ""
        self._armed = True
        self._start = (time.monotonic(), time.process_time(), _sched())
        signal.setitimer(signal.ITIMER_REAL, self.stall)
        return self

    def __exit__(self, *exc: object) -> None:
        self._armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)

    def _alarm(self, signum: int, frame: FrameType | None) -> None:
        if not self._armed:  # delivered just after the input ended
            return
        if self.report:  # interrupted already and not yet unwound: interrupt again
            raise Stalled(self.report.splitlines()[0])
        wall, cpu = time.monotonic() - self._start[0], time.process_time() - self._start[1]
        now, then = _sched(), self._start[2]
        waited = now[1] - then[1] if now and then else 0.0
        on_cpu = now[0] - then[0] if now and then else cpu
        blocked = wall - on_cpu - waited
        times = f"{wall:.1f}s wall, {cpu:.1f}s CPU, {waited:.1f}s waiting for a CPU, {blocked:.1f}s blocked"
        if blocked < self.stall and cpu < self.cpu:
            signal.setitimer(signal.ITIMER_REAL, max(0.1, self.stall - blocked))
            with contextlib.suppress(RuntimeError):  # the main thread was writing to the same stream
                self.note(f"one input running: {times}")
            return
        self.report = f"{'blocked' if blocked >= self.stall else 'CPU-bound'}: {times}\n\n" + _stacks(frame)
        self.stalls += 1
        signal.setitimer(signal.ITIMER_REAL, 1.0, 1.0)
        raise Stalled(self.report.splitlines()[0])


def _has_fileno(f: Any) -> bool:
    try:
        f.fileno()
        return True
    except (OSError, ValueError, AttributeError):
        return False


def _stacks(frame: FrameType | None) -> str:
    """Every thread's stack, the main thread's (interrupted at `frame`) first."""
    out = ["main thread (most recent call last):\n" + "".join(traceback.format_stack(frame))]
    main = threading.main_thread().ident
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, f in sys._current_frames().items():
        if ident != main:
            out.append(f"thread {names.get(ident, ident)} (most recent call last):\n"
                       + "".join(traceback.format_stack(f)))
    return "\n".join(out)


class Harness:
    """Runs inputs through the targets; counts inputs, records findings (input + traceback)."""

    def __init__(self, out: Path, slow: float) -> None:
        from crc.compiler.compile import compile_file
        from crc.compiler.diagnostics import CompileError
        from crc.compiler.format import FormatterBug, format_source
        from crc.compiler.plan import Plan, PlanFormatError
        from crc.compiler.render import to_dot, to_text

        self.compile_file, self.CompileError = compile_file, CompileError
        self.format_source, self.FormatterBug = format_source, FormatterBug
        self.Plan, self.PlanFormatError = Plan, PlanFormatError
        self.to_text, self.to_dot = to_text, to_dot
        self.out, self.slow = out, slow
        self.inputs = 0
        self.counts: dict[str, int] = {}  # target -> inputs
        self.findings: dict[str, int] = {}  # signature -> count
        self.files: Any = None  # fuzz_files.FileTargets, made on first use (running the seeds takes a second)
        self.dir = Path(tempfile.mkdtemp(prefix="crc-fuzz-"))
        self.plans: list[Any] = []
        self.current: tuple[str, bytes, str] = ("", b"", "")  # the input running: kind, data, command

    def close(self) -> None:
        """Remove the working directory (the files the inputs were written to)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def stalled(self, exc: Stalled, report: str) -> None:
        """A finding for the input the watchdog interrupted, with every thread's stack; its signature names
        where in crc the main thread was."""
        kind, data, what = self.current
        if self.files is not None and kind == "file":
            kind, data, what = self.files.current
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(str(ROOT / "tests"))]
        ours = [f for f in frames if f.filename.startswith(str(ROOT))]
        where = " in ".join(dict.fromkeys(f"{Path(f.filename).name}:{f.lineno}" for f in (ours or frames)[-1:] + frames[-1:]))
        self._finding(kind, data, None, f"stall{' in ' + what if what else ''}", report, where=where or "-")

    def _finding(self, kind: str, data: bytes, exc: BaseException | None, what: str = "", detail: str = "",
                 where: str | None = None) -> None:
        tb = ("".join(traceback.format_exception(exc)) if exc else what) + (f"\n{detail}" if detail else "")
        frames = traceback.extract_tb(exc.__traceback__) if exc else []
        if where is None:
            where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "-"
        sig = f"{kind}: {what + ': ' if exc and what else ''}{type(exc).__name__ if exc else what} at {where}"
        n = self.findings.get(sig, 0)
        self.findings[sig] = n + 1
        if n < 3:
            self.out.mkdir(parents=True, exist_ok=True)
            stem = f"{kind}-{len(self.findings)}-{n}"
            (self.out / f"{stem}.input").write_bytes(data)
            (self.out / f"{stem}.txt").write_text(f"{sig}\n\n{tb}", encoding="utf-8")

    @staticmethod
    def _clock() -> tuple[float, float]:
        return time.process_time(), time.monotonic()

    def _timed(self, kind: str, data: bytes, t0: tuple[float, float]) -> None:
        """A finding when the input took more than `slow` CPU seconds (a wait is the watchdog's)."""
        cpu, wall = time.process_time() - t0[0], time.monotonic() - t0[1]
        if cpu > self.slow:
            self._finding(kind, data, None, "slow", f"took {cpu:.1f}s of CPU, {wall:.1f}s")

    def _count(self, target: str) -> None:
        self.counts[target] = self.counts.get(target, 0) + 1

    def file(self, rng: random.Random) -> None:
        """A mutated recording, JSON report, Plan or OTLP payload through one of the commands that read it."""
        from fuzz_files import FileTargets

        if self.files is None:
            self.files = FileTargets(self.dir / "files", self._finding)
        self.inputs += 1
        self.current = ("file", b"", "")
        t0 = self._clock()
        kind = rng.choice(self.files.kinds())
        before = dict(self.files.counts)
        blob = self.files.one(rng, kind)
        for k, v in self.files.counts.items():
            if v != before.get(k):
                self._count(k)
        self._timed(kind, blob or b"", t0)

    def _located(self, e: Any, text: str) -> str | None:
        """Why a CompileError is not well located, or None."""
        if not e.diagnostics:
            return "a CompileError with no diagnostic"
        for d in e.diagnostics:
            if d.severity == "error" and d.loc is not None and (d.loc.line < 1 or d.loc.col < 1):
                return f"bad location {d.loc}"
        return None

    def source(self, text: str, *, on_disk: bytes | None = None) -> None:
        """Compile (from text, or from a file holding `on_disk`), format, and render what compiles."""
        self.inputs += 1
        self._count("source-bytes" if on_disk is not None else "source")
        data = on_disk if on_disk is not None else text.encode("utf-8", "surrogatepass")
        self.current = ("source", data, "")
        t0 = self._clock()
        try:
            if on_disk is not None:
                path = self.dir / "in.cr"
                path.write_bytes(on_disk)
                plan = self.compile_file(str(path), environ={})
            else:
                plan = self.compile_file(str(self.dir / "fuzz.cr"), text=text, environ={})
        except self.CompileError as e:
            why = self._located(e, text)
            if why:
                self._finding("compile", data, None, why)
            plan = None
        except Exception as e:  # a finding: the compiler must raise CompileError only
            self._finding("compile", data, e)
            return
        except RecursionError as e:  # pragma: no cover - RecursionError is an Exception; kept explicit
            self._finding("compile", data, e)
            return
        if plan is not None:
            try:
                blob = plan.to_bytes()
                back = self.Plan.from_bytes(blob)
                self.to_text(back)
                self.to_dot(back)
                if len(self.plans) < 200:
                    self.plans.append(blob)
            except Exception as e:
                self._finding("plan", data, e)
        if on_disk is None and plan is not None:
            try:
                self.format_source(text, "fuzz.cr")
            except (self.CompileError, self.FormatterBug):
                pass
            except Exception as e:
                self._finding("fmt", data, e)
        self._timed("slow", data, t0)

    def plan_bytes(self, blob: bytes) -> None:
        """A crafted Plan: refused with PlanFormatError, or rendered."""
        self.inputs += 1
        self._count("plan-bytes")
        self.current = ("plan-load", blob, "")
        try:
            plan = self.Plan.from_bytes(blob)
        except self.PlanFormatError:
            return
        except Exception as e:
            self._finding("plan-load", blob, e)
            return
        try:
            self.to_text(plan)
            self.to_dot(plan)
        except Exception as e:
            self._finding("plan-render", blob, e)


def mutate_plan(rng: random.Random, blob: bytes) -> bytes:
    """Flip, cut or splice bytes of a Plan (its digest then fails), or mutate a decoded field and re-encode."""
    b = bytearray(blob)
    op = rng.random()
    if op < 0.5 and b:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op < 0.7:
        cut = rng.randrange(len(b) + 1)
        b = b[:cut]
    else:
        b[rng.randrange(len(b) + 1):0] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(b)


def run(inputs: int | None, seconds: float | None, seed: int, out: Path, slow: float,
        report: Callable[[str], None] = print, files: float = 0.4, stall: float = 30.0) -> Harness:
    """Fuzz until `inputs` inputs or `seconds` have passed; return the harness (counts and findings).
    `files` is the share of inputs that are recordings, reports, Plans and OTLP payloads; an input blocked
    for `stall` seconds (or past three times `slow` seconds of CPU) is interrupted and is a finding (`stall` 0:
    no watchdog)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    rng = random.Random(seed)
    seeds, words = sources(), pieces()
    h = Harness(out, slow)
    dog = Watchdog(stall, 3 * slow, report) if stall > 0 else None
    start = time.monotonic()
    try:
        _loop(h, dog, rng, seeds, words, inputs, seconds, files, start, report)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (see main): stop and count what ran
        pass
    finally:
        if dog is not None:
            dog.close()
        h.close()
    return h


def _loop(h: Harness, dog: Watchdog | None, rng: random.Random, seeds: list[str], words: list[str], inputs: int | None,
          seconds: float | None, files: float, start: float, report: Callable[[str], None]) -> None:
    last, cpu0, sched0 = start, time.process_time(), _sched()
    while True:
        if inputs is not None and h.inputs >= inputs:
            break
        if seconds is not None and time.monotonic() - start >= seconds:
            break
        r = rng.random()
        try:
            with dog or contextlib.nullcontext():
                if r < 0.02:
                    text = mutate(rng, seeds, words).encode()
                    i = rng.randrange(len(text) + 1)
                    h.source("", on_disk=text[:i] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])
                             + text[i:])
                elif r < 0.12 and h.plans:
                    h.plan_bytes(mutate_plan(rng, rng.choice(h.plans)))
                elif r < 0.12 + files:
                    h.file(rng)
                else:
                    h.source(mutate(rng, seeds, words))
        except Stalled as e:
            h.stalled(e, dog.report if dog else "")
        if time.monotonic() - last > 60:
            if dog is not None:
                dog.heartbeat()
            last, sched = time.monotonic(), _sched()
            starved = f", {(sched[1] - sched0[1]) / (last - start):.0%} of it waiting for a CPU" if sched and sched0 else ""
            report(f"{h.inputs} inputs, {sum(h.findings.values())} findings, {last - start:.0f}s{starved} "
                   f"({h.inputs / (last - start):.0f}/s, {h.inputs / max(1e-9, time.process_time() - cpu0):.0f} per "
                   f"CPU second); " + ", ".join(f"{k} {v}" for k, v in sorted(h.counts.items())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, help="stop after this many inputs")
    ap.add_argument("--seconds", type=float, help="stop after this long")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slow", type=float, default=10.0, help="an input taking more CPU seconds than this is a finding")
    ap.add_argument("--stall", type=float, default=30.0,
                    help="an input blocked (neither computing nor waiting for a CPU) this many seconds is interrupted "
                         "and is a finding (0: no watchdog)")
    ap.add_argument("--out", type=Path, default=ROOT / ".crc" / "fuzz")
    ap.add_argument("--files", type=float, default=0.4,
                    help="share of inputs that are recordings, reports, Plans and OTLP payloads (0 to 0.88)")
    a = ap.parse_args()
    if a.inputs is None and a.seconds is None:
        a.inputs = 10_000
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    t0 = time.monotonic()
    cpu0 = time.process_time()
    h = run(a.inputs, a.seconds, a.seed, a.out, a.slow, report=lambda s: print(s, file=sys.__stdout__, flush=True), files=a.files,
            stall=a.stall)
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    print(f"{h.inputs} inputs in {wall:.0f}s, {cpu:.0f}s of CPU ({h.inputs / wall:.0f}/s, "
          f"{h.inputs / max(cpu, 1e-9):.0f} per CPU second; seed {a.seed}); "
          f"{sum(h.findings.values())} findings, {len(h.findings)} distinct")
    for target, n in sorted(h.counts.items()):
        print(f"  {n:8d}  {target}")
    for sig, n in sorted(h.findings.items(), key=lambda x: -x[1]):
        print(f"  {n:6d}  {sig}")
    sys.stdout.flush()
    # os._exit: a thread an interrupted input left blocked (a worker reading a FIFO) must not hold the exit
    os._exit(1 if h.findings else 0)


if __name__ == "__main__":
    main()
