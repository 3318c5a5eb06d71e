"""Row 4b: artifact put/get throughput through the SDK (streamed over the socket) on
local disk and on MinIO, against boto3 straight to MinIO (for the S3 driver) and plain
file I/O with fsync (for the local-disk driver)."""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import boto3
import botocore.config

from bench.env import S3_BUCKET, Bench, SidecarProcess
from bench.kv import size_label
from memsidecar.client import AsyncMemSidecar

SECTION = "artifact"
MiB = 1024 * 1024


def _s3_client(bench: Bench) -> Any:
    env = bench.services.s3_env
    return boto3.client(
        "s3",
        endpoint_url=bench.services.s3_endpoint,
        region_name=env.get("MEMSIDECAR_S3_REGION", "us-east-1"),
        aws_access_key_id=env["MEMSIDECAR_S3_ACCESS_KEY"],
        aws_secret_access_key=env["MEMSIDECAR_S3_SECRET_KEY"],
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )


def remove_prefix(client: Any, prefix: str) -> None:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=S3_BUCKET, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=S3_BUCKET, Delete={"Objects": keys})


class S3Reference:
    """boto3's managed transfers (upload_fileobj / download_fileobj, default
    TransferConfig: multipart from 8 MiB, 10 threads) to the bench bucket."""

    name = "boto3 → MinIO directly"

    def __init__(self, bench: Bench) -> None:
        self.client = _s3_client(bench)
        self.prefix = f"run-{bench.run_id}/reference/"
        try:
            self.client.head_bucket(Bucket=S3_BUCKET)
        except Exception:
            self.client.create_bucket(Bucket=S3_BUCKET)

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(
            self.client.upload_fileobj, io.BytesIO(data), S3_BUCKET, self.prefix + key
        )

    async def get(self, key: str) -> bytes:
        buffer = io.BytesIO()
        await asyncio.to_thread(self.client.download_fileobj, S3_BUCKET, self.prefix + key, buffer)
        return buffer.getvalue()

    async def close(self) -> None:
        await asyncio.to_thread(remove_prefix, self.client, self.prefix)


class FileReference:
    """What a program writing files itself does: temp file, write, fsync, rename, fsync
    the directory; read it back whole."""

    name = "file write+fsync+rename / read"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="msb-files-"))

    def _put(self, key: str, data: bytes) -> None:
        final, temp = self.root / key, self.root / f".{key}.tmp"
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, final)
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, key, data)

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread((self.root / key).read_bytes)

    async def close(self) -> None:
        for path in self.root.iterdir():
            path.unlink()
        self.root.rmdir()


async def _rate(reps: int, size: int, call: Callable[[int], Awaitable[object]]) -> float:
    """MiB/s of `reps` sequential transfers of `size` bytes."""
    await call(-1)  # warm-up (connections, first file)
    start = time.perf_counter()
    for i in range(reps):
        await call(i)
    return reps * size / MiB / (time.perf_counter() - start)


async def run(bench: Bench, driver: str, proc: SidecarProcess, client: AsyncMemSidecar) -> None:
    s = bench.settings
    reference: S3Reference | FileReference = (
        S3Reference(bench) if driver == "s3" else FileReference()
    )
    namespace = "bench-artifacts"
    if driver == "s3":

        async def clean() -> None:
            # Superseded versions the driver deletes an hour later, and its gc markers.
            await asyncio.to_thread(remove_prefix, _s3_client(bench), f"run-{bench.run_id}/")

        bench.cleanups.append(clean)
    try:
        for size in s.artifact_sizes:
            data = os.urandom(size)
            reps = s.artifact_reps[0] if size <= 8 * MiB else s.artifact_reps[1]
            label = size_label(size)

            async def our_put(i: int, label: str = label, data: bytes = data) -> object:
                return await client.artifact.put(namespace, data, id=f"{label}-{i}")

            async def our_get(i: int, label: str = label, size: int = size) -> object:
                content = await client.artifact.get(namespace, f"{label}-{i}")
                if len(content) != size:
                    raise RuntimeError(f"artifact {label}-{i}: got {len(content)} bytes")
                return content

            async def ref_put(i: int, label: str = label, data: bytes = data) -> object:
                await reference.put(f"{label}-{i}", data)
                return None

            async def ref_get(i: int, label: str = label, size: int = size) -> object:
                content = await reference.get(f"{label}-{i}")
                if len(content) != size:
                    raise RuntimeError(f"reference {label}-{i}: got {len(content)} bytes")
                return content

            for op, mine_call, ref_call in (("put", our_put, ref_put), ("get", our_get, ref_get)):
                mine = await _rate(reps, size, mine_call)
                theirs = await _rate(reps, size, ref_call)
                bench.row(
                    SECTION,
                    f"{op} {label} [{driver}], 1 client",
                    "MiB/s",
                    mine,
                    theirs,
                    reference.name,
                    True,
                    note=f"{reps} objects",
                )
            for i in range(-1, reps):
                await client.artifact.delete(namespace, f"{label}-{i}")
    finally:
        await reference.close()
