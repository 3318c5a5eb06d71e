"""Bounded retries with capped exponential backoff and jitter.

Only retryable failures are retried (UNAVAILABLE by default). The jitter's
random source is seeded per client session so agents started together stagger.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from memsidecar.client.errors import from_rpc_error

T = TypeVar("T")

MAX_RETRIES_CLAMP = 5


@dataclass
class RetryPolicy:
    # Retries after the first attempt; clamped to 5.
    max_retries: int = 3
    base_delay: float = 0.2
    max_delay: float = 30.0
    # Each delay is scaled by a random factor in [1 - jitter, 1 + jitter].
    jitter: float = 0.25
    retry_codes: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})
    # None = a fresh random seed per client session.
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must not be negative")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("retry delays must not be negative")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        self.max_retries = min(self.max_retries, MAX_RETRIES_CLAMP)
        self._rng = random.Random(self.seed)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        capped = min(self.max_delay, self.base_delay * (2**attempt))
        return float(capped * (1 + self._rng.uniform(-self.jitter, self.jitter)))

    def retryable(self, exc: grpc.aio.AioRpcError) -> bool:
        return exc.code() in self.retry_codes

    async def call(self, attempt_fn: Callable[[], Awaitable[T]]) -> T:
        """Run a unary call, retrying retryable failures; raise the SDK's error type."""
        attempt = 0
        while True:
            try:
                return await attempt_fn()
            except grpc.aio.AioRpcError as exc:
                if not self.retryable(exc) or attempt >= self.max_retries:
                    raise from_rpc_error(exc) from None
                await asyncio.sleep(self.delay(attempt))
                attempt += 1

    async def stream(self, open_fn: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        """Run a server stream, retrying only until its first item has arrived."""
        attempt = 0
        while True:
            received = False
            try:
                async for item in open_fn():
                    received = True
                    yield item
                return
            except grpc.aio.AioRpcError as exc:
                if received or not self.retryable(exc) or attempt >= self.max_retries:
                    raise from_rpc_error(exc) from None
                await asyncio.sleep(self.delay(attempt))
                attempt += 1
