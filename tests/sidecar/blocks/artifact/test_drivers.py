"""Driver-level guarantees the gRPC suite cannot reach: tenants side by side on one
driver instance, cancellation inside the driver, and readers pinned to a version."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from memsidecar.sidecar.blocks.artifact.driver import ArtifactDriver
from memsidecar.sidecar.blocks.artifact.registry import DRIVERS
from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.config import load_config
from tests.sidecar.blocks.artifact.conftest import s3_options

NOW = 1_800_000_000.0


@pytest.fixture(params=["memory", "localfs", "s3"])
async def driver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ArtifactDriver]:
    options: dict[str, Any] = {}
    if request.param == "localfs":
        options = {"root": str(tmp_path / "root")}
    elif request.param == "s3":
        request.getfixturevalue("minio")
        options = s3_options()
    ctx = BlockContext(config=load_config(None, {"listen.socket": str(tmp_path / "s.sock")}))
    opened = await DRIVERS.open(request.param, options, ctx)
    yield opened
    await opened.close()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def temp_files(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.rglob(".tmp-*")]


async def read_all(driver: ArtifactDriver, tenant: str, ns: str, artifact_id: str) -> bytes:
    reader = await driver.open(tenant, ns, artifact_id)
    assert reader is not None
    try:
        return b"".join([c async for c in reader.read(0, reader.info.size, 1000)])
    finally:
        await reader.close()


async def test_put_computes_size_hash_and_keeps_fields(driver: ArtifactDriver) -> None:
    record = await driver.put(
        "t", "ns", "a/b", "text/plain", {"k": [1, "x"]}, chunks(b"hello ", b"", b"world"), NOW
    )
    assert record.id == "a/b" and record.size == 11
    assert record.sha256 == hashlib.sha256(b"hello world").hexdigest()
    assert (record.content_type, record.metadata, record.created_at) == (
        "text/plain",
        {"k": [1, "x"]},
        NOW,
    )
    assert await driver.stat("t", "ns", "a/b") == record
    assert await read_all(driver, "t", "ns", "a/b") == b"hello world"


async def test_tenants_never_see_each_other(driver: ArtifactDriver) -> None:
    await driver.put("alpha", "ns", "doc", "a/a", {}, chunks(b"alpha's"), NOW)
    await driver.put("alpha", "ns", "only-alpha", "a/a", {}, chunks(b"x"), NOW)
    await driver.put("beta", "ns", "doc", "b/b", {}, chunks(b"beta's"), NOW)
    assert await read_all(driver, "alpha", "ns", "doc") == b"alpha's"
    assert await read_all(driver, "beta", "ns", "doc") == b"beta's"
    assert await driver.open("beta", "ns", "only-alpha") is None
    assert await driver.stat("beta", "ns", "only-alpha") is None
    assert [r.id for r in await driver.list("beta", "ns", "", "", 10)] == ["doc"]
    assert [r.id for r in await driver.list("alpha", "ns", "", "", 10)] == ["doc", "only-alpha"]
    assert await driver.delete("beta", "ns", "only-alpha") is False
    assert await driver.delete("beta", "ns", "doc") is True
    assert await read_all(driver, "alpha", "ns", "doc") == b"alpha's"
    # Namespaces are separate too, and a tenant/namespace split cannot be faked.
    assert await driver.stat("alpha", "other", "doc") is None
    assert await driver.stat("alph", "ans", "doc") is None


async def test_failing_source_stores_nothing(driver: ArtifactDriver, tmp_path: Path) -> None:
    await driver.put("t", "ns", "doc", "a/a", {}, chunks(b"old"), NOW)

    async def breaks() -> AsyncIterator[bytes]:
        yield b"new content, partly"
        raise ValueError("size limit")

    for artifact_id in ("doc", "fresh"):
        with pytest.raises(ValueError, match="size limit"):
            await driver.put("t", "ns", artifact_id, "a/a", {}, breaks(), NOW + 1)
    assert await read_all(driver, "t", "ns", "doc") == b"old"
    assert await driver.stat("t", "ns", "fresh") is None
    assert temp_files(tmp_path) == []


async def test_cancelled_put_stores_nothing(driver: ArtifactDriver, tmp_path: Path) -> None:
    await driver.put("t", "ns", "doc", "a/a", {}, chunks(b"old"), NOW)
    started = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield b"x" * 100_000
        started.set()
        await asyncio.Event().wait()
        yield b""

    for artifact_id in ("doc", "fresh"):
        started.clear()
        task = asyncio.create_task(driver.put("t", "ns", artifact_id, "a/a", {}, stalls(), NOW))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await read_all(driver, "t", "ns", "doc") == b"old"
    assert await driver.stat("t", "ns", "fresh") is None
    assert temp_files(tmp_path) == []


async def test_reader_keeps_its_version_across_replace_and_delete(driver: ArtifactDriver) -> None:
    old = bytes(range(256)) * 400
    await driver.put("t", "ns", "doc", "a/a", {}, chunks(old), NOW)
    reader = await driver.open("t", "ns", "doc")
    assert reader is not None
    try:
        stream = reader.read(0, reader.info.size, 4096)
        first = await anext(stream)
        await driver.put("t", "ns", "doc", "a/a", {}, chunks(b"new"), NOW + 1)
        middle = await anext(stream)
        assert await driver.delete("t", "ns", "doc") is True
        rest = [c async for c in stream]
        assert first + middle + b"".join(rest) == old
        assert reader.info.size == len(old) and reader.info.created_at == NOW
    finally:
        await reader.close()
    assert await driver.open("t", "ns", "doc") is None


async def test_list_bounds(driver: ArtifactDriver) -> None:
    for artifact_id in ["b", "a", "c/1", "c/2", "c", "d"]:
        await driver.put("t", "ns", artifact_id, "a/a", {}, chunks(artifact_id.encode()), NOW)
    assert [r.id for r in await driver.list("t", "ns", "", "", 100)] == [
        "a",
        "b",
        "c",
        "c/1",
        "c/2",
        "d",
    ]
    assert [r.id for r in await driver.list("t", "ns", "c", "c", 100)] == ["c/1", "c/2"]
    assert [r.id for r in await driver.list("t", "ns", "", "b", 2)] == ["c", "c/1"]
    assert await driver.list("t", "ns", "z", "", 5) == []
    assert await driver.list("t", "none", "", "", 5) == []
