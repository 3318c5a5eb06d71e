from __future__ import annotations

from memsidecar.sidecar.blocks.semantic.embedders import fake, ollama, openai
from memsidecar.sidecar.blocks.semantic.embedders.base import EmbedderRegistry

EMBEDDERS = EmbedderRegistry()
EMBEDDERS.register("fake", fake.create)
EMBEDDERS.register("ollama", ollama.create)
EMBEDDERS.register("openai", openai.create)
