"""Edit → verdict with `crc dev`, against `crc run -k` of the same test.

For each workload (a one-service suite and a four-service suite, busybox services on the real engine) this
starts `crc dev` on a temporary project, waits for its first run, then makes scripted edits, each undone by the
next (so every one is a real change), and measures from the moment the file is written to the moment the
verdict line is printed:

    expectation edit -> re-checked   the verdict answered from the last run's outputs (goal <= 1 s)
    expectation edit -> confirmed    the real run of that test that follows
    step edit -> verdict             a step changed: a real run of its test, services kept warm (goal <= 3 s)
    save during a run -> superseded  a step made to sleep an hour, saved, and saved again once it runs: from the
                                     second save to the line saying the run was cancelled, and to its verdict
    crc run -k                       a `crc run -k TEST` process of the same test (services started and removed)
    ratio                            crc run -k / crc dev, per kind of edit
    kept warm                        whether every service container stayed the same through all the edits

A third workload (`spans`: crc/demo:dev, an instrumented service) misspells a span name (`"GET /ordrs"`), every
other edit: the re-check answers at once; the confirming run is the time a real run of the test takes to give
up on a span that never comes (`--span-timeout`, 20 s, before `crc dev` learnt to stop waiting once nothing
can still come). `--python` runs another checkout's crc (its venv's interpreter) for a before/after figure.

Medians over `--edits` edits of each kind. Needs the engine and crc/busybox:dev, crc/demo:dev
(`bash .ci/images/build`).

Usage: python benchmarks/dev_loop.py [--smoke] [--edits N] [--workloads 1,4,spans] [--python PATH]
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_RECHECK, GOAL_STEP = 1.0, 3.0
DEADLINE = 300.0

SERVICE = """  service {name} {{
    image "crc/busybox:dev"
    command ["sh", "-c", "mkdir -p /www && echo 'hello from {name}' > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ready tcp 8080 within 30s{needs}
  }}
"""
TESTS = """
  test "page" {
    step get = exec web ["wget", "-qO-", "http://127.0.0.1:8080/"]
    expect get.stdout contains "hello"
  }

  test "echo" {
    step e = exec web ["echo", "hi"]
    expect e.stdout contains "hi"
  }
}
"""


SPANS = """suite "{suite}" {{
  service api {{
    image "crc/demo:dev"
    port 8080
    ready span "startup" within 30s
  }}

  test "order" {{
    step order = exec api ["python3", "-c", "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/orders?sku=42').read().decode())"]
    expect order.exit == 0
    span request = "GET /orders" {{ service "api" }}
  }}
}}
"""


def source(suite: str, services: int) -> str:
    """A suite of `services` services: `web` needs the others (so each of them is started first)."""
    others = [f"dep{i}" for i in range(1, services)]
    text = f'suite "{suite}" {{\n'
    for name in others:
        text += SERVICE.format(name=name, needs="")
    text += SERVICE.format(name="web", needs="".join(f"\n    needs {o}" for o in others))
    return text + TESTS


class Dev:
    """`crc dev` in a subprocess; its output read line by line with a deadline."""

    def __init__(self, project: Path, env: dict[str, str], python: str):
        self.proc = subprocess.Popen([python, "-m", "crc", "dev", "app.cr", "--pull", "never"],
                                     cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.buf = b""
        self.seen: list[str] = []
        self.eof = False

    def until(self, pattern: str) -> float:
        """Read lines until one matches `pattern`; the time.time() at which it was read."""
        rx = re.compile(pattern)
        end = time.monotonic() + DEADLINE
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                line = raw.decode("utf-8", "replace")
                self.seen.append(line)
                if rx.search(line):
                    return time.time()
            if time.monotonic() > end or self.eof:
                sys.exit(f"crc dev: no line matched {pattern!r}:\n" + "\n".join(self.seen[-40:]))
            for key, _ in self.sel.select(timeout=1.0):
                chunk = key.fileobj.read()  # type: ignore[union-attr]
                if chunk == b"":  # the process closed its output: it ended
                    self.eof = True
                    self.sel.unregister(key.fileobj)
                elif chunk:
                    self.buf += chunk

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=DEADLINE)


def containers(suite: str) -> list[str]:
    return sorted(subprocess.run(["docker", "ps", "-q", "--filter", f"label=io.crc.suite={suite}"],
                                 capture_output=True, text=True).stdout.split())


def toggle(path: Path, a: str, b: str, i: int) -> None:
    """Replace `a` by `b` on even edits and back on odd ones: every edit changes the file."""
    old, new = (a, b) if i % 2 == 0 else (b, a)
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def measure_spans(edits: int, python: str) -> dict[str, float]:
    """The span workload: a misspelt span name every other edit; re-check and confirmation times of those."""
    suite = f"devloop-spans-{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        app = root / "app.cr"
        app.write_text(SPANS.format(suite=suite), encoding="utf-8")
        env = {**os.environ, "CRC_STATE_DIR": str(root / "state")}
        dev = Dev(root, env, python)
        try:
            dev.until(r"^1 passed, 0 failed, 0 skipped in .*; running: ")
            dev.until(r"^watching ")
            rechecked, confirmed = [], []
            for i in range(2 * edits):
                t0 = time.time()
                toggle(app, '"GET /orders"', '"GET /ordrs"', i)
                mark = "FAIL" if i % 2 == 0 else "  ok"
                at = dev.until(rf"^ {mark}  .* / order  \[re-checked from the last run\]$") - t0
                done = dev.until(rf"^{'0' if i % 2 == 0 else '1'} passed, {'1' if i % 2 == 0 else '0'} failed") - t0
                dev.until(r"^watching ")
                if i % 2 == 0:
                    rechecked.append(at)
                    confirmed.append(done)
        finally:
            code = dev.stop()
        if code != 0:
            sys.exit(f"crc dev exited {code}")
        return {"rechecked": statistics.median(rechecked), "confirmed": statistics.median(confirmed)}


def measure(services: int, edits: int, python: str) -> dict[str, float | bool]:
    suite = f"devloop-{services}-{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        app = root / "app.cr"
        app.write_text(source(suite, services), encoding="utf-8")
        env = {**os.environ, "CRC_STATE_DIR": str(root / "state")}
        dev = Dev(root, env, python)
        try:
            dev.until(r"^2 passed, 0 failed, 0 skipped in .*; running: ")
            dev.until(r"^watching ")
            warm = containers(suite)
            rechecked, confirmed, stepped = [], [], []
            for i in range(edits):
                t0 = time.time()
                toggle(app, 'contains "hello"', 'contains "hello from"', i)
                rechecked.append(dev.until(r"^   ok  .* / page  \[re-checked from the last run\]$") - t0)
                confirmed.append(dev.until(r"^1 passed, 0 failed, 0 skipped in ") - t0)
                dev.until(r"^watching ")
            for i in range(edits):
                t0 = time.time()
                toggle(app, '["echo", "hi"]', '["echo", "hi there"]', i)
                stepped.append(dev.until(r"^1 passed, 0 failed, 0 skipped in ") - t0)
                dev.until(r"^watching ")
            cancelled, superseded = [], []
            now, other = '["echo", "hi"]', '["echo", "hi there"]'
            if edits % 2 == 1:  # where the step edits left it
                now, other = other, now
            for _ in range(edits):
                toggle(app, now, '["sleep", "3600"]', 0)
                dev.until(r"^re-running: .* / echo$")
                time.sleep(0.5)  # the step is running
                t0 = time.time()
                toggle(app, '["sleep", "3600"]', other, 0)  # not what ran last: a change to run
                cancelled.append(dev.until(r"^superseded: ") - t0)
                superseded.append(dev.until(r"^1 passed, 0 failed, 0 skipped in ") - t0)
                dev.until(r"^watching ")
                now, other = other, now
            kept = containers(suite) == warm and len(warm) == services
        finally:
            code = dev.stop()
        if code != 0:
            sys.exit(f"crc dev exited {code}")
        runs = []
        for _ in range(max(1, min(edits, 3))):
            t0 = time.time()
            proc = subprocess.run([python, "-m", "crc", "run", "app.cr", "-k", "page", "--pull", "never",
                                   "--no-progress"], cwd=root, env=env, capture_output=True, text=True)
            runs.append(time.time() - t0)
            if proc.returncode != 0:
                sys.exit(f"crc run -k page failed:\n{proc.stdout}{proc.stderr}")
        return {"rechecked": statistics.median(rechecked), "confirmed": statistics.median(confirmed),
                "step": statistics.median(stepped), "cancelled": statistics.median(cancelled),
                "superseded": statistics.median(superseded), "run_k": statistics.median(runs), "kept": kept}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="one-service suite, two edits of each kind")
    ap.add_argument("--edits", type=int, default=10, help="edits of each kind per workload (default 10)")
    ap.add_argument("--workloads", default="1,4,spans",
                    help="comma-separated: 1 and 4 (busybox suites of that many services), spans (default: all)")
    ap.add_argument("--python", default=sys.executable,
                    help="the interpreter whose crc runs (another checkout's venv: a before/after figure)")
    a = ap.parse_args()
    edits = 2 if a.smoke else a.edits
    workloads = ["1"] if a.smoke else a.workloads.split(",")
    if "spans" in workloads:
        m = measure_spans(edits, a.python)
        print(f"spans (a misspelt span name): re-checked {m['rechecked']:.2f}s, confirmed by a real run "
              f"{m['confirmed']:.2f}s")
        sys.stdout.flush()
    for services in [int(w) for w in workloads if w != "spans"]:
        m = measure(services, edits, a.python)
        name = f"{services}-service suite"
        print(f"{name}: expectation edit -> re-checked {m['rechecked']:.2f}s (goal <= {GOAL_RECHECK:g}s: "
              f"{'met' if m['rechecked'] <= GOAL_RECHECK else 'MISSED'}), -> confirmed {m['confirmed']:.2f}s")
        print(f"{name}: step edit -> verdict {m['step']:.2f}s (goal <= {GOAL_STEP:g}s: "
              f"{'met' if m['step'] <= GOAL_STEP else 'MISSED'})")
        print(f"{name}: crc run -k page {m['run_k']:.2f}s; ratio run/dev: expectation "
              f"{m['run_k'] / m['rechecked']:.1f}x (re-checked), {m['run_k'] / m['confirmed']:.1f}x (confirmed), "
              f"step {m['run_k'] / m['step']:.1f}x")
        print(f"{name}: save during a run -> superseded {m['cancelled']:.2f}s, -> its verdict {m['superseded']:.2f}s")
        print(f"{name}: services kept warm through {4 * edits} edits: {'yes' if m['kept'] else 'NO'}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
