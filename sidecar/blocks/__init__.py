"""The memory blocks, in build order (a block may use the ones before it)."""

from __future__ import annotations

from memsidecar.sidecar.blocks.base import Block
from memsidecar.sidecar.blocks.kv import KVBlock

BLOCK_TYPES: list[type[Block]] = [
    KVBlock,
]
