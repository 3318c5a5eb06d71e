"""The artifact gRPC service: validates requests, scopes them to the caller's tenant,
enforces size limits while uploads stream, and calls the driver."""

from __future__ import annotations

import contextlib
import unicodedata
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import grpc

from memsidecar.artifact.v1 import artifact_pb2, artifact_pb2_grpc
from memsidecar.sidecar.blocks.artifact.convert import info_to_proto
from memsidecar.sidecar.blocks.artifact.driver import DEFAULT_CONTENT_TYPE, ArtifactDriver
from memsidecar.sidecar.blocks.artifact.settings import ArtifactSettings
from memsidecar.sidecar.clock import Clock
from memsidecar.sidecar.errors import InvalidArgument, NotFound, ResourceExhausted
from memsidecar.sidecar.identity import current_identity
from memsidecar.sidecar.protoconv import json_size, struct_to_dict
from memsidecar.sidecar.validation import check_key, page_limit

Ctx = grpc.aio.ServicerContext[Any, Any]


def _control_chars(text: str) -> list[str]:
    return sorted({f"U+{ord(c):04X}" for c in text if unicodedata.category(c) == "Cc"})


class ArtifactService(artifact_pb2_grpc.ArtifactServicer):
    def __init__(self, driver: ArtifactDriver, settings: ArtifactSettings, clock: Clock) -> None:
        self.driver = driver
        self.settings = settings
        self.clock = clock

    def _scope(self, namespace: str) -> tuple[str, str, int]:
        """(tenant, namespace, max_size_bytes) for a request in `namespace`."""
        ns = self.settings.namespace("artifact", namespace)
        limit = ns.max_size_bytes if ns.max_size_bytes is not None else self.settings.max_size_bytes
        return current_identity().tenant, namespace, limit

    def _text(self, value: str, field: str, *, required: bool = True) -> str:
        """An id, prefix or cursor: bounded, and free of NUL and other control characters."""
        if not value and not required:
            return value
        check_key(value, self.settings.max_id_bytes, field, "blocks.artifact.max_id_bytes")
        bad = _control_chars(value)
        if bad:
            raise InvalidArgument(
                f"{field} must not contain control characters (found {', '.join(bad)}); "
                "ids are opaque text such as 'reports/2024/q1.pdf'"
            )
        return value

    def _content_type(self, value: str) -> str:
        if not value:
            return DEFAULT_CONTENT_TYPE
        size = len(value.encode())
        if size > self.settings.max_content_type_bytes:
            raise InvalidArgument(
                f"content_type is {size} bytes, over the limit of "
                f"{self.settings.max_content_type_bytes} bytes "
                "(blocks.artifact.max_content_type_bytes)"
            )
        if _control_chars(value):
            raise InvalidArgument("content_type must not contain control characters")
        return value

    def _metadata(self, header: artifact_pb2.PutHeader) -> dict[str, Any]:
        metadata = struct_to_dict(header, "metadata")
        size = json_size(metadata)
        if size > self.settings.max_metadata_bytes:
            raise InvalidArgument(
                f"metadata is {size} bytes as JSON, over the limit of "
                f"{self.settings.max_metadata_bytes} bytes (blocks.artifact.max_metadata_bytes)"
            )
        return metadata

    async def Put(
        self, request_iterator: AsyncIterable[artifact_pb2.PutRequest], context: Ctx
    ) -> artifact_pb2.PutResponse:
        messages = aiter(request_iterator)
        first = await anext(messages, None)
        if first is None or first.WhichOneof("part") != "header":
            kinds = {"chunk": "a chunk", "end": "an end message"}
            got = (
                "no message"
                if first is None
                else kinds.get(first.WhichOneof("part") or "", "an empty message")
            )
            raise InvalidArgument(
                "Put must start with a header message (namespace, id, content_type, "
                f"metadata), then chunks, then end; got {got} first"
            )
        header = first.header
        tenant, ns, max_size = self._scope(header.namespace)
        artifact_id = self._text(header.id, "id") if header.id else str(uuid.uuid4())
        content_type = self._content_type(header.content_type)
        metadata = self._metadata(header)

        async def chunks() -> AsyncIterator[bytes]:
            size = 0
            async for message in messages:
                part = message.WhichOneof("part")
                if part == "end":
                    return
                if part == "header":
                    raise InvalidArgument("Put got a second header; send one header, then chunks")
                if part is None:
                    raise InvalidArgument("Put got a message with none of header, chunk or end set")
                size += len(message.chunk)
                if size > max_size:
                    raise ResourceExhausted(
                        f"artifact {artifact_id!r} is over the size limit of {max_size} bytes "
                        f"for namespace {ns!r} (blocks.artifact.max_size_bytes, or the "
                        "namespace's max_size_bytes); nothing was stored"
                    )
                if message.chunk:
                    yield message.chunk
            # A stream that stops without `end` was cancelled or broken (gRPC shows a
            # cancelled stream as a plain end of messages): never store it.
            raise InvalidArgument(
                "the upload ended without an end message, so nothing was stored; "
                "send PutRequest(end=PutEnd()) as the last message to commit it"
            )

        record = await self.driver.put(
            tenant, ns, artifact_id, content_type, metadata, chunks(), self.clock()
        )
        return artifact_pb2.PutResponse(info=info_to_proto(ns, record))

    async def Get(
        self, request: artifact_pb2.GetRequest, context: Ctx
    ) -> AsyncIterator[artifact_pb2.GetResponse]:
        tenant, ns, _ = self._scope(request.namespace)
        artifact_id = self._text(request.id, "id")
        if request.offset < 0:
            raise InvalidArgument(f"offset must not be negative (got {request.offset})")
        if request.length < 0:
            raise InvalidArgument(
                f"length must not be negative (got {request.length}); 0 means to the end"
            )
        reader = await self.driver.open(tenant, ns, artifact_id)
        if reader is None:
            raise NotFound(f"artifact {artifact_id!r} not found in namespace {ns!r}")
        try:
            info = reader.info
            if request.offset > info.size:
                raise InvalidArgument(
                    f"offset {request.offset} is past the end of artifact {artifact_id!r} "
                    f"({info.size} bytes)"
                )
            end = info.size
            if request.length:
                end = min(info.size, request.offset + request.length)
            yield artifact_pb2.GetResponse(info=info_to_proto(ns, info))
            data = reader.read(request.offset, end - request.offset, self.settings.chunk_bytes)
            async with contextlib.aclosing(data):
                async for chunk in data:
                    yield artifact_pb2.GetResponse(chunk=chunk)
        finally:
            await reader.close()

    async def Stat(
        self, request: artifact_pb2.StatRequest, context: Ctx
    ) -> artifact_pb2.StatResponse:
        tenant, ns, _ = self._scope(request.namespace)
        artifact_id = self._text(request.id, "id")
        record = await self.driver.stat(tenant, ns, artifact_id)
        if record is None:
            raise NotFound(f"artifact {artifact_id!r} not found in namespace {ns!r}")
        return artifact_pb2.StatResponse(info=info_to_proto(ns, record))

    async def Delete(
        self, request: artifact_pb2.DeleteRequest, context: Ctx
    ) -> artifact_pb2.DeleteResponse:
        tenant, ns, _ = self._scope(request.namespace)
        artifact_id = self._text(request.id, "id")
        return artifact_pb2.DeleteResponse(
            deleted=await self.driver.delete(tenant, ns, artifact_id)
        )

    async def List(
        self, request: artifact_pb2.ListRequest, context: Ctx
    ) -> artifact_pb2.ListResponse:
        tenant, ns, _ = self._scope(request.namespace)
        prefix = self._text(request.prefix, "prefix", required=False)
        start_after = self._text(request.start_after, "start_after", required=False)
        limit = page_limit(
            request.limit,
            self.settings.default_list_limit,
            self.settings.max_list_limit,
            "blocks.artifact.max_list_limit",
        )
        records = await self.driver.list(tenant, ns, prefix, start_after, limit + 1)
        more = len(records) > limit
        page = records[:limit]
        return artifact_pb2.ListResponse(
            artifacts=[info_to_proto(ns, r) for r in page],
            next_start_after=page[-1].id if more else "",
        )
