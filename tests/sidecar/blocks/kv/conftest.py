"""The kv drivers the conformance suite runs against; a new driver adds a parameter here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from memsidecar.client.blocks.kv import AsyncKV
from tests.support import PG_TEST_DSN, ManualClock, running_sidecar, unique_tenant

KV_DRIVERS: dict[str, dict[str, Any]] = {
    "memory": {"blocks.kv.driver": "memory"},
    "postgres": {"blocks.kv.driver": "postgres", "blocks.kv.options": {"dsn": PG_TEST_DSN}},
}


@pytest.fixture(params=sorted(KV_DRIVERS))
async def kv(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[AsyncKV]:
    if request.param == "postgres":
        request.getfixturevalue("postgres")
    overrides = {**KV_DRIVERS[request.param], **unique_tenant()}
    async with running_sidecar(overrides, clock=clock) as (_, client):
        yield client.kv
