"""The episodic drivers the suites run against; a new driver adds a parameter here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from memsidecar.client import AsyncMemSidecar
from memsidecar.client.blocks.episodic import AsyncEpisodic
from memsidecar.sidecar.blocks.episodic import EpisodicBlock
from memsidecar.sidecar.server import Sidecar
from tests.support import PG_TEST_DSN, ManualClock, running_sidecar, unique_tenant

EPISODIC_DRIVERS: dict[str, dict[str, Any]] = {
    "memory": {"blocks.episodic.driver": "memory"},
    "postgres": {
        "blocks.episodic.driver": "postgres",
        # Tails poll at this interval until the LISTEN connection is up.
        "blocks.episodic.options": {"dsn": PG_TEST_DSN, "poll_seconds": 0.2},
    },
}


def driver_overrides(request: pytest.FixtureRequest, driver: str) -> dict[str, Any]:
    """The config of one driver, in a fresh tenant (tests share one database)."""
    if driver == "postgres":
        request.getfixturevalue("postgres")
    return {**EPISODIC_DRIVERS[driver], **unique_tenant()}


# Only these namespaces exist, so an unknown one is NOT_FOUND.
NAMESPACES: dict[str, Any] = {
    "keep3": {"retention_max_events": 3},
    "hour": {"retention_max_age": "1h"},
    "both": {"retention_max_age": "100s", "retention_max_events": 5},
    "ns*": {},
}


@dataclass
class Env:
    sidecar: Sidecar
    client: AsyncMemSidecar
    clock: ManualClock

    @property
    def tenant(self) -> str:
        return self.sidecar.config.identity.tenant

    @property
    def ep(self) -> AsyncEpisodic:
        return self.client.episodic

    @property
    def block(self) -> EpisodicBlock:
        block = self.sidecar.blocks["episodic"]
        assert isinstance(block, EpisodicBlock)
        return block


Starter = Callable[..., contextlib.AbstractAsyncContextManager[Env]]


@pytest.fixture(params=sorted(EPISODIC_DRIVERS))
def start(request: pytest.FixtureRequest, clock: ManualClock) -> Starter:
    """Start a sidecar on this driver with extra config overrides."""
    driver = driver_overrides(request, request.param)

    @contextlib.asynccontextmanager
    async def run(overrides: dict[str, Any] | None = None) -> AsyncIterator[Env]:
        settings = {"blocks.episodic.namespaces": NAMESPACES, **driver, **(overrides or {})}
        async with running_sidecar(settings, clock=clock) as (sidecar, client):
            yield Env(sidecar, client, clock)

    return run


@pytest.fixture
async def env(start: Starter) -> AsyncIterator[Env]:
    async with start() as e:
        yield e


@pytest.fixture
def ep(env: Env) -> AsyncEpisodic:
    return env.ep
