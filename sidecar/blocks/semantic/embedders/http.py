"""What the HTTP embedders share: batching, retries, a timeout per request, an LRU cache,
and the checks on what comes back.

A subclass says how to call its API (endpoint, headers, request body) and how to read
the answer; HttpEmbedder does the rest:

- embed(texts) answers cached texts from memory, sends each other distinct text once,
  in requests of at most `batch_size` texts, and caches the answers by (model, text).
- A request is retried on HTTP 429 and 5xx and on connection errors and timeouts, at
  most `max_retries` times, waiting a random time up to retry_backoff * 2^attempt (full
  jitter) or, when the server sends Retry-After, exactly that long (up to
  `max_retry_wait`; a longer wait ends the retries). Out of retries: UNAVAILABLE.
- Any other refusal (400, 401, 403, 404, ...) is a configuration problem (bad key,
  unknown model, wrong URL): FAILED_PRECONDITION with the server's message, no retry.
- Vectors of another length than the configured dimension: FAILED_PRECONDITION.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import aiohttp
from yarl import URL

from memsidecar.sidecar.blocks.registry import DriverConfigError
from memsidecar.sidecar.blocks.semantic.settings import EmbedderSettings
from memsidecar.sidecar.errors import FailedPrecondition, Unavailable

log = logging.getLogger("memsidecar.semantic.embedders")

Sleep = Callable[[float], Awaitable[None]]

# How much of an error body goes into a message.
_SNIPPET = 300


class Refused(Exception):
    """The server answered with a status that retrying will not change."""

    def __init__(self, status: int, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class Malformed(Exception):
    """The answer is not what the API documents."""


def retry_after_seconds(headers: Any, now: float | None = None) -> float | None:
    """Seconds a response asks the client to wait: retry-after-ms, or Retry-After as
    seconds or an HTTP date; None when absent or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return value if math.isfinite(value) and value >= 0 else None


def error_message(body: str) -> str:
    """The message of a JSON error body ({"error": "..."} or {"error": {"message": ...}})."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:_SNIPPET]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:_SNIPPET]
    if isinstance(error, str):
        return error[:_SNIPPET]
    return body.strip()[:_SNIPPET]


def error_code(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else ""


def check_url(url: str, field: str = "url") -> URL:
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise DriverConfigError(f"{field}: {url!r} is not an http:// or https:// URL")
    return parsed


def check_model(settings: EmbedderSettings) -> None:
    if not settings.model:
        raise DriverConfigError(
            f"model: required for an embedder of type {settings.type} (the model's name, "
            "e.g. nomic-embed-text or text-embedding-3-small)"
        )


def floats(value: Any, what: str) -> list[float]:
    """A JSON list of numbers as floats, or Malformed."""
    if not isinstance(value, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value
    ):
        raise Malformed(f"{what} is not a list of numbers")
    return [float(x) for x in value]


class HttpEmbedder(ABC):
    """An embedder behind an HTTP API; subclasses set `type` and the wire format."""

    type: ClassVar[str]

    def __init__(
        self,
        settings: EmbedderSettings,
        url: str,
        *,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        check_model(settings)
        self.settings = settings
        self.model = settings.model
        self.dimension = settings.dimension
        # The embedding space: the same model through another API may differ.
        self.name = f"{self.type}:{settings.model}"
        self.url = check_url(url)
        self._sleep = sleep
        self._jitter = jitter
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout.total_seconds())
        self._session: aiohttp.ClientSession | None = None
        self._cache: OrderedDict[str, tuple[float, ...]] = OrderedDict()

    # -- what a subclass provides --------------------------------------------------

    @property
    @abstractmethod
    def endpoint(self) -> URL:
        """Where requests go."""

    def headers(self) -> dict[str, str]:
        return {}

    @abstractmethod
    def body(self, texts: list[str]) -> dict[str, Any]:
        """The JSON request for these texts."""

    @abstractmethod
    def parse(self, data: Any, count: int) -> list[list[float]]:
        """`count` vectors from the decoded JSON answer, in input order; Malformed if not."""

    def dimension_hint(self) -> str:
        return ""

    # -- the Embedder protocol -----------------------------------------------------

    async def embed(self, texts: list[str]) -> list[list[float]]:
        found: dict[str, tuple[float, ...]] = {}
        missing: list[str] = []
        for text in texts:
            if text in found:
                continue
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                found[text] = cached
            elif text not in missing:
                missing.append(text)
        size = self.settings.batch_size
        for start in range(0, len(missing), size):
            batch = missing[start : start + size]
            vectors = await self._request(batch)
            for text, vector in zip(batch, vectors, strict=True):
                found[text] = tuple(vector)
                self._remember(text, found[text])
        return [list(found[text]) for text in texts]

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- internals -----------------------------------------------------------------

    def _remember(self, text: str, vector: tuple[float, ...]) -> None:
        limit = self.settings.cache_size
        if limit == 0:
            return
        self._cache[text] = vector
        self._cache.move_to_end(text)
        while len(self._cache) > limit:
            self._cache.popitem(last=False)

    def _where(self) -> str:
        return f"embedder {self.name!r} at {self.endpoint}"

    def _backoff(self, attempt: int) -> float:
        base = self.settings.retry_backoff.total_seconds() * (2**attempt)
        return float(min(base, self.settings.max_retry_wait.total_seconds()) * self._jitter())

    async def _request(self, texts: list[str]) -> list[list[float]]:
        """One batch, with retries; the vectors checked against the dimension."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        attempts = self.settings.max_retries + 1
        body = self.body(texts)
        problem = ""
        for attempt in range(attempts):
            wait: float | None = None
            try:
                return self._checked(await self._post(body, len(texts)), len(texts))
            except Refused as refused:
                if refused.status != 429 and refused.status < 500:
                    raise FailedPrecondition(
                        f"{self._where()} refused the request with HTTP {refused.status}: "
                        f"{refused.message}; check the embedder's url, model and API key in "
                        "blocks.semantic.embedders"
                    ) from None
                problem = f"HTTP {refused.status}: {refused.message}"
                wait = refused.retry_after
            except Malformed as exc:
                raise FailedPrecondition(
                    f"{self._where()} answered with something that is not a {self.type} "
                    f"embeddings response ({exc}); check the embedder's url and type"
                ) from None
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            except TimeoutError:
                problem = f"no answer within {self._timeout.total:g}s (timeout)"
            if attempt + 1 == attempts:
                break
            max_wait = self.settings.max_retry_wait.total_seconds()
            if wait is not None and wait > max_wait:
                problem += f"; the server asked to wait {wait:g}s, over max_retry_wait"
                break
            delay = wait if wait is not None else self._backoff(attempt)
            log.warning(
                "%s: %s; retry %d of %d in %.2fs",
                self._where(),
                problem,
                attempt + 1,
                attempts - 1,
                delay,
            )
            await self._sleep(delay)
        raise Unavailable(
            f"{self._where()} is unavailable after {attempt + 1} attempt(s): {problem}"
        )

    async def _post(self, body: dict[str, Any], count: int) -> list[list[float]]:
        assert self._session is not None
        async with self._session.post(self.endpoint, json=body, headers=self.headers()) as resp:
            text = await resp.text()
            if resp.status != 200:
                refused = Refused(
                    resp.status,
                    error_message(text) or resp.reason or "",
                    retry_after_seconds(resp.headers),
                )
                if resp.status == 429 and error_code(text) == "insufficient_quota":
                    # Out of credit, not rate limited: waiting will not help.
                    raise FailedPrecondition(
                        f"{self._where()} refused the request: {refused.message} "
                        "(insufficient_quota); check the account's plan and billing"
                    )
                raise refused
        try:
            data = json.loads(text)
        except ValueError:
            raise Malformed(f"the body is not JSON: {text[:80]!r}") from None
        return self.parse(data, count)

    def _checked(self, vectors: list[list[float]], count: int) -> list[list[float]]:
        if len(vectors) != count:
            raise Malformed(f"{len(vectors)} embeddings for {count} inputs")
        for vector in vectors:
            if len(vector) != self.dimension:
                hint = self.dimension_hint()
                raise FailedPrecondition(
                    f"{self._where()} returned {len(vector)}-dimensional vectors, but the "
                    f"embedder is configured with dimension {self.dimension}; set its "
                    f"dimension to {len(vector)} in blocks.semantic.embedders"
                    + (f" ({hint})" if hint else "")
                )
        return vectors
