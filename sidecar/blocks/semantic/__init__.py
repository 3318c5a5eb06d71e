"""semantic: embed-and-search memory with metadata filters, versions and typed links."""

from __future__ import annotations

import asyncio
import logging

import grpc

from memsidecar.semantic.v1 import semantic_pb2_grpc
from memsidecar.sidecar.blocks.base import Block, BlockContext
from memsidecar.sidecar.blocks.semantic.driver import SemanticDriver
from memsidecar.sidecar.blocks.semantic.embedders import EMBEDDERS, Embedder
from memsidecar.sidecar.blocks.semantic.registry import DRIVERS
from memsidecar.sidecar.blocks.semantic.service import SemanticService
from memsidecar.sidecar.errors import MemError

log = logging.getLogger("memsidecar.semantic")


class SemanticBlock(Block):
    name = "semantic"
    service_name = "memsidecar.semantic.v1.Semantic"
    drivers = DRIVERS

    def __init__(
        self, driver: SemanticDriver, embedders: dict[str, Embedder], ctx: BlockContext
    ) -> None:
        self.driver = driver
        self.embedders = embedders
        self.clock = ctx.clock
        self.settings = ctx.config.blocks.semantic
        self.service = SemanticService(driver, self.settings, embedders, ctx.clock)
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    async def build(cls, ctx: BlockContext) -> SemanticBlock:
        settings = ctx.config.blocks.semantic
        embedders: dict[str, Embedder] = {}
        try:
            for key, embedder_settings in settings.embedders.items():
                embedders[key] = await EMBEDDERS.create(key, embedder_settings)
            driver = await DRIVERS.open(settings.driver, settings.options, ctx)
        except BaseException:
            for embedder in embedders.values():
                await embedder.close()
            raise
        return cls(driver, embedders, ctx)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        semantic_pb2_grpc.add_SemanticServicer_to_server(self.service, server)  # type: ignore[no-untyped-call]

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="semantic-sweep")

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval.total_seconds())
            try:
                await self.driver.sweep(self.clock())
            except MemError:
                log.warning("semantic sweep of expired records failed; retrying next interval")

    async def health(self) -> bool:
        return await self.driver.health()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        try:
            await self.driver.close()
        finally:
            for embedder in self.embedders.values():
                await embedder.close()
