"""The artifact contract, run against every driver in conftest.ARTIFACT_DRIVERS.

Everything goes through the SDK or the raw gRPC stub; a test only looks at the
disk (ArtifactHarness.disk_root) for the extra guarantees of local-disk drivers.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from memsidecar.artifact.v1 import artifact_pb2
from memsidecar.client.blocks.artifact import AsyncArtifact
from memsidecar.client.errors import (
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from tests.sidecar.blocks.artifact.conftest import (
    ARTIFACT_DRIVERS,
    LIMITED_MAX_BYTES,
    ArtifactHarness,
)
from tests.support import ManualClock, eventually, running_sidecar

MB = 1_000_000


def blob(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def agen(data: bytes, chunk: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


def mtime_ns(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def temp_files(root: Path | None) -> list[Path]:
    if root is None or not root.exists():
        return []
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


def header(**fields: Any) -> artifact_pb2.PutRequest:
    return artifact_pb2.PutRequest(header=artifact_pb2.PutHeader(**fields))


def chunk(data: bytes) -> artifact_pb2.PutRequest:
    return artifact_pb2.PutRequest(chunk=data)


END = artifact_pb2.PutRequest(end=artifact_pb2.PutEnd())


async def raw_get(artifact: AsyncArtifact, **fields: Any) -> list[artifact_pb2.GetResponse]:
    return [r async for r in artifact._stub.Get(artifact_pb2.GetRequest(**fields))]


async def rpc_code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


# --- put / get ------------------------------------------------------------------------------


async def test_streamed_multi_chunk_round_trip(
    artifact_harness: ArtifactHarness, clock: ManualClock
) -> None:
    artifact = artifact_harness.client
    data = blob(3 * MB)
    info = await artifact.put(
        "files",
        agen(data, 64 * 1024),
        id="big.bin",
        content_type="application/x-test",
        metadata={"owner": "agent-7", "tags": ["a", "b"], "n": 3},
    )
    assert info.id == "big.bin" and info.namespace == "files"
    assert info.size == len(data)
    assert info.sha256 == sha(data)
    assert info.content_type == "application/x-test"
    assert info.metadata == {"owner": "agent-7", "tags": ["a", "b"], "n": 3}
    assert info.created_at is not None and info.created_at.timestamp() == pytest.approx(clock())
    assert await artifact.stat("files", "big.bin") == info

    chunks = [c async for c in artifact.stream("files", "big.bin")]
    chunk_bytes = artifact_harness.sidecar.config.blocks.artifact.chunk_bytes
    assert len(chunks) >= len(data) // chunk_bytes
    assert all(0 < len(c) <= chunk_bytes for c in chunks)
    assert b"".join(chunks) == data
    assert await artifact.get("files", "big.bin") == data

    responses = await raw_get(artifact, namespace="files", id="big.bin")
    assert responses[0].WhichOneof("part") == "info"
    assert responses[0].info.sha256 == sha(data) and responses[0].info.size == len(data)
    assert all(r.WhichOneof("part") == "chunk" for r in responses[1:])


async def test_every_kind_of_content_uploads(artifact: AsyncArtifact, tmp_path: Path) -> None:
    data = blob(200_000, seed=2)
    on_disk = tmp_path / "upload.bin"
    on_disk.write_bytes(data)

    def sync_gen() -> Iterator[bytes]:
        yield data[:1000]
        yield b""
        yield data[1000:]

    sources: dict[str, Any] = {
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "list": [data[:10], data[10:150_000], data[150_000:]],
        "generator": sync_gen(),
        "async-generator": agen(data, 7777),
        "bytesio": io.BytesIO(data),
    }
    for name, source in sources.items():
        info = await artifact.put("kinds", source, id=name, chunk_size=32 * 1024)
        assert (info.size, info.sha256) == (len(data), sha(data)), name
        assert await artifact.get("kinds", name) == data, name
    with on_disk.open("rb") as f:
        info = await artifact.put("kinds", f, id="file")
    assert info.sha256 == sha(data)
    empty = await artifact.put("kinds", b"", id="empty")
    assert (empty.size, empty.sha256) == (0, sha(b""))
    assert await artifact.get("kinds", "empty") == b""


async def test_content_type_defaults_and_server_assigned_ids(artifact: AsyncArtifact) -> None:
    first = await artifact.put("ids", b"one")
    second = await artifact.put("ids", b"two")
    assert first.id and second.id and first.id != second.id
    assert first.content_type == "application/octet-stream"
    assert await artifact.get("ids", first.id) == b"one"
    assert await artifact.get("ids", second.id) == b"two"
    raw = await artifact._stub.Put(
        iter([header(namespace="ids", id="x"), chunk(b"data"), chunk(b"!"), END])
    )
    assert raw.info.size == 5
    assert raw.info.content_type == "application/octet-stream"
    assert dict(raw.info.metadata) == {}


# --- ranges --------------------------------------------------------------------------------

SIZE = 700_000  # spans several default 256 KiB chunks


@pytest.mark.parametrize(
    ("offset", "length", "start", "end"),
    [
        (0, 0, 0, SIZE),
        (10, 5, 10, 15),
        (0, 1, 0, 1),
        (SIZE - 1, 0, SIZE - 1, SIZE),
        (SIZE - 1, 1, SIZE - 1, SIZE),
        (262_140, 10, 262_140, 262_150),  # across a chunk boundary
        (100_000, 500_000, 100_000, 600_000),  # several chunks from the middle
        (5, SIZE, 5, SIZE),  # length past the end stops at the end
        (0, SIZE * 10, 0, SIZE),
        (SIZE, 0, SIZE, SIZE),  # offset == size: info and no data
        (SIZE, 7, SIZE, SIZE),
    ],
)
async def test_ranges(
    artifact_harness: ArtifactHarness, offset: int, length: int, start: int, end: int
) -> None:
    artifact = artifact_harness.client
    data = blob(SIZE, seed=3)
    await artifact.put("ranges", data, id="r")
    assert await artifact.get("ranges", "r", offset=offset, length=length) == data[start:end]
    responses = await raw_get(artifact, namespace="ranges", id="r", offset=offset, length=length)
    # The info always describes the whole artifact.
    assert responses[0].info.size == SIZE and responses[0].info.sha256 == sha(data)
    chunks = [r.chunk for r in responses[1:]]
    chunk_bytes = artifact_harness.sidecar.config.blocks.artifact.chunk_bytes
    assert all(0 < len(c) <= chunk_bytes for c in chunks)
    assert b"".join(chunks) == data[start:end]


@pytest.mark.parametrize(
    ("offset", "length", "message"),
    [
        (11, 0, "offset 11 is past the end"),
        (1000, 1, "past the end"),
        (-1, 0, "offset must not be negative"),
        (0, -1, "length must not be negative"),
    ],
)
async def test_bad_ranges(artifact: AsyncArtifact, offset: int, length: int, message: str) -> None:
    await artifact.put("ranges", b"0123456789", id="ten")
    with pytest.raises(InvalidArgumentError, match=message):
        await artifact.get("ranges", "ten", offset=offset, length=length)


async def test_empty_artifact_ranges(artifact: AsyncArtifact) -> None:
    await artifact.put("ranges", b"", id="empty")
    assert await artifact.get("ranges", "empty", offset=0, length=5) == b""
    with pytest.raises(InvalidArgumentError, match="past the end"):
        await artifact.get("ranges", "empty", offset=1)


# --- missing, stat, delete, replace -------------------------------------------------------


async def test_missing_artifact(artifact: AsyncArtifact) -> None:
    with pytest.raises(NotFoundError, match="'nope' not found in namespace 'ns'"):
        await artifact.get("ns", "nope")
    with pytest.raises(NotFoundError):
        _ = [c async for c in artifact.stream("ns", "nope", offset=5)]
    assert await artifact.stat("ns", "nope") is None
    assert await artifact.delete("ns", "nope") is False
    code, _ = await rpc_code(artifact._stub.Stat(artifact_pb2.StatRequest(namespace="ns", id="x")))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_delete(artifact: AsyncArtifact) -> None:
    await artifact.put("del", b"a", id="keep")
    await artifact.put("del", b"b", id="gone")
    assert await artifact.delete("del", "gone") is True
    assert await artifact.delete("del", "gone") is False
    assert await artifact.stat("del", "gone") is None
    with pytest.raises(NotFoundError):
        await artifact.get("del", "gone")
    assert [i.id for i in (await artifact.list("del"))[0]] == ["keep"]
    # The id can be used again after a delete.
    await artifact.put("del", b"c", id="gone")
    assert await artifact.get("del", "gone") == b"c"


async def test_replace(artifact: AsyncArtifact, clock: ManualClock) -> None:
    old = await artifact.put("rep", blob(300_000, 4), id="doc", metadata={"v": 1})
    clock.advance(10)
    new_data = blob(1000, 5)
    new = await artifact.put("rep", new_data, id="doc", content_type="text/plain")
    assert new.sha256 == sha(new_data) != old.sha256
    assert new.created_at is not None and old.created_at is not None
    assert (new.created_at - old.created_at).total_seconds() == pytest.approx(10)
    assert await artifact.get("rep", "doc") == new_data
    stat = await artifact.stat("rep", "doc")
    assert stat == new and stat.metadata == {} and stat.content_type == "text/plain"
    page, _ = await artifact.list("rep")
    assert [(i.id, i.size) for i in page] == [("doc", 1000)]


async def test_open_reader_keeps_its_version_across_replace(artifact: AsyncArtifact) -> None:
    old, new = blob(2 * MB, 6), blob(2 * MB, 7)
    await artifact.put("pin", old, id="a")
    stream = artifact.stream("pin", "a")
    first = await anext(stream)
    await artifact.put("pin", new, id="a")
    rest = [c async for c in stream]
    assert first + b"".join(rest) == old
    assert await artifact.get("pin", "a") == new


async def test_concurrent_replace_and_read_never_mix(artifact: AsyncArtifact) -> None:
    versions = [blob(600_000, seed) for seed in range(10, 14)]
    hashes = {sha(v) for v in versions}
    await artifact.put("mix", versions[0], id="hot")

    async def writer() -> None:
        for i in range(12):
            await artifact.put("mix", versions[i % len(versions)], id="hot")

    async def reader() -> None:
        for _ in range(12):
            assert sha(await artifact.get("mix", "hot")) in hashes

    await asyncio.gather(writer(), reader(), reader())


# --- list -----------------------------------------------------------------------------------


async def test_list_prefix_order_and_paging(artifact: AsyncArtifact) -> None:
    ids = ["user/3", "user/1", "user/2", "users", "other/1", "user/10", "user/é", "user/a b"]
    for i, artifact_id in enumerate(ids):
        await artifact.put("list", bytes([i]) * (i + 1), id=artifact_id)
    expected = sorted(i for i in ids if i.startswith("user/"))
    everything, cursor = await artifact.list("list", "user/")
    assert [i.id for i in everything] == expected and cursor == ""
    assert [i.size for i in everything] == [ids.index(i) + 1 for i in expected]

    pages: list[list[str]] = []
    cursor = ""
    for _ in range(10):
        page, cursor = await artifact.list("list", "user/", start_after=cursor, limit=2)
        pages.append([i.id for i in page])
        if not cursor:
            break
    assert pages == [expected[0:2], expected[2:4], expected[4:6]]
    assert [i.id async for i in artifact.list_all("list", "user/", page=4)] == expected
    # The cursor is exclusive and need not be an existing id.
    page, _ = await artifact.list("list", "user/", start_after="user/15")
    assert [i.id for i in page] == ["user/2", "user/3", "user/a b", "user/é"]
    page, cursor = await artifact.list("list", start_after="user/é")
    assert [i.id for i in page] == ["users"] and cursor == ""
    assert (await artifact.list("list", "nothing/")) == ([], "")
    assert (await artifact.list("empty-namespace")) == ([], "")


async def test_list_limits(artifact_harness: ArtifactHarness) -> None:
    artifact = artifact_harness.client
    settings = artifact_harness.sidecar.config.blocks.artifact
    with pytest.raises(InvalidArgumentError, match="max_list_limit"):
        await artifact.list("list", limit=settings.max_list_limit + 1)
    with pytest.raises(InvalidArgumentError, match="limit must not be negative"):
        await artifact.list("list", limit=-1)
    for i in range(settings.default_list_limit + 1):
        await artifact.put("many", b"", id=f"{i:04d}")
    page, cursor = await artifact.list("many")
    assert len(page) == settings.default_list_limit
    assert cursor == page[-1].id
    rest, cursor = await artifact.list("many", start_after=cursor)
    assert [i.id for i in rest] == [f"{settings.default_list_limit:04d}"] and cursor == ""


# --- size limits ------------------------------------------------------------------------------


async def test_size_limit_rejects_and_keeps_old_version(artifact_harness: ArtifactHarness) -> None:
    artifact = artifact_harness.client
    old = blob(1000, 8)
    await artifact.put("limited", old, id="doc")
    exact = await artifact.put("limited", blob(LIMITED_MAX_BYTES, 9), id="exact")
    assert exact.size == LIMITED_MAX_BYTES

    too_big = blob(LIMITED_MAX_BYTES + 1, 10)
    with pytest.raises(ResourceExhaustedError, match="over the size limit of 100000 bytes"):
        await artifact.put("limited", too_big, id="doc")
    with pytest.raises(ResourceExhaustedError, match="nothing was stored"):
        await artifact.put("limited", agen(too_big, 10_000), id="doc")
    with pytest.raises(ResourceExhaustedError):
        await artifact.put("limited", too_big, id="new")
    # Far over the limit, streamed: rejected while streaming.
    with pytest.raises(ResourceExhaustedError):
        await artifact.put("limited", agen(blob(3 * MB, 11), 64 * 1024), id="huge")

    assert await artifact.get("limited", "doc") == old
    assert (await artifact.stat("limited", "doc")).sha256 == sha(old)  # type: ignore[union-attr]
    assert await artifact.stat("limited", "new") is None
    assert await artifact.stat("limited", "huge") is None
    page, _ = await artifact.list("limited")
    assert [i.id for i in page] == ["doc", "exact"]
    # Other namespaces use the block-wide limit.
    assert (await artifact.put("unlimited", too_big, id="doc")).size == len(too_big)
    await eventually(lambda: temp_files(artifact_harness.disk_root) == [])


async def test_block_wide_size_limit(artifact_harness: ArtifactHarness) -> None:
    overrides = {**ARTIFACT_DRIVERS[artifact_harness.driver], "blocks.artifact.max_size_bytes": 10}
    async with running_sidecar(overrides) as (_, client):
        await client.artifact.put("ns", b"0123456789", id="ok")
        with pytest.raises(ResourceExhaustedError, match=r"blocks\.artifact\.max_size_bytes"):
            await client.artifact.put("ns", b"0123456789X", id="no")
        assert await client.artifact.stat("ns", "no") is None


# --- malformed uploads ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "got no message first"),
        ([chunk(b"data")], "got a chunk first"),
        ([chunk(b"data"), header(namespace="raw", id="x"), END], "got a chunk first"),
        ([END], "got an end message first"),
        ([artifact_pb2.PutRequest()], "got an empty message first"),
        ([header(namespace="raw", id="x"), chunk(b"a"), header(namespace="raw")], "second header"),
        ([header(namespace="raw", id="x"), artifact_pb2.PutRequest(), END], "none of header"),
        ([header(namespace="raw", id="x"), chunk(b"abc")], "ended without an end message"),
        ([header(namespace="raw", id="x")], "ended without an end message"),
        ([header(namespace="", id="x"), END], "namespace is required"),
        ([header(namespace="bad/ns", id="x"), END], "namespace 'bad/ns' is invalid"),
        ([header(namespace="raw", id="x", content_type="a" * 300), END], "max_content_type"),
        ([header(namespace="raw", id="x", content_type="text/\nplain"), END], "content_type"),
    ],
)
async def test_malformed_uploads_are_rejected(
    artifact_harness: ArtifactHarness, messages: list[artifact_pb2.PutRequest], message: str
) -> None:
    artifact = artifact_harness.client
    code, details = await rpc_code(artifact._stub.Put(iter(messages)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details
    assert await artifact.list("raw") == ([], "")
    await eventually(lambda: temp_files(artifact_harness.disk_root) == [])


async def test_metadata_limit(artifact: AsyncArtifact) -> None:
    with pytest.raises(InvalidArgumentError, match="max_metadata_bytes"):
        await artifact.put("meta", b"x", id="m", metadata={"big": "x" * 70_000})
    assert await artifact.stat("meta", "m") is None


# --- ids ------------------------------------------------------------------------------------

TRAVERSAL_IDS = [
    "../x",
    "../../../../../../etc/passwd",
    "/etc/passwd",
    "a/../../b",
    "..",
    ".",
    "./y",
    "~/z",
    "C:\\Windows\\x",
    "a//b/",
    "%2e%2e%2fq",
    "dir/",
]


async def test_ids_are_opaque_never_paths(artifact_harness: ArtifactHarness) -> None:
    artifact = artifact_harness.client
    root = artifact_harness.disk_root
    passwd_before = mtime_ns(Path("/etc/passwd"))
    for i, artifact_id in enumerate(TRAVERSAL_IDS):
        info = await artifact.put("paths", f"payload {i}".encode(), id=artifact_id)
        assert info.id == artifact_id
    for i, artifact_id in enumerate(TRAVERSAL_IDS):
        assert await artifact.get("paths", artifact_id) == f"payload {i}".encode()
    page, _ = await artifact.list("paths")
    assert [i.id for i in page] == sorted(TRAVERSAL_IDS)
    page, _ = await artifact.list("paths", "../")
    assert [i.id for i in page] == ["../../../../../../etc/passwd", "../x"]
    assert mtime_ns(Path("/etc/passwd")) == passwd_before
    if root is not None:
        # Nothing was written anywhere around the root but inside it, with hashed names only.
        outside = [
            p for p in root.parent.rglob("*") if not p.is_relative_to(root) and p.name != "m.sock"
        ]
        assert outside == []
        files = [p for p in root.rglob("*") if p.is_file()]
        assert len(files) == len(TRAVERSAL_IDS)
        for path in files:
            rel = path.relative_to(root).parts
            assert len(rel) == 2 and all(len(part.split(".")[0]) == 64 for part in rel)


@pytest.mark.parametrize(
    ("artifact_id", "message"),
    [
        ("a\x00b", "NUL"),
        ("\x00", "NUL"),
        ("line\nbreak", "control characters (found U+000A)"),
        ("tab\there", "U+0009"),
        ("esc\x1b[31m", "U+001B"),
        ("del\x7f", "U+007F"),
        ("c1\x85", "U+0085"),
        ("x" * 513, "over the limit of 512 bytes"),
        ("é" * 257, "514 bytes"),
    ],
)
async def test_bad_ids_are_rejected(
    artifact_harness: ArtifactHarness, artifact_id: str, message: str
) -> None:
    artifact = artifact_harness.client
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        await artifact.put("ids", b"x", id=artifact_id)
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        await artifact.get("ids", artifact_id)
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        await artifact.stat("ids", artifact_id)
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        await artifact.delete("ids", artifact_id)
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        await artifact.list("ids", artifact_id)
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        await artifact.list("ids", start_after=artifact_id)
    assert await artifact.list("ids") == ([], "")
    root = artifact_harness.disk_root
    if root is not None:
        assert [p for p in root.rglob("*") if p.is_file()] == []


async def test_empty_id_is_rejected_where_required(artifact: AsyncArtifact) -> None:
    for call in (
        artifact.get("ids", ""),
        artifact.stat("ids", ""),
        artifact.delete("ids", ""),
    ):
        with pytest.raises(InvalidArgumentError, match="id is required"):
            await call
    assert len((await artifact.put("ids", b"x", id="x" * 512)).id) == 512


# --- tenants -------------------------------------------------------------------------------


async def test_tenants_are_isolated_on_shared_storage(artifact_harness: ArtifactHarness) -> None:
    """A second sidecar on the same storage (same driver options) with another tenant."""
    artifact = artifact_harness.client
    await artifact.put("shared", b"mine", id="doc", metadata={"tenant": "default"})
    await artifact.put("shared", b"only mine", id="private")
    overrides = {
        **ARTIFACT_DRIVERS[artifact_harness.driver],
        "blocks.artifact.options": artifact_harness.sidecar.config.blocks.artifact.options,
        "identity.tenant": "other-tenant",
    }
    async with running_sidecar(overrides) as (_, other_client):
        other = other_client.artifact
        assert await other.stat("shared", "doc") is None
        assert await other.stat("shared", "private") is None
        assert await other.list("shared") == ([], "")
        assert await other.delete("shared", "private") is False
        with pytest.raises(NotFoundError):
            await other.get("shared", "doc")
        await other.put("shared", b"theirs", id="doc")
        assert await other.get("shared", "doc") == b"theirs"
        assert [i.id for i in (await other.list("shared"))[0]] == ["doc"]
        assert await artifact.get("shared", "doc") == b"mine"
        assert await artifact.get("shared", "private") == b"only mine"
        assert await artifact.delete("shared", "doc") is True
        assert await other.get("shared", "doc") == b"theirs"
        assert await other.delete("shared", "doc") is True
    assert [i.id for i in (await artifact.list("shared"))[0]] == ["private"]


# --- interrupted uploads ----------------------------------------------------------------------


@pytest.mark.parametrize("replacing", [False, True])
async def test_cancelled_upload_leaves_nothing(
    artifact_harness: ArtifactHarness, replacing: bool
) -> None:
    artifact = artifact_harness.client
    root = artifact_harness.disk_root
    if replacing:
        await artifact.put("cancel", b"old version", id="up")
    sent = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield blob(300_000, 12)
        yield blob(300_000, 13)
        sent.set()
        await asyncio.Event().wait()  # never finishes: the test cancels the upload
        yield b""

    task = asyncio.create_task(artifact.put("cancel", stalls(), id="up"))
    await asyncio.wait_for(sent.wait(), 10)
    if root is not None:
        # The server is writing: its temp file exists.
        await eventually(lambda: len(temp_files(root)) == 1)
    else:
        await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def settled() -> bool:
        return temp_files(root) == []

    await eventually(settled)
    if replacing:
        assert await artifact.get("cancel", "up") == b"old version"
        assert [i.id for i in (await artifact.list("cancel"))[0]] == ["up"]
    else:
        assert await artifact.stat("cancel", "up") is None
        assert await artifact.list("cancel") == ([], "")


async def test_failing_source_leaves_nothing(artifact_harness: ArtifactHarness) -> None:
    artifact = artifact_harness.client
    await artifact.put("fail", b"old", id="doc")

    async def breaks() -> AsyncIterator[bytes]:
        yield blob(200_000, 14)
        raise OSError("disk of the agent went away")

    with pytest.raises(OSError, match="went away"):
        await artifact.put("fail", breaks(), id="doc")
    with pytest.raises(OSError, match="went away"):
        await artifact.put("fail", breaks(), id="new")
    assert await artifact.get("fail", "doc") == b"old"
    await eventually(lambda: temp_files(artifact_harness.disk_root) == [])
    assert await artifact.stat("fail", "new") is None
