"""The memory blocks, in build order (a block may use the ones before it)."""

from __future__ import annotations

from memsidecar.sidecar.blocks.artifact import ArtifactBlock
from memsidecar.sidecar.blocks.base import Block
from memsidecar.sidecar.blocks.episodic import EpisodicBlock
from memsidecar.sidecar.blocks.kv import KVBlock
from memsidecar.sidecar.blocks.lease import LeaseBlock
from memsidecar.sidecar.blocks.semantic import SemanticBlock
from memsidecar.sidecar.blocks.session import SessionBlock

BLOCK_TYPES: list[type[Block]] = [
    KVBlock,
    EpisodicBlock,
    SemanticBlock,
    ArtifactBlock,
    LeaseBlock,
    SessionBlock,
]
