"""Artifacts in an S3 bucket (AWS S3, MinIO or another S3-compatible store), via boto3.

Keys (ids never become paths; `<scope>` is `<prefix><sha256(tenant)>/<sha256(tenant NUL
namespace)>/`):

    <scope>i/<base32hex(id)>                              the record (JSON)
    <scope>d/<sha256(tenant NUL namespace NUL id)>/<v>    the content of one version v
    <prefix>up/<v>                                        journal: a multipart upload to v
    <prefix>gc/<due ms>-<random>                          deletions handed over at shutdown

The record holds tenant, namespace, id, size, sha256, content type, metadata,
created_at and the version `v` of the content it belongs to. Ids are encoded
with unpadded base32hex (a "/" after every 200 characters: MinIO stores keys as
paths of segments of at most 255 bytes), which keeps byte order, so
ListObjectsV2 over `<scope>i/` returns artifacts in id order and `StartAfter`
pages them; it also keeps a 512-byte id within S3's 1024-byte key limit.

A write uploads the content under a fresh version key -- a single PutObject
below `multipart_threshold`, else a multipart upload of `part_size` parts
(hashing as it goes, about three parts in memory at most) -- and then writes the record.
Writing the record is the commit: S3 replaces an object atomically, so readers
see the old record (and its content, which is still there) or the new one. A
failed or cancelled write aborts its multipart upload, so no partial object is
ever visible; content whose record was never written is invisible (readers go
through the record) and is deleted.

Versions are never overwritten in place, because MinIO breaks a GET in flight
when its object is replaced or deleted. The version a replace or delete
supersedes is deleted `retired_grace_seconds` later, and never while a reader of
this process has it open, so a Get that started keeps streaming the version it
opened. Cleanup (aborting uploads,
deleting superseded versions) runs in a background janitor that retries while
S3 is down; at shutdown, deletions not yet due are written to `<prefix>gc/` and
done by the next start. Crash leftovers -- multipart uploads, and versions no
record points to -- older than `stale_seconds` are removed by a sweep at start.
Every multipart upload is journaled under `<prefix>up/` before it starts (and
the entry dropped when it completes or is aborted), because MinIO lists
uploads only by exact key, or bucket-wide but only since its last start.

boto3 is blocking, so every call runs in a bounded thread pool
(`max_concurrency` threads); the event loop never waits on S3.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import builtins
import contextlib
import functools
import hashlib
import heapq
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import boto3
import botocore.config
import botocore.exceptions
from pydantic import Field, model_validator

from memsidecar.sidecar.blocks.artifact.driver import ArtifactRecord, damaged
from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.registry import DriverConfigError, parse_options
from memsidecar.sidecar.errors import Aborted, FailedPrecondition, MemError, Unavailable
from memsidecar.sidecar.models import StrictModel
from memsidecar.sidecar.units import ByteSize

log = logging.getLogger("memsidecar.artifact.s3")

T = TypeVar("T")

MiB = 1024 * 1024
# S3's limits: parts of 5 MiB to 5 GiB (the last may be smaller), at most 10,000 parts,
# keys of at most 1024 bytes.
MIN_PART_BYTES = 5 * MiB
MAX_PART_BYTES = 5 * 1024 * MiB
MAX_PARTS = 10_000
MAX_KEY_BYTES = 1024
# A record is JSON of bounded fields (metadata is capped by the service); refuse absurd ones.
MAX_RECORD_BYTES = 16 * MiB
RECORD_FORMAT = 1
# How often a reader reopens its byte range after the connection broke mid-stream.
MAX_READ_RESUMES = 3
# MinIO keeps keys as paths: no segment between "/"s may exceed 255 bytes.
SEGMENT_CHARS = 200
# Metadata on every content object naming its record, so the sweep can find it.
INDEX_META = "artifact-index"
# Deletions handed over at shutdown, per marker object.
MARKER_BATCH = 1000
# Janitor retry backoff while S3 is down.
RETRY_MIN_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
# Bound on the work done at shutdown.
CLOSE_TIMEOUT_SECONDS = 15.0

_HEX64 = "[0-9a-f]{64}"
_VERSION = re.compile(r"[0-9a-f]{32}")
_DATA_KEY = re.compile(rf"({_HEX64}/{_HEX64}/)d/({_HEX64})/([0-9a-f]{{32}})")
_MARKER_KEY = re.compile(r"gc/(\d{13})-[0-9a-f]{32}")
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchUpload"})
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "AllAccessDisabled",
    }
)
_BUSY_CODES = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "RequestTimeout",
        "InternalError",
        "XMinioServerNotInitialized",
    }
)


class S3Options(StrictModel):
    # Bucket holding every artifact.
    bucket: str = Field(min_length=3, max_length=63)
    # Endpoint URL for MinIO or another S3-compatible store, e.g. http://127.0.0.1:9000;
    # unset for AWS S3.
    endpoint: str | None = None
    # Region (AWS); unset: the boto3 default (AWS_REGION, ~/.aws/config, else us-east-1).
    region: str | None = None
    # Key prefix for everything this driver writes, e.g. "memsidecar/" ("/" is appended).
    prefix: str = ""
    # Names of environment variables holding the credentials (in Kubernetes, filled from
    # a Secret). Unset: boto3's default credential chain (env, files, IRSA, instance role).
    access_key_env: str | None = None
    secret_key_env: str | None = None
    session_token_env: str | None = None
    # Create the bucket at start when it does not exist.
    create_bucket: bool = False
    # "path" (bucket in the URL path, what MinIO wants) is used with an endpoint when "auto".
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # Content below this size is uploaded with one PutObject; larger content as a
    # multipart upload of part_size parts. About max(threshold, 3 x part_size) bytes of
    # an upload are held in memory at most (one part uploads while the next one fills).
    multipart_threshold: ByteSize = Field(default=8 * MiB, ge=MIN_PART_BYTES)
    part_size: ByteSize = Field(default=8 * MiB, ge=MIN_PART_BYTES, le=MAX_PART_BYTES)
    # Threads (and pooled connections) for S3 calls.
    max_concurrency: int = Field(default=10, ge=1, le=256)
    # Seconds to connect / to wait for data before an attempt fails; attempts per call
    # (botocore's standard retry mode) before the call fails with UNAVAILABLE.
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=20)
    # A version superseded by a replace or delete is deleted this long afterwards (never
    # while this sidecar still streams it), so Gets of other sidecars can finish it.
    retired_grace_seconds: float = Field(default=3600.0, ge=0)
    # Crash leftovers older than this -- incomplete multipart uploads, content no record
    # points to -- are removed by the sweep at start.
    stale_seconds: float = Field(default=86400.0, gt=0)
    # Run that sweep (in the background) when the driver opens. It lists every key under
    # the prefix, so it costs one listing of the prefix per start.
    sweep_on_start: bool = True

    @model_validator(mode="after")
    def _check(self) -> S3Options:
        if bool(self.access_key_env) != bool(self.secret_key_env):
            raise ValueError("set both access_key_env and secret_key_env, or neither")
        for name in (self.access_key_env, self.secret_key_env, self.session_token_env):
            if name and not os.environ.get(name):
                raise ValueError(f"environment variable {name} (named in the options) is not set")
        if self.session_token_env and not self.access_key_env:
            raise ValueError("session_token_env needs access_key_env and secret_key_env")
        if self.prefix.startswith("/"):
            raise ValueError("prefix must not start with '/'")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        return self


# --- keys --------------------------------------------------------------------------------


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _split(encoded: str) -> str:
    return "/".join(encoded[i : i + SEGMENT_CHARS] for i in range(0, len(encoded), SEGMENT_CHARS))


def encode_id(text: str) -> str:
    """Unpadded base32hex of the UTF-8 bytes, with a "/" after every SEGMENT_CHARS
    characters. Injective, and key order == id byte order: base32hex keeps the order of
    the bits, and the "/"s sit at the same positions in every key (and sort below every
    base32hex character)."""
    return _split(base64.b32hexencode(text.encode()).rstrip(b"=").decode())


def decode_id(encoded: str) -> str | None:
    plain = encoded.replace("/", "")
    if _split(plain) != encoded:
        return None
    try:
        return base64.b32hexdecode(plain + "=" * (-len(plain) % 8)).decode()
    except (binascii.Error, ValueError):
        return None


def encoded_prefix(text: str) -> str:
    """The part of encode_id(x) that every x starting with `text` shares (whole characters)."""
    plain = base64.b32hexencode(text.encode()).rstrip(b"=").decode()
    return _split(plain[: len(text.encode()) * 8 // 5])


def encoded_length(id_bytes: int) -> int:
    chars = math.ceil(id_bytes * 8 / 5)
    return chars + max(0, chars - 1) // SEGMENT_CHARS


@dataclass(frozen=True)
class _Keys:
    prefix: str
    tenant: str
    namespace: str
    artifact_id: str

    @property
    def scope(self) -> str:
        return f"{self.prefix}{_digest(self.tenant)}/{_digest(self.tenant, self.namespace)}/"

    @property
    def index(self) -> str:
        return f"{self.scope}i/{encode_id(self.artifact_id)}"

    def data(self, version: str) -> str:
        return f"{self.scope}d/{_digest(self.tenant, self.namespace, self.artifact_id)}/{version}"


def key_overhead(prefix: str) -> int:
    """Bytes of a record key besides the encoded id."""
    return len(prefix.encode()) + 64 + 1 + 64 + 1 + 2


# --- records -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stored:
    """A record as stored: the artifact's record plus the version of its content."""

    tenant: str
    namespace: str
    record: ArtifactRecord
    version: str

    def encode(self) -> bytes:
        r = self.record
        return json.dumps(
            {
                "format": RECORD_FORMAT,
                "tenant": self.tenant,
                "namespace": self.namespace,
                "id": r.id,
                "size": r.size,
                "sha256": r.sha256,
                "content_type": r.content_type,
                "metadata": r.metadata,
                "created_at": r.created_at,
                "version": self.version,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()

    @classmethod
    def decode(cls, raw: bytes, artifact_id: str, where: str) -> _Stored:
        try:
            doc = json.loads(raw)
            if doc.get("format") != RECORD_FORMAT:
                raise ValueError(f"unknown record format {doc.get('format')!r}")
            version = doc["version"]
            if not isinstance(version, str) or not _VERSION.fullmatch(version):
                raise ValueError(f"bad version {version!r}")
            record = ArtifactRecord(
                id=doc["id"],
                size=int(doc["size"]),
                sha256=doc["sha256"],
                content_type=doc["content_type"],
                metadata=doc["metadata"],
                created_at=float(doc["created_at"]),
            )
            return cls(doc["tenant"], doc["namespace"], record, version)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise damaged(artifact_id, where, f"unreadable record: {exc}") from exc


class _Damaged(MemError):
    """A record that cannot be read back (INTERNAL, like driver.damaged)."""


# --- the janitor -------------------------------------------------------------------------


# abort: abort a multipart upload (key, ref = upload id), then drop its journal entry;
# delete: delete a content version (key) unless its record (ref) points to it by then;
# remove: delete an object (key) unconditionally.
JobKind = Literal["abort", "delete", "remove"]


@dataclass(order=True)
class _Job:
    """Cleanup work for the janitor."""

    due: float  # time.monotonic()
    seq: int
    kind: JobKind = field(compare=False)
    key: str = field(compare=False)
    ref: str = field(compare=False)
    attempts: int = field(default=0, compare=False)


class _Janitor:
    """Runs cleanup jobs when due, retrying with backoff while S3 is down."""

    def __init__(self, driver: S3Artifacts) -> None:
        self.driver = driver
        self.heap: list[_Job] = []
        self.held: dict[str, list[_Job]] = {}
        self.seq = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        # The job being run right now, if any.
        self.busy: _Job | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="s3-janitor")

    def add(self, kind: JobKind, key: str, ref: str, delay: float) -> None:
        self.seq += 1
        heapq.heappush(self.heap, _Job(time.monotonic() + delay, self.seq, kind, key, ref))
        self.wake.set()

    def release(self, key: str) -> None:
        """A reader let go of `key`: run deletions that waited for it."""
        for job in self.held.pop(key, []):
            job.due = time.monotonic()
            heapq.heappush(self.heap, job)
        self.wake.set()

    async def _run(self) -> None:
        while True:
            if not self.heap:
                await self.wake.wait()
                self.wake.clear()
                continue
            wait = self.heap[0].due - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), wait)
                self.wake.clear()
                continue
            job = heapq.heappop(self.heap)
            if job.kind == "delete" and self.driver.readers[job.key]:
                self.held.setdefault(job.key, []).append(job)
                continue
            self.busy = job
            try:
                await self.driver.run_job(job)
            except asyncio.CancelledError:
                heapq.heappush(self.heap, job)  # stop() hands it on
                raise
            except Exception as exc:
                job.attempts += 1
                backoff = min(RETRY_MAX_SECONDS, RETRY_MIN_SECONDS * 2 ** (job.attempts - 1))
                job.due = time.monotonic() + backoff
                heapq.heappush(self.heap, job)
                log.warning(
                    "S3 cleanup (%s %s) failed, retrying in %.1f s: %s",
                    job.kind,
                    job.key,
                    backoff,
                    exc,
                )
            finally:
                self.busy = None

    def jobs(self) -> list[_Job]:
        """Every job not done yet (queued, waiting for a reader, or running)."""
        running = [self.busy] if self.busy is not None else []
        return sorted(running + self.heap + [job for held in self.held.values() for job in held])

    async def stop(self) -> list[_Job]:
        """Stop the loop; the jobs it had not done yet."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        jobs = list(self.heap) + [job for held in self.held.values() for job in held]
        self.heap.clear()
        self.held.clear()
        return sorted(jobs)


@dataclass
class SweepReport:
    aborted_uploads: int = 0
    deleted_versions: int = 0
    markers: int = 0


# --- reading -----------------------------------------------------------------------------


class S3Reader:
    def __init__(self, driver: S3Artifacts, stored: _Stored, data_key: str) -> None:
        self._driver = driver
        self._stored = stored
        self._key: str | None = data_key
        driver.readers[data_key] += 1

    @property
    def info(self) -> ArtifactRecord:
        return self._stored.record

    def _gone(self) -> MemError:
        return Aborted(
            f"artifact {self.info.id!r} was replaced or deleted while it was read, and the "
            "version being read is gone (blocks.artifact.options.retired_grace_seconds); "
            "read it again"
        )

    async def read(self, offset: int, length: int, chunk_bytes: int) -> AsyncGenerator[bytes, None]:
        position, end = offset, offset + length
        body: Any = None
        resumes = 0
        try:
            while position < end:
                if self._key is None:
                    raise RuntimeError("read from a closed artifact reader")
                if body is None:
                    response = await self._driver.call(
                        "read an artifact",
                        "get_object",
                        missing_ok=True,
                        Key=self._key,
                        Range=f"bytes={position}-{end - 1}",
                    )
                    if response is None:
                        raise self._gone()
                    body = response["Body"]
                try:
                    data: bytes = await self._driver.blocking(
                        body.read, min(chunk_bytes, end - position)
                    )
                except (botocore.exceptions.BotoCoreError, OSError) as exc:
                    # The connection broke (or the object was removed under the stream):
                    # reopen the rest of the range, which either resumes or says it is gone.
                    await self._driver.blocking(body.close)
                    body = None
                    resumes += 1
                    if resumes > MAX_READ_RESUMES:
                        raise self._driver.unavailable("read an artifact", exc) from exc
                    continue
                if not data:
                    await self._driver.blocking(body.close)
                    body = None
                    resumes += 1
                    if resumes > MAX_READ_RESUMES:
                        raise damaged(
                            self.info.id, self._key, f"content ends early at byte {position}"
                        )
                    continue
                position += len(data)
                yield data
        finally:
            if body is not None:
                await self._driver.blocking(body.close)

    async def close(self) -> None:
        if self._key is not None:
            key, self._key = self._key, None
            self._driver.readers[key] -= 1
            if self._driver.readers[key] <= 0:
                del self._driver.readers[key]
                self._driver.janitor.release(key)


# --- the driver --------------------------------------------------------------------------


class S3Artifacts:
    def __init__(self, options: S3Options, client: Any) -> None:
        self.options = options
        self.bucket = options.bucket
        self.prefix = options.prefix
        self.client = client
        self.where = f"S3 endpoint {options.endpoint or 'AWS'} (bucket {options.bucket!r})"
        self._pool = ThreadPoolExecutor(options.max_concurrency, thread_name_prefix="s3-artifact")
        self._bucket_ready = False
        self._bucket_lock = asyncio.Lock()
        # Content versions open in this process' readers: never deleted while open.
        self.readers: Counter[str] = Counter()
        self.janitor = _Janitor(self)
        self._sweep_task: asyncio.Task[SweepReport] | None = None
        self._closed = False

    # --- calling boto3 off the event loop ---

    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn in the pool. If the caller is cancelled, wait for the thread to finish
        before re-raising, so cleanup never races a call still in flight."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            while not future.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([future])
            if not future.cancelled():
                future.exception()  # retrieved: the caller is gone
            raise

    async def call(self, what: str, method: str, *, missing_ok: bool = False, **params: Any) -> Any:
        """client.<method>(Bucket=..., **params) in the pool, errors mapped to MemErrors;
        None for a missing key or upload when missing_ok."""
        try:
            return await self.blocking(getattr(self.client, method), Bucket=self.bucket, **params)
        except botocore.exceptions.ClientError as exc:
            if missing_ok and _error_code(exc) in _MISSING_CODES:
                return None
            raise self.error(what, exc) from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise self.error(what, exc) from exc

    def unavailable(self, what: str, exc: BaseException) -> Unavailable:
        return Unavailable(
            f"{self.where} is unavailable ({type(exc).__name__}: {exc}) while trying to {what}; "
            "nothing was changed that was not acknowledged -- retry"
        )

    def error(self, what: str, exc: BaseException) -> MemError:
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return FailedPrecondition(
                f"no S3 credentials for {self.where}: set blocks.artifact.options."
                "access_key_env and secret_key_env, or configure boto3's credential chain"
            )
        if isinstance(exc, botocore.exceptions.ClientError):
            code = _error_code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code == "NoSuchBucket":
                return FailedPrecondition(
                    f"{self.where}: the bucket does not exist; create it or set "
                    "blocks.artifact.options.create_bucket: true"
                )
            if code in _DENIED_CODES or status == 403:
                return FailedPrecondition(
                    f"{self.where} refused to {what} ({code}); check the credentials "
                    "(access_key_env / secret_key_env) and the bucket policy"
                )
            if code in _BUSY_CODES or status >= 500:
                return self.unavailable(what, exc)
            return MemError(f"{self.where} failed to {what}: {code} ({exc})")
        return self.unavailable(what, exc)

    async def _ready(self) -> None:
        """Make sure the bucket exists (once), creating it when configured to."""
        if self._bucket_ready:
            return
        async with self._bucket_lock:
            if self._bucket_ready:
                return
            try:
                await self.blocking(self.client.head_bucket, Bucket=self.bucket)
            except botocore.exceptions.ClientError as exc:
                if _error_code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                    raise self.error("check the bucket", exc) from exc
                if not self.options.create_bucket:
                    raise FailedPrecondition(
                        f"{self.where}: the bucket does not exist; create it or set "
                        "blocks.artifact.options.create_bucket: true"
                    ) from exc
                await self._create_bucket()
            except (botocore.exceptions.BotoCoreError, OSError) as exc:
                raise self.error("check the bucket", exc) from exc
            self._bucket_ready = True

    async def _create_bucket(self) -> None:
        params: dict[str, Any] = {"Bucket": self.bucket}
        region = self.client.meta.region_name
        if region and region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            await self.blocking(self.client.create_bucket, **params)
            log.info("created bucket %s", self.where)
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise self.error("create the bucket", exc) from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise self.error("create the bucket", exc) from exc

    # --- records ---

    def _read_object(self, key: str) -> bytes | None:
        """Blocking: the whole (small) object, or None when missing."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc) in _MISSING_CODES:
                return None
            raise
        body = response["Body"]
        try:
            if response.get("ContentLength", 0) > MAX_RECORD_BYTES:
                raise ValueError(f"{key} is larger than {MAX_RECORD_BYTES} bytes")
            data: bytes = body.read()
            return data
        finally:
            body.close()

    async def _fetch(self, keys: _Keys, what: str) -> bytes | None:
        """The raw record, or None when there is none."""
        try:
            return await self.blocking(self._read_object, keys.index)
        except ValueError as exc:
            raise _Damaged(damaged(keys.artifact_id, keys.index, str(exc)).message) from exc
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, OSError) as exc:
            raise self.error(what, exc) from exc

    @staticmethod
    def _decode(keys: _Keys, raw: bytes) -> _Stored:
        try:
            stored = _Stored.decode(raw, keys.artifact_id, keys.index)
        except MemError as exc:
            raise _Damaged(exc.message) from exc
        owner = (stored.tenant, stored.namespace, stored.record.id)
        if owner != (keys.tenant, keys.namespace, keys.artifact_id):
            problem = "the record belongs to another artifact"
            raise _Damaged(damaged(keys.artifact_id, keys.index, problem).message)
        return stored

    async def _load(self, keys: _Keys, what: str) -> _Stored | None:
        raw = await self._fetch(keys, what)
        return None if raw is None else self._decode(keys, raw)

    async def _load_lenient(self, keys: _Keys, what: str) -> tuple[_Stored | None] | None:
        """None when there is no record; (None,) for a damaged one, which a replace or a
        delete may overwrite."""
        try:
            stored = await self._load(keys, what)
        except _Damaged as exc:
            log.warning("replacing or deleting a damaged artifact record: %s", exc.message)
            return (None,)
        return None if stored is None else (stored,)

    # --- the driver protocol ---

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
        await self._ready()
        keys = _Keys(self.prefix, tenant, namespace, artifact_id)
        version = uuid.uuid4().hex
        data_key = keys.data(version)
        object_meta = {INDEX_META: encode_id(artifact_id)}
        threshold, part_size = self.options.multipart_threshold, self.options.part_size
        digest = hashlib.sha256()
        size = 0
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        in_flight: asyncio.Future[dict[str, Any]] | None = None
        previous_task: asyncio.Future[tuple[_Stored | None] | None] | None = None
        completing = data_written = journaled = False
        try:
            async for chunk in chunks:
                if in_flight is not None and in_flight.done():
                    parts.append(in_flight.result())  # raises when the part failed
                    in_flight = None
                digest.update(chunk)
                size += len(chunk)
                buffer += chunk
                if upload_id is None and len(buffer) >= threshold:
                    # Journal the upload first, so the sweep finds it after a crash even on
                    # MinIO, which lists uploads only per exact key (and forgets the rest
                    # of its listing across restarts).
                    journaled = True
                    await self.call(
                        "journal a multipart upload",
                        "put_object",
                        Key=self._journal(data_key),
                        Body=data_key.encode(),
                    )
                    created = await self.call(
                        "start a multipart upload",
                        "create_multipart_upload",
                        Key=data_key,
                        Metadata=object_meta,
                    )
                    upload_id = created["UploadId"]
                while upload_id is not None and len(buffer) >= part_size:
                    with memoryview(buffer) as view:
                        body = view[:part_size].tobytes()  # one copy, no temporary slice
                    del buffer[:part_size]
                    # At most one part uploads while the next one fills.
                    if in_flight is not None:
                        parts.append(await in_flight)
                        in_flight = None
                    in_flight = asyncio.ensure_future(
                        self._upload_part(data_key, upload_id, len(parts) + 1, body)
                    )
            # Which version this one replaces, read while the last bytes upload.
            previous_task = asyncio.ensure_future(
                self._load_lenient(keys, "read the artifact it replaces")
            )
            if upload_id is None:
                completing = True
                await self.call(
                    "upload an artifact",
                    "put_object",
                    Key=data_key,
                    Body=bytes(buffer),
                    Metadata=object_meta,
                )
            else:
                if in_flight is not None:
                    parts.append(await in_flight)
                    in_flight = None
                if buffer or not parts:
                    parts.append(
                        await self._upload_part(data_key, upload_id, len(parts) + 1, bytes(buffer))
                    )
                buffer.clear()
                completing = True
                await self.call(
                    "complete a multipart upload",
                    "complete_multipart_upload",
                    Key=data_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            data_written = True
            previous = await previous_task
            record = ArtifactRecord(
                id=artifact_id,
                size=size,
                sha256=digest.hexdigest(),
                content_type=content_type,
                metadata=metadata,
                created_at=now,
            )
            await self.call(
                "store an artifact's record",
                "put_object",
                Key=keys.index,
                Body=_Stored(tenant, namespace, record, version).encode(),
                ContentType="application/json",
            )
        except BaseException:
            for task in (in_flight, previous_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await asyncio.wait([task])
                    if task.done() and not task.cancelled():
                        task.exception()  # retrieved: the error being raised says enough
            if upload_id is not None and not data_written:
                self.janitor.add("abort", data_key, upload_id, 0.0)
            elif journaled:
                self.janitor.add("remove", self._journal(data_key), "", 0.0)
            if completing:
                # The content (even the record) may have landed although the call failed;
                # the janitor deletes the content later unless the record points to it.
                self.janitor.add("delete", data_key, keys.index, self.options.retired_grace_seconds)
            raise
        if journaled:
            self.janitor.add("remove", self._journal(data_key), "", 0.0)
        if previous is not None and previous[0] is not None and previous[0].version != version:
            self.janitor.add(
                "delete",
                keys.data(previous[0].version),
                keys.index,
                self.options.retired_grace_seconds,
            )
        return record

    async def _upload_part(
        self, key: str, upload_id: str, number: int, body: bytes
    ) -> dict[str, Any]:
        response = await self.call(
            "upload a part of an artifact",
            "upload_part",
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
        )
        part = {"PartNumber": number, "ETag": response["ETag"]}
        for name in (
            "ChecksumCRC32",
            "ChecksumCRC32C",
            "ChecksumCRC64NVME",
            "ChecksumSHA1",
            "ChecksumSHA256",
        ):
            if name in response:
                part[name] = response[name]
        return part

    async def open(self, tenant: str, namespace: str, artifact_id: str) -> S3Reader | None:
        await self._ready()
        keys = _Keys(self.prefix, tenant, namespace, artifact_id)
        stored = await self._load(keys, "read an artifact")
        if stored is None:
            return None
        return S3Reader(self, stored, keys.data(stored.version))

    async def stat(self, tenant: str, namespace: str, artifact_id: str) -> ArtifactRecord | None:
        await self._ready()
        stored = await self._load(_Keys(self.prefix, tenant, namespace, artifact_id), "stat")
        return stored.record if stored is not None else None

    async def delete(self, tenant: str, namespace: str, artifact_id: str) -> bool:
        await self._ready()
        keys = _Keys(self.prefix, tenant, namespace, artifact_id)
        found = await self._load_lenient(keys, "delete an artifact")
        if found is None:
            return False
        await self.call("delete an artifact", "delete_object", Key=keys.index)
        stored = found[0]
        if stored is not None:
            self.janitor.add(
                "delete",
                keys.data(stored.version),
                keys.index,
                self.options.retired_grace_seconds,
            )
        return True

    async def list(
        self, tenant: str, namespace: str, prefix: str, start_after: str, limit: int
    ) -> builtins.list[ArtifactRecord]:
        await self._ready()
        base = _Keys(self.prefix, tenant, namespace, "").scope + "i/"
        params: dict[str, Any] = {"Prefix": base + encoded_prefix(prefix)}
        if start_after:
            params["StartAfter"] = base + encode_id(start_after)
        out: builtins.list[ArtifactRecord] = []
        while len(out) < limit:
            response = await self.call(
                "list artifacts",
                "list_objects_v2",
                MaxKeys=min(1000, limit - len(out)),
                **params,
            )
            wanted: builtins.list[str] = []
            past_prefix = False
            for obj in response.get("Contents", []):
                artifact_id = decode_id(obj["Key"][len(base) :])
                if artifact_id is None:
                    log.warning("List skips a key that is not an encoded id: %s", obj["Key"])
                    continue
                if not artifact_id.startswith(prefix):
                    if artifact_id > prefix:
                        past_prefix = True  # ids are in order: no later one can match
                        break
                    continue
                if artifact_id > start_after:
                    wanted.append(artifact_id)
            loaded = await asyncio.gather(
                *(self._list_entry(tenant, namespace, i) for i in wanted), return_exceptions=True
            )
            for entry in loaded:
                if isinstance(entry, BaseException):
                    raise entry
                if entry is not None:
                    out.append(entry)
            if past_prefix or not response.get("IsTruncated"):
                break
            params.pop("StartAfter", None)
            params["ContinuationToken"] = response["NextContinuationToken"]
        return out[:limit]

    async def _list_entry(
        self, tenant: str, namespace: str, artifact_id: str
    ) -> ArtifactRecord | None:
        try:
            stored = await self._load(_Keys(self.prefix, tenant, namespace, artifact_id), "list")
        except _Damaged as exc:
            log.warning("List skips an unreadable artifact record: %s", exc.message)
            return None
        # None: deleted between the listing and the read.
        return stored.record if stored is not None else None

    async def health(self) -> bool:
        try:
            await self.blocking(self.client.head_bucket, Bucket=self.bucket)
        except Exception:
            return False
        return True

    # --- cleanup ---

    def _journal(self, data_key: str) -> str:
        """The journal entry of a multipart upload to data_key (named by its version)."""
        return f"{self.prefix}up/{data_key.rsplit('/', 1)[1]}"

    async def run_job(self, job: _Job) -> None:
        if job.kind == "abort":
            await self.call(
                "abort a multipart upload",
                "abort_multipart_upload",
                missing_ok=True,
                Key=job.key,
                UploadId=job.ref,
            )
            await self.call("drop a journal entry", "delete_object", Key=self._journal(job.key))
            return
        if job.kind == "remove":
            await self.call("remove a finished object", "delete_object", Key=job.key)
            return
        try:
            raw = await self.blocking(self._read_object, job.ref)
        except ValueError:
            raw = None  # not a record of ours
        if raw is not None:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                doc = json.loads(raw)
                if job.key.endswith("/" + str(doc.get("version"))):
                    return  # the record points to this version after all: keep it
        await self.call("delete an old artifact version", "delete_object", Key=job.key)

    async def sweep(self, now: float | None = None) -> SweepReport:
        """Finish deletions handed over at shutdown, and remove crash leftovers older than
        stale_seconds: incomplete multipart uploads and content no record points to."""
        await self._ready()
        now = time.time() if now is None else now
        report = SweepReport()
        await self._sweep_markers(now, report)
        cutoff = now - self.options.stale_seconds
        await self._sweep_uploads(cutoff, report)
        await self._sweep_versions(cutoff, report)
        if report.aborted_uploads or report.deleted_versions or report.markers:
            log.info(
                "S3 sweep under %r: aborted %d stale uploads, deleted %d unreferenced "
                "versions, took over %d shutdown hand-overs",
                self.prefix,
                report.aborted_uploads,
                report.deleted_versions,
                report.markers,
            )
        return report

    async def _list_all(self, prefix: str) -> builtins.list[dict[str, Any]]:
        objects: builtins.list[dict[str, Any]] = []
        params: dict[str, Any] = {"Prefix": prefix}
        while True:
            response = await self.call("list for the sweep", "list_objects_v2", **params)
            objects.extend(response.get("Contents", []))
            if not response.get("IsTruncated"):
                return objects
            params["ContinuationToken"] = response["NextContinuationToken"]

    async def _sweep_markers(self, now: float, report: SweepReport) -> None:
        for obj in await self._list_all(self.prefix + "gc/"):
            match = _MARKER_KEY.fullmatch(obj["Key"][len(self.prefix) :])
            raw = await self.blocking(self._read_object, obj["Key"]) if match else None
            if match is None or raw is None:
                continue
            try:
                jobs = json.loads(raw)
                delay = max(0.0, int(match.group(1)) / 1000 - now)
                for job in jobs:
                    self.janitor.add("delete", str(job["key"]), str(job["index"]), delay)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("S3 sweep ignores unreadable marker %s: %s", obj["Key"], exc)
            await self.call("delete a marker", "delete_object", Key=obj["Key"])
            report.markers += 1

    async def _sweep_uploads(self, cutoff: float, report: SweepReport) -> None:
        aborted: set[str] = set()

        async def abort(key: str, upload_id: str) -> None:
            if upload_id not in aborted:
                await self.call(
                    "abort a stale multipart upload",
                    "abort_multipart_upload",
                    missing_ok=True,
                    Key=key,
                    UploadId=upload_id,
                )
                aborted.add(upload_id)
                report.aborted_uploads += 1

        # Every upload in the bucket, filtered here (AWS S3; MinIO lists uploads only for
        # an exact key or the whole bucket, and the latter only since its last start).
        params: dict[str, Any] = {}
        while True:
            response = await self.call("list multipart uploads", "list_multipart_uploads", **params)
            for upload in response.get("Uploads", []):
                key = upload["Key"]
                ours = key.startswith(self.prefix) and _DATA_KEY.fullmatch(key[len(self.prefix) :])
                if ours and upload["Initiated"].timestamp() < cutoff:
                    await abort(key, upload["UploadId"])
            if not response.get("IsTruncated"):
                break
            params["KeyMarker"] = response["NextKeyMarker"]
            params["UploadIdMarker"] = response["NextUploadIdMarker"]
        # The journal: the key of every multipart upload this driver started, so the
        # uploads of a crashed sidecar are found by exact key on any S3.
        for entry in await self._list_all(self.prefix + "up/"):
            if entry["LastModified"].timestamp() >= cutoff:
                continue
            raw = await self.blocking(self._read_object, entry["Key"])
            key = raw.decode(errors="replace") if raw is not None else ""
            if key.startswith(self.prefix) and _DATA_KEY.fullmatch(key[len(self.prefix) :]):
                response = await self.call(
                    "list multipart uploads", "list_multipart_uploads", Prefix=key
                )
                for upload in response.get("Uploads", []):
                    if upload["Key"] == key:
                        await abort(key, upload["UploadId"])
            await self.call("drop a journal entry", "delete_object", Key=entry["Key"])

    async def _sweep_versions(self, cutoff: float, report: SweepReport) -> None:
        groups: dict[tuple[str, str], builtins.list[str]] = {}
        for obj in await self._list_all(self.prefix):
            match = _DATA_KEY.fullmatch(obj["Key"][len(self.prefix) :])
            if match and obj["LastModified"].timestamp() < cutoff:
                groups.setdefault((match.group(1), match.group(2)), []).append(obj["Key"])
        for (scope, _), keys in groups.items():
            head = await self.call(
                "read a version's metadata", "head_object", missing_ok=True, Key=keys[0]
            )
            encoded = (head or {}).get("Metadata", {}).get(INDEX_META)
            if head is None or not encoded or decode_id(encoded) is None:
                continue
            index = f"{self.prefix}{scope}i/{encoded}"
            raw = await self.blocking(self._read_object, index)
            current = None
            if raw is not None:
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    current = json.loads(raw).get("version")
            for key in keys:
                if current is None or not key.endswith("/" + str(current)):
                    await self.call("delete an unreferenced version", "delete_object", Key=key)
                    report.deleted_versions += 1

    def start(self) -> None:
        self.janitor.start()
        if self.options.sweep_on_start:
            self._sweep_task = asyncio.get_running_loop().create_task(self._sweep_at_start())

    async def _sweep_at_start(self) -> SweepReport:
        try:
            return await self.sweep()
        except Exception as exc:
            log.warning("S3 sweep at start under %r failed: %s", self.prefix, exc)
            return SweepReport()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sweep_task is not None:
            self._sweep_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweep_task
        jobs = await self.janitor.stop()
        try:
            await asyncio.wait_for(self._finish(jobs), CLOSE_TIMEOUT_SECONDS)
        except Exception as exc:
            log.warning(
                "S3 cleanup at shutdown did not finish (%s); the sweep at the next start "
                "removes leftovers older than stale_seconds",
                exc,
            )
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
            with contextlib.suppress(Exception):
                self.client.close()

    async def _finish(self, jobs: builtins.list[_Job]) -> None:
        """At shutdown: abort uploads and run due deletions now; hand later deletions over
        to the next start through marker objects."""
        now = time.monotonic()
        later: builtins.list[_Job] = []
        for job in jobs:
            if job.kind == "delete" and job.due > now:
                later.append(job)
            else:
                await self.run_job(job)
        wall = time.time()
        for start in range(0, len(later), MARKER_BATCH):
            batch = later[start : start + MARKER_BATCH]
            due_ms = int((wall + max(j.due for j in batch) - now) * 1000)
            await self.call(
                "hand over deletions",
                "put_object",
                Key=f"{self.prefix}gc/{due_ms:013d}-{uuid.uuid4().hex}",
                Body=json.dumps([{"key": j.key, "index": j.ref} for j in batch]).encode(),
                ContentType="application/json",
            )


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


_session_lock = threading.Lock()
_session: boto3.session.Session | None = None


def _make_client(options: S3Options) -> Any:
    credentials: dict[str, str] = {}
    if options.access_key_env and options.secret_key_env:
        credentials["aws_access_key_id"] = os.environ[options.access_key_env]
        credentials["aws_secret_access_key"] = os.environ[options.secret_key_env]
        if options.session_token_env:
            credentials["aws_session_token"] = os.environ[options.session_token_env]
    style = options.addressing_style
    if style == "auto" and options.endpoint:
        style = "path"
    config = botocore.config.Config(
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        retries={"max_attempts": options.max_attempts, "mode": "standard"},
        max_pool_connections=options.max_concurrency,
        s3={"addressing_style": style},
    )
    global _session
    # A boto3 session loads its data files when made (~0.3 s); clients from one shared
    # session are cheap. Sessions are not thread-safe, so clients are made under a lock.
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        return _session.client(
            "s3",
            endpoint_url=options.endpoint,
            region_name=options.region,
            config=config,
            **credentials,
        )


def _check_limits(options: S3Options, ctx: BlockContext) -> None:
    settings = ctx.config.blocks.artifact
    where = "s3 driver for artifact"
    key_bytes = key_overhead(options.prefix) + encoded_length(settings.max_id_bytes)
    if key_bytes > MAX_KEY_BYTES:
        raise DriverConfigError(
            f"{where}: ids of blocks.artifact.max_id_bytes ({settings.max_id_bytes}) under "
            f"prefix {options.prefix!r} make S3 keys of {key_bytes} bytes, over S3's limit of "
            f"{MAX_KEY_BYTES}; shorten blocks.artifact.options.prefix or lower max_id_bytes"
        )
    sizes = [settings.max_size_bytes] + [
        ns.max_size_bytes for ns in settings.namespaces.values() if ns.max_size_bytes is not None
    ]
    if max(sizes) > MAX_PARTS * options.part_size:
        raise DriverConfigError(
            f"{where}: artifacts of up to {max(sizes)} bytes (max_size_bytes) need more than "
            f"S3's {MAX_PARTS} parts of part_size {options.part_size}; raise "
            "blocks.artifact.options.part_size"
        )


async def create(options: dict[str, Any], ctx: BlockContext) -> S3Artifacts:
    parsed = parse_options("artifact", "s3", S3Options, options)
    _check_limits(parsed, ctx)
    try:
        client = await asyncio.to_thread(_make_client, parsed)
    except (botocore.exceptions.BotoCoreError, ValueError) as exc:
        raise DriverConfigError(f"s3 driver for artifact: cannot make an S3 client: {exc}") from exc
    driver = S3Artifacts(parsed, client)
    try:
        await driver._ready()
    except Unavailable as exc:
        # Like a database that starts after the sidecar: serve, report unhealthy, retry on use.
        log.warning("%s; the artifact block reports unhealthy until S3 answers", exc.message)
    except MemError as exc:
        await driver.close()
        raise DriverConfigError(f"s3 driver for artifact: {exc.message}") from exc
    driver.start()
    return driver
