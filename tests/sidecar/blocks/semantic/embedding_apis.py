"""Local HTTP servers that speak the Ollama and OpenAI embedding APIs, for tests.

Each validates requests the way the real API does (path, method, headers, body shape)
and answers in its wire format with deterministic vectors (the fake embedder's, so
texts that share words are similar). Tests queue failures, change the answer's
dimension, and read every request the server received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from memsidecar.sidecar.blocks.semantic.embedders.fake import FakeEmbedder


@dataclass
class Failure:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass
class EmbeddingAPI:
    """One fake API: `requests` holds each request body received (valid or not)."""

    model: str
    dimension: int
    api_key: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    # Answered in order, one per request, before any success.
    failures: list[Failure] = field(default_factory=list)
    # Vectors of this length instead of `dimension` (a misconfigured embedder).
    answer_dimension: int | None = None
    # Seconds to wait before answering (to trip the client's timeout).
    delay: float = 0.0
    # Answer with this JSON instead (a server that is not this API).
    raw_answer: Any = None
    url: str = ""

    def vectors(self, texts: list[str], dimension: int | None = None) -> list[list[float]]:
        size = dimension or self.answer_dimension or self.dimension
        return [FakeEmbedder(size).embed_one(text) for text in texts]

    @property
    def inputs(self) -> list[list[str]]:
        """The texts of each request, in order."""
        return [list(body.get("input", [])) for body in self.requests]

    async def _receive(self, request: web.Request) -> dict[str, Any] | web.Response:
        self.headers.append(dict(request.headers))
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        self.requests.append(body if isinstance(body, dict) else {})
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failures:
            failure = self.failures.pop(0)
            return web.json_response(failure.body, status=failure.status, headers=failure.headers)
        if self.raw_answer is not None:
            return web.json_response(self.raw_answer)
        if not isinstance(body, dict):
            return self.error(400, "invalid JSON body")
        return body

    def error(self, status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)


class OllamaAPI(EmbeddingAPI):
    """POST /api/embed {"model", "input": str | [str], ...} → {"model", "embeddings", ...}."""

    async def embed(self, request: web.Request) -> web.Response:
        body = await self._receive(request)
        if isinstance(body, web.Response):
            return body
        model, texts = body.get("model"), body.get("input")
        if not isinstance(model, str) or not model:
            return self.error(400, "model is required")
        if model != self.model:
            return self.error(404, f'model "{model}" not found, try pulling it first')
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return self.error(400, "invalid input type")
        unknown = set(body) - {"model", "input", "truncate", "options", "keep_alive", "dimensions"}
        if unknown:
            return self.error(400, f"unknown fields {sorted(unknown)}")
        return web.json_response(
            {
                "model": model,
                "embeddings": self.vectors(texts),
                "total_duration": 1000,
                "load_duration": 10,
                "prompt_eval_count": sum(len(t.split()) for t in texts),
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/embed", self.embed)
        return app


class OpenAIAPI(EmbeddingAPI):
    """POST /v1/embeddings with a bearer key → {"object": "list", "data": [...], ...}."""

    def error(self, status: int, message: str, code: str | None = None) -> web.Response:
        return web.json_response(
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": code,
                }
            },
            status=status,
        )

    async def embed(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if self.api_key and auth != f"Bearer {self.api_key}":
            self.requests.append({})
            self.headers.append(dict(request.headers))
            return self.error(
                401,
                "Incorrect API key provided. You can find your API key at ...",
                "invalid_api_key",
            )
        if not request.content_type == "application/json":
            return self.error(400, "the body must be JSON (Content-Type: application/json)")
        body = await self._receive(request)
        if isinstance(body, web.Response):
            return body
        model, texts = body.get("model"), body.get("input")
        if not isinstance(model, str) or not model:
            return self.error(400, "you must provide a model parameter")
        if model != self.model:
            return self.error(404, f"The model `{model}` does not exist", "model_not_found")
        if isinstance(texts, str):
            texts = [texts]
        if (
            not isinstance(texts, list)
            or not texts
            or len(texts) > 2048
            or not all(isinstance(t, str) and t for t in texts)
        ):
            return self.error(400, "'$.input' is invalid. Please check the API reference")
        if body.get("encoding_format", "float") != "float":
            return self.error(400, "this test server only answers encoding_format float")
        dimensions = body.get("dimensions")
        if dimensions is not None:
            if not model.startswith("text-embedding-3"):
                return self.error(400, "This model does not support specifying dimensions.")
            if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
                return self.error(400, "'dimensions' must be a positive integer")
        unknown = set(body) - {"model", "input", "encoding_format", "dimensions", "user"}
        if unknown:
            return self.error(400, f"Unrecognized request arguments supplied: {sorted(unknown)}")
        vectors = self.vectors(texts, dimensions)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        # The API does not promise order; answer backwards so clients must sort by index.
        return web.json_response(
            {
                "object": "list",
                "data": data[::-1],
                "model": model,
                "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)},
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/embeddings", self.embed)
        return app


@contextlib.asynccontextmanager
async def serving(api: OllamaAPI | OpenAIAPI) -> AsyncIterator[str]:
    """Serve `api` on 127.0.0.1 (a free port); yields the base url for the embedder config."""
    server = TestServer(api.app(), host="127.0.0.1")
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        api.url = base if isinstance(api, OllamaAPI) else f"{base}/v1"
        yield api.url
    finally:
        await server.close()
