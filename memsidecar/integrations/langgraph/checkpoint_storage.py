"""What `MemSidecarSaver` does, written once against the async kv client (`_Store`).

Putting checkpoints (values first, so a checkpoint is visible only once every value it
names is stored), pending writes, reading and listing them newest first, deleting a
thread and pruning it to its newest checkpoints (keeping the ancestors a DeltaChannel
needs). The saver in `checkpoint.py` runs these on its client's event loop for both its
sync and async API; the key layout they use is in `checkpoint_layout.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from memsidecar.client import ConflictError, InvalidArgumentError
from memsidecar.client.blocks.kv import AsyncKV, Entry
from memsidecar.integrations.langgraph.checkpoint_layout import (
    _blob_key,
    _checkpoint_key,
    _enc,
    _pack,
    _Record,
    _Target,
    _thread_id,
    _unpack,
    _writes_prefix,
)

PRUNE_STRATEGIES = ("keep_latest", "delete")
# The sidecar's defaults: max_scan_limit and max_multiget_keys are 1000.
_PAGE = 500
# Deletes run concurrently, this many at a time.
_DELETE_BATCH = 64


class _Store:
    """Everything the saver does, written once against the async kv client."""

    def __init__(self, kv: AsyncKV, namespace: str, serde: SerializerProtocol) -> None:
        self.kv = kv
        self.namespace = namespace
        self.serde = serde

    async def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        target = _Target.of(config)
        stored: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = stored.pop("channel_values", {})
        # Blobs first: a checkpoint is visible only once every value it names is stored.
        # A new version without a value (a cleared or delta channel) gets no blob.
        blobs = []
        for channel, version in new_versions.items():
            if channel in values:
                kind, blob = self.serde.dumps_typed(values[channel])
                key = _blob_key(target.thread, target.ns, channel, version)
                blobs.append(self._put(key, _pack({"type": kind}, blob), f"channel {channel!r}"))
        await asyncio.gather(*blobs)
        cp_type, cp_bytes = self.serde.dumps_typed(stored)
        md_type, md_bytes = self.serde.dumps_typed(
            get_serializable_checkpoint_metadata(config, metadata)
        )
        header = {
            "id": checkpoint["id"],
            "parent": target.checkpoint_id,
            "checkpoint": cp_type,
            "checkpoint_len": len(cp_bytes),
            "metadata": md_type,
        }
        await self._put(
            _checkpoint_key(target.thread, target.ns, checkpoint["id"]),
            _pack(header, cp_bytes + md_bytes),
            "the checkpoint",
        )
        return target.config(checkpoint["id"])

    async def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> None:
        target = _Target.of(config)
        if target.checkpoint_id is None:
            raise ValueError("put_writes needs configurable.checkpoint_id in the config")
        prefix = _writes_prefix(target.thread, target.ns, target.checkpoint_id)

        async def put_one(idx: int, channel: str, value: Any) -> None:
            kind, blob = self.serde.dumps_typed(value)
            header = {"task": task_id, "channel": channel, "path": task_path, "type": kind}
            special = idx < 0
            try:
                # A retried task must not duplicate its writes (create-only), but the
                # special writes (error, interrupt, resume, ...) replace the earlier one.
                await self._put(
                    f"{prefix}{_enc(task_id)}/{idx}",
                    _pack(header, blob),
                    f"write to {channel!r}",
                    if_version=None if special else 0,
                )
            except ConflictError:
                pass

        await asyncio.gather(
            *(
                put_one(WRITES_IDX_MAP.get(channel, idx), channel, value)
                for idx, (channel, value) in enumerate(writes)
            )
        )

    async def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        target = _Target.of(config)
        if target.checkpoint_id is not None:
            key = _checkpoint_key(target.thread, target.ns, target.checkpoint_id)
            entry = await self.kv.get(self.namespace, key)
            if entry is None:
                return None
            return await self._tuple(_Record.load(key, entry.value))
        prefix = f"c/{_enc(target.thread)}/{_enc(target.ns)}/"
        newest = [e async for e in self.kv.scan(self.namespace, prefix, limit=1)]
        if not newest:
            return None
        return await self._tuple(_Record.load(newest[0].key, newest[0].value))

    async def list_checkpoints(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> AsyncGenerator[CheckpointTuple, None]:
        if limit is not None and limit <= 0:
            return
        target = _Target.of(config) if config is not None else None
        before_id = get_checkpoint_id(before) if before is not None else None
        if target is not None and target.checkpoint_id is not None:
            key = _checkpoint_key(target.thread, target.ns, target.checkpoint_id)
            entry = await self.kv.get(self.namespace, key)
            records = [_Record.load(key, entry.value)] if entry is not None else []
            async for found in self._matching(records, filter, before_id, limit):
                yield found
            return
        # Without checkpoint_ns in the config, every namespace of the thread is listed.
        has_ns = config is not None and "checkpoint_ns" in config.get("configurable", {})
        if target is None:
            prefix = "c/"
        elif has_ns:
            prefix = f"c/{_enc(target.thread)}/{_enc(target.ns)}/"
        else:
            prefix = f"c/{_enc(target.thread)}/"
        cursor = ""
        if before_id is not None and target is not None and has_ns:
            # Keys sort newest first, so the older checkpoints are the ones after `before`.
            cursor = _checkpoint_key(target.thread, target.ns, before_id)
        # Unless records are filtered here, a page of `limit` is exactly what is needed.
        filtered_here = bool(filter) or (before_id is not None and not cursor)
        page = min(limit, _PAGE) if limit and not filtered_here else _PAGE
        remaining = limit
        while True:
            entries = [
                e
                async for e in self.kv.scan(self.namespace, prefix, start_after=cursor, limit=page)
            ]
            if not entries:
                return
            cursor = entries[-1].key
            records = [_Record.load(e.key, e.value) for e in entries]
            async for found in self._matching(records, filter, before_id, remaining):
                yield found
                if remaining is not None:
                    remaining -= 1
            if remaining is not None and remaining <= 0:
                return

    async def _matching(
        self,
        records: Sequence[_Record],
        filter: dict[str, Any] | None,
        before_id: str | None,
        limit: int | None,
    ) -> AsyncIterator[CheckpointTuple]:
        count = 0
        for record in records:
            if limit is not None and count >= limit:
                return
            if before_id is not None and record.checkpoint_id >= before_id:
                continue
            metadata = self.serde.loads_typed(record.metadata)
            if filter and any(metadata.get(k) != v for k, v in filter.items()):
                continue
            count += 1
            yield await self._tuple(record, metadata)

    async def _tuple(self, record: _Record, metadata: Any = None) -> CheckpointTuple:
        target = record.target
        checkpoint: Checkpoint = self.serde.loads_typed(record.checkpoint)
        blob_keys = {
            _blob_key(target.thread, target.ns, channel, version): channel
            for channel, version in checkpoint["channel_versions"].items()
        }
        blobs, writes = await asyncio.gather(
            self._get_many(list(blob_keys)),
            self._pending_writes(target.thread, target.ns, record.checkpoint_id),
        )
        values = {}
        for key, data in blobs.items():
            header, payload = _unpack(data)
            values[blob_keys[key]] = self.serde.loads_typed((header["type"], payload))
        parent = target.config(record.parent_id) if record.parent_id else None
        return CheckpointTuple(
            config=target.config(record.checkpoint_id),
            checkpoint={**checkpoint, "channel_values": values},
            metadata=metadata if metadata is not None else self.serde.loads_typed(record.metadata),
            parent_config=parent,
            pending_writes=writes,
        )

    async def _pending_writes(self, thread: str, ns: str, checkpoint_id: str) -> list[PendingWrite]:
        found = []
        async for entry in self._scan(_writes_prefix(thread, ns, checkpoint_id)):
            header, payload = _unpack(entry.value)
            idx = int(entry.key.rsplit("/", 1)[1])
            value = self.serde.loads_typed((header["type"], payload))
            found.append((writes_sort_key(header["path"], header["task"], idx), header, value))
        found.sort(key=lambda w: w[0])
        return [(header["task"], header["channel"], value) for _, header, value in found]

    async def delete_thread(self, thread_id: str) -> None:
        thread = _enc(_thread_id(thread_id))
        # Checkpoints first, so a reader never finds one whose values are gone.
        for kind in ("c", "w", "b"):
            await self._delete(await self._keys(f"{kind}/{thread}/"))

    async def prune(self, thread_ids: Sequence[str], strategy: str) -> None:
        if strategy not in PRUNE_STRATEGIES:
            raise ValueError(
                f"unknown prune strategy {strategy!r}; use one of {', '.join(PRUNE_STRATEGIES)}"
            )
        for thread_id in thread_ids:
            if strategy == "delete":
                await self.delete_thread(thread_id)
            else:
                await self._keep_latest(_thread_id(thread_id))

    async def _keep_latest(self, thread: str) -> None:
        """Keep the newest checkpoint of each namespace, with its writes and values, plus
        the ancestors a DeltaChannel still needs to rebuild its value (see `_delta_chain`)."""
        t = _enc(thread)
        # Blob keys are read before the checkpoints, so a value written for a newer
        # checkpoint than the ones read below is never taken for an orphan.
        blob_keys = await self._keys(f"b/{t}/")
        checkpoint_keys = await self._keys(f"c/{t}/")
        newest: dict[str, str] = {}
        for key in checkpoint_keys:  # newest first within each namespace
            newest.setdefault(key.split("/")[2], key)
        kept_keys: set[str] = set()
        kept_ids: set[tuple[str, str]] = set()  # (encoded ns, encoded id)
        referenced: set[str] = set()
        for key in newest.values():
            for record, checkpoint in await self._delta_chain(key, set(blob_keys)):
                ns = _enc(record.target.ns)
                kept_keys.add(record.key)
                kept_ids.add((ns, _enc(record.checkpoint_id)))
                referenced.update(
                    _blob_key(thread, record.target.ns, channel, version)
                    for channel, version in checkpoint["channel_versions"].items()
                )
        await self._delete([k for k in checkpoint_keys if k not in kept_keys])
        write_keys = await self._keys(f"w/{t}/")
        await self._delete([k for k in write_keys if tuple(k.split("/")[2:4]) not in kept_ids])
        await self._delete([k for k in blob_keys if k not in referenced])

    async def _delta_chain(self, key: str, blob_keys: set[str]) -> list[tuple[_Record, Checkpoint]]:
        """The checkpoint at `key` and the ancestors it cannot lose.

        A DeltaChannel stores a value only at snapshot steps; in between, its value is
        rebuilt from the writes of the ancestors back to the nearest one holding a
        stored value. Such channels are the ones counted in the checkpoint's metadata
        `counters_since_delta_snapshot`; the chain stops once each has a stored value."""
        chain: list[tuple[_Record, Checkpoint]] = []
        pending: set[str] | None = None
        next_key: str | None = key
        while next_key is not None:
            entry = await self.kv.get(self.namespace, next_key)
            if entry is None:
                break
            record = _Record.load(next_key, entry.value)
            checkpoint: Checkpoint = self.serde.loads_typed(record.checkpoint)
            chain.append((record, checkpoint))
            target = record.target
            if pending is None:
                metadata = self.serde.loads_typed(record.metadata)
                pending = set(metadata.get("counters_since_delta_snapshot") or ())
            pending = {
                channel
                for channel in pending
                if channel in checkpoint["channel_versions"]
                and _blob_key(
                    target.thread, target.ns, channel, checkpoint["channel_versions"][channel]
                )
                not in blob_keys
            }
            if not pending or record.parent_id is None:
                break
            next_key = _checkpoint_key(target.thread, target.ns, record.parent_id)
        return chain

    # --- kv helpers

    async def _put(
        self, key: str, value: bytes, what: str, *, if_version: int | None = None
    ) -> None:
        try:
            await self.kv.put(self.namespace, key, value, if_version=if_version)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(
                exc.code, f"storing {what} under kv key {key!r}: {exc.message}"
            ) from exc

    async def _scan(self, prefix: str, *, keys_only: bool = False) -> AsyncIterator[Entry]:
        """Every entry under `prefix`, a page at a time (the SDK's scan_all has no
        keys_only)."""
        cursor = ""
        while True:
            page = [
                e
                async for e in self.kv.scan(
                    self.namespace, prefix, start_after=cursor, limit=_PAGE, keys_only=keys_only
                )
            ]
            for entry in page:
                yield entry
            if len(page) < _PAGE:
                return
            cursor = page[-1].key

    async def _keys(self, prefix: str) -> list[str]:
        return [e.key async for e in self._scan(prefix, keys_only=True)]

    async def _get_many(self, keys: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), _PAGE):
            entries = await self.kv.get_many(self.namespace, keys[start : start + _PAGE])
            found.update((k, e.value) for k, e in entries.items())
        return found

    async def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            await asyncio.gather(
                *(self.kv.delete(self.namespace, k) for k in keys[start : start + _DELETE_BATCH])
            )
