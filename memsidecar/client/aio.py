"""The async client: one object per block over one channel."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType

import grpc

from memsidecar.client.blocks.artifact import AsyncArtifact
from memsidecar.client.blocks.episodic import AsyncEpisodic
from memsidecar.client.blocks.kv import AsyncKV
from memsidecar.client.blocks.lease import AsyncLease
from memsidecar.client.blocks.semantic import AsyncSemantic
from memsidecar.client.blocks.session import AsyncSession
from memsidecar.client.retry import RetryPolicy
from memsidecar.client.tls import TLSFiles, channel_credentials
from memsidecar.client.transport import Transport, resolve_target

DEFAULT_TIMEOUT = 30.0


class AsyncMemSidecar:
    """`async with AsyncMemSidecar.from_env() as m: await m.kv.put("scratch", "k", b"v")`."""

    def __init__(
        self,
        *,
        socket: str | Path | None = None,
        target: str | None = None,
        token: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        tls: TLSFiles | None = None,
    ) -> None:
        self.target = resolve_target(socket, target)
        # TLS: `tls`, or MEMSIDECAR_TLS_CA/_CERT/_KEY for TCP targets (docs/tls.md).
        credentials = channel_credentials(self.target, tls, credentials)
        self.transport = Transport.open(
            self.target, retry or RetryPolicy(), timeout, token, credentials
        )
        self.kv = AsyncKV(self.transport)
        self.episodic = AsyncEpisodic(self.transport)
        self.semantic = AsyncSemantic(self.transport)
        self.artifact = AsyncArtifact(self.transport)
        self.lease = AsyncLease(self.transport)
        self.session = AsyncSession(self.transport)

    @classmethod
    def from_env(cls, **kwargs: object) -> AsyncMemSidecar:
        """Connect where the environment says: MEMSIDECAR_SOCKET (or MEMSIDECAR_TARGET)."""
        return cls(**kwargs)  # type: ignore[arg-type]

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the channel is connected (e.g. right after starting the sidecar)."""
        await asyncio.wait_for(self.transport.channel.channel_ready(), timeout)

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> AsyncMemSidecar:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
