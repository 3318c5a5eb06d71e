"""The openai embedder: POST {url}/embeddings {"model", "input": [texts]} with a bearer key
→ {"data": [{"index", "embedding"}, ...]}.

Works with OpenAI (the default url, https://api.openai.com/v1, needs `api_key_env`) and
with servers that speak the same API (vLLM, LocalAI, Ollama's /v1, ...), which may need
no key. With `send_dimensions`, the request asks for `dimension`-long vectors (the
text-embedding-3 models can shorten theirs).
"""

from __future__ import annotations

import os
from typing import Any

from yarl import URL

from memsidecar.sidecar.blocks.registry import DriverConfigError
from memsidecar.sidecar.blocks.semantic.embedders.http import (
    HttpEmbedder,
    Malformed,
    check_model,
    check_url,
    floats,
)
from memsidecar.sidecar.blocks.semantic.settings import EmbedderSettings

DEFAULT_URL = "https://api.openai.com/v1"
# Inputs per request the API accepts.
MAX_BATCH = 2048


class OpenAIEmbedder(HttpEmbedder):
    type = "openai"

    def __init__(self, settings: EmbedderSettings, url: str, api_key: str, **kw: Any) -> None:
        super().__init__(settings, url, **kw)
        self._api_key = api_key

    @property
    def endpoint(self) -> URL:
        return self.url / "embeddings"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def body(self, texts: list[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self.settings.send_dimensions:
            body["dimensions"] = self.dimension
        return body

    def parse(self, data: Any, count: int) -> list[list[float]]:
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise Malformed('no "data" list of objects')
        indexes = [item.get("index") for item in items]
        if sorted(i for i in indexes if isinstance(i, int)) != list(range(len(items))):
            raise Malformed(f"the data indexes are {indexes}, not 0..{len(items) - 1}")
        ordered = sorted(items, key=lambda item: int(item["index"]))
        return [
            floats(item.get("embedding"), f"data[{i}].embedding") for i, item in enumerate(ordered)
        ]

    def dimension_hint(self) -> str:
        if self.settings.send_dimensions:
            return f"the model {self.model!r} ignored or does not support `dimensions`"
        return "or set send_dimensions: true to ask text-embedding-3 models for that length"


async def create(settings: EmbedderSettings) -> OpenAIEmbedder:
    check_model(settings)
    url = settings.url or DEFAULT_URL
    check_url(url)
    if settings.batch_size > MAX_BATCH:
        raise DriverConfigError(
            f"batch_size: {settings.batch_size} is over the API's limit of {MAX_BATCH} inputs"
        )
    api_key = ""
    if settings.api_key_env:
        api_key = os.environ.get(settings.api_key_env, "")
        if not api_key:
            raise DriverConfigError(
                f"api_key_env: the environment variable {settings.api_key_env} is not set "
                "(it should hold the API key)"
            )
    elif URL(url).host == URL(DEFAULT_URL).host:
        raise DriverConfigError(
            "api_key_env: required for OpenAI; name the environment variable that holds "
            "the API key (e.g. OPENAI_API_KEY)"
        )
    return OpenAIEmbedder(settings, url, api_key)
