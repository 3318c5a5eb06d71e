"""What the localfs driver promises about the disk: layout, durability across restarts,
clean-up of interrupted uploads, damaged files, and configuration errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from memsidecar.client.errors import MemSidecarError
from memsidecar.sidecar.blocks.artifact.drivers.localfs import (
    MAGIC,
    LocalFSArtifacts,
    LocalFSOptions,
)
from memsidecar.sidecar.blocks.artifact.registry import DRIVERS
from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.registry import DriverConfigError
from memsidecar.sidecar.config import load_config
from memsidecar.sidecar.errors import MemError
from memsidecar.sidecar.server import build_sidecar
from tests.support import running_sidecar, short_tmpdir

NOW = 1_800_000_000.0


def ctx(tmp_path: Path, overrides: dict[str, Any] | None = None) -> BlockContext:
    settings = {"listen.socket": str(tmp_path / "s.sock"), **(overrides or {})}
    return BlockContext(config=load_config(None, settings))


async def open_driver(tmp_path: Path, **options: Any) -> LocalFSArtifacts:
    driver = await DRIVERS.open(
        "localfs", {"root": str(tmp_path / "root"), **options}, ctx(tmp_path)
    )
    assert isinstance(driver, LocalFSArtifacts)
    return driver


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


async def test_layout_hashes_every_name(tmp_path: Path) -> None:
    driver = await open_driver(tmp_path)
    artifact_id = "../reports/2024/q1.pdf"
    record = await driver.put(
        "acme", "docs", artifact_id, "application/pdf", {"pages": 3}, chunks(b"%PDF", b"-1.7"), NOW
    )
    root = tmp_path / "root"
    path = root / digest("acme", "docs") / (digest("acme", "docs", artifact_id) + ".blob")
    assert [p for p in root.rglob("*") if p.is_file()] == [path]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # content, JSON trailer, footer (trailer length + magic)
    raw = path.read_bytes()
    length, magic = struct.unpack(">Q8s", raw[-16:])
    assert magic == MAGIC
    assert raw[: record.size] == b"%PDF-1.7"
    trailer = json.loads(raw[record.size : record.size + length])
    assert trailer == {
        "tenant": "acme",
        "namespace": "docs",
        "id": artifact_id,
        "size": 8,
        "sha256": hashlib.sha256(b"%PDF-1.7").hexdigest(),
        "content_type": "application/pdf",
        "metadata": {"pages": 3},
        "created_at": NOW,
    }
    assert record.size + length + 16 == len(raw)


async def test_artifacts_survive_a_restart(tmp_path: Path) -> None:
    driver = await open_driver(tmp_path)
    await driver.put("t", "ns", "keep", "a/b", {"x": 1}, chunks(b"durable"), NOW)
    await driver.close()
    reopened = await open_driver(tmp_path)
    record = await reopened.stat("t", "ns", "keep")
    assert record is not None and record.metadata == {"x": 1} and record.size == 7
    assert [r.id for r in await reopened.list("t", "ns", "", "", 10)] == ["keep"]


async def test_sidecars_share_a_root_across_restarts() -> None:
    root = Path(short_tmpdir()) / "artifacts"
    try:
        options = {"blocks.artifact.options": {"root": str(root)}}
        async with running_sidecar(options) as (_, client):
            await client.artifact.put("ns", b"v1", id="doc")
        async with running_sidecar(options) as (_, client):
            assert await client.artifact.get("ns", "doc") == b"v1"
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


async def test_stale_temp_files_are_swept_on_open(tmp_path: Path) -> None:
    driver = await open_driver(tmp_path)
    await driver.put("t", "ns", "doc", "a/b", {}, chunks(b"x"), NOW)
    ns_dir = next((tmp_path / "root").iterdir())
    stale, fresh = ns_dir / ".tmp-stale", ns_dir / ".tmp-fresh"
    foreign = tmp_path / "root" / "not-ours"
    foreign.mkdir()
    (foreign / ".tmp-keep").write_bytes(b"")
    for path in (stale, fresh):
        path.write_bytes(b"partial upload")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    os.utime(foreign / ".tmp-keep", (old, old))
    await open_driver(tmp_path, stale_temp_seconds=3600)
    assert not stale.exists()
    assert fresh.exists() and (foreign / ".tmp-keep").exists()
    # Temp files never show up as artifacts.
    assert [r.id for r in await driver.list("t", "ns", "", "", 10)] == ["doc"]


async def test_damaged_files_are_reported_and_skipped(tmp_path: Path) -> None:
    driver = await open_driver(tmp_path)
    await driver.put("t", "ns", "good", "a/b", {}, chunks(b"fine"), NOW)
    await driver.put("t", "ns", "bad", "a/b", {}, chunks(b"will be cut"), NOW)
    bad = tmp_path / "root" / digest("t", "ns") / (digest("t", "ns", "bad") + ".blob")
    with bad.open("r+b") as f:
        f.truncate(bad.stat().st_size - 3)
    with pytest.raises(MemError, match="'bad' is damaged in storage") as info:
        await driver.stat("t", "ns", "bad")
    assert info.value.code == grpc.StatusCode.INTERNAL
    assert [r.id for r in await driver.list("t", "ns", "", "", 10)] == ["good"]
    # Overwriting a damaged artifact repairs it.
    await driver.put("t", "ns", "bad", "a/b", {}, chunks(b"repaired"), NOW)
    assert [r.id for r in await driver.list("t", "ns", "", "", 10)] == ["bad", "good"]


async def test_a_file_moved_under_another_name_is_not_served(tmp_path: Path) -> None:
    driver = await open_driver(tmp_path)
    await driver.put("alpha", "ns", "secret", "a/b", {}, chunks(b"alpha only"), NOW)
    src = tmp_path / "root" / digest("alpha", "ns") / (digest("alpha", "ns", "secret") + ".blob")
    dst_dir = tmp_path / "root" / digest("beta", "ns")
    dst_dir.mkdir()
    shutil.copy(src, dst_dir / (digest("beta", "ns", "secret") + ".blob"))
    with pytest.raises(MemError, match="belongs to another artifact"):
        await driver.open("beta", "ns", "secret")
    assert await driver.list("beta", "ns", "", "", 10) == []


def overwrite_only_blob(root: Path, content: bytes) -> None:
    (blob,) = list(root.rglob("*.blob"))
    blob.write_bytes(content)


async def test_damaged_artifact_is_internal_over_grpc() -> None:
    async with running_sidecar() as (sidecar, client):
        await client.artifact.put("ns", b"content", id="doc")
        overwrite_only_blob(Path(sidecar.config.blocks.artifact.options["root"]), b"garbage")
        with pytest.raises(MemSidecarError, match="damaged") as info:
            await client.artifact.get("ns", "doc")
        assert info.value.code == grpc.StatusCode.INTERNAL


async def test_health_follows_the_root(tmp_path: Path) -> None:
    driver = await open_driver(tmp_path)
    assert await driver.health()
    shutil.rmtree(tmp_path / "root")
    assert not await driver.health()


async def test_configuration_errors(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DriverConfigError, match="exists and is not a directory"):
        await DRIVERS.open("localfs", {"root": str(tmp_path / "a-file")}, ctx(tmp_path))
    with pytest.raises(DriverConfigError, match="cannot be created"):
        await DRIVERS.open("localfs", {"root": str(tmp_path / "a-file" / "sub")}, ctx(tmp_path))
    with pytest.raises(DriverConfigError, match=r"blocks\.artifact\.options\.rot"):
        await DRIVERS.open("localfs", {"rot": "/x"}, ctx(tmp_path))
    with pytest.raises(DriverConfigError, match="stale_temp_seconds"):
        await DRIVERS.open(
            "localfs", {"root": str(tmp_path), "stale_temp_seconds": 0}, ctx(tmp_path)
        )
    with pytest.raises(DriverConfigError, match=r"blocks\.artifact\.options\.root"):
        await DRIVERS.open("memory", {"root": "/x"}, ctx(tmp_path))
    config = load_config(
        None,
        {
            "listen.socket": str(tmp_path / "s.sock"),
            "listen.max_message_bytes": "1MiB",
            "blocks.artifact.chunk_bytes": "1MiB",
            "blocks.artifact.options": {"root": str(tmp_path / "r")},
        },
    )
    with pytest.raises(DriverConfigError, match="chunk_bytes"):
        await build_sidecar(config)


def test_root_defaults_to_the_runtime_dir() -> None:
    assert LocalFSOptions().root.name == "artifacts"
