"""A Runner on the Docker engine for as long as a block lasts: what killed runs left behind is reaped first,
and a lease names the run so that neither a concurrent run nor `crc clean` removes what it makes. `crc run`
and the pytest plugin open their runners here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .options import RunOptions
from .runner import Runner


@asynccontextmanager
async def docker_runner(options: RunOptions) -> AsyncIterator[Runner]:
    """A Runner on the engine of DOCKER_HOST (EngineUnavailable, LeaseError when it cannot be had). Suites
    that `keep` left running are marked kept before the lease is let go: the next run's reap leaves them."""
    from .docker_backend import DockerBackend
    from .leases import mark_kept, reap_leftovers, run_lease

    async with DockerBackend() as backend:
        await backend.ping()
        await reap_leftovers(backend)
        runner = Runner(backend, options)
        async with run_lease(runner.run_id, backend):
            try:
                yield runner
            finally:
                if runner.kept:
                    mark_kept(runner.run_id)
