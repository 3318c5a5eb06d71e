"""Artifacts on a local disk, one file per artifact, under a root directory.

Layout (ids never become paths, so `..`, `/` or absolute ids are harmless):

    <root>/<sha256(tenant NUL namespace)>/<sha256(tenant NUL namespace NUL id)>.blob

A .blob file holds the content, then a JSON trailer with the record (tenant,
namespace, id, size, sha256, content type, metadata, created_at), then a
16-byte footer: the trailer's length (8 bytes, big-endian) and a magic string.
Content and record live in one file, so a single rename replaces both and an
open file descriptor keeps reading the version it opened.

A write streams into `.tmp-<random>` in the same directory (hashing as it
goes), appends the trailer, fsyncs, renames over the final name and fsyncs
the directory. A failed or cancelled write removes its temp file; temp files
left by a crash are swept when the driver opens, once they are older than
`stale_temp_seconds`.

File I/O runs in worker threads so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import logging
import os
import re
import struct
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field

from memsidecar.defaults import runtime_dir
from memsidecar.sidecar.blocks.artifact.driver import ArtifactRecord, damaged
from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.registry import DriverConfigError, parse_options
from memsidecar.sidecar.models import StrictModel

log = logging.getLogger("memsidecar.artifact.localfs")

T = TypeVar("T")

MAGIC = b"MSART\x00v1"
FOOTER = struct.Struct(">Q8s")
BLOB_SUFFIX = ".blob"
TEMP_PREFIX = ".tmp-"
# A trailer is the record as JSON; metadata is bounded by the service, so this is generous.
MAX_TRAILER_BYTES = 16 * 1024 * 1024
_NAMESPACE_DIR = re.compile(r"[0-9a-f]{64}")
_OPEN_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
_OPEN_TEMP = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)
)


class LocalFSOptions(StrictModel):
    # Directory that holds every artifact; created (mode 0700) when missing.
    root: Path = Field(default_factory=lambda: runtime_dir() / "artifacts")
    # fsync files and directories on every write and delete (durability across power loss).
    fsync: bool = True
    # Temp files of interrupted uploads older than this are removed when the driver opens.
    stale_temp_seconds: float = Field(default=3600.0, gt=0)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


async def _blocking(
    fn: Callable[..., T], *args: Any, abandon: Callable[[T], None] | None = None
) -> T:
    """Run fn in a worker thread. If the caller is cancelled, wait for the thread to finish
    before re-raising, so cleanup never races a thread still using a file descriptor;
    `abandon` then releases what the thread produced (an open file, say)."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError as cancelled:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([task])
        if not task.cancelled() and task.exception() is None and abandon is not None:
            abandon(task.result())
        raise cancelled


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


@dataclass(frozen=True)
class _Trailer:
    tenant: str
    namespace: str
    record: ArtifactRecord

    def encode(self) -> bytes:
        body = json.dumps(
            {"tenant": self.tenant, "namespace": self.namespace, **asdict(self.record)},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        return body + FOOTER.pack(len(body), MAGIC)


def _read_trailer(fd: int, where: str, artifact_id: str) -> tuple[_Trailer, int]:
    """The trailer of an open .blob file and the file's content size."""
    total = os.fstat(fd).st_size
    if total < FOOTER.size:
        raise damaged(artifact_id, where, "file too short for a footer")
    length, magic = FOOTER.unpack(os.pread(fd, FOOTER.size, total - FOOTER.size))
    if magic != MAGIC or length > min(MAX_TRAILER_BYTES, total - FOOTER.size):
        raise damaged(artifact_id, where, "bad footer")
    content_size = total - FOOTER.size - length
    try:
        raw = json.loads(os.pread(fd, length, content_size))
        trailer = _Trailer(
            tenant=raw.pop("tenant"),
            namespace=raw.pop("namespace"),
            record=ArtifactRecord(**raw),
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise damaged(artifact_id, where, f"unreadable record: {exc}") from exc
    if trailer.record.size != content_size:
        raise damaged(
            artifact_id,
            where,
            f"record says {trailer.record.size} bytes, file holds {content_size}",
        )
    return trailer, content_size


class LocalFSReader:
    def __init__(self, fd: int, record: ArtifactRecord, where: str) -> None:
        self._fd: int | None = fd
        self._record = record
        self._where = where

    @property
    def info(self) -> ArtifactRecord:
        return self._record

    async def read(self, offset: int, length: int, chunk_bytes: int) -> AsyncGenerator[bytes, None]:
        position, end = offset, offset + length
        while position < end:
            if self._fd is None:
                raise RuntimeError("read from a closed artifact reader")
            data = await _blocking(os.pread, self._fd, min(chunk_bytes, end - position), position)
            if not data:
                raise damaged(self._record.id, self._where, f"content ends early at {position}")
            position += len(data)
            yield data

    async def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class _TempFile:
    """An upload in progress: a temp file in the artifact's directory, hashed as it grows."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        self.fd: int | None = None
        self.size = 0
        self.digest = hashlib.sha256()

    def open(self) -> None:
        self.fd = os.open(self.path, _OPEN_TEMP, 0o600)

    def write(self, chunk: bytes) -> None:
        assert self.fd is not None
        self.digest.update(chunk)
        _write_all(self.fd, chunk)
        self.size += len(chunk)

    def commit(self, final: Path, trailer: _Trailer, fsync: bool) -> None:
        assert self.fd is not None
        _write_all(self.fd, trailer.encode())
        if fsync:
            os.fsync(self.fd)
        fd, self.fd = self.fd, None
        os.close(fd)
        os.replace(self.path, final)
        if fsync:
            _fsync_dir(final.parent)

    def discard(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class LocalFSArtifacts:
    def __init__(self, options: LocalFSOptions) -> None:
        self.root = options.root
        self.fsync = options.fsync
        self.stale_temp_seconds = options.stale_temp_seconds
        # Per namespace directory: file name -> ((inode, mtime_ns, size), trailer), so List
        # reads only the trailers of files that changed since the last listing.
        self._list_cache: dict[str, dict[str, tuple[tuple[int, int, int], _Trailer]]] = {}

    def _dir(self, tenant: str, namespace: str) -> Path:
        return self.root / _digest(tenant, namespace)

    def _path(self, tenant: str, namespace: str, artifact_id: str) -> Path:
        name = _digest(tenant, namespace, artifact_id) + BLOB_SUFFIX
        return self._dir(tenant, namespace) / name

    def _ensure_dir(self, directory: Path) -> None:
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            return
        if self.fsync:
            _fsync_dir(self.root)

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
        final = self._path(tenant, namespace, artifact_id)
        await _blocking(self._ensure_dir, final.parent)
        temp = _TempFile(final.parent)
        try:
            await _blocking(temp.open)
            async for chunk in chunks:
                await _blocking(temp.write, chunk)
            record = ArtifactRecord(
                id=artifact_id,
                size=temp.size,
                sha256=temp.digest.hexdigest(),
                content_type=content_type,
                metadata=metadata,
                created_at=now,
            )
            await _blocking(temp.commit, final, _Trailer(tenant, namespace, record), self.fsync)
            return record
        except BaseException:
            # Runs after any worker thread has let go of the file (see _blocking).
            temp.discard()
            raise

    def _open_fd(
        self, tenant: str, namespace: str, artifact_id: str
    ) -> tuple[int, ArtifactRecord, str] | None:
        """An open descriptor on the artifact's file and its record, or None when missing."""
        path = self._path(tenant, namespace, artifact_id)
        try:
            fd = os.open(path, _OPEN_READ)
        except FileNotFoundError:
            return None
        try:
            trailer, _ = _read_trailer(fd, str(path), artifact_id)
            owner = (trailer.tenant, trailer.namespace, trailer.record.id)
            if owner != (tenant, namespace, artifact_id):
                raise damaged(artifact_id, str(path), "the file belongs to another artifact")
        except BaseException:
            os.close(fd)
            raise
        return fd, trailer.record, str(path)

    async def open(self, tenant: str, namespace: str, artifact_id: str) -> LocalFSReader | None:
        opened = await _blocking(
            self._open_fd,
            tenant,
            namespace,
            artifact_id,
            abandon=lambda got: os.close(got[0]) if got is not None else None,
        )
        return LocalFSReader(*opened) if opened is not None else None

    def _stat(self, tenant: str, namespace: str, artifact_id: str) -> ArtifactRecord | None:
        opened = self._open_fd(tenant, namespace, artifact_id)
        if opened is None:
            return None
        os.close(opened[0])
        return opened[1]

    async def stat(self, tenant: str, namespace: str, artifact_id: str) -> ArtifactRecord | None:
        return await _blocking(self._stat, tenant, namespace, artifact_id)

    def _delete(self, tenant: str, namespace: str, artifact_id: str) -> bool:
        path = self._path(tenant, namespace, artifact_id)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        if self.fsync:
            _fsync_dir(path.parent)
        return True

    async def delete(self, tenant: str, namespace: str, artifact_id: str) -> bool:
        return await _blocking(self._delete, tenant, namespace, artifact_id)

    def _scan(self, tenant: str, namespace: str) -> builtins.list[ArtifactRecord]:
        directory = self._dir(tenant, namespace)
        cached = self._list_cache.get(directory.name, {})
        fresh: dict[str, tuple[tuple[int, int, int], _Trailer]] = {}
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            self._list_cache.pop(directory.name, None)
            return []
        for entry in entries:
            if not entry.name.endswith(BLOB_SUFFIX):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
                hit = cached.get(entry.name)
                if hit is not None and hit[0] == key:
                    fresh[entry.name] = hit
                    continue
                fd = os.open(entry.path, _OPEN_READ)
                try:
                    trailer, _ = _read_trailer(fd, entry.path, "?")
                finally:
                    os.close(fd)
            except FileNotFoundError:
                continue  # deleted or replaced while listing
            except Exception as exc:
                log.warning("List skips unreadable artifact file %s: %s", entry.path, exc)
                continue
            if (trailer.tenant, trailer.namespace) != (tenant, namespace):
                continue
            fresh[entry.name] = (key, trailer)
        self._list_cache[directory.name] = fresh
        return [trailer.record for _, trailer in fresh.values()]

    async def list(
        self, tenant: str, namespace: str, prefix: str, start_after: str, limit: int
    ) -> builtins.list[ArtifactRecord]:
        records = await _blocking(self._scan, tenant, namespace)
        matching = sorted(
            (r for r in records if r.id.startswith(prefix) and r.id > start_after),
            key=lambda r: r.id,
        )
        return matching[:limit]

    def sweep_temp_files(self, now: float) -> int:
        """Remove temp files of uploads interrupted by a crash; returns how many."""
        removed = 0
        for directory in self.root.iterdir():
            if not _NAMESPACE_DIR.fullmatch(directory.name) or directory.is_symlink():
                continue
            for path in directory.glob(f"{TEMP_PREFIX}*"):
                with contextlib.suppress(FileNotFoundError):
                    if now - path.lstat().st_mtime > self.stale_temp_seconds:
                        path.unlink()
                        removed += 1
        return removed

    def _healthy(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK)

    async def health(self) -> bool:
        return await _blocking(self._healthy)

    async def close(self) -> None:
        self._list_cache.clear()


async def create(options: dict[str, Any], ctx: BlockContext) -> LocalFSArtifacts:
    parsed = parse_options("artifact", "localfs", LocalFSOptions, options)
    root = parsed.root
    where = f"localfs driver for artifact: blocks.artifact.options.root {str(root)!r}"
    if root.exists() and not root.is_dir():
        raise DriverConfigError(f"{where} exists and is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise DriverConfigError(f"{where} cannot be created: {exc.strerror}") from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise DriverConfigError(f"{where} must be a writable directory")
    driver = LocalFSArtifacts(parsed)
    # File times are real wall-clock times, so the sweep compares against the real clock.
    removed = await asyncio.to_thread(driver.sweep_temp_files, time.time())
    if removed:
        log.info("removed %d temp files of interrupted uploads under %s", removed, root)
    return driver
