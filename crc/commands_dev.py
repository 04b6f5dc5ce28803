"""`crc dev`: watch `.cr` files (and what they import, mount or build from), keep each suite's services running,
and on every change re-run only what the change touches, one screen per change. The session logic is in
`crc.runtime.dev_session`; this module watches files, compiles and prints."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crc.clitools import (
    EXIT_ENV,
    SELECT_HELP,
    add_command,
    add_run_options,
    check_select,
    fail,
    find_sources,
    selected_tests,
    settings,
)

if TYPE_CHECKING:
    from crc.compiler.plan import Plan
    from crc.runtime.dev_session import Change, DevSession, Recheck
    from crc.runtime.results import RunResult, TestResult

_MARK = {"passed": "ok", "failed": "FAIL", "skipped": "skip", "error": "ERROR"}
CLEAR = "\x1b[2J\x1b[H"
# Seconds without another save before a change runs: an editor's burst of writes (save, then format on save)
# is one change. watchfiles groups what comes within 30 ms; this groups what comes within a tenth of a second.
DEBOUNCE = 0.1


def register(sub: Any) -> None:
    """Adds `crc dev`."""
    p = add_command(sub, "dev", dev_cmd, "watch .cr files and re-run what each change touches, services kept warm")
    p.add_argument("targets", nargs="*", type=Path, metavar="PATH",
                   help=".cr files or directories to watch (default: `paths` in the config, else .)")
    p.add_argument("-k", "--select", action="append", metavar="EXPR", help=SELECT_HELP)
    add_run_options(p)


def dev_cmd(a: argparse.Namespace) -> int:
    """Watch .cr files, the files they import, and what their services mount or are built from. The first run
    starts every suite's services; they keep running. On each change the files are compiled again (errors are
    shown and the watch goes on) and only the tests the change touches run: a service restarts only when its
    own definition, a file it mounts, or a service it needs changed. An edit to expectations alone is answered
    at once from the last run's outputs and spans, then confirmed by a real run. Ctrl-C removes everything
    and exits 0."""
    cfg = settings({"jobs": (a.jobs, "--jobs"), "span_timeout": (a.span_timeout, "--span-timeout"),
                    "pull": (a.pull, "--pull")})
    targets = a.targets or [Path(p) for p in cfg["paths"]] or [Path(".")]
    roots = find_sources(targets)  # a path that does not exist is an input error now, not later
    from crc.runtime.options import RunOptions

    pull = cfg["pull"]
    options = RunOptions(jobs=cfg["jobs"], select=tuple(a.select or ()), span_timeout=cfg["span_timeout"],
                         allow_pull=pull != "never", pull_always=pull == "always")
    dev = _Dev(targets, roots, options)
    return dev.main()


class _Dev:
    """One `crc dev`: its roots, the Plans that compiled last, the watch, the screen."""

    def __init__(self, targets: list[Path], roots: list[Path], options: Any):
        self.dirs = [t for t in targets if t.is_dir()]  # where new .cr files are picked up
        self.files = [t for t in targets if not t.is_dir()]
        self.roots = roots
        self.options = options
        self.plans: dict[Path, Plan] = {}  # root -> its last Plan that compiled
        self.count = 0
        self.tty = sys.stdout.isatty()
        self.sources: set[Path] = set()  # .cr files watched: roots and their imports
        self.mounts: set[Path] = set()  # what services mount or are built from
        self.broken: set[Path] = set()  # roots that did not compile last time
        self.first_plans: list[Plan] = []
        self.watch: _Watch | None = None  # None: changes come from elsewhere (tests feed `_loop` themselves)

    # ------------------------------------------------------------ the command
    def main(self) -> int:
        import anyio

        from crc.runtime.backend import EngineUnavailable
        from crc.runtime.leases import LeaseError

        # Compiled before the engine is reached: a bad -k, or one selecting nothing, exits 2 with nothing started.
        check_select(self.options.select)
        self._header(set(), first=True)
        self.first_plans = self._compile()
        if self.first_plans and not self.broken:
            selected_tests(self.first_plans, self.options.select)
        try:
            anyio.run(self._session)
        except EngineUnavailable as e:
            fail(str(e), EXIT_ENV)
        except LeaseError as e:
            fail(str(e), EXIT_ENV)
        return 0

    async def _session(self) -> None:
        import anyio

        from crc.commands_run import _signals
        from crc.runtime.backend import Labels
        from crc.runtime.dev_session import DevSession
        from crc.runtime.docker_backend import DockerBackend
        from crc.runtime.leases import reap_leftovers, run_lease

        async with DockerBackend() as backend:
            await backend.ping()
            await reap_leftovers(backend)  # killed `crc dev`s' too
            session = DevSession(backend, self.options)
            session.on_late = _print_late
            # One lease for the whole session: killed, its containers and networks are reaped like a run's.
            with run_lease(session.run_id, backend) as lease:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_signals, tg.cancel_scope)
                    send, receive = anyio.create_memory_object_stream[set[Path]](1000)
                    self.watch = _Watch(send, tg)
                    await self.watch.restart(self._watch_dirs())
                    async with session:
                        await self._loop(session, receive)
                    tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    left = await backend.find({Labels.RUN: session.run_id})
                print(f"crc dev: stopped; {'nothing left running' if not left else f'{len(left)} resource(s) left'}"
                      f" (run {session.run_id})", flush=True)
                if not left:
                    lease.release(remove_file=True)

    async def _loop(self, session: DevSession, receive: Any) -> None:
        """Changes one after another: each save (a burst of saves within `DEBOUNCE` is one) becomes a change;
        one that comes while a change runs cancels that run, which is then superseded: its files join the new
        change (the session compares with the last run that finished, so nothing it would have done is lost)."""
        import anyio

        async with anyio.create_task_group() as runs:
            run = _Change(set(), None)
            runs.start_soon(self._change, session, run)
            while True:
                touched = await self._next(receive)
                if not run.done.is_set():
                    run.scope.cancel()
                    await run.done.wait()
                    if run.superseded:
                        touched |= run.touched
                run = _Change(touched, max((p.stat().st_mtime for p in touched if p.exists()),
                                           default=time.time()))
                runs.start_soon(self._change, session, run)

    async def _next(self, receive: Any) -> set[Path]:
        """The files of the next change: the first batch of relevant paths, and those of the batches that follow
        it each within `DEBOUNCE` seconds of the one before."""
        import anyio

        touched: set[Path] = set()
        while not touched:
            touched = {p for p in await receive.receive() if self._relevant(p)}
        while True:
            with anyio.move_on_after(DEBOUNCE):
                touched |= {p for p in await receive.receive() if self._relevant(p)}
                continue
            return touched

    async def _change(self, session: DevSession, run: _Change) -> None:
        """One change (the first run when `run.edited` is None) in `run.scope`: cancelled, it says so."""
        try:
            with run.scope:
                if run.edited is None:
                    await self._first(session, self.first_plans)
                else:
                    await self._apply(session, run.touched, run.edited)
            if run.scope.cancelled_caught:
                run.superseded = True
                what = "the first run" if run.edited is None else f"change {self.count}"
                warm = ", ".join(svc for _suite, svc in session.warm()) or "nothing"
                print(f"superseded: a newer save came; {what} was cancelled (its tests keep their last verdicts); "
                      f"running: {warm}", flush=True)
        finally:
            run.done.set()

    # ------------------------------------------------------------ what is watched
    def _discover(self) -> None:
        """The roots now: the files named that still exist, and the suites' files under the directories named."""
        found = find_sources([d for d in self.dirs if d.is_dir()]) if self.dirs else []
        self.roots = [f for f in self.files if f.exists()] + [f for f in found if f not in self.files]

    def _watch_dirs(self) -> tuple[frozenset[Path], frozenset[Path]]:
        """(directories watched for their own files, directories watched with everything under them)."""
        from crc.runtime.dev_session import watched_paths

        self.sources, self.mounts = watched_paths(self.plans.values())
        self.sources |= {r.resolve() for r in self.roots}
        flat = {s.parent for s in self.sources}
        deep = {d.resolve() for d in self.dirs}
        for m in self.mounts:
            if m.is_dir():
                deep.add(m)
            elif m.is_file() or not m.exists():  # a file, or one not there yet: its directory, not below it
                flat.add(m.parent)
            # else a socket or a device (`volume "/var/run/docker.sock" -> ...`): nothing to edit
        flat = {d for d in flat if d.is_dir() and not any(d == x or x in d.parents for x in deep)}
        return frozenset(flat), frozenset(d for d in deep if d.is_dir())

    def _relevant(self, path: Path) -> bool:
        if path in self.sources or any(path == m or m in path.parents for m in self.mounts):
            return True
        return path.suffix == ".cr" and any(d.resolve() in path.parents for d in self.dirs)

    # ------------------------------------------------------------ one change
    def _header(self, touched: set[Path], first: bool) -> None:
        """The top of a change's screen (the terminal cleared first, when it is one)."""
        if self.tty:
            print(CLEAR, end="")
        stamp = time.strftime("%H:%M:%S")
        print(f"── crc dev · {'first run' if first else f'change {self.count}'} · {stamp} ──", flush=True)
        if touched:
            cwd = Path.cwd()
            shown = sorted(str(p.relative_to(cwd)) if cwd in p.parents else str(p) for p in touched)
            print("edited: " + ", ".join(shown))

    def _compile(self) -> list[Plan]:
        """Compile every root (diagnostics to stderr, as `crc run` prints them); the Plans to run: each root's
        that compiled now, else its last one that did."""
        from crc.compile_cache import compile_cached

        self._discover()
        was_broken, self.broken = self.broken, set()
        for root in self.roots:
            sys.stdout.flush()
            compiled = compile_cached([root])
            sys.stderr.flush()
            if compiled is None:
                self.broken.add(root)
            else:
                self.plans[root] = compiled[0]
        fixed = sorted(map(str, was_broken - self.broken))
        if fixed:
            print(f"compiles again: {', '.join(fixed)}")
        for gone in [r for r in self.plans if r not in self.roots]:
            del self.plans[gone]
        if self.broken:
            print(f"does not compile: {', '.join(sorted(map(str, self.broken)))}; the services keep running, fix "
                  "it and save" + (" (its last Plan that compiled stays)" if self.broken & set(self.plans) else ""))
        return [self.plans[r] for r in self.roots if r in self.plans]

    async def _apply(self, session: DevSession, touched: set[Path], edited: float) -> None:
        import anyio

        self.count += 1
        self._header(touched, first=False)
        plans = self._compile()
        dirs = self._watch_dirs()  # what is watched follows the Plans
        if self.watch is not None:
            with anyio.CancelScope(shield=True):  # cancelled half-way, nothing would be watched
                await self.watch.restart_if(dirs)
        if self.options.select and plans and not _any_selected(plans, self.options.select):
            print(f"-k {' '.join(self.options.select)} selects no test now")
        change = session.change(plans, touched)
        self._describe(change)
        if not change.empty:
            recheck = session.recheck(plans, change.recheck)
            if recheck is not None:
                self._print_recheck(recheck, edited)
            await self._run(session, plans, change, edited)
        self._watching()

    async def _first(self, session: DevSession, plans: list[Plan]) -> None:
        change = session.change(plans)
        if not change.empty:
            await self._run(session, plans, change, None)
        self._watching()

    def _watching(self) -> None:
        print(f"watching {len(self.sources)} .cr file(s) and {len(self.mounts)} mounted path(s); Ctrl-C stops",
              flush=True)

    def _describe(self, change: Change) -> None:
        if change.empty:
            print("no change to what runs: nothing re-ran")
            return
        print("changed:")
        for line in change.lines:
            print(f"  {line}")

    def _print_recheck(self, r: Recheck, edited: float) -> None:
        from crc.runtime.results import node_name

        print("re-checked from the last run's outputs and spans (a real run confirms below):")
        _print_tests(r.result.tests, "[re-checked from the last run]")
        for n, why in r.no_data:
            print(f"  not checked: {node_name(r.labels, n)} at {r.labels.get(n, {}).get('loc')}: {why}")
        print(f"  (answered {time.time() - edited:.2f}s after the edit)", flush=True)

    async def _run(self, session: DevSession, plans: list[Plan], change: Change, edited: float | None) -> None:
        from crc.runtime.results import labels_of

        names = {n: d["name"] for p in plans for n, d in p.nodes.items() if d["kind"] == "service"}
        tests = sorted(change.run | change.recheck)
        starting = sorted(names[n] for n in change.restart if n in names)
        verb = "running" if edited is None else "re-running"
        print(f"{verb}: " + (", ".join(f"{s} / {t}" for s, t in tests) if tests else "no test"))
        if starting:
            print("starting: " + ", ".join(starting), flush=True)
        sys.stdout.flush()
        result = await session.execute(plans, change)
        _print_tests(result.tests, "")
        for (suite, test), waited in sorted(session.ended_early.items()):
            print(f"       {suite} / {test}: span wait ended after {waited:.2f}s: steps done, the receiver quiet, no "
                  f"span pending (`crc run` would wait up to {self.options.span_timeout:g}s)")
        _print_failures(result, labels_of(plans))
        warm = [f"{svc}" for _suite, svc in session.warm()]
        after = "" if edited is None else f" (answered {time.time() - edited:.2f}s after the edit)"
        print(f"{_counts(result)} in {(result.ended_ns - result.started_ns) / 1e9:.2f}s{after}; "
              f"running: {', '.join(warm) or 'nothing'}", flush=True)


class _Change:
    """One change's run: the files it is for, their newest modification time (None: the first run), the scope
    a newer save cancels it by, and whether that happened."""

    def __init__(self, touched: set[Path], edited: float | None):
        import anyio

        self.touched = touched
        self.edited = edited
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.superseded = False


class _Watch:
    """The file watchers (watchfiles), tasks of `tg`, restarted when what is watched changes; batches of changed
    paths go to `send`."""

    def __init__(self, send: Any, tg: Any):
        self.send = send
        self.tg = tg
        self.dirs: tuple[frozenset[Path], frozenset[Path]] | None = None
        self.scope: Any = None

    async def restart_if(self, dirs: tuple[frozenset[Path], frozenset[Path]]) -> None:
        if dirs != self.dirs:
            await self.restart(dirs)

    async def restart(self, dirs: tuple[frozenset[Path], frozenset[Path]]) -> None:
        if self.scope is not None:
            self.scope.cancel()
        self.dirs = dirs
        self.scope = await self.tg.start(self._run, dirs)

    async def _run(self, dirs: tuple[frozenset[Path], frozenset[Path]], task_status: Any) -> None:
        import anyio

        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                flat, deep = dirs
                if flat:
                    tg.start_soon(self._feed, sorted(flat), False)
                if deep:
                    tg.start_soon(self._feed, sorted(deep), True)
                task_status.started(scope)

    async def _feed(self, dirs: list[Path], recursive: bool) -> None:
        from watchfiles import awatch

        async for changes in awatch(*dirs, recursive=recursive, step=30):
            await self.send.send({Path(p) for _kind, p in changes})


def _any_selected(plans: Sequence[Plan], select: Sequence[str]) -> bool:
    from crc.runtime.selection import matcher

    match = matcher(list(select))
    return any(match(t["suite"], t["name"]) for p in plans for t in p.tests)


def _print_tests(tests: Sequence[TestResult], note: str) -> None:
    for t in tests:
        tail = note or f"{t.duration_s * 1000:.0f}ms"
        print(f"{_MARK.get(t.status, t.status):>5}  {t.suite} / {t.name}  {tail}")
        if note and t.failures:
            for msg in t.failures:
                for i, ln in enumerate(msg.splitlines()[:6]):
                    print(("       - " if i == 0 else "         ") + ln)


def _print_late(test: TestResult) -> None:
    """A span came after a confirming run's span wait ended early, and changed the test's verdict."""
    print(f"a span came after {test.suite} / {test.name}'s span wait ended early; its verdict now, as `crc run` "
          "gives it:")
    _print_tests([test], "[a span came late]")
    sys.stdout.flush()


def _print_failures(result: RunResult, labels: Any) -> None:
    from crc.runtime.report import summary_text

    text = summary_text(result, labels)
    body = text.rsplit("\n", 1)[0] if "\n" in text else ""  # the counts line is printed with the timing
    if body.strip():
        print(body)


def _counts(result: RunResult) -> str:
    c = result.counts()
    return f"{c['passed']} passed, {c['failed'] + c['error']} failed, {c['skipped']} skipped"


__all__ = ["dev_cmd", "register"]
