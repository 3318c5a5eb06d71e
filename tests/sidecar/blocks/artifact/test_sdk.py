"""The artifact SDK: retries only replayable uploads, rejects what it cannot send, and
works from the blocking client."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from memsidecar.artifact.v1 import artifact_pb2, artifact_pb2_grpc
from memsidecar.client import AsyncMemSidecar, MemSidecar, RetryPolicy, UnavailableError
from memsidecar.client.blocks.artifact import ArtifactInfo
from tests.support import running_sidecar, short_tmpdir


class FlakyArtifacts(artifact_pb2_grpc.ArtifactServicer):
    """Fails the first `failures` uploads with UNAVAILABLE after reading them whole."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[list[bytes]] = []

    async def Put(self, request_iterator: Any, context: Any) -> artifact_pb2.PutResponse:
        received: list[bytes] = []
        header = None
        async for message in request_iterator:
            part = message.WhichOneof("part")
            if part == "header":
                header = message.header
            elif part == "chunk":
                received.append(message.chunk)
        self.attempts.append(received)
        if len(self.attempts) <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "backend restarting")
        data = b"".join(received)
        assert header is not None
        return artifact_pb2.PutResponse(
            info=artifact_pb2.ArtifactInfo(
                namespace=header.namespace,
                id=header.id,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[FlakyArtifacts, AsyncMemSidecar]]:
    tmp = short_tmpdir()
    servicer = FlakyArtifacts(failures=1)
    server = grpc.aio.server()
    artifact_pb2_grpc.add_ArtifactServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{tmp}/flaky.sock")
    await server.start()
    client = AsyncMemSidecar(
        socket=f"{tmp}/flaky.sock", retry=RetryPolicy(max_retries=2, base_delay=0.01)
    )
    try:
        yield servicer, client
    finally:
        await client.close()
        await server.stop(0)
        shutil.rmtree(tmp, ignore_errors=True)


async def test_bytes_uploads_are_retried_whole(
    flaky: tuple[FlakyArtifacts, AsyncMemSidecar],
) -> None:
    servicer, client = flaky
    data = bytes(range(256)) * 1000
    info = await client.artifact.put("ns", data, id="doc", chunk_size=10_000)
    assert info.size == len(data)
    assert len(servicer.attempts) == 2
    for attempt in servicer.attempts:
        assert b"".join(attempt) == data
        assert max(len(c) for c in attempt) == 10_000


async def test_streamed_uploads_are_not_retried(
    flaky: tuple[FlakyArtifacts, AsyncMemSidecar],
) -> None:
    servicer, client = flaky

    async def source() -> AsyncIterator[bytes]:
        yield b"once"

    with pytest.raises(UnavailableError, match="backend restarting"):
        await client.artifact.put("ns", source(), id="doc")
    assert servicer.attempts == [[b"once"]]


async def test_content_that_cannot_be_sent(tmp_path: Path) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("text")
    async with running_sidecar() as (_, client):
        with pytest.raises(TypeError, match="encode text first"):
            await client.artifact.put("ns", "text", id="x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="binary mode"):
            with text_file.open() as f:
                await client.artifact.put("ns", f, id="x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="got a int"):
            await client.artifact.put("ns", [b"ok", 5], id="x")  # type: ignore[list-item]
        with pytest.raises(TypeError, match="cannot upload a float"):
            await client.artifact.put("ns", 1.5, id="x")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="chunk_size"):
            await client.artifact.put("ns", b"x", id="x", chunk_size=0)
        assert await client.artifact.list("ns") == ([], "")


async def test_blocking_client() -> None:
    data = b"0123456789" * 50_000

    def pieces() -> Iterator[bytes]:
        yield from (data[i : i + 70_000] for i in range(0, len(data), 70_000))

    async with running_sidecar() as (sidecar, _):

        def blocking() -> None:
            with MemSidecar(socket=sidecar.config.listen.socket) as m:
                info = m.artifact.put("sync", pieces(), id="doc", metadata={"by": "sync"})
                assert isinstance(info, ArtifactInfo) and info.size == len(data)
                assert m.artifact.get("sync", "doc", offset=5, length=10) == data[5:15]
                streamed = list(m.artifact.stream("sync", "doc"))
                assert len(streamed) > 1 and b"".join(streamed) == data
                with io.BytesIO(b"second") as f:
                    m.artifact.put("sync", f, id="doc2")
                assert [i.id for i in m.artifact.list_all("sync", page=1)] == ["doc", "doc2"]
                assert m.artifact.stat("sync", "doc").metadata == {"by": "sync"}
                assert m.artifact.delete("sync", "doc2") is True
                assert m.artifact.stat("sync", "doc2") is None

        # The blocking client waits on its own loop thread; keep this loop serving.
        await asyncio.to_thread(blocking)
