"""Hooks the crc pytest plugin adds to pytest (implement them in a `conftest.py`)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec(firstresult=True)
def pytest_crc_runner(config: pytest.Config, options: Any) -> Any:
    """An async context manager yielding the `crc.runtime.runner.Runner` the session's `.cr` tests run on,
    made with `options` (a `RunOptions`). Default: a Runner on the Docker engine of DOCKER_HOST, which reaps
    what killed runs left behind and holds a lease while it runs (`crc.runtime.session.docker_runner`)."""
