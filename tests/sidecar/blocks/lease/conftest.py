"""The lease drivers the conformance suite runs against; a new driver adds a parameter here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from memsidecar.client import AsyncMemSidecar
from memsidecar.client.blocks.lease import AsyncLease
from memsidecar.sidecar.server import Sidecar
from tests.support import ManualClock, running_sidecar

LEASE_DRIVERS: dict[str, dict[str, Any]] = {
    "memory": {"blocks.lease.driver": "memory"},
}


@pytest.fixture(params=sorted(LEASE_DRIVERS))
async def lease(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[AsyncLease]:
    """A lease client on a sidecar whose wall clock the test moves by hand."""
    async with running_sidecar(LEASE_DRIVERS[request.param], clock=clock) as (_, client):
        yield client.lease


@pytest.fixture(params=sorted(LEASE_DRIVERS))
async def realtime_sidecar(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Sidecar, AsyncMemSidecar]]:
    """A sidecar on the system clock, for expiry while someone waits, and its client."""
    async with running_sidecar(LEASE_DRIVERS[request.param]) as pair:
        yield pair


@pytest.fixture
def realtime_lease(realtime_sidecar: tuple[Sidecar, AsyncMemSidecar]) -> AsyncLease:
    return realtime_sidecar[1].lease
