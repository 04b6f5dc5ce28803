"""The pytest plugin (entry point `pytest11`, name `crc`): `.cr` files as pytest tests.

Every pytest session in an environment where crc is installed imports this module, so it imports nothing but
pytest and the standard library at load; crc's compiler and runtime come with the first `.cr` file collected.

Collection is opt-in, so that `pytest` never picks up `.cr` files nobody asked it to run: a `.cr` file that
declares a suite is collected when it is named on the command line, lies under a directory of the
`crc_paths` ini option, or lies under the paths given with `--crc`. Files that declare no suite are modules
(imported by others) and never collected.

Shape: a file is a collector, each suite a collector under it, each test an item (`FILE::SUITE::TEST`). A
suite's setup opens it on the session's Runner (its network, and its services, started once); each item runs
its test's nodes against the running services; the suite's teardown (after its last item, at the end of the
session, and on Ctrl-C) removes its containers and network. The Runner lives in an event loop of its own
thread (an anyio blocking portal) for the whole session.
"""

from __future__ import annotations

import os
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from crc.compiler.plan import Plan
    from crc.compiler.schema import SuiteEntry, TestEntry
    from crc.runtime.results import TestResult
    from crc.runtime.runner import OpenSuite

_SESSION = pytest.StashKey["_CrcSession"]()
CLOSE_TIMEOUT = 90.0  # seconds to wait for a cancelled test's tasks before tearing its suite down anyway


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from crc import pytest_hooks

    pluginmanager.add_hookspecs(pytest_hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("crc", "Cleanroom .cr files")
    group.addoption("--crc", action="store_true", dest="crc_collect",
                    help="collect the .cr files that declare a suite under the given paths (and testpaths)")
    parser.addini("crc_paths", type="paths", default=[],
                  help="directories whose .cr files (those declaring a suite) are collected as tests")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "crc: a test of a .cr file (collected by crc's pytest plugin)")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """A `.cr` file with a suite, when asked for (named, under `crc_paths`, or under the paths with `--crc`)."""
    if file_path.suffix != ".cr" or not _wanted(file_path, parent):
        return None
    from crc.clitools import declares_suite

    if not declares_suite(file_path):
        return None
    return CrFile.from_parent(parent, path=file_path)


def _wanted(path: Path, parent: pytest.Collector) -> bool:
    config = parent.config
    if config.getoption("crc_collect") or parent.session.isinitpath(path):
        return True
    return any(path.is_relative_to(d) for d in config.getini("crc_paths"))


class CompileFailed(Exception):
    """A `.cr` file with errors: `text` is every diagnostic, rendered as `crc check` prints them."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


class TestFailed(Exception):
    """A crc test that failed or erred: `text` is its failure as `crc run`'s summary prints it."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


class CrFile(pytest.File):
    """A `.cr` file: compiled at collection; its suites are collectors of their tests."""

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        from crc.compiler.compile import compile_file, sources_of
        from crc.compiler.diagnostics import CompileError, render
        from crc.config import project_lint_ignore

        source = _shown(self.path)
        color = self.config.get_terminal_writer().hasmarkup
        try:
            plan = compile_file(source, ignore=project_lint_ignore())
        except CompileError as e:
            texts = sources_of(source)
            raise CompileFailed("\n\n".join(render(d, texts, color=color) for d in e.diagnostics)) from None
        if plan.warnings:
            texts = sources_of(source)
            for d in plan.warnings:
                self.warn(CrcWarning(render(d, texts)))
        for s in plan.suites:
            yield CrSuite.from_parent(self, name=s["name"], plan=plan, meta=s)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CompileFailed):
            return excinfo.value.text
        return super().repr_failure(excinfo)


class CrcWarning(pytest.PytestWarning):
    """A compiler warning of a collected `.cr` file."""


class CrSuite(pytest.Collector):
    """A suite: its services start at its setup, before its first item, and go at its teardown."""

    def __init__(self, *, plan: Plan, meta: SuiteEntry, **kw: Any):
        super().__init__(**kw)
        self.plan, self.meta = plan, meta
        self.open: _OpenedSuite | None = None

    def collect(self) -> Iterator[pytest.Item]:
        for t in self.plan.tests:
            if t["suite"] == self.meta["name"]:
                item = CrItem.from_parent(self, name=t["name"], test=t)
                item.add_marker("crc")
                yield item

    def setup(self) -> None:
        self.open = _session(self.config).open_suite(self.plan, self.meta)

    def teardown(self) -> None:
        if self.open is not None:
            opened, self.open = self.open, None
            opened.close()

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.meta["loc"]["line"] - 1, f"suite {self.meta['name']}"


class CrItem(pytest.Item):
    """One crc test (a parametrised test's instance too, named as crc names it)."""

    def __init__(self, *, test: TestEntry, **kw: Any):
        super().__init__(**kw)
        self.test = test
        # No fixtures; plugins that look at every item's fixture values (pytest-lsp) find none rather than fail.
        self.funcargs: dict[str, Any] = {}

    def runtest(self) -> None:
        suite = self.parent
        assert isinstance(suite, CrSuite) and suite.open is not None
        result, why = suite.open.run_test(self.test)
        from crc.runtime.report import failure_text
        from crc.runtime.results import ERROR, FAILED, SKIPPED

        if result.status in (FAILED, ERROR):
            raise TestFailed(textwrap.dedent(failure_text(result)) or result.status)
        if result.status == SKIPPED:
            pytest.skip(why or "skipped")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, TestFailed):
            return excinfo.value.text
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.test["loc"]["line"] - 1, f"{self.test['suite']}/{self.test['name']}"


class _OpenedSuite:
    """A suite open on the session's Runner, driven from pytest's thread."""

    def __init__(self, session: _CrcSession, plan: Plan, meta: SuiteEntry, key: str):
        self.session, self.plan, self.meta = session, plan, meta
        self._cm = session.portal.wrap_async_context_manager(session.runner.open_suite(plan, meta, key))
        self.suite: OpenSuite = self._cm.__enter__()
        session.opened.append(self)
        try:
            session.call(self.suite.run, self.suite.services)
        except BaseException:
            self.close()
            raise

    def run_test(self, test: TestEntry) -> tuple[TestResult, str]:
        """Run one test's nodes; its verdict and, when it is skipped, why."""
        from crc.runtime.results import ERROR, FAILED

        nodes = {n for n, d in self.plan.nodes.items() if d["suite"] == test["suite"] and d.get("test") == test["name"]}
        self.session.call(self.suite.run, nodes)
        result = self.suite.test_result(test)
        assert result is not None  # every test has nodes: the compiler refuses an empty one
        if result.status in (FAILED, ERROR):  # its report shows what its services said
            self.session.call(self.suite.read_logs, test)
            result = self.suite.test_result(test)
            assert result is not None
        results = self.session.runner.results
        why = next((results[n].message for n in result.nodes if n in results and results[n].message), "")
        return result, why

    def close(self) -> None:
        """Tear the suite down (its containers and network), also after an interrupted test."""
        if self in self.session.opened:
            self.session.opened.remove(self)
            self._cm.__exit__(None, None, None)


class _CrcSession:
    """The session's Runner in an event loop of its own thread, started by the first suite's setup and stopped
    when pytest unconfigures (after every suite's teardown, on Ctrl-C too)."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.stack = ExitStack()
        self.error: str | None = None
        self.portal: Any = None
        self.runner: Any = None
        self.suites = 0
        self.opened: list[_OpenedSuite] = []

    def start(self) -> None:
        from anyio.from_thread import start_blocking_portal

        from crc.config import ConfigError
        from crc.config import load as load_settings
        from crc.runtime.backend import BackendError
        from crc.runtime.options import RunOptions
        from crc.runtime.session import docker_runner

        try:
            cfg = load_settings()
        except ConfigError as e:
            where = f"{e.file}:{e.line}:{e.col}: " if e.file else ""
            self.error = f"crc: error: {where}{e.message}" + (f"\n  help: {e.help}" if e.help else "")
            return
        pull = cfg["pull"]
        options = RunOptions(jobs=cfg["jobs"], span_timeout=cfg["span_timeout"], allow_pull=pull != "never",
                             pull_always=pull == "always")
        self.portal = self.stack.enter_context(start_blocking_portal())
        made = self.config.hook.pytest_crc_runner(config=self.config, options=options)
        try:
            self.runner = self.stack.enter_context(
                self.portal.wrap_async_context_manager(made if made is not None else docker_runner(options)))
            self.stack.enter_context(self.portal.wrap_async_context_manager(self.runner.serving()))
        except BackendError as e:  # no engine, a lease that cannot be taken: every suite says so
            self.stack.close()
            self.error = f"crc: error: {e}"

    def open_suite(self, plan: Plan, meta: SuiteEntry) -> _OpenedSuite:
        if self.portal is None and self.error is None:
            self.start()
        if self.error is not None:
            pytest.fail(self.error, pytrace=False)
        self.suites += 1
        return _OpenedSuite(self, plan, meta, f"s{self.suites}")

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`await fn(*args)` in the Runner's loop. Interrupted (Ctrl-C), the task is cancelled and waited for,
        so that the suite's teardown that follows finds nothing running."""
        finished = threading.Event()

        async def task() -> Any:
            try:
                return await fn(*args)
            finally:
                finished.set()

        future = self.portal.start_task_soon(task)
        try:
            return future.result()
        except BaseException:
            if not future.done():
                future.cancel()
                finished.wait(CLOSE_TIMEOUT)
            raise

    def close(self) -> None:
        """Close what is still open (pytest tore every suite down already, unless it was stopped hard), then
        the Runner: its receiver, its lease, the engine's connection."""
        try:
            for opened in reversed(self.opened):
                opened.close()
        finally:
            self.stack.close()


def _session(config: pytest.Config) -> _CrcSession:
    session = config.stash.get(_SESSION, None)
    if session is None:
        session = config.stash[_SESSION] = _CrcSession(config)
        config.add_cleanup(session.close)
    return session


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is under it (as `crc run` shows files)."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except ValueError:
        return str(path)
