"""In-memory artifacts: a sorted dict of (record, content) per (tenant, namespace).

A write collects its chunks in a private buffer and only stores the finished
artifact, so a failed or cancelled upload leaves nothing behind. Contents are
immutable bytes, so an open reader keeps the version it opened.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any

from sortedcontainers import SortedDict

from memsidecar.sidecar.blocks.artifact.driver import ArtifactRecord
from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.registry import parse_options
from memsidecar.sidecar.blocks.settings import NoOptions

Scope = tuple[str, str]


class MemoryReader:
    def __init__(self, record: ArtifactRecord, content: bytes) -> None:
        self._record = record
        self._content = content

    @property
    def info(self) -> ArtifactRecord:
        return self._record

    async def read(self, offset: int, length: int, chunk_bytes: int) -> AsyncGenerator[bytes, None]:
        view = memoryview(self._content)
        end = offset + length
        for start in range(offset, end, chunk_bytes):
            yield bytes(view[start : min(start + chunk_bytes, end)])

    async def close(self) -> None:
        self._content = b""


class MemoryArtifacts:
    def __init__(self) -> None:
        self._data: dict[Scope, SortedDict] = {}

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
        buffer = bytearray()
        digest = hashlib.sha256()
        async for chunk in chunks:
            digest.update(chunk)
            buffer += chunk
        record = ArtifactRecord(
            id=artifact_id,
            size=len(buffer),
            sha256=digest.hexdigest(),
            content_type=content_type,
            metadata=metadata,
            created_at=now,
        )
        # One assignment: readers see the old entry or the new one.
        self._data.setdefault((tenant, namespace), SortedDict())[artifact_id] = (
            record,
            bytes(buffer),
        )
        return record

    def _entry(self, tenant: str, namespace: str, artifact_id: str) -> Any:
        table = self._data.get((tenant, namespace))
        return table.get(artifact_id) if table is not None else None

    async def open(self, tenant: str, namespace: str, artifact_id: str) -> MemoryReader | None:
        entry = self._entry(tenant, namespace, artifact_id)
        return MemoryReader(*entry) if entry is not None else None

    async def stat(self, tenant: str, namespace: str, artifact_id: str) -> ArtifactRecord | None:
        entry = self._entry(tenant, namespace, artifact_id)
        return entry[0] if entry is not None else None  # type: ignore[no-any-return]

    async def delete(self, tenant: str, namespace: str, artifact_id: str) -> bool:
        table = self._data.get((tenant, namespace))
        if table is None or artifact_id not in table:
            return False
        del table[artifact_id]
        return True

    async def list(
        self, tenant: str, namespace: str, prefix: str, start_after: str, limit: int
    ) -> builtins.list[ArtifactRecord]:
        table = self._data.get((tenant, namespace))
        if table is None:
            return []
        out: list[ArtifactRecord] = []
        for artifact_id in table.irange(minimum=max(prefix, start_after)):
            if not artifact_id.startswith(prefix):
                break
            if artifact_id == start_after:
                continue
            out.append(table[artifact_id][0])
            if len(out) >= limit:
                break
        return out

    async def health(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()


async def create(options: dict[str, Any], ctx: BlockContext) -> MemoryArtifacts:
    parse_options("artifact", "memory", NoOptions, options)
    return MemoryArtifacts()
