"""Sidecars and clients shared by the framework integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from memsidecar.client import AsyncMemSidecar, MemSidecar
from tests.integrations import backend_overrides
from tests.support import SidecarProcess, running_sidecar, sidecar_process


@pytest.fixture(scope="module")
def process() -> Iterator[SidecarProcess]:
    """A `memsidecar serve` process, one per test module: tests keep apart by namespace
    (`fresh_namespace`)."""
    with sidecar_process() as proc:
        yield proc


@pytest.fixture
def sync_client(process: SidecarProcess) -> Iterator[MemSidecar]:
    with MemSidecar(socket=process.socket) as client:
        yield client


@pytest.fixture
async def async_client(request: pytest.FixtureRequest) -> AsyncIterator[AsyncMemSidecar]:
    """A fresh in-process sidecar and an async client on the test's event loop: on the
    in-memory drivers, or with `on_every_backend` also on the database drivers (Postgres
    kv/episodic/lease, pgvector semantic) with a tenant of its own."""
    async with running_sidecar(backend_overrides(request)) as (_, client):
        yield client
