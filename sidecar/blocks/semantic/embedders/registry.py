from __future__ import annotations

from memsidecar.sidecar.blocks.semantic.embedders import fake
from memsidecar.sidecar.blocks.semantic.embedders.base import EmbedderRegistry

EMBEDDERS = EmbedderRegistry()
EMBEDDERS.register("fake", fake.create)
