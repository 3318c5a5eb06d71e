"""kv: typed, TTL'd key-value memory with versions and compare-and-set."""

from __future__ import annotations

import grpc

from memsidecar.kv.v1 import kv_pb2_grpc
from memsidecar.sidecar.blocks.base import Block, BlockContext
from memsidecar.sidecar.blocks.kv.driver import KVDriver
from memsidecar.sidecar.blocks.kv.registry import DRIVERS
from memsidecar.sidecar.blocks.kv.service import KVService


class KVBlock(Block):
    name = "kv"
    service_name = "memsidecar.kv.v1.KV"

    def __init__(self, driver: KVDriver, ctx: BlockContext) -> None:
        self.driver = driver
        self.service = KVService(driver, ctx.config.blocks.kv, ctx.clock)

    @classmethod
    async def build(cls, ctx: BlockContext) -> KVBlock:
        settings = ctx.config.blocks.kv
        return cls(await DRIVERS.open(settings.driver, settings.options, ctx), ctx)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        kv_pb2_grpc.add_KVServicer_to_server(self.service, server)

    async def health(self) -> bool:
        return await self.driver.health()

    async def close(self) -> None:
        await self.driver.close()
