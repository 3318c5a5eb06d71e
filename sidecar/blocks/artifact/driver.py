"""The artifact driver protocol: what a storage backend must do for the artifact block.

Drivers stream: a write receives the content as an async iterator of chunks and
computes size and sha256 as it goes; a read hands out chunks of a byte range.
No driver may need the whole blob in memory except the memory driver itself.

Drivers deal in plain Python values; the service owns validation, limits and the
wire. Every driver passes tests/sidecar/blocks/artifact/test_conformance.py.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass
from typing import Any, Protocol

from memsidecar.sidecar.errors import MemError

DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class ArtifactRecord:
    """One stored artifact: its id, what the server computed, and what the writer declared."""

    id: str
    size: int
    # Hex sha256 of the whole content.
    sha256: str
    content_type: str
    metadata: dict[str, Any]
    # Wall seconds when this version was written (a replace sets a new time).
    created_at: float


class ArtifactReader(Protocol):
    """One version of an artifact, opened for reading.

    `info` and every byte `read` returns belong to the same version, even when the
    artifact is replaced or deleted while the reader is open.
    """

    @property
    def info(self) -> ArtifactRecord: ...

    def read(self, offset: int, length: int, chunk_bytes: int) -> AsyncGenerator[bytes, None]:
        """The bytes [offset, offset + length) in chunks of at most chunk_bytes.

        The caller has checked 0 <= offset and offset + length <= info.size.
        """
        ...

    async def close(self) -> None: ...


class ArtifactDriver(Protocol):
    """All methods are scoped by tenant and namespace; one tenant never sees another's data.

    Artifact ids are opaque strings (already validated: non-empty, no control
    characters); a driver must never turn one into a path or a key that could
    escape the (tenant, namespace) scope.
    """

    async def put(
        self,
        tenant: str,
        namespace: str,
        artifact_id: str,
        content_type: str,
        metadata: dict[str, Any],
        chunks: AsyncIterable[bytes],
        now: float,
    ) -> ArtifactRecord:
        """Store the content of `chunks` under the id, replacing any existing artifact.

        Atomic: readers see the old version or the new one, never a mix. If iterating
        `chunks` raises (a size limit, a broken client) or the call is cancelled,
        nothing of the new content becomes visible, the old version stays untouched,
        and no temporary data is left behind.
        """
        ...

    async def open(self, tenant: str, namespace: str, artifact_id: str) -> ArtifactReader | None:
        """A reader on the current version, or None when the artifact does not exist."""
        ...

    async def stat(
        self, tenant: str, namespace: str, artifact_id: str
    ) -> ArtifactRecord | None: ...

    async def delete(self, tenant: str, namespace: str, artifact_id: str) -> bool:
        """Remove the artifact; False when it did not exist."""
        ...

    async def list(
        self, tenant: str, namespace: str, prefix: str, start_after: str, limit: int
    ) -> builtins.list[ArtifactRecord]:
        """Up to `limit` artifacts whose id starts with `prefix` and is > start_after, by id."""
        ...

    async def health(self) -> bool: ...

    async def close(self) -> None: ...


def damaged(artifact_id: str, where: str, problem: str) -> MemError:
    """An INTERNAL error for stored data that cannot be read back as an artifact."""
    return MemError(
        f"artifact {artifact_id!r} is damaged in storage ({where}: {problem}); "
        "delete it and upload it again"
    )
