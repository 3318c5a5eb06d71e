"""Running the async SDK client's coroutines for an adapter's sync and async methods.

Every integration writes each operation once, as a coroutine over the async client
(`ClientBridge.aio`), and runs it with `call` from its sync methods and `acall` from
its async ones, whichever SDK client it was given:

- a `MemSidecar` drives its AsyncMemSidecar on its own loop thread (`MemSidecar.loop`):
  sync calls block on that loop, async calls await it from any loop;
- an `AsyncMemSidecar` belongs to the loop it is used on: async calls there run
  directly, async calls from another loop hop to it, and sync calls work only from
  other threads (blocking the client's own loop would deadlock it).

Framework-free on purpose: `import memsidecar.integrations` must import no framework.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from memsidecar.client import AsyncMemSidecar, MemSidecar

__all__ = ["Adapter", "ClientBridge", "on_own_client"]

T = TypeVar("T")
A = TypeVar("A", bound="Adapter")


class ClientBridge:
    """The async client behind a MemSidecar or AsyncMemSidecar, and its loop.

    `owned` is the client `close()` closes: one the adapter made itself (`from_env`);
    a client passed in is never closed here.
    """

    def __init__(self, client: MemSidecar | AsyncMemSidecar) -> None:
        self._loop: asyncio.AbstractEventLoop | None
        if isinstance(client, MemSidecar):
            self.aio = client.aio
            self._loop = client.loop
        elif isinstance(client, AsyncMemSidecar):
            self.aio = client
            # Known now if the adapter is made on a running loop, else the first acall's.
            self._loop = _running_loop()
        else:
            raise TypeError(
                f"client must be a MemSidecar or an AsyncMemSidecar, not {type(client).__name__}"
            )
        self.owned: MemSidecar | None = None

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` for a sync method: block this thread until it is done on the client's
        loop. Raises RuntimeError (and never runs `coro`) where that cannot work."""
        try:
            loop = self._sync_loop()
        except BaseException:
            coro.close()
            raise
        return _submit(coro, loop).result()

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` for an async method, on the client's loop (this one for an async
        client used here)."""
        current = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = current
        if self._loop is current:
            return await coro
        return await asyncio.wrap_future(_submit(coro, self._loop))

    def iterate(self, agen: AsyncGenerator[T, None]) -> Iterator[T]:
        """`agen` for a sync caller, one `call` per item; stopping early closes `agen`."""
        # Refused before `agen` starts, so there is nothing to close.
        self._sync_loop()
        try:
            while True:
                try:
                    item = self.call(_anext(agen))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            self.call(_aclose(agen))

    async def aiterate(self, agen: AsyncGenerator[T, None]) -> AsyncIterator[T]:
        """`agen` for an async caller, one `acall` per item; stopping early closes `agen`."""
        try:
            while True:
                try:
                    item = await self.acall(_anext(agen))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            await self.acall(_aclose(agen))

    def close(self) -> None:
        """Close the client if the adapter made it (once); a client passed in stays open."""
        owned, self.owned = self.owned, None
        if owned is not None:
            owned.close()

    def _sync_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            raise RuntimeError(
                "the AsyncMemSidecar's event loop is not known yet: make this object inside "
                "the loop that uses the client, or call its async methods first, or pass a "
                "MemSidecar for sync use"
            )
        if _running_loop() is loop:
            raise RuntimeError(
                "a sync method was called on the event loop its AsyncMemSidecar runs on, "
                "which it would block: await the async variant instead (or call the sync one "
                "from another thread)"
            )
        return loop


class Adapter:
    """An integration object on a ClientBridge (`self._bridge`): `close()`, `with` and
    `async with` close the client only if the adapter made it (`on_own_client`)."""

    if TYPE_CHECKING:
        # Set by each adapter's __init__ (declared here only for the type checker, so
        # pydantic-based adapters keep it a private attribute of their own).
        _bridge: ClientBridge

    def close(self) -> None:
        """Close the client if `from_env` made it; a client passed in stays open."""
        self._bridge.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # MemSidecar.close joins its loop thread: keep that off the caller's loop.
        await asyncio.to_thread(self.close)


def on_own_client(make: Callable[[MemSidecar], A], **client_kwargs: Any) -> A:
    """`make(client)` on a new `MemSidecar.from_env(**client_kwargs)` that the adapter's
    `close()` closes (for `from_env` constructors); the client is closed at once if
    `make` fails."""
    client = MemSidecar.from_env(**client_kwargs)
    try:
        adapter = make(client)
    except BaseException:
        client.close()
        raise
    adapter._bridge.owned = client
    return adapter


def _submit(coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop) -> Future[T]:
    # A loop that stopped would never run `coro`: waiting for it would hang.
    if not loop.is_running():
        coro.close()
        raise RuntimeError(
            "the client's event loop is not running: was the client closed? (an "
            "AsyncMemSidecar works only while the loop it was used on runs)"
        )
    return asyncio.run_coroutine_threadsafe(coro, loop)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# run_coroutine_threadsafe takes coroutines; __anext__ and aclose return other awaitables.


async def _anext(agen: AsyncGenerator[T, None]) -> T:
    return await agen.__anext__()


async def _aclose(agen: AsyncGenerator[Any, None]) -> None:
    await agen.aclose()
