"""The ollama and openai embedders against local servers speaking each API's wire format."""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest

from memsidecar.sidecar.blocks.registry import DriverConfigError
from memsidecar.sidecar.blocks.semantic.embedders import EMBEDDERS
from memsidecar.sidecar.blocks.semantic.embedders.http import HttpEmbedder, retry_after_seconds
from memsidecar.sidecar.blocks.semantic.embedders.ollama import OllamaEmbedder
from memsidecar.sidecar.blocks.semantic.embedders.openai import OpenAIEmbedder
from memsidecar.sidecar.blocks.semantic.settings import EmbedderSettings
from memsidecar.sidecar.errors import FailedPrecondition, Unavailable
from tests.sidecar.blocks.semantic.embedding_apis import (
    EmbeddingAPI,
    Failure,
    OllamaAPI,
    OpenAIAPI,
    serving,
)

DIM = 16
KEY = "sk-test-0123456789"


class Sleeps:
    """Records the waits between retries instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


Make = Callable[..., HttpEmbedder]


@pytest.fixture(params=["ollama", "openai"])
async def api(request: pytest.FixtureRequest) -> AsyncIterator[EmbeddingAPI]:
    if request.param == "ollama":
        served: EmbeddingAPI = OllamaAPI(model="nomic-embed-text", dimension=DIM)
    else:
        served = OpenAIAPI(model="text-embedding-3-small", dimension=DIM, api_key=KEY)
    async with serving(served):  # type: ignore[arg-type]
        yield served


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def make(api: EmbeddingAPI, sleeps: Sleeps) -> AsyncIterator[Make]:
    """Build an embedder for `api` with settings overrides; closes them afterwards."""
    made: list[HttpEmbedder] = []

    def build(**overrides: Any) -> HttpEmbedder:
        fields: dict[str, Any] = {
            "dimension": DIM,
            "model": api.model,
            "url": api.url,
            "retry_backoff": 0.5,
            **overrides,
        }
        url = fields.pop("url")
        embedder: HttpEmbedder
        if isinstance(api, OllamaAPI):
            settings = EmbedderSettings(type="ollama", **fields)
            embedder = OllamaEmbedder(settings, url, sleep=sleeps, jitter=lambda: 1.0)
        else:
            settings = EmbedderSettings(type="openai", **fields)
            embedder = OpenAIEmbedder(settings, url, KEY, sleep=sleeps, jitter=lambda: 1.0)
        made.append(embedder)
        return embedder

    yield build
    for embedder in made:
        await embedder.close()


async def test_round_trip(api: EmbeddingAPI, make: Make) -> None:
    embedder = make()
    vectors = await embedder.embed(["green tea", "black coffee"])
    assert vectors == api.vectors(["green tea", "black coffee"])
    assert all(len(v) == DIM for v in vectors)
    [body] = api.requests
    assert body["model"] == api.model and body["input"] == ["green tea", "black coffee"]
    assert embedder.name == f"{'ollama' if isinstance(api, OllamaAPI) else 'openai'}:{api.model}"
    if isinstance(api, OpenAIAPI):
        assert api.headers[0]["Authorization"] == f"Bearer {KEY}"
        assert "dimensions" not in body


async def test_batches_of_batch_size(api: EmbeddingAPI, make: Make) -> None:
    embedder = make(batch_size=2)
    texts = ["a", "b", "c", "b", "d", "e", "a"]
    vectors = await embedder.embed(texts)
    assert vectors == api.vectors(texts)
    # Distinct texts only, in order, at most two per request.
    assert api.inputs == [["a", "b"], ["c", "d"], ["e"]]


async def test_cache_answers_repeated_texts(api: EmbeddingAPI, make: Make) -> None:
    embedder = make(cache_size=2)
    await embedder.embed(["a", "b"])
    assert await embedder.embed(["b", "a"]) == api.vectors(["b", "a"])
    assert len(api.requests) == 1
    # LRU: "a" was used last, so "b" makes way for "c".
    await embedder.embed(["a"])
    await embedder.embed(["c"])
    await embedder.embed(["a"])
    assert len(api.requests) == 2
    await embedder.embed(["b", "a"])
    assert api.inputs[-1] == ["b"]


async def test_cache_can_be_off(api: EmbeddingAPI, make: Make) -> None:
    embedder = make(cache_size=0)
    await embedder.embed(["a"])
    await embedder.embed(["a"])
    assert api.inputs == [["a"], ["a"]]


async def test_rate_limit_is_retried_after_the_asked_wait(
    api: EmbeddingAPI, make: Make, sleeps: Sleeps
) -> None:
    api.failures.append(Failure(429, {"Retry-After": "2"}, {"error": "slow down"}))
    embedder = make()
    assert await embedder.embed(["x"]) == api.vectors(["x"])
    assert len(api.requests) == 2 and sleeps.waits == [2.0]


async def test_server_errors_back_off_exponentially(
    api: EmbeddingAPI, make: Make, sleeps: Sleeps
) -> None:
    api.failures += [Failure(503), Failure(500), Failure(502)]
    embedder = make(max_retries=3, retry_backoff=0.25)
    assert await embedder.embed(["x"]) == api.vectors(["x"])
    assert len(api.requests) == 4
    # Full jitter (fixed at its maximum here): 0.25, 0.5, 1.0.
    assert sleeps.waits == [0.25, 0.5, 1.0]


async def test_jitter_spreads_the_waits(api: EmbeddingAPI, sleeps: Sleeps) -> None:
    api.failures += [Failure(503), Failure(503)]
    settings = EmbedderSettings(
        type="ollama",
        model=api.model,
        dimension=DIM,
        retry_backoff=timedelta(seconds=1),
        max_retries=2,
    )
    draws = iter([0.5, 0.25])
    if isinstance(api, OllamaAPI):
        embedder: HttpEmbedder = OllamaEmbedder(
            settings, api.url, sleep=sleeps, jitter=lambda: next(draws)
        )
    else:
        settings = settings.model_copy(update={"type": "openai"})
        embedder = OpenAIEmbedder(settings, api.url, KEY, sleep=sleeps, jitter=lambda: next(draws))
    try:
        await embedder.embed(["x"])
    finally:
        await embedder.close()
    assert sleeps.waits == [0.5, 0.5]  # 1s * 0.5, then 2s * 0.25


async def test_retries_are_bounded(api: EmbeddingAPI, make: Make, sleeps: Sleeps) -> None:
    api.failures += [Failure(500, body={"error": "boom"})] * 10
    embedder = make(max_retries=2)
    with pytest.raises(Unavailable, match=r"after 3 attempt\(s\): HTTP 500: boom"):
        await embedder.embed(["x"])
    assert len(api.requests) == 3 and len(sleeps.waits) == 2


async def test_no_retries_when_max_retries_is_zero(api: EmbeddingAPI, make: Make) -> None:
    api.failures.append(Failure(503))
    with pytest.raises(Unavailable, match="after 1 attempt"):
        await make(max_retries=0).embed(["x"])
    assert len(api.requests) == 1


async def test_too_long_retry_after_ends_the_retries(
    api: EmbeddingAPI, make: Make, sleeps: Sleeps
) -> None:
    api.failures.append(Failure(429, {"Retry-After": "120"}))
    with pytest.raises(Unavailable, match="asked to wait 120s, over max_retry_wait"):
        await make(max_retry_wait=30).embed(["x"])
    assert len(api.requests) == 1 and sleeps.waits == []


async def test_timeout_is_retried_then_unavailable(api: EmbeddingAPI, make: Make) -> None:
    api.delay = 2.0
    embedder = make(timeout=0.2, max_retries=1)
    with pytest.raises(Unavailable, match=r"no answer within 0.2s \(timeout\)"):
        await embedder.embed(["x"])
    assert len(api.requests) == 2


async def test_connection_refused_is_unavailable(api: EmbeddingAPI, make: Make) -> None:
    # A port nobody listens on: bind one, note it, close it.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}" + ("/v1" if isinstance(api, OpenAIAPI) else "")
    embedder = make(url=base, max_retries=2)
    with pytest.raises(Unavailable, match=f"127.0.0.1:{port}.*after 3 attempt"):
        await embedder.embed(["x"])


async def test_wrong_dimension_is_failed_precondition(api: EmbeddingAPI, make: Make) -> None:
    api.answer_dimension = 8
    with pytest.raises(
        FailedPrecondition, match=r"returned 8-dimensional vectors.*dimension 16; set its dimension"
    ):
        await make().embed(["x"])
    assert len(api.requests) == 1  # not retried


async def test_refusals_are_not_retried(api: EmbeddingAPI, make: Make) -> None:
    embedder = make(model="no-such-model")
    with pytest.raises(FailedPrecondition, match=r"HTTP 404.*no-such-model"):
        await embedder.embed(["x"])
    assert len(api.requests) == 1


async def test_not_this_api_is_failed_precondition(api: EmbeddingAPI, make: Make) -> None:
    api.raw_answer = {"hello": "world"}
    with pytest.raises(FailedPrecondition, match=r"not a .* embeddings response"):
        await make().embed(["x"])


async def test_wrong_count_is_failed_precondition(api: EmbeddingAPI, make: Make) -> None:
    if isinstance(api, OllamaAPI):
        api.raw_answer = {"embeddings": api.vectors(["one"])}
    else:
        api.raw_answer = {"data": [{"index": 0, "embedding": api.vectors(["one"])[0]}]}
    with pytest.raises(FailedPrecondition, match="1 embeddings for 2 inputs"):
        await make().embed(["one", "two"])


# -- openai only -----------------------------------------------------------------------


@pytest.fixture
async def openai_api() -> AsyncIterator[OpenAIAPI]:
    api = OpenAIAPI(model="text-embedding-3-small", dimension=1536, api_key=KEY)
    async with serving(api):
        yield api


async def test_openai_bad_key_is_failed_precondition(openai_api: OpenAIAPI) -> None:
    settings = EmbedderSettings(type="openai", model=openai_api.model, dimension=1536)
    embedder = OpenAIEmbedder(settings, openai_api.url, "sk-wrong")
    try:
        with pytest.raises(FailedPrecondition, match="HTTP 401: Incorrect API key"):
            await embedder.embed(["x"])
    finally:
        await embedder.close()
    assert len(openai_api.requests) == 1


async def test_openai_send_dimensions(openai_api: OpenAIAPI) -> None:
    settings = EmbedderSettings(
        type="openai", model=openai_api.model, dimension=256, send_dimensions=True
    )
    embedder = OpenAIEmbedder(settings, openai_api.url, KEY)
    try:
        [vector] = await embedder.embed(["x"])
    finally:
        await embedder.close()
    assert len(vector) == 256
    assert openai_api.requests[0]["dimensions"] == 256


async def test_openai_dimension_hint(openai_api: OpenAIAPI) -> None:
    settings = EmbedderSettings(type="openai", model=openai_api.model, dimension=256)
    embedder = OpenAIEmbedder(settings, openai_api.url, KEY)
    try:
        with pytest.raises(FailedPrecondition, match=r"returned 1536-.*send_dimensions: true"):
            await embedder.embed(["x"])
    finally:
        await embedder.close()


async def test_openai_out_of_quota_is_not_retried(openai_api: OpenAIAPI) -> None:
    openai_api.failures.append(
        Failure(
            429,
            body={"error": {"message": "You exceeded your quota", "code": "insufficient_quota"}},
        )
    )
    settings = EmbedderSettings(type="openai", model=openai_api.model, dimension=1536)
    embedder = OpenAIEmbedder(settings, openai_api.url, KEY)
    try:
        with pytest.raises(FailedPrecondition, match="insufficient_quota"):
            await embedder.embed(["x"])
    finally:
        await embedder.close()
    assert len(openai_api.requests) == 1


# -- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "env", "message"),
    [
        ({"type": "ollama"}, {}, r"embedders\.remote\.model: required"),
        ({"type": "openai", "api_key_env": "K"}, {"K": "x"}, r"embedders\.remote\.model"),
        ({"type": "ollama", "model": "m", "url": "ftp://x"}, {}, r"remote\.url: 'ftp://x'"),
        ({"type": "ollama", "model": "m", "url": "localhost:11434"}, {}, r"remote\.url"),
        ({"type": "openai", "model": "m"}, {}, r"remote\.api_key_env: required for OpenAI"),
        (
            {"type": "openai", "model": "m", "api_key_env": "MS_TEST_UNSET_KEY"},
            {},
            "MS_TEST_UNSET_KEY is not set",
        ),
        (
            {"type": "openai", "model": "m", "api_key_env": "K", "batch_size": 4096},
            {"K": "x"},
            "batch_size: 4096 is over the API's limit of 2048",
        ),
    ],
)
async def test_config_errors(
    fields: dict[str, Any], env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MS_TEST_UNSET_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DriverConfigError, match=message):
        await EMBEDDERS.create("remote", EmbedderSettings(**fields))


async def test_configured_through_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MS_TEST_OPENAI_KEY", KEY)
    ollama = await EMBEDDERS.create("o", EmbedderSettings(type="ollama", model="nomic-embed-text"))
    openai = await EMBEDDERS.create(
        "a",
        EmbedderSettings(
            type="openai", model="text-embedding-3-small", api_key_env="MS_TEST_OPENAI_KEY"
        ),
    )
    compatible = await EMBEDDERS.create(
        "c", EmbedderSettings(type="openai", model="m", url="http://127.0.0.1:8000/v1")
    )
    try:
        assert isinstance(ollama, OllamaEmbedder)
        assert str(ollama.endpoint) == "http://127.0.0.1:11434/api/embed"
        assert isinstance(openai, OpenAIEmbedder)
        assert str(openai.endpoint) == "https://api.openai.com/v1/embeddings"
        assert openai.headers() == {"Authorization": f"Bearer {KEY}"}
        assert isinstance(compatible, OpenAIEmbedder) and compatible.headers() == {}
        assert str(compatible.endpoint) == "http://127.0.0.1:8000/v1/embeddings"
    finally:
        for embedder in (ollama, openai, compatible):
            await embedder.close()
    assert "MS_TEST_OPENAI_KEY" in os.environ


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"Retry-After": " 0.5 "}, 0.5),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0.0),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-1"}, None),
        ({"Retry-After": "nan"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    result = retry_after_seconds(headers, now=now)
    assert result == seconds or (
        result is not None and seconds is not None and math.isclose(result, seconds)
    )
