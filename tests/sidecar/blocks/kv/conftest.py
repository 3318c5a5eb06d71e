"""The kv drivers the conformance suite runs against; a new driver adds a parameter here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from memsidecar.client.blocks.kv import AsyncKV
from tests.support import ManualClock, running_sidecar

KV_DRIVERS: dict[str, dict[str, Any]] = {
    "memory": {"blocks.kv.driver": "memory"},
}


@pytest.fixture(params=sorted(KV_DRIVERS))
async def kv(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[AsyncKV]:
    async with running_sidecar(KV_DRIVERS[request.param], clock=clock) as (_, client):
        yield client.kv
