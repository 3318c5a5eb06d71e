"""artifact: blobs with metadata, streamed in chunks, with server-computed size and sha256."""

from __future__ import annotations

import grpc

from memsidecar.artifact.v1 import artifact_pb2_grpc
from memsidecar.sidecar.blocks.artifact.driver import ArtifactDriver
from memsidecar.sidecar.blocks.artifact.registry import DRIVERS
from memsidecar.sidecar.blocks.artifact.service import ArtifactService
from memsidecar.sidecar.blocks.base import Block, BlockContext
from memsidecar.sidecar.blocks.registry import DriverConfigError

# Room for the protobuf framing around a chunk in one gRPC message.
MESSAGE_OVERHEAD_BYTES = 64 * 1024


class ArtifactBlock(Block):
    name = "artifact"
    service_name = "memsidecar.artifact.v1.Artifact"

    def __init__(self, driver: ArtifactDriver, ctx: BlockContext) -> None:
        self.driver = driver
        self.service = ArtifactService(driver, ctx.config.blocks.artifact, ctx.clock)

    @classmethod
    async def build(cls, ctx: BlockContext) -> ArtifactBlock:
        settings = ctx.config.blocks.artifact
        max_message = ctx.config.listen.max_message_bytes
        if settings.chunk_bytes + MESSAGE_OVERHEAD_BYTES > max_message:
            raise DriverConfigError(
                f"blocks.artifact.chunk_bytes ({settings.chunk_bytes}) must be at least "
                f"{MESSAGE_OVERHEAD_BYTES} bytes below listen.max_message_bytes ({max_message})"
            )
        return cls(await DRIVERS.open(settings.driver, settings.options, ctx), ctx)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        artifact_pb2_grpc.add_ArtifactServicer_to_server(self.service, server)

    async def health(self) -> bool:
        return await self.driver.health()

    async def close(self) -> None:
        await self.driver.close()
