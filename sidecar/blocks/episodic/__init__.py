"""episodic: an append-only event and message log with sessions, windows and live tails."""

from __future__ import annotations

from typing import Any

import grpc

from memsidecar.episodic.v1 import episodic_pb2_grpc
from memsidecar.sidecar.blocks.base import Block, BlockContext
from memsidecar.sidecar.blocks.episodic.driver import EpisodicDriver
from memsidecar.sidecar.blocks.episodic.registry import DRIVERS
from memsidecar.sidecar.blocks.episodic.service import EpisodicService


class EpisodicBlock(Block):
    name = "episodic"
    service_name = "memsidecar.episodic.v1.Episodic"
    drivers = DRIVERS

    def __init__(self, driver: EpisodicDriver, ctx: BlockContext) -> None:
        self.driver = driver
        self.service = EpisodicService(driver, ctx.config.blocks.episodic, ctx.clock)

    @classmethod
    async def build(cls, ctx: BlockContext) -> EpisodicBlock:
        settings = ctx.config.blocks.episodic
        return cls(await DRIVERS.open(settings.driver, settings.options, ctx), ctx)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        episodic_pb2_grpc.add_EpisodicServicer_to_server(self.service, server)

    async def append_system_event(
        self, tenant: str, namespace: str, type: str, session_id: str, payload: dict[str, Any]
    ) -> int:
        """Append an event with role "system" on the sidecar's own behalf (e.g. a session
        checkpoint) and return its cursor; validated like an Append RPC (the namespace
        must be configured, limits apply), raising the same errors."""
        result = await self.service.append_event(
            tenant, namespace, type=type, role="system", session_id=session_id, payload=payload
        )
        return result.event.cursor

    async def health(self) -> bool:
        return await self.driver.health()

    async def end_streams(self) -> None:
        # Wake every live tail so each ends with a resume hint.
        self.service.close()

    async def close(self) -> None:
        self.service.close()
        await self.driver.close()
