"""The lease drivers the conformance suite runs against; a new driver adds a parameter here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from memsidecar.client import AsyncMemSidecar
from memsidecar.client.blocks.lease import AsyncLease
from memsidecar.sidecar.server import Sidecar
from tests.support import PG_TEST_DSN, ManualClock, running_sidecar, unique_tenant

LEASE_DRIVERS: dict[str, dict[str, Any]] = {
    "memory": {"blocks.lease.driver": "memory"},
    "postgres": {"blocks.lease.driver": "postgres", "blocks.lease.options": {"dsn": PG_TEST_DSN}},
}


def lease_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "postgres":
        request.getfixturevalue("postgres")
    return {**LEASE_DRIVERS[request.param], **unique_tenant()}


@pytest.fixture(params=sorted(LEASE_DRIVERS))
async def lease(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[AsyncLease]:
    """A lease client on a sidecar whose wall clock the test moves by hand."""
    async with running_sidecar(lease_overrides(request), clock=clock) as (_, client):
        yield client.lease


@pytest.fixture(params=sorted(LEASE_DRIVERS))
async def realtime_sidecar(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Sidecar, AsyncMemSidecar]]:
    """A sidecar on the system clock, for expiry while someone waits, and its client."""
    async with running_sidecar(lease_overrides(request)) as pair:
        yield pair


@pytest.fixture
def realtime_lease(realtime_sidecar: tuple[Sidecar, AsyncMemSidecar]) -> AsyncLease:
    return realtime_sidecar[1].lease
