"""What every block provides to the server, and what the server gives every block."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

import grpc

from memsidecar.sidecar.clock import Clock, system_clock

if TYPE_CHECKING:
    from memsidecar.sidecar.blocks.registry import DriverRegistry
    from memsidecar.sidecar.config import SidecarConfig


@dataclass
class BlockContext:
    config: SidecarConfig
    clock: Clock = system_clock
    # Blocks built so far, by name: sessions reach the lease and episodic blocks.
    blocks: dict[str, Block] = field(default_factory=dict)


B = TypeVar("B", bound="Block")


class Block(ABC):
    """One memory block: its gRPC service plus the driver behind it."""

    name: ClassVar[str]
    # Full gRPC service name, e.g. "memsidecar.kv.v1.KV" (also the health-check name).
    service_name: ClassVar[str]
    # The block's drivers; None for blocks that store through another block.
    drivers: ClassVar[DriverRegistry[Any] | None] = None

    @classmethod
    @abstractmethod
    async def build(cls, ctx: BlockContext) -> Self:
        """Open the configured driver and make the service."""

    @abstractmethod
    def add_to_server(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None:  # noqa: B027 - optional hook, most blocks need none
        """Start background work (sweepers, monitors); called once the server is up."""

    async def end_streams(self) -> None:  # noqa: B027 - optional hook
        """End long-lived streams (tails, keep-alives) at shutdown, before the server
        drains, so they finish with a resume hint instead of holding the grace period."""

    @abstractmethod
    async def health(self) -> bool:
        """Whether the block's backend answers; reported through grpc.health.v1."""

    @abstractmethod
    async def close(self) -> None: ...

    def peer(self, ctx: BlockContext, block_type: type[B]) -> B:
        """Another block this one depends on (built earlier by the server)."""
        block = ctx.blocks.get(block_type.name)
        if not isinstance(block, block_type):
            raise RuntimeError(f"block {self.name} needs block {block_type.name} built first")
        return block
