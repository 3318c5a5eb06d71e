"""One channel to the sidecar plus the call options every block client shares."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from memsidecar.client.retry import RetryPolicy
from memsidecar.defaults import CAPABILITY_HEADER, TARGET_ENV, TOKEN_ENV, default_socket_path

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def resolve_target(socket: str | Path | None = None, target: str | None = None) -> str:
    """A gRPC target: an explicit host:port, else a Unix socket (argument, env, default)."""
    if socket is not None and target is not None:
        raise ValueError("pass either socket or target, not both")
    if target:
        return target
    if socket is not None:
        return f"unix:{socket}"
    env_target = os.environ.get(TARGET_ENV)
    if env_target:
        return env_target
    return f"unix:{default_socket_path()}"


@dataclass
class Transport:
    channel: grpc.aio.Channel
    retry: RetryPolicy
    # Deadline for unary calls, in seconds (None = no deadline).
    timeout: float | None
    token: str | None = None

    @classmethod
    def open(
        cls,
        target: str,
        retry: RetryPolicy,
        timeout: float | None,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        max_message_bytes: int = 8 * 1024 * 1024,
    ) -> Transport:
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if credentials is not None:
            channel = grpc.aio.secure_channel(target, credentials, options=options)
        else:
            channel = grpc.aio.insecure_channel(target, options=options)
        return cls(channel, retry, timeout, token or os.environ.get(TOKEN_ENV))

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((CAPABILITY_HEADER, f"Bearer {self.token}"),) if self.token else ()

    async def unary(self, method: Callable[..., Awaitable[Resp]], request: Any) -> Resp:
        return await self.retry.call(
            lambda: method(request, timeout=self.timeout, metadata=self.metadata)
        )

    async def stream(
        self, method: Callable[..., AsyncIterator[Resp]], request: Any
    ) -> AsyncIterator[Resp]:
        """A server stream with retries, cancelled on the sidecar as soon as the caller
        stops iterating (a live tail would otherwise run on for ever)."""
        calls: list[Any] = []

        def open_call() -> AsyncIterator[Resp]:
            call = method(request, metadata=self.metadata)
            calls.append(call)
            return call

        try:
            async for item in self.retry.stream(open_call):
                yield item
        finally:
            for call in calls:
                call.cancel()

    async def close(self) -> None:
        await self.channel.close(None)
