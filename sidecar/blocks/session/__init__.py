"""session: agent sessions kept alive by heartbeats; leases attached to a session are
released when it closes or is orphaned (with a checkpoint event in episodic memory)."""

from __future__ import annotations

import grpc

from memsidecar.session.v1 import session_pb2_grpc
from memsidecar.sidecar.blocks.base import Block, BlockContext
from memsidecar.sidecar.blocks.episodic import EpisodicBlock
from memsidecar.sidecar.blocks.lease import LeaseBlock
from memsidecar.sidecar.blocks.session.driver import SessionDriver
from memsidecar.sidecar.blocks.session.registry import DRIVERS
from memsidecar.sidecar.blocks.session.service import SessionService


class SessionBlock(Block):
    name = "session"
    service_name = "memsidecar.session.v1.Session"

    def __init__(self, driver: SessionDriver, ctx: BlockContext) -> None:
        self.driver = driver
        leases = self.peer(ctx, LeaseBlock)
        self.service = SessionService(
            driver,
            ctx.config.blocks.session,
            ctx.config.blocks.episodic,
            leases,
            self.peer(ctx, EpisodicBlock),
            ctx.clock,
        )
        leases.set_session_check(self.service.check_open)

    @classmethod
    async def build(cls, ctx: BlockContext) -> SessionBlock:
        # Sessions live in the same backend as the leases they hold.
        lease = ctx.config.blocks.lease
        return cls(await DRIVERS.open(lease.driver, lease.options, ctx), ctx)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        session_pb2_grpc.add_SessionServicer_to_server(self.service, server)

    async def start(self) -> None:
        await self.service.resume()

    async def active_sessions(self) -> int:
        """Open sessions whose heartbeats this sidecar watches (the active-sessions gauge)."""
        return len(self.service.monitor)

    async def health(self) -> bool:
        return await self.driver.health()

    async def close(self) -> None:
        await self.service.monitor.close()
        await self.driver.close()
