"""Chat sessions on the episodic block, shared by the LangChain and LlamaIndex adapters.

A chat session is an episodic session: each message is one event of type "message" whose
role is the framework's role and whose payload is the framework's own serialization of
the message, tagged with `metadata.format` so a reader knows which codec wrote it.

Every operation is written once, as a coroutine over the async episodic client; `call`
runs it for a framework's sync method and `acall` for its async one, whichever SDK
client (MemSidecar or AsyncMemSidecar) the adapter was given.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from memsidecar.client import AsyncMemSidecar, MemSidecar
from memsidecar.client.blocks.episodic import AsyncEpisodic, Event

MESSAGE = "message"

# Struct numbers are doubles: larger integers would come back changed, so they are refused.
_MAX_EXACT_INT = 2**53

P = ParamSpec("P")
T = TypeVar("T")


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
    """One episodic namespace of chat sessions, reached through a sync or async client."""

    def __init__(self, client: MemSidecar | AsyncMemSidecar, namespace: str, fmt: str) -> None:
        if not isinstance(namespace, str) or not namespace:
            raise ValueError(f"namespace must be a non-empty string, got {namespace!r}")
        self.namespace = namespace
        self.format = fmt
        self._client = client
        self._owned = False
        self._loop: asyncio.AbstractEventLoop | None
        if isinstance(client, MemSidecar):
            # The blocking client is the async client driven by its own loop thread: our
            # coroutines run on that loop, where its channel lives.
            self.episodic: AsyncEpisodic = client._async.episodic
            self._loop = client._runner.loop
        elif isinstance(client, AsyncMemSidecar):
            self.episodic = client.episodic
            # The loop the async client is used on: known now if one is running, else from
            # the first async call.
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self._loop = None
        else:
            raise TypeError(
                f"client must be a MemSidecar or AsyncMemSidecar, got {type(client).__name__}"
            )

    def own_client(self) -> None:
        """The adapter made the client itself (from_env): `close` closes it."""
        self._owned = True

    def close(self) -> None:
        """Close the client if the adapter owns it; a client passed in stays open."""
        if self._owned and isinstance(self._client, MemSidecar):
            self._owned = False
            self._client.close()

    def call(self, op: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `op` for a sync method: blocks this thread until it is done on the client's loop."""
        loop = self._loop
        if loop is None:
            raise RuntimeError(
                "this adapter has an AsyncMemSidecar that has not been used from an event loop "
                "yet: call its async methods, or pass a MemSidecar for sync use"
            )
        if _running_loop() is loop:
            # Blocking the loop the client needs would deadlock.
            raise RuntimeError(
                "a sync method was called on the event loop its client runs on: "
                "await the async variant instead"
            )
        if loop.is_closed():
            raise RuntimeError("the client's event loop is closed (was the client closed?)")
        coro = _as_coroutine(op, *args, **kwargs)
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def acall(self, op: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `op` for an async method, on the client's loop (this one for an async client)."""
        current = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = current
        if self._loop is current:
            return await op(*args, **kwargs)
        if self._loop.is_closed():
            raise RuntimeError("the client's event loop is closed (was the client closed?)")
        coro = _as_coroutine(op, *args, **kwargs)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    # Operations (coroutines: run them through call / acall).

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


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _as_coroutine(op: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    # run_coroutine_threadsafe needs a coroutine; `op` may return any awaitable.
    return await op(*args, **kwargs)
