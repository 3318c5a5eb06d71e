"""A sidecar whose semantic namespaces embed through the openai embedder, driven through
the SDK, against a local server speaking the OpenAI embeddings API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from memsidecar.client.blocks.semantic import AsyncSemantic
from memsidecar.client.errors import ConflictError, UnavailableError
from tests.sidecar.blocks.semantic.conftest import SEMANTIC_DRIVERS
from tests.sidecar.blocks.semantic.embedding_apis import Failure, OpenAIAPI, serving
from tests.support import ManualClock, running_sidecar, unique_tenant

KEY = "sk-e2e-secret"
DIM = 64


@pytest.fixture(params=sorted(SEMANTIC_DRIVERS))
async def remote(
    request: pytest.FixtureRequest, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[AsyncSemantic, OpenAIAPI]]:
    if request.param.startswith("pgvector"):
        request.getfixturevalue("postgres")
    monkeypatch.setenv("MS_E2E_OPENAI_KEY", KEY)
    api = OpenAIAPI(model="text-embedding-3-small", dimension=DIM, api_key=KEY)
    async with serving(api) as url:
        overrides = {
            **SEMANTIC_DRIVERS[request.param],
            **unique_tenant(),
            "blocks.semantic.embedders": {
                "openai": {
                    "type": "openai",
                    "url": url,
                    "model": api.model,
                    "dimension": DIM,
                    "api_key_env": "MS_E2E_OPENAI_KEY",
                    "max_retries": 2,
                    "retry_backoff": "10ms",
                }
            },
            "blocks.semantic.namespaces": {"*": {"embedder": "openai"}},
        }
        async with running_sidecar(overrides, clock=clock) as (_, client):
            yield client.semantic, api


async def test_upsert_and_search_embed_remotely(
    remote: tuple[AsyncSemantic, OpenAIAPI],
) -> None:
    semantic, api = remote
    await semantic.upsert("e2e", "Ann prefers green tea in the morning", id="tea")
    await semantic.upsert("e2e", "Bob takes his coffee black", id="coffee")
    await semantic.upsert("e2e", "The quarterly report is due on Friday", id="report")
    hits = await semantic.search("e2e", "green tea in the morning", top_k=2)
    assert hits[0].record.id == "tea" and hits[0].score > hits[1].score
    got = await semantic.get("e2e", "tea", include_vector=True)
    assert got is not None and got.vector == pytest.approx(
        api.vectors(["Ann prefers green tea in the morning"])[0], abs=1e-6
    )
    assert len(api.requests) == 4
    assert all(h["Authorization"] == f"Bearer {KEY}" for h in api.headers)
    # The same query again is answered from the embedder's cache.
    again = await semantic.search("e2e", "green tea in the morning", top_k=2)
    assert [h.record.id for h in again] == [h.record.id for h in hits]
    assert len(api.requests) == 4


async def test_rate_limit_is_retried_inside_the_sidecar(
    remote: tuple[AsyncSemantic, OpenAIAPI],
) -> None:
    semantic, api = remote
    api.failures.append(Failure(429, {"Retry-After": "0"}, {"error": {"message": "slow down"}}))
    record = await semantic.upsert("e2e", "retried text", id="r")
    assert record.version == 1
    assert len(api.requests) == 2


async def test_embedder_down_is_unavailable_and_writes_nothing(
    remote: tuple[AsyncSemantic, OpenAIAPI],
) -> None:
    semantic, api = remote
    api.failures += [Failure(503, body={"error": {"message": "overloaded"}})] * 3
    with pytest.raises(UnavailableError, match="overloaded"):
        await semantic.upsert("e2e", "never stored", id="down")
    assert len(api.requests) == 3
    assert await semantic.get("e2e", "down") is None


async def test_wrong_dimension_is_a_clear_error(
    remote: tuple[AsyncSemantic, OpenAIAPI],
) -> None:
    semantic, api = remote
    api.answer_dimension = 32
    with pytest.raises(ConflictError, match=r"returned 32-dimensional vectors.*dimension 64"):
        await semantic.upsert("e2e", "some text", id="bad")
    with pytest.raises(ConflictError, match="returned 32-dimensional"):
        await semantic.search("e2e", "some text")
    assert await semantic.get("e2e", "bad") is None
