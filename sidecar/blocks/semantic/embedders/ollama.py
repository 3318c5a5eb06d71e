"""The ollama embedder: POST {url}/api/embed {"model", "input": [texts]} → {"embeddings": [...]}.

Ollama's current embedding API (the older /api/embeddings takes one text per request).
No key; `url` defaults to a local Ollama, http://127.0.0.1:11434.
"""

from __future__ import annotations

from typing import Any

from yarl import URL

from memsidecar.sidecar.blocks.semantic.embedders.http import HttpEmbedder, Malformed, floats
from memsidecar.sidecar.blocks.semantic.settings import EmbedderSettings

DEFAULT_URL = "http://127.0.0.1:11434"


class OllamaEmbedder(HttpEmbedder):
    type = "ollama"

    @property
    def endpoint(self) -> URL:
        return self.url / "api" / "embed"

    def body(self, texts: list[str]) -> dict[str, Any]:
        return {"model": self.model, "input": texts}

    def parse(self, data: Any, count: int) -> list[list[float]]:
        embeddings = data.get("embeddings") if isinstance(data, dict) else None
        if not isinstance(embeddings, list):
            raise Malformed('no "embeddings" list')
        return [floats(e, f"embeddings[{i}]") for i, e in enumerate(embeddings)]

    def dimension_hint(self) -> str:
        return f"the model {self.model!r} decides the length of its vectors"


async def create(settings: EmbedderSettings) -> OllamaEmbedder:
    return OllamaEmbedder(settings, settings.url or DEFAULT_URL)
