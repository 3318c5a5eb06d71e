"""The artifact block client: `m.artifact.put("reports", b"...", id="q1.pdf")`, then
`m.artifact.get("reports", "q1.pdf")` or stream it in chunks with `m.artifact.stream(...)`."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, Protocol, TypeAlias, runtime_checkable

import grpc

from memsidecar.artifact.v1 import artifact_pb2, artifact_pb2_grpc
from memsidecar.client.convert import from_struct, from_timestamp, to_struct
from memsidecar.client.errors import NotFoundError, from_rpc_error
from memsidecar.client.transport import Transport

DEFAULT_CHUNK_SIZE = 256 * 1024


@runtime_checkable
class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


Content: TypeAlias = (
    bytes | bytearray | memoryview | Iterable[bytes] | AsyncIterable[bytes] | BinaryIO
)


@dataclass(frozen=True)
class ArtifactInfo:
    namespace: str
    id: str
    size: int
    # Hex sha256 of the whole content, computed by the sidecar.
    sha256: str
    content_type: str
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


def _info(i: artifact_pb2.ArtifactInfo) -> ArtifactInfo:
    return ArtifactInfo(
        namespace=i.namespace,
        id=i.id,
        size=i.size,
        sha256=i.sha256,
        content_type=i.content_type,
        metadata=from_struct(i, "metadata"),
        created_at=from_timestamp(i, "created_at"),
    )


def _split(data: bytes | bytearray | memoryview, chunk_size: int) -> Iterable[bytes]:
    view = memoryview(data).cast("B")
    for start in range(0, len(view), chunk_size):
        yield bytes(view[start : start + chunk_size])


def _check_chunk(chunk: object) -> bytes | bytearray | memoryview:
    if isinstance(chunk, bytes | bytearray | memoryview):
        return chunk
    hint = " (open the file in binary mode, 'rb')" if isinstance(chunk, str) else ""
    raise TypeError(f"artifact content must be bytes, got a {type(chunk).__name__}{hint}")


async def _chunks(data: Content, chunk_size: int) -> AsyncIterator[bytes]:
    """Any supported content as chunks of at most chunk_size bytes (empty ones dropped)."""
    if isinstance(data, bytes | bytearray | memoryview):
        for piece in _split(data, chunk_size):
            yield piece
    elif isinstance(data, _Readable):
        while True:
            block = _check_chunk(await asyncio.to_thread(data.read, chunk_size))
            if not block:
                return
            for piece in _split(block, chunk_size):
                yield piece
    elif isinstance(data, AsyncIterable):
        async for item in data:
            for piece in _split(_check_chunk(item), chunk_size):
                yield piece
    elif isinstance(data, str):
        raise TypeError("artifact content must be bytes; encode text first, e.g. text.encode()")
    elif isinstance(data, Iterable):
        for item in data:
            for piece in _split(_check_chunk(item), chunk_size):
                yield piece
    else:
        raise TypeError(
            f"cannot upload a {type(data).__name__}; pass bytes, an iterable or async iterable "
            "of bytes, or a binary file object"
        )


class _WriteFailed(Exception):
    """Writing to the call failed: the sidecar has already ended it."""


async def _send(call: Any, header: artifact_pb2.PutHeader, chunks: AsyncIterator[bytes]) -> None:
    """Header, chunks, end. Errors of the content source propagate unchanged."""

    async def write(request: artifact_pb2.PutRequest | None) -> None:
        try:
            await (call.done_writing() if request is None else call.write(request))
        except Exception as exc:  # AioRpcError, InvalidStateError, or Core's InternalError
            raise _WriteFailed() from exc

    await write(artifact_pb2.PutRequest(header=header))
    async for chunk in chunks:
        await write(artifact_pb2.PutRequest(chunk=chunk))
    await write(artifact_pb2.PutRequest(end=artifact_pb2.PutEnd()))
    await write(None)


_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


class _FirstStatus:
    """Keeps the status the sidecar sent when it ended an upload early.

    grpcio's asyncio client has a race (grpc/grpc#36066): a write that was in flight
    when the server ended the call fails afterwards and overwrites the server's
    status with INTERNAL "Internal error from Core". The first status the call got
    is the server's, so remember it and report that instead.
    """

    def __init__(self, call: Any) -> None:
        self._first: Any = None
        call.add_done_callback(self._remember)

    def _remember(self, call: Any) -> None:
        if self._first is None:
            self._first = getattr(getattr(call, "_cython_call", None), "_status", None)

    def restore(self, exc: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
        first = self._first
        if exc.code() != grpc.StatusCode.INTERNAL or first is None:
            return exc
        code = _STATUS_CODES.get(first.code())
        if code is None or code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.OK):
            return exc
        return grpc.aio.AioRpcError(
            code=code,
            initial_metadata=grpc.aio.Metadata(),
            trailing_metadata=grpc.aio.Metadata(*(first.trailing_metadata() or ())),
            details=first.details(),
            debug_error_string=first.debug_error_string(),
        )


class AsyncArtifact:
    def __init__(self, transport: Transport) -> None:
        self._t = transport
        self._stub = artifact_pb2_grpc.ArtifactStub(transport.channel)

    async def _upload(
        self, header: artifact_pb2.PutHeader, chunks: AsyncIterator[bytes], timeout: float | None
    ) -> artifact_pb2.PutResponse:
        """One Put call; raises grpc.aio.AioRpcError on a failed call."""
        call = self._stub.Put(timeout=timeout, metadata=self._t.metadata)
        server_status = _FirstStatus(call)
        try:
            await _send(call, header, chunks)
        except _WriteFailed:
            pass  # the sidecar ended the call early (size limit, bad header): its status follows
        except BaseException:
            call.cancel()  # the content source failed or the caller was cancelled: store nothing
            raise
        try:
            return await call  # type: ignore[no-any-return]
        except grpc.aio.AioRpcError as exc:
            raise server_status.restore(exc) from None

    async def put(
        self,
        namespace: str,
        data: Content,
        *,
        id: str | None = None,
        content_type: str = "application/octet-stream",
        metadata: dict[str, Any] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: float | None = None,
    ) -> ArtifactInfo:
        """Upload content and return what the sidecar stored (size and sha256 computed there).

        `data` is bytes, an iterable or async iterable of bytes, or a binary file object;
        it is streamed in chunks of at most `chunk_size` bytes. Without `id` the sidecar
        assigns one. An existing artifact with the id is replaced atomically. `timeout`
        bounds the whole upload (None: no deadline). Only `bytes` uploads are retried on
        UNAVAILABLE, since an iterator cannot be replayed.
        """
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        header = artifact_pb2.PutHeader(
            namespace=namespace,
            id=id or "",
            content_type=content_type,
            metadata=to_struct(metadata),
        )
        if isinstance(data, bytes | bytearray | memoryview):
            content = bytes(data)
            response = await self._t.retry.call(
                lambda: self._upload(header, _chunks(content, chunk_size), timeout)
            )
        else:
            try:
                response = await self._upload(header, _chunks(data, chunk_size), timeout)
            except grpc.aio.AioRpcError as exc:
                raise from_rpc_error(exc) from None
        return _info(response.info)

    async def stream(
        self,
        namespace: str,
        id: str,
        *,
        offset: int = 0,
        length: int = 0,
    ) -> AsyncIterator[bytes]:
        """The bytes [offset, offset + length) in chunks (length 0: to the end).

        Raises NotFoundError when the artifact does not exist; an offset past the end
        is an InvalidArgumentError, a length past the end stops at the end.
        """
        request = artifact_pb2.GetRequest(namespace=namespace, id=id, offset=offset, length=length)
        async for response in self._t.stream(self._stub.Get, request):
            if response.WhichOneof("part") == "chunk":
                yield response.chunk

    async def get(
        self,
        namespace: str,
        id: str,
        *,
        offset: int = 0,
        length: int = 0,
    ) -> bytes:
        """The content (or the range [offset, offset + length)) as one bytes object."""
        parts = [chunk async for chunk in self.stream(namespace, id, offset=offset, length=length)]
        return b"".join(parts)

    async def stat(self, namespace: str, id: str) -> ArtifactInfo | None:
        """The artifact's info, or None when it does not exist."""
        try:
            r = await self._t.unary(
                self._stub.Stat, artifact_pb2.StatRequest(namespace=namespace, id=id)
            )
        except NotFoundError:
            return None
        return _info(r.info)

    async def delete(self, namespace: str, id: str) -> bool:
        """Remove the artifact; False when it did not exist."""
        request = artifact_pb2.DeleteRequest(namespace=namespace, id=id)
        return bool((await self._t.unary(self._stub.Delete, request)).deleted)

    async def list(
        self, namespace: str, prefix: str = "", *, start_after: str = "", limit: int = 0
    ) -> tuple[builtins.list[ArtifactInfo], str]:
        """One page of artifacts whose id starts with `prefix`, ordered by id, and the cursor
        for the next page ("" when this was the last): pass it as `start_after`."""
        request = artifact_pb2.ListRequest(
            namespace=namespace, prefix=prefix, start_after=start_after, limit=limit
        )
        r = await self._t.unary(self._stub.List, request)
        return [_info(i) for i in r.artifacts], r.next_start_after

    async def list_all(
        self, namespace: str, prefix: str = "", *, page: int = 0
    ) -> AsyncIterator[ArtifactInfo]:
        """Every artifact whose id starts with `prefix`, paging with the cursor."""
        cursor = ""
        while True:
            infos, cursor = await self.list(namespace, prefix, start_after=cursor, limit=page)
            for info in infos:
                yield info
            if not cursor:
                return
