"""Chat sessions on the episodic block, shared by the LangChain and LlamaIndex adapters.

A chat session is an episodic session: each message is one event of type "message" whose
role is the framework's role and whose payload is the framework's own serialization of
the message, tagged with `metadata.format` so a reader knows which codec wrote it.

Every operation is written once, as a coroutine over the async episodic client; the
adapters run it for their sync and async methods through a ClientBridge (bridge.py).
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from memsidecar.client.blocks.episodic import AsyncEpisodic, Event

MESSAGE = "message"

# Struct numbers are doubles: larger integers would come back changed, so they are refused.
_MAX_EXACT_INT = 2**53


def check_session_id(session_id: object, what: str = "session_id") -> str:
    # An empty session id means "no session" to the episodic block: the messages would be
    # written outside any session and never read back.
    if not isinstance(session_id, str) or not session_id:
        raise ValueError(f"{what} must be a non-empty string, got {session_id!r}")
    return session_id


def check_json(value: Any, where: str) -> None:
    """Raise ValueError unless `value` survives the episodic payload (JSON) unchanged, so a
    message is refused when written instead of read back different."""
    if value is None or isinstance(value, str | bool):
        return
    if isinstance(value, int):
        if abs(value) > _MAX_EXACT_INT:
            raise ValueError(f"{where}: integer {value} is beyond 2^53; store it as a string")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a JSON number")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a string")
            check_json(item, f"{where}.{key}")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_json(item, f"{where}[{i}]")
        return
    raise ValueError(f"{where}: a {type(value).__name__} is not JSON-serializable")


@dataclass(frozen=True)
class Record:
    """An event to append: a message (role and serialized message) or an adapter's marker."""

    role: str
    payload: Any
    type: str = MESSAGE
    metadata: dict[str, Any] = field(default_factory=dict)


class ChatLog:
    """One episodic namespace of chat sessions: the operations, as coroutines over the
    async episodic client (an adapter runs them through its ClientBridge)."""

    def __init__(self, episodic: AsyncEpisodic, namespace: str, fmt: str) -> None:
        if not isinstance(namespace, str) or not namespace:
            raise ValueError(f"namespace must be a non-empty string, got {namespace!r}")
        self.namespace = namespace
        self.format = fmt
        self.episodic = episodic

    async def append(self, session_id: str, records: Sequence[Record]) -> list[Event]:
        """Append the records in order. All are checked first, so a bad one writes nothing;
        each append is its own call, so a failure part-way leaves the ones before it."""
        for i, record in enumerate(records):
            check_json(record.payload, f"{record.type} {i}")
        return [
            await self.episodic.append(
                self.namespace,
                record.type,
                record.payload,
                role=record.role,
                session_id=session_id,
                metadata={"format": self.format, **record.metadata},
            )
            for record in records
        ]

    async def events(
        self, session_id: str, *, types: tuple[str, ...] = (MESSAGE,), newest_first: bool = False
    ) -> AsyncGenerator[Event, None]:
        """The session's events of these types, oldest first (or newest first), paging as
        it goes: close the iterator early (contextlib.aclosing) to read no further."""
        async for event in self.episodic.range_all(
            self.namespace, session_id=session_id, types=types, reverse=newest_first
        ):
            if event.metadata.get("format") != self.format:
                writer = event.metadata.get("format") or "another writer"
                raise ValueError(
                    f"event {event.cursor} ({event.type}) of session {session_id!r} in "
                    f"namespace {self.namespace!r} was written by {writer!r}, not "
                    f"{self.format!r}: keep each framework's chats in their own namespace"
                )
            yield event

    async def delete(self, session_id: str) -> int:
        return await self.episodic.delete_session(self.namespace, session_id)

    async def session_ids(self) -> list[str]:
        return [s.session_id async for s in self.episodic.sessions(self.namespace)]
