"""A real headless Chromium (Debian's package) driven by Playwright, for tests of the HTML report.

Playwright never downloads a browser here: it starts /usr/bin/chromium (`.ci/setup` installs it) with a fresh
profile. Screenshots go to $CRC_ARTIFACTS, else .ci/artifacts/, where CI keeps them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# Chromium as root needs --no-sandbox; the rest keeps it from reaching any host on its own.
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def artifacts_dir() -> Path:
    """Where screenshots are written (created)."""
    d = Path(os.environ.get("CRC_ARTIFACTS") or ROOT / ".ci" / "artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A Chromium context with a fresh profile; skips (fails under CI) when Chromium or Playwright is missing.

    Module-scoped: Playwright's sync API runs an event loop in this thread while it is open, and tests of
    other modules start their own (anyio.run)."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: .ci/setup should have installed Debian's chromium")
        pytest.skip("no Chromium (apt-get install chromium, or run `bash .ci/setup`)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[dev]'")
    profile = tempfile.mkdtemp(prefix="crc-chromium-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS, headless=True,
                                                       viewport={"width": 1400, "height": 1000})
            try:
                yield ctx
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class Page:
    """An opened report page and every console error and uncaught exception it raised."""

    def __init__(self, ctx: Any, path: Path):
        self.errors: list[str] = []
        self.page = ctx.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_selector("body[data-ready='1']", timeout=30_000)

    def close(self) -> None:
        self.page.close()
