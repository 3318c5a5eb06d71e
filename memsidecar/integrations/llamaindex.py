"""LlamaIndex chat store on the episodic block (`pip install 'memsidecar[llamaindex]'`).

    store = MemSidecarChatStore(client=m, namespace="chat")
    memory = ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="user-42")

Each key is one episodic session. The log is append-only, so what `get_messages` returns
(the live view) is defined by replaying the session's events in cursor order:

- `message` event without a generation: appended to the view (`add_message`);
- `message` event with `metadata.generation = g`: part of a replacement, not yet in view;
- `chat.set` event `{generation: g, count: n}`: the view becomes generation g's n
  messages (`set_messages` writes the messages first and this marker last, so a crash
  before the marker leaves the previous view intact);
- `chat.delete` event `{cursor: c}`: removes the message stored at cursor c
  (`delete_message`, `delete_last_message`).

Every change is therefore one committing append, ordered by its cursor. `delete_messages`
deletes the session's events for real. See docs/integrations/llamaindex.md.
"""

from __future__ import annotations

import uuid
from contextlib import aclosing
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store.base import BaseChatStore

from memsidecar.client import AsyncMemSidecar, MemSidecar
from memsidecar.client.blocks.episodic import Event
from memsidecar.integrations.bridge import Adapter, ClientBridge, on_own_client
from memsidecar.integrations.chat_log import MESSAGE, ChatLog, Record, check_session_id

FORMAT = "llamaindex"
SET = "chat.set"
DELETE = "chat.delete"


class MemSidecarChatStore(Adapter, BaseChatStore):
    """Chat histories by key, one episodic session per key, in one namespace.

    `client` is a MemSidecar (sync and async methods work) or an AsyncMemSidecar (async
    methods, and sync ones called from another thread, as ChatMemoryBuffer.aget does).
    """

    namespace: str = "chat"
    _bridge: ClientBridge = PrivateAttr()
    _log: ChatLog = PrivateAttr()

    def __init__(self, *, client: MemSidecar | AsyncMemSidecar, namespace: str = "chat") -> None:
        super().__init__()
        self._bridge = ClientBridge(client)
        self._log = ChatLog(self._bridge.aio.episodic, namespace, FORMAT)
        self.namespace = namespace

    @classmethod
    def from_env(cls, *, namespace: str = "chat", **client_kwargs: Any) -> MemSidecarChatStore:
        """A store with its own MemSidecar.from_env() client, closed by `close()` (or `with`)."""
        return on_own_client(
            lambda client: cls(client=client, namespace=namespace), **client_kwargs
        )

    @classmethod
    def class_name(cls) -> str:
        return "MemSidecarChatStore"

    # Sync and async variants run the same coroutine through the client's loop.

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        self._bridge.call(self._set(key, messages))

    async def aset_messages(self, key: str, messages: list[ChatMessage]) -> None:
        await self._bridge.acall(self._set(key, messages))

    def get_messages(self, key: str) -> list[ChatMessage]:
        return self._bridge.call(self._get(key))

    async def aget_messages(self, key: str) -> list[ChatMessage]:
        return await self._bridge.acall(self._get(key))

    def add_message(self, key: str, message: ChatMessage) -> None:
        self._bridge.call(self._add(key, message))

    async def async_add_message(self, key: str, message: ChatMessage) -> None:
        await self._bridge.acall(self._add(key, message))

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        """Delete the key's session and return its messages; None if the key has none stored."""
        return self._bridge.call(self._delete_all(key))

    async def adelete_messages(self, key: str) -> list[ChatMessage] | None:
        return await self._bridge.acall(self._delete_all(key))

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Remove and return the message at `idx` (negative counts from the end, as for a
        list); None if the key or index does not exist."""
        return self._bridge.call(self._delete_at(key, idx))

    async def adelete_message(self, key: str, idx: int) -> ChatMessage | None:
        return await self._bridge.acall(self._delete_at(key, idx))

    def delete_last_message(self, key: str) -> ChatMessage | None:
        return self._bridge.call(self._delete_at(key, -1))

    async def adelete_last_message(self, key: str) -> ChatMessage | None:
        return await self._bridge.acall(self._delete_at(key, -1))

    def get_keys(self) -> list[str]:
        """Every key with events stored, in key order (a key set to [] is still listed)."""
        return self._bridge.call(self._log.session_ids())

    async def aget_keys(self) -> list[str]:
        return await self._bridge.acall(self._log.session_ids())

    # The operations.

    async def _set(self, key: str, messages: list[ChatMessage]) -> None:
        key = check_session_id(key, "key")
        generation = uuid.uuid4().hex
        records = [_record(m, {"generation": generation}) for m in messages]
        # The marker commits the replacement: without it, the messages above stay invisible.
        commit = {"generation": generation, "count": len(records)}
        marker = Record(role="", payload=commit, type=SET)
        await self._log.append(key, [*records, marker])

    async def _get(self, key: str) -> list[ChatMessage]:
        return [_message(e) for e in await self._live(check_session_id(key, "key")) or []]

    async def _add(self, key: str, message: ChatMessage) -> None:
        await self._log.append(check_session_id(key, "key"), [_record(message)])

    async def _delete_all(self, key: str) -> list[ChatMessage] | None:
        live = await self._live(check_session_id(key, "key"))
        if live is None:
            return None
        # One call removes every event of the session; a message appended by another
        # writer between the read above and this is deleted without being returned.
        await self._log.delete(key)
        return [_message(e) for e in live]

    async def _delete_at(self, key: str, idx: int) -> ChatMessage | None:
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise TypeError(f"idx must be an int, got {idx!r}")
        live = await self._live(check_session_id(key, "key")) or []
        if not -len(live) <= idx < len(live):
            return None
        target = live[idx]
        # By cursor, not position: appends racing with this cannot shift what is deleted.
        marker = Record(role="", payload={"cursor": target.cursor}, type=DELETE)
        await self._log.append(key, [marker])
        return _message(target)

    async def _live(self, key: str) -> list[Event] | None:
        """The message events in the key's view, oldest first; None if the key has no
        events. Reads newest first and stops once the view is known: at the latest
        `chat.set` and its generation's messages."""
        newest_first: list[Event] = []
        deleted: set[int] = set()
        generation: str | None = None
        remaining = 0
        found = False
        events = self._log.events(key, types=(MESSAGE, SET, DELETE), newest_first=True)
        async with aclosing(events):
            async for event in events:
                found = True
                if generation is None:
                    if event.type == SET:
                        generation, remaining = event.payload["generation"], event.payload["count"]
                        if remaining == 0:
                            break
                    elif event.type == DELETE:
                        deleted.add(event.payload["cursor"])
                    elif "generation" not in event.metadata:
                        newest_first.append(event)
                elif event.type == MESSAGE and event.metadata.get("generation") == generation:
                    newest_first.append(event)
                    remaining -= 1
                    if remaining == 0:
                        break
        if not found:
            return None
        return [e for e in reversed(newest_first) if e.cursor not in deleted]


def _record(message: ChatMessage, metadata: dict[str, Any] | None = None) -> Record:
    if not isinstance(message, ChatMessage):
        raise TypeError(f"expected a LlamaIndex ChatMessage, got a {type(message).__name__}")
    return Record(
        role=message.role.value,
        payload=message.model_dump(mode="json"),
        metadata=metadata or {},
    )


def _message(event: Event) -> ChatMessage:
    return ChatMessage.model_validate(event.payload)
