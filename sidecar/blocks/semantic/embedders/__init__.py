"""Embedders turn text into vectors; each semantic namespace is bound to one."""

from __future__ import annotations

from memsidecar.sidecar.blocks.semantic.embedders.base import (
    Embedder,
    EmbedderFactory,
    EmbedderRegistry,
)
from memsidecar.sidecar.blocks.semantic.embedders.registry import EMBEDDERS

__all__ = ["EMBEDDERS", "Embedder", "EmbedderFactory", "EmbedderRegistry"]
