"""A LangGraph checkpointer whose state lives in the sidecar's kv block.

    from memsidecar.integrations.langgraph.checkpoint import MemSidecarSaver

    with MemSidecarSaver.from_env() as saver:
        graph = builder.compile(checkpointer=saver)

The checkpoints live in one kv namespace (default ``langgraph``), laid out as
``checkpoint_layout.py`` describes: checkpoints, channel values shared by version, and
pending writes, each under its own key prefix. This module is the saver, LangGraph's
sync and async API over the storage logic in ``checkpoint_storage.py``.
See docs/integrations/langgraph-checkpoint.md.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from memsidecar.client import AsyncMemSidecar, MemSidecar
from memsidecar.integrations.bridge import Adapter, ClientBridge, on_own_client
from memsidecar.integrations.langgraph.checkpoint_storage import (
    PRUNE_STRATEGIES as PRUNE_STRATEGIES,  # re-exported: public here before the split
)
from memsidecar.integrations.langgraph.checkpoint_storage import _Store

DEFAULT_NAMESPACE = "langgraph"


class MemSidecarSaver(Adapter, BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on the sidecar's kv block.

    `client` is a `MemSidecar` (sync and async graph calls both work) or an
    `AsyncMemSidecar` (async calls; sync ones only from another thread). `namespace`
    is the kv namespace holding the checkpoints; values are serialized with `serde`
    (LangGraph's JsonPlusSerializer by default). The saver does not close a client it
    was given; one made by `from_env()` is closed by `close()` or the `with` block.
    """

    def __init__(
        self,
        client: MemSidecar | AsyncMemSidecar,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self._bridge = ClientBridge(client)
        self.namespace = namespace

    @classmethod
    def from_env(
        cls,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        serde: SerializerProtocol | None = None,
        **client_options: Any,
    ) -> MemSidecarSaver:
        """A saver on a new MemSidecar connected where the environment says
        (MEMSIDECAR_SOCKET or MEMSIDECAR_TARGET); `close()` closes that client."""
        return on_own_client(
            lambda client: cls(client, namespace=namespace, serde=serde), **client_options
        )

    @property
    def _store(self) -> _Store:
        # Built per call: `with_allowlist` clones the saver with another serde.
        return _Store(self._bridge.aio.kv, self.namespace, self.serde)

    # sync API

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._bridge.call(self._store.get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from self._bridge.iterate(self._store.list_checkpoints(config, filter, before, limit))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._bridge.call(self._store.put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._bridge.call(self._store.put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._bridge.call(self._store.delete_thread(thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """`keep_latest` keeps the newest checkpoint of each checkpoint namespace (with
        its pending writes, and the ancestors a DeltaChannel needs); `delete` removes
        the threads. Run it on threads that are not running."""
        self._bridge.call(self._store.prune(thread_ids, strategy))

    # async API

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._bridge.acall(self._store.get_tuple(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        async for found in self._bridge.aiterate(
            self._store.list_checkpoints(config, filter, before, limit)
        ):
            yield found

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._bridge.acall(self._store.put(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._bridge.acall(self._store.put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._bridge.acall(self._store.delete_thread(thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """The async form of `prune`."""
        await self._bridge.acall(self._store.prune(thread_ids, strategy))

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Like InMemorySaver's and PostgresSaver's: a zero-padded counter (so versions
        sort) plus a random part, so two forks of a thread never store different values
        under one (channel, version) blob key."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"


__all__ = ["DEFAULT_NAMESPACE", "MemSidecarSaver"]
