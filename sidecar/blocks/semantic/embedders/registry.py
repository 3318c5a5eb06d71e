from __future__ import annotations

from memsidecar.sidecar.blocks.semantic.embedders.base import EmbedderRegistry

EMBEDDERS = EmbedderRegistry()
EMBEDDERS.register("fake", "memsidecar.sidecar.blocks.semantic.embedders.fake")
EMBEDDERS.register("ollama", "memsidecar.sidecar.blocks.semantic.embedders.ollama")
EMBEDDERS.register("openai", "memsidecar.sidecar.blocks.semantic.embedders.openai")
