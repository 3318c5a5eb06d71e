"""LangChain chat message history on the episodic block (`pip install 'memsidecar[langchain]'`).

    history = MemSidecarChatMessageHistory("user-42", client=m, namespace="chat")
    history.add_messages([HumanMessage("hi"), AIMessage("hello")])

One history is one episodic session; each message is one event whose payload is
LangChain's own `message_to_dict` form. See docs/integrations/langchain.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import aclosing
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

from memsidecar.client import AsyncMemSidecar, MemSidecar
from memsidecar.integrations.bridge import Adapter, ClientBridge, on_own_client
from memsidecar.integrations.chat_log import ChatLog, Record, check_session_id

FORMAT = "langchain"


class MemSidecarChatMessageHistory(Adapter, BaseChatMessageHistory):
    """The chat history of one session, kept in an episodic namespace.

    `client` is a MemSidecar (sync and async methods work) or an AsyncMemSidecar (async
    methods). With `window=N`, `messages` / `aget_messages` return only the last N
    messages; everything stays stored until `clear`.
    """

    def __init__(
        self,
        session_id: str,
        *,
        client: MemSidecar | AsyncMemSidecar,
        namespace: str = "chat",
        window: int | None = None,
    ) -> None:
        super().__init__()
        self._bridge = ClientBridge(client)
        self.session_id = check_session_id(session_id)
        if window is not None and (
            isinstance(window, bool) or not isinstance(window, int) or window < 1
        ):
            raise ValueError(f"window must be a positive int or None, got {window!r}")
        self.window = window
        self._log = ChatLog(self._bridge.aio.episodic, namespace, FORMAT)

    @classmethod
    def from_env(
        cls,
        session_id: str,
        *,
        namespace: str = "chat",
        window: int | None = None,
        **client_kwargs: Any,
    ) -> MemSidecarChatMessageHistory:
        """A history with its own MemSidecar.from_env() client, closed by `close()`.
        For one history per request, share one client instead of this."""
        return on_own_client(
            lambda client: cls(session_id, client=client, namespace=namespace, window=window),
            **client_kwargs,
        )

    @property
    def namespace(self) -> str:
        return self._log.namespace

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The stored messages, oldest first (the last `window` of them with a window)."""
        return self._bridge.call(self._read())

    async def aget_messages(self) -> list[BaseMessage]:
        return await self._bridge.acall(self._read())

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self._bridge.call(self._append(messages))

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await self._bridge.acall(self._append(messages))

    def clear(self) -> None:
        """Delete the session's events from the sidecar (not only from the view)."""
        self._bridge.call(self._log.delete(self.session_id))

    async def aclear(self) -> None:
        await self._bridge.acall(self._log.delete(self.session_id))

    async def _read(self) -> list[BaseMessage]:
        payloads: list[Any] = []
        if self.window is None:
            async for event in self._log.events(self.session_id):
                payloads.append(event.payload)
            return messages_from_dict(payloads)
        # The last N: read newest first and stop there, whatever the session's length.
        async with aclosing(self._log.events(self.session_id, newest_first=True)) as events:
            async for event in events:
                payloads.append(event.payload)
                if len(payloads) == self.window:
                    break
        return messages_from_dict(payloads[::-1])

    async def _append(self, messages: Sequence[BaseMessage]) -> None:
        records = []
        for message in messages:
            if not isinstance(message, BaseMessage):
                raise TypeError(f"expected LangChain messages, got a {type(message).__name__}")
            records.append(Record(role=message.type, payload=message_to_dict(message)))
        await self._log.append(self.session_id, records)
