"""What the s3 driver promises beyond the conformance suite, against the real MinIO of
scripts/minio.sh: multipart uploads and ranges across parts, hashed order-preserving
keys, aborted uploads, retired versions and their grace, the sweep, bounded memory,
configuration errors, and MinIO stopped in the middle of an upload."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import re
import shutil
import socket
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memsidecar.client.errors import UnavailableError
from memsidecar.sidecar.blocks.artifact.drivers.s3 import (
    INDEX_META,
    MAX_KEY_BYTES,
    S3Artifacts,
    _Keys,
    decode_id,
    encode_id,
    encoded_length,
    encoded_prefix,
    key_overhead,
)
from memsidecar.sidecar.blocks.artifact.registry import DRIVERS
from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.registry import DriverConfigError
from memsidecar.sidecar.config import load_config
from memsidecar.sidecar.errors import Aborted, FailedPrecondition, Unavailable
from tests.sidecar.blocks.artifact.conftest import (
    S3_BUCKET,
    MiB,
    minio_live,
    s3_client,
    s3_keys,
    s3_options,
    s3_uploads,
    upload_exists,
)
from tests.support import REPO, eventually, running_sidecar

# Every test here needs the shared test MinIO (a clear failure when it is not running).
pytestmark = pytest.mark.usefixtures("minio")

NOW = 1_800_000_000.0
MINIO_SCRIPT = REPO / "scripts" / "minio.sh"
DATA_KEY = re.compile(r"[0-9a-f]{64}/[0-9a-f]{64}/d/[0-9a-f]{64}/[0-9a-f]{32}")
INDEX_KEY = re.compile(r"[0-9a-f]{64}/[0-9a-f]{64}/i/[0-9A-V/]+")


def blob(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def agen(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


def context(**overrides: Any) -> BlockContext:
    return BlockContext(
        config=load_config(None, {"listen.socket": "/tmp/unused.sock", **overrides})
    )


@contextlib.asynccontextmanager
async def open_s3(**changes: Any) -> AsyncIterator[S3Artifacts]:
    driver = await DRIVERS.open("s3", s3_options(**changes), context())
    assert isinstance(driver, S3Artifacts)
    try:
        yield driver
    finally:
        await driver.close()


async def read_all(driver: S3Artifacts, tenant: str, ns: str, artifact_id: str) -> bytes:
    reader = await driver.open(tenant, ns, artifact_id)
    assert reader is not None
    try:
        return b"".join([c async for c in reader.read(0, reader.info.size, 256 * 1024)])
    finally:
        await reader.close()


def data_keys(minio: Any, prefix: str) -> list[str]:
    return [k for k in s3_keys(minio, prefix) if DATA_KEY.fullmatch(k[len(prefix) :])]


@dataclass
class PrivateMinio:
    """A MinIO of its own (scripts/minio.sh on another port and state dir), so stopping it
    disturbs nobody else using the shared test MinIO."""

    port: int
    state: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def script(self, action: str) -> None:
        env = {
            **os.environ,
            "MEMSIDECAR_MINIO_PORT": str(self.port),
            "MEMSIDECAR_STATE": str(self.state),
        }
        proc = await asyncio.create_subprocess_exec(
            str(MINIO_SCRIPT),
            action,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, f"scripts/minio.sh {action} failed: {err.decode()}"


def free_port_pair() -> int:
    """A port p with p + 1 free too (MinIO's console listens on p + 1)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port < 65535:
            with socket.socket() as console:
                try:
                    console.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise AssertionError("no free pair of ports on 127.0.0.1")


@contextlib.asynccontextmanager
async def private_minio() -> AsyncIterator[PrivateMinio]:
    server = PrivateMinio(free_port_pair(), Path(tempfile.mkdtemp(prefix="ms-minio-")))
    try:
        await server.script("up")
        yield server
    finally:
        with contextlib.suppress(Exception):
            await server.script("down")
        shutil.rmtree(server.state, ignore_errors=True)


# --- keys ------------------------------------------------------------------------------------

ids = st.text(st.characters(exclude_categories=["Cc", "Cs"]), min_size=0, max_size=300)


@settings(max_examples=400, deadline=None)
@given(ids, ids)
def test_id_encoding_keeps_order_and_prefixes(a: str, b: str) -> None:
    ea, eb = encode_id(a), encode_id(b)
    assert decode_id(ea) == a and decode_id(eb) == b
    # Python orders str by code point, which is UTF-8 byte order.
    assert (a < b) == (ea < eb) and (a == b) == (ea == eb)
    if b.startswith(a):
        assert eb.startswith(encoded_prefix(a))
    assert len(ea) == encoded_length(len(a.encode()))
    assert all(len(segment) <= 255 for segment in ea.split("/"))


def test_id_encoding_of_long_ids_fits_s3_and_minio() -> None:
    longest = "é" * 256  # 512 bytes, the default max_id_bytes
    encoded = encode_id(longest)
    assert len(encoded) == encoded_length(512) and decode_id(encoded) == longest
    assert key_overhead("") + len(encoded) <= MAX_KEY_BYTES
    assert decode_id("not base32!") is None and decode_id("0" * 201) is None


async def test_keys_are_hashed_never_the_id(minio: Any) -> None:
    async with open_s3() as driver:
        ids = ["../../etc/passwd", "/abs", "a/../b", "x" * 512, "é" * 256, "plain"]
        for artifact_id in ids:
            await driver.put("t", "ns", artifact_id, "a/b", {}, agen(b"x"), NOW)
        keys = [k[len(driver.prefix) :] for k in s3_keys(minio, driver.prefix)]
        assert len(keys) == 2 * len(ids)
        for key in keys:
            assert DATA_KEY.fullmatch(key) or INDEX_KEY.fullmatch(key), key
            assert "passwd" not in key and ".." not in key and "plain" not in key
            assert len((driver.prefix + key).encode()) <= MAX_KEY_BYTES
        assert [r.id for r in await driver.list("t", "ns", "", "", 100)] == sorted(ids)
        # Every content object names its record, for the sweep.
        head = minio.head_object(Bucket=S3_BUCKET, Key=data_keys(minio, driver.prefix)[0])
        assert decode_id(head["Metadata"][INDEX_META]) in ids


# --- multipart and ranges ------------------------------------------------------------------


async def test_multipart_upload_and_ranges_across_parts(minio: Any) -> None:
    data = blob(12_000_000, 2)
    options = s3_options()
    overrides = {"blocks.artifact.driver": "s3", "blocks.artifact.options": options}
    async with running_sidecar(overrides) as (_, client):
        artifact = client.artifact
        info = await artifact.put("big", agen(data), id="twelve-mb", metadata={"k": "v"})
        assert (info.size, info.sha256) == (len(data), sha(data))
        (key,) = data_keys(minio, options["prefix"])
        head = minio.head_object(Bucket=S3_BUCKET, Key=key)
        # A multipart object: ETag "<md5>-<parts>", 5 MiB + 5 MiB + the rest.
        assert head["ETag"].strip('"').endswith("-3")
        assert head["ContentLength"] == len(data)
        assert s3_uploads(minio, options["prefix"]) == []

        part = 5 * MiB
        for offset, length in [
            (part - 10, 20),  # across the first part boundary
            (2 * part - 1, 2),  # across the second
            (part - 100_000, part + 200_000),  # across both
            (0, part),
            (part, part),
            (2 * part, 0),  # the last part to the end
            (len(data) - 1, 0),
        ]:
            end = len(data) if length == 0 else offset + length
            got = await artifact.get("big", "twelve-mb", offset=offset, length=length)
            assert got == data[offset:end], (offset, length)
        assert await artifact.get("big", "twelve-mb") == data


async def test_small_content_is_one_put(minio: Any) -> None:
    async with open_s3() as driver:
        data = blob(5 * MiB - 1, 3)  # just under multipart_threshold
        record = await driver.put("t", "ns", "small", "a/b", {}, agen(data), NOW)
        assert record.sha256 == sha(data)
        (key,) = data_keys(minio, driver.prefix)
        assert "-" not in minio.head_object(Bucket=S3_BUCKET, Key=key)["ETag"]
        assert await read_all(driver, "t", "ns", "small") == data


async def test_upload_holds_a_few_parts_in_memory_not_the_blob(minio: Any) -> None:
    size = 60 * MiB
    async with open_s3() as driver:

        async def produce() -> AsyncIterator[bytes]:
            piece = blob(64 * 1024, 4)
            for _ in range(size // len(piece)):
                yield piece

        tracemalloc.start()
        try:
            record = await driver.put("t", "ns", "huge", "a/b", {}, produce(), NOW)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert record.size == size
        # About three 5 MiB parts (one uploading, one filling, one being cut; 15-20 MiB as
        # measured, with whatever else the process allocates meanwhile), not 60 MiB.
        assert peak < 30 * MiB, f"peak {peak / MiB:.1f} MiB"


# --- failures leave nothing --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["failing source", "cancelled"])
async def test_interrupted_multipart_upload_is_aborted(minio: Any, how: str) -> None:
    async with open_s3() as driver:
        await driver.put("t", "ns", "doc", "a/b", {}, agen(b"old"), NOW)
        sent = asyncio.Event()

        async def breaks() -> AsyncIterator[bytes]:
            async for chunk in agen(blob(11 * MiB, 5)):  # two parts go out
                yield chunk
            sent.set()
            if how == "failing source":
                raise OSError("the client went away")
            await asyncio.Event().wait()
            yield b""

        task = asyncio.create_task(driver.put("t", "ns", "doc", "a/b", {}, breaks(), NOW + 1))
        await asyncio.wait_for(sent.wait(), 30)
        if how == "cancelled":
            assert len(s3_uploads(minio, driver.prefix)) == 1
            task.cancel()
        with pytest.raises((OSError, asyncio.CancelledError)):
            await task
        await eventually(lambda: s3_uploads(minio, driver.prefix) == [], timeout=20)
        assert await read_all(driver, "t", "ns", "doc") == b"old"
        assert len(data_keys(minio, driver.prefix)) == 1


# --- retired versions ----------------------------------------------------------------------


async def test_replaced_and_deleted_versions_go_after_readers_finish(minio: Any) -> None:
    async with open_s3(retired_grace_seconds=0) as driver:
        old = blob(3 * MiB, 6)
        await driver.put("t", "ns", "doc", "a/b", {}, agen(old), NOW)
        reader = await driver.open("t", "ns", "doc")
        assert reader is not None
        stream = reader.read(0, reader.info.size, 64 * 1024)
        first = await anext(stream)
        await driver.put("t", "ns", "doc", "a/b", {}, agen(b"new"), NOW + 1)
        # The old version is due for deletion at once, but this reader still holds it.
        await asyncio.sleep(0.5)
        assert len(data_keys(minio, driver.prefix)) == 2
        rest = [c async for c in stream]
        await reader.close()
        assert first + b"".join(rest) == old
        await eventually(lambda: len(data_keys(minio, driver.prefix)) == 1, timeout=10)
        assert await read_all(driver, "t", "ns", "doc") == b"new"

        assert await driver.delete("t", "ns", "doc") is True
        await eventually(lambda: data_keys(minio, driver.prefix) == [], timeout=10)
        assert s3_keys(minio, driver.prefix) == []


async def test_a_reader_whose_version_vanished_is_told_to_retry(minio: Any) -> None:
    async with open_s3() as driver:
        await driver.put("t", "ns", "doc", "a/b", {}, agen(blob(1000, 7)), NOW)
        reader = await driver.open("t", "ns", "doc")
        assert reader is not None
        try:
            # Someone else's sidecar deleted the version long ago (past the grace).
            for key in data_keys(minio, driver.prefix):
                minio.delete_object(Bucket=S3_BUCKET, Key=key)
            with pytest.raises(Aborted, match="read it again"):
                _ = [c async for c in reader.read(0, 1000, 100)]
        finally:
            await reader.close()


async def test_shutdown_hands_pending_deletions_to_the_next_start(minio: Any) -> None:
    options = s3_options(retired_grace_seconds=3600)
    ctx = context()
    first = await DRIVERS.open("s3", options, ctx)
    await first.put("t", "ns", "doc", "a/b", {}, agen(b"v1"), NOW)
    await first.put("t", "ns", "doc", "a/b", {}, agen(b"v2"), NOW + 1)
    await first.close()
    prefix = options["prefix"]
    markers = [k for k in s3_keys(minio, prefix) if k.startswith(prefix + "gc/")]
    assert len(markers) == 1 and len(data_keys(minio, prefix)) == 2

    second = await DRIVERS.open("s3", {**options, "sweep_on_start": False}, ctx)
    assert isinstance(second, S3Artifacts)
    try:
        report = await second.sweep(now=time.time() + 4000)  # an hour later
        assert report.markers == 1
        await eventually(lambda: len(data_keys(minio, prefix)) == 1, timeout=10)
        assert [k for k in s3_keys(minio, prefix) if k.startswith(prefix + "gc/")] == []
        assert await read_all(second, "t", "ns", "doc") == b"v2"
    finally:
        await second.close()


async def test_sweep_removes_stale_uploads_and_unreferenced_versions(minio: Any) -> None:
    async with open_s3(sweep_on_start=False, stale_seconds=60) as driver:
        await driver.put("t", "ns", "kept", "a/b", {}, agen(b"kept"), NOW)
        (kept_key,) = data_keys(minio, driver.prefix)
        await driver.put("t", "ns", "gone", "a/b", {}, agen(b"gone"), NOW)
        (gone_key,) = [k for k in data_keys(minio, driver.prefix) if k != kept_key]
        kept_index = _Keys(driver.prefix, "t", "ns", "kept").index
        # Crash leftovers: the record of "gone" deleted without its content, a version of
        # "kept" no record points to, an upload never completed.
        minio.delete_object(Bucket=S3_BUCKET, Key=_Keys(driver.prefix, "t", "ns", "gone").index)
        orphan = kept_key.rsplit("/", 1)[0] + "/" + "0" * 32
        minio.put_object(
            Bucket=S3_BUCKET, Key=orphan, Body=b"orphan", Metadata={INDEX_META: encode_id("kept")}
        )
        minio.create_multipart_upload(Bucket=S3_BUCKET, Key=orphan)
        unrelated = driver.prefix + "someone-elses/file"
        minio.put_object(Bucket=S3_BUCKET, Key=unrelated, Body=b"x")

        # Not stale yet: nothing happens.
        report = await driver.sweep()
        assert (report.aborted_uploads, report.deleted_versions) == (0, 0)
        assert len(s3_keys(minio, driver.prefix)) == 5
        report = await driver.sweep(now=time.time() + 120)
        assert (report.aborted_uploads, report.deleted_versions) == (1, 2)
        assert sorted(s3_keys(minio, driver.prefix)) == sorted([kept_key, kept_index, unrelated])
        assert gone_key not in s3_keys(minio, driver.prefix)
        assert s3_uploads(minio, driver.prefix) == []
        assert await read_all(driver, "t", "ns", "kept") == b"kept"


# --- configuration and outages --------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prefix": "/abs"}, "must not start with '/'"),
        ({"part_size": MiB}, "part_size"),
        ({"multipart_threshold": "1MiB"}, "multipart_threshold"),
        ({"access_key_env": "MEMSIDECAR_TEST_UNSET_VARIABLE"}, "is not set"),
        ({"secret_key_env": None}, "set both access_key_env and secret_key_env"),
        ({"bucket": "x"}, "bucket"),
        ({"nonsense": 1}, "nonsense"),
        ({"prefix": "p" * 80}, "over S3's limit of 1024"),
    ],
)
async def test_bad_options(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(DriverConfigError, match=re.escape(message)):
        await DRIVERS.open("s3", s3_options(**changes), context())


async def test_part_size_must_fit_max_size_in_10000_parts() -> None:
    ctx = context(**{"blocks.artifact.max_size_bytes": "100GiB"})
    with pytest.raises(DriverConfigError, match=r"raise blocks\.artifact\.options\.part_size"):
        await DRIVERS.open("s3", s3_options(), ctx)


async def test_missing_bucket_and_bad_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    options = s3_options(bucket="memsidecar-test-absent", create_bucket=False)
    with pytest.raises(DriverConfigError, match=r"bucket does not exist.*create_bucket: true"):
        await DRIVERS.open("s3", options, context())
    monkeypatch.setenv("MEMSIDECAR_TEST_BAD_SECRET", "wrong-secret")
    with pytest.raises(DriverConfigError, match="check the credentials"):
        await DRIVERS.open("s3", s3_options(secret_key_env="MEMSIDECAR_TEST_BAD_SECRET"), context())


async def test_unreachable_endpoint_is_unavailable_naming_it() -> None:
    endpoint = "http://127.0.0.1:9"  # discard port: nothing listens
    async with open_s3(endpoint=endpoint, max_attempts=1, connect_timeout=1) as driver:
        assert await driver.health() is False
        with pytest.raises(Unavailable, match=re.escape(endpoint)):
            await driver.stat("t", "ns", "doc")
        with pytest.raises(Unavailable, match=re.escape(endpoint)):
            await driver.put("t", "ns", "doc", "a/b", {}, agen(b"x"), NOW)


async def test_health_and_a_vanished_bucket() -> None:
    async with open_s3() as driver:
        assert await driver.health() is True
        driver.bucket = "memsidecar-test-absent"  # as if someone deleted the bucket
        assert await driver.health() is False
        with pytest.raises(FailedPrecondition, match="bucket does not exist"):
            await driver.stat("t", "ns", "x")


# --- MinIO stopped mid-upload ----------------------------------------------------------------


async def test_minio_stopped_mid_upload() -> None:
    """The put fails cleanly with UNAVAILABLE; after MinIO is back the old version is
    intact, nothing partial is visible, and the janitor has aborted the upload."""
    started = time.monotonic()
    async with private_minio() as server:
        endpoint = server.endpoint
        options = s3_options(endpoint=endpoint, max_attempts=2, connect_timeout=1)
        prefix = options["prefix"]
        minio = s3_client(endpoint)
        overrides = {"blocks.artifact.driver": "s3", "blocks.artifact.options": options}
        old = blob(200_000, 8)
        async with running_sidecar(overrides) as (sidecar, client):
            artifact = client.artifact
            driver = sidecar.blocks["artifact"].driver  # type: ignore[attr-defined]
            assert isinstance(driver, S3Artifacts)
            await artifact.put("fault", old, id="doc", metadata={"v": 1})
            halfway, stopped = asyncio.Event(), asyncio.Event()

            async def produce() -> AsyncIterator[bytes]:
                data = blob(40 * MiB, 9)
                for start in range(0, len(data), 256 * 1024):
                    if start == 12 * MiB:  # two parts are out, a third is filling
                        halfway.set()
                        await stopped.wait()
                    yield data[start : start + 256 * 1024]

            upload = asyncio.create_task(artifact.put("fault", produce(), id="doc"))
            await asyncio.wait_for(halfway.wait(), 60)
            assert len(s3_uploads(minio, prefix)) == 1
            await server.script("down")
            assert not minio_live(endpoint)
            stopped.set()
            with pytest.raises(UnavailableError) as failure:
                await asyncio.wait_for(upload, 60)
            assert endpoint in failure.value.message
            # The abort could not reach MinIO either: the janitor holds it for a retry.
            (job,) = driver.janitor.jobs()
            assert job.kind == "abort"
            # Reads fail the same way while MinIO is down.
            with pytest.raises(UnavailableError, match=re.escape(endpoint)):
                await artifact.stat("fault", "doc")

            await server.script("up")
            # The previous version is intact and alone; nothing partial anywhere.
            assert await artifact.get("fault", "doc") == old
            stat = await artifact.stat("fault", "doc")
            assert stat is not None and stat.sha256 == sha(old) and stat.metadata == {"v": 1}
            page, _ = await artifact.list("fault")
            assert [(i.id, i.size) for i in page] == [("doc", len(old))]
            assert len(data_keys(minio, prefix)) == 1
            # The janitor retried the abort until MinIO answered again.
            await eventually(lambda: driver.janitor.jobs() == [], timeout=60)
            assert not upload_exists(minio, job.key, job.ref)
            assert s3_uploads(minio, prefix) == []
            assert s3_keys(minio, prefix + "up/") == []  # the journal entry is gone too
    assert time.monotonic() - started < 180


async def test_sweep_finds_uploads_of_a_crashed_sidecar_after_minio_restarts() -> None:
    async with private_minio() as server:
        options = s3_options(endpoint=server.endpoint, sweep_on_start=False, stale_seconds=60)
        prefix = options["prefix"]
        minio = s3_client(server.endpoint)
        crashed = await DRIVERS.open("s3", options, context())
        assert isinstance(crashed, S3Artifacts)
        sent = asyncio.Event()

        async def stalls() -> AsyncIterator[bytes]:
            async for chunk in agen(blob(6 * MiB, 10)):
                yield chunk
            sent.set()
            await asyncio.Event().wait()
            yield b""

        upload = asyncio.create_task(crashed.put("t", "ns", "doc", "a/b", {}, stalls(), NOW))
        await asyncio.wait_for(sent.wait(), 30)
        # A crash: the sidecar vanishes with its in-memory clean-up jobs.
        await crashed.janitor.stop()
        upload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upload
        crashed.janitor.heap.clear()
        await crashed.close()
        (left,) = s3_uploads(minio, prefix)

        await server.script("restart")
        minio = s3_client(server.endpoint)
        # After a restart MinIO's bucket-wide listing no longer shows the upload; it is
        # still there, found by exact key through the journal.
        listed = minio.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", [])
        assert left["UploadId"] not in [u["UploadId"] for u in listed]
        assert upload_exists(minio, left["Key"], left["UploadId"])

        driver = await DRIVERS.open("s3", options, context())
        assert isinstance(driver, S3Artifacts)
        try:
            report = await driver.sweep()  # not stale yet: kept
            assert report.aborted_uploads == 0
            assert upload_exists(minio, left["Key"], left["UploadId"])
            report = await driver.sweep(now=time.time() + 120)
            assert report.aborted_uploads == 1
            assert not upload_exists(minio, left["Key"], left["UploadId"])
            assert s3_keys(minio, prefix) == []  # no journal entry, no object
            assert await driver.stat("t", "ns", "doc") is None
        finally:
            await driver.close()
