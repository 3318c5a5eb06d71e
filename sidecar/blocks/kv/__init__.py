"""kv: typed, TTL'd key-value memory with versions and compare-and-set."""

from __future__ import annotations

import asyncio
import logging

import grpc

from memsidecar.kv.v1 import kv_pb2_grpc
from memsidecar.sidecar.blocks.base import Block, BlockContext
from memsidecar.sidecar.blocks.kv.driver import KVDriver
from memsidecar.sidecar.blocks.kv.registry import DRIVERS
from memsidecar.sidecar.blocks.kv.service import KVService
from memsidecar.sidecar.errors import MemError

log = logging.getLogger("memsidecar.kv")


class KVBlock(Block):
    name = "kv"
    service_name = "memsidecar.kv.v1.KV"
    drivers = DRIVERS

    def __init__(self, driver: KVDriver, ctx: BlockContext) -> None:
        self.driver = driver
        self.clock = ctx.clock
        self.settings = ctx.config.blocks.kv
        self.service = KVService(driver, self.settings, ctx.clock)
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    async def build(cls, ctx: BlockContext) -> KVBlock:
        settings = ctx.config.blocks.kv
        return cls(await DRIVERS.open(settings.driver, settings.options, ctx), ctx)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        kv_pb2_grpc.add_KVServicer_to_server(self.service, server)

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="kv-sweep")

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval.total_seconds())
            try:
                await self.driver.sweep(self.clock())
            except MemError:
                log.warning("kv sweep of expired keys failed; retrying next interval")

    async def health(self) -> bool:
        return await self.driver.health()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.driver.close()
