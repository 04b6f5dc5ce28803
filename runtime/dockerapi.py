"""The few aiodocker internals crc relies on, behind one small adapter.

aiodocker's public API reads more than crc needs (an inspect before every log read, a pull on create), so
`DockerBackend` talks to the Engine API through aiodocker's request layer: `Docker._query` and
`Docker._query_json` (one request, JSON or streamed body), `Docker._check_version` (API version
negotiation), and `Exec(docker, id)` (attach to an exec created by a raw request). Those are private or
undocumented, so they are called here only, and pyproject.toml bounds the aiodocker version they were
verified against; a new aiodocker is adopted by checking this module (tests/test_docker_backend.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiodocker
import aiohttp
from aiodocker.execs import Exec

__all__ = ["Engine", "Exec", "IncompleteRead"]

# What a streamed body raises when it ends in the middle of a frame (the container exited).
IncompleteRead = asyncio.IncompleteReadError


class Engine:
    """One aiodocker client, seen as raw Engine API requests."""

    def __init__(self, client: aiodocker.Docker):
        self.client = client

    @property
    def negotiated(self) -> bool:
        """Whether the API version is known (else `negotiate` asks the engine)."""
        return self.client.api_version != "auto"

    async def negotiate(self) -> None:
        """GET /version: a ping and the API version negotiation in one call."""
        await self.client._check_version()

    async def json(self, path: str, method: str = "GET", **kw: Any) -> Any:
        """One request; its JSON answer."""
        return await self.client._query_json(path, method, **kw)

    @asynccontextmanager
    async def request(self, path: str, method: str = "GET", **kw: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request, its response open for streaming while the block runs."""
        async with self.client._query(path, method, **kw) as resp:
            yield resp

    def exec(self, exec_id: str) -> Exec:
        """An exec created by a raw `containers/ID/exec` request, to start and attach (no TTY)."""
        return Exec(self.client, exec_id, tty=False)

    async def close(self) -> None:
        await self.client.close()
