"""The session drivers the suite runs against; sessions follow the lease block's driver,
so a new driver adds a parameter here (and to LEASE_DRIVERS)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from memsidecar.client import AsyncMemSidecar
from memsidecar.sidecar.server import Sidecar
from tests.support import PG_TEST_DSN, running_sidecar, unique_tenant

SESSION_DRIVERS: dict[str, dict[str, Any]] = {
    "memory": {"blocks.lease.driver": "memory"},
    "postgres": {"blocks.lease.driver": "postgres", "blocks.lease.options": {"dsn": PG_TEST_DSN}},
}

Started = contextlib.AbstractAsyncContextManager[tuple[Sidecar, AsyncMemSidecar]]


@pytest.fixture(params=sorted(SESSION_DRIVERS))
def start_sidecar(request: pytest.FixtureRequest) -> Callable[..., Started]:
    """`async with start_sidecar({"blocks.session.x": ...}, clock=...) as (sidecar, client)`."""
    if request.param == "postgres":
        request.getfixturevalue("postgres")
    base = {**SESSION_DRIVERS[request.param], **unique_tenant()}

    def start(overrides: dict[str, Any] | None = None, clock: Any = None) -> Started:
        return running_sidecar({**base, **(overrides or {})}, clock=clock)

    return start


@pytest.fixture
async def client(start_sidecar: Callable[..., Started]) -> AsyncIterator[AsyncMemSidecar]:
    """A client on a sidecar with the system clock (heartbeats are real time)."""
    async with start_sidecar() as (_, c):
        yield c


@pytest.fixture
async def sidecar_and_client(
    start_sidecar: Callable[..., Started],
) -> AsyncIterator[tuple[Sidecar, AsyncMemSidecar]]:
    async with start_sidecar() as pair:
        yield pair
