"""lease: TTL locks with fencing tokens, optionally attached to agent sessions."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import grpc

from memsidecar.lease.v1 import lease_pb2_grpc
from memsidecar.sidecar.blocks.base import Block, BlockContext
from memsidecar.sidecar.blocks.lease.driver import LeaseDriver, LeaseRecord
from memsidecar.sidecar.blocks.lease.registry import DRIVERS
from memsidecar.sidecar.blocks.lease.service import LeaseService, SessionCheck


@runtime_checkable
class CountsLiveLeases(Protocol):
    """An optional driver capability: it backs the memsidecar_active_leases gauge."""

    async def count_live(self, now: float) -> int:
        """How many leases of every tenant are live at `now`."""
        ...


class LeaseBlock(Block):
    name = "lease"
    service_name = "memsidecar.lease.v1.Lease"
    drivers = DRIVERS

    def __init__(self, driver: LeaseDriver, ctx: BlockContext) -> None:
        self.driver = driver
        self.clock = ctx.clock
        self.service = LeaseService(driver, ctx.config.blocks.lease, ctx.clock)

    @classmethod
    async def build(cls, ctx: BlockContext) -> LeaseBlock:
        settings = ctx.config.blocks.lease
        return cls(await DRIVERS.open(settings.driver, settings.options, ctx), ctx)

    def set_session_check(self, check: SessionCheck) -> None:
        """Let Acquire attach leases to sessions: `check(tenant, session_id)` raises unless
        the session is open. The session block registers this, so lease needs no import of it."""
        self.service.session_check = check

    async def session_leases(self, tenant: str, session_id: str) -> list[LeaseRecord]:
        """The live leases attached to a session."""
        return await self.driver.session_leases(tenant, session_id, self.clock())

    async def release_session(self, tenant: str, session_id: str) -> list[LeaseRecord]:
        """Release every live lease attached to a session (it ended); return them."""
        return await self.driver.release_session(tenant, session_id, self.clock())

    @property
    def counts_leases(self) -> bool:
        return isinstance(self.driver, CountsLiveLeases)

    async def active_leases(self) -> int:
        """Live leases of every tenant (sampled for the active-leases gauge)."""
        if not isinstance(self.driver, CountsLiveLeases):
            raise TypeError(f"lease driver {type(self.driver).__name__} cannot count leases")
        return await self.driver.count_live(self.clock())

    def add_to_server(self, server: grpc.aio.Server) -> None:
        lease_pb2_grpc.add_LeaseServicer_to_server(self.service, server)

    async def health(self) -> bool:
        return await self.driver.health()

    async def close(self) -> None:
        await self.driver.close()
