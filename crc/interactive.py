"""`crc run --interactive`: a terminal app (Textual) over a run: every test with its live status, each
service's log as it is written, and keys to re-run the selected test, the failed ones or all.

Each run is a normal run of the selected tests (services started, checked, torn down), made in the app's own
event loop; Textual imports only when the app starts.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, RichLog, Static, TabbedContent, TabPane

from crc.runtime.results import ERROR, FAILED, PASSED, SKIPPED, NodeResult, RunResult

if TYPE_CHECKING:
    from crc.compiler.plan import Plan
    from crc.runtime.options import RunOptions

RUNNING, PENDING = "running", "pending"
MARK = {PASSED: "[green]ok[/]", FAILED: "[red]FAIL[/]", ERROR: "[red]ERROR[/]", SKIPPED: "[yellow]skip[/]",
        RUNNING: "[cyan]…[/]", PENDING: "[dim]·[/]"}


@dataclass(frozen=True)
class Hooks:
    """What a run reports as it goes: a node started, a node finished, a service wrote a log line."""

    started: Callable[[str], None]
    finished: Callable[[NodeResult], None]
    log: Callable[[str, str], None]


# A run of the tests matching some `--select` globs; returns the run's result. The real one is `docker_run`.
RunFn = Callable[[tuple[str, ...], Hooks], Awaitable[RunResult]]


def glob_escape(text: str) -> str:
    """`text` as a glob matching only itself (test names may hold `*`, `?` or `[`)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _pattern(t: tuple[str, str]) -> str:
    """The `--select` glob of exactly one test."""
    return f"{glob_escape(t[0])}/{glob_escape(t[1])}"


def docker_run(plans: Sequence[Plan], options: RunOptions) -> RunFn:
    """Runs against the Docker engine, as `crc run` does (leftovers reaped first, a lease held meanwhile)."""
    async def run(select: tuple[str, ...], hooks: Hooks) -> RunResult:
        from crc.runtime.docker_backend import DockerBackend
        from crc.runtime.leases import reap_leftovers, run_lease
        from crc.runtime.runner import Runner

        async with DockerBackend() as backend:
            await backend.ping()
            await reap_leftovers(backend)
            runner = Runner(backend, replace(options, select=select, stream_logs=True),
                            on_start=hooks.started, on_result=hooks.finished)
            runner.on_log = hooks.log
            async with run_lease(runner.run_id, backend):
                return await runner.run(list(plans))
    return run


class CrcApp(App[int]):
    """Tests on the left with their status, the selected test's failures and the service logs on the right."""

    TITLE = "crc"
    CSS = """
    #tests { width: 50%; }
    #right { width: 50%; }
    #detail { height: auto; max-height: 40%; border: round $accent; padding: 0 1; }
    RichLog { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "rerun_selected", "re-run test"),
        Binding("f", "rerun_failed", "re-run failed"),
        Binding("a", "rerun_all", "re-run all"),
        Binding("l", "next_log", "next log"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, plans: Sequence[Plan], run: RunFn, select: tuple[str, ...] = ()):
        super().__init__()
        from crc.runtime.runner import selected

        self.run_fn = run
        self.select = select  # `crc run -k`: the tests shown, and what "re-run all" runs
        shown = {(d["suite"], d.get("test")) for p in plans for n in selected(p, select) for d in (p.node(n),)}
        self.tests = [(t["suite"], t["name"]) for p in plans for t in p.tests
                      if (t["suite"], t["name"]) in shown]
        self.node_test = {n: (d["suite"], d["test"]) for p in plans for n, d in p.nodes.items() if d.get("test")}
        self.status: dict[tuple[str, str], str] = {t: PENDING for t in self.tests}
        self.failures: dict[tuple[str, str], tuple[str, ...]] = {}
        self.node_status: dict[str, str] = {}
        self.logs: dict[str, RichLog] = {}
        self.runs = 0  # finished runs
        self.busy = False

    # ------------------------------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield DataTable(id="tests", cursor_type="row", zebra_stripes=True)
            with Vertical(id="right"):
                yield Static("", id="detail")
                yield TabbedContent(id="logs")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#tests", DataTable)
        table.add_column("", key="status", width=6)
        table.add_column("suite", key="suite")
        table.add_column("test", key="test")
        for suite, name in self.tests:
            table.add_row(MARK[PENDING], Text(suite), Text(name), key=f"{suite}\0{name}")  # names are not markup
        self._start(self.select)

    # ------------------------------------------------------------------------------------------ runs
    def _start(self, select: tuple[str, ...]) -> None:
        if self.busy:
            self.notify("a run is going on: wait for it to finish", severity="warning")
            return
        chosen = [t for t in self.tests if select == self.select or _pattern(t) in select]
        for t in chosen:
            self._set(t, PENDING)
        self.busy = True
        self.sub_title = f"running {len(chosen)} test(s)"
        self.run_worker(self._run(select), exclusive=True)

    async def _run(self, select: tuple[str, ...]) -> None:
        try:
            result = await self.run_fn(select, Hooks(self._on_started, self._on_finished, self._on_log))
        except Exception as e:  # engine gone, lease refused: shown, the app stays up for another try
            self.notify(f"the run failed: {e}", severity="error", timeout=30)
            self.sub_title = "run failed"
            return
        finally:
            self.busy = False
        for t in result.tests:
            self.failures[(t.suite, t.name)] = t.failures
            self._set((t.suite, t.name), t.status)
        self.runs += 1
        c = result.counts()
        self.sub_title = f"run {self.runs}: {c[PASSED]} passed, {c[FAILED] + c[ERROR]} failed, {c[SKIPPED]} skipped"
        self._show_detail()

    def _on_started(self, node: str) -> None:
        t = self.node_test.get(node)
        if t is not None and self.status.get(t) == PENDING:
            self._set(t, RUNNING)

    def _on_finished(self, r: NodeResult) -> None:
        self.node_status[r.node] = r.status
        t = self.node_test.get(r.node)
        if t is not None and r.status in (FAILED, ERROR):
            self._set(t, r.status)  # shown at once; the run's verdict comes when the test ends

    def _on_log(self, service: str, line: str) -> None:
        log = self.logs.get(service)
        if log is None:
            log = self.logs[service] = RichLog(id=f"log-{len(self.logs)}", max_lines=5000, markup=False)
            self.query_one("#logs", TabbedContent).add_pane(TabPane(service, log))
        log.write(line)

    def _set(self, t: tuple[str, str], status: str) -> None:
        self.status[t] = status
        table = self.query_one("#tests", DataTable)
        table.update_cell(f"{t[0]}\0{t[1]}", "status", MARK.get(status, status))

    # ------------------------------------------------------------------------------------------ selection
    def selected(self) -> tuple[str, str] | None:
        table = self.query_one("#tests", DataTable)
        if not self.tests:
            return None
        return self.tests[table.cursor_row]

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        t = self.selected()
        if t is None:
            return
        status = self.status[t]
        text = f"{MARK.get(status, status)} {_escape(t[0])} / {_escape(t[1])}"
        failures = self.failures.get(t, ()) if status in (FAILED, ERROR) else ()
        body = "\n\n".join(failures)
        self.query_one("#detail", Static).update(f"{text}\n{_escape(body)}" if body else text)

    # ------------------------------------------------------------------------------------------ keys
    def action_rerun_selected(self) -> None:
        t = self.selected()
        if t is not None:
            self._start((_pattern(t),))

    def action_rerun_failed(self) -> None:
        failed = tuple(_pattern(t) for t, st in self.status.items() if st in (FAILED, ERROR))
        if not failed:
            self.notify("no failed test")
            return
        self._start(failed)

    def action_rerun_all(self) -> None:
        self._start(self.select)

    def action_next_log(self) -> None:
        tabs = self.query_one("#logs", TabbedContent)
        panes = [p.id for p in tabs.query(TabPane) if p.id]
        if panes:
            i = panes.index(tabs.active) if tabs.active in panes else -1
            tabs.active = panes[(i + 1) % len(panes)]


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def run_interactive(plans: list[Plan], options: RunOptions) -> int:
    """`crc run --interactive`: the app until `q`; exit code of the last run (0 when every test passed)."""
    app = CrcApp(plans, docker_run(plans, options), options.select)
    app.run()
    failed = any(s in (FAILED, ERROR) for s in app.status.values())
    return 1 if failed else 0

