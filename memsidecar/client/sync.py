"""The blocking client: the async client driven by a private event-loop thread.

One implementation serves both APIs. The loop thread also runs background work
such as session heartbeats while the caller's thread is busy.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from memsidecar.client.aio import AsyncMemSidecar

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="memsidecar-client", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.run(agen.__anext__())  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                self.run(aclose())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


class Blocking:
    """Wraps an async object: coroutine methods block, async generators become iterators,
    and returned objects that are themselves async APIs (Bridged) are wrapped too."""

    def __init__(self, inner: Any, runner: LoopThread) -> None:
        self._inner = inner
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if inspect.isasyncgenfunction(attr):
            return lambda *a, **k: self._runner.iterate(attr(*a, **k))
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **k: self._wrap(self._runner.run(attr(*a, **k)))
        return self._wrap(attr)

    def _wrap(self, value: Any) -> Any:
        return Blocking(value, self._runner) if isinstance(value, Bridged) else value

    def __enter__(self) -> Blocking:
        self._wrap(self._runner.run(self._inner.__aenter__()))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._runner.run(self._inner.__aexit__(*exc_info))

    def __repr__(self) -> str:
        return f"Blocking({self._inner!r})"


class Bridged:
    """Marker for async API objects the blocking client hands out wrapped."""


class MemSidecar:
    """`with MemSidecar.from_env() as m: m.kv.put("scratch", "k", b"v", ttl=300)`.

    Takes the same arguments as AsyncMemSidecar. Block objects (m.kv,
    m.episodic, ...) have the async client's methods, blocking.
    """

    def __init__(self, **kwargs: Any) -> None:
        # Imported here: block clients import Bridged from this module.
        from memsidecar.client.aio import AsyncMemSidecar

        self._runner = LoopThread()

        async def make() -> AsyncMemSidecar:
            return AsyncMemSidecar(**kwargs)

        try:
            self._async = self._runner.run(make())
        except BaseException:
            self._runner.stop()
            raise
        self.target = self._async.target
        self.kv: Any = Blocking(self._async.kv, self._runner)
        self.episodic: Any = Blocking(self._async.episodic, self._runner)
        self.semantic: Any = Blocking(self._async.semantic, self._runner)
        self.artifact: Any = Blocking(self._async.artifact, self._runner)
        self.lease: Any = Blocking(self._async.lease, self._runner)
        self.session: Any = Blocking(self._async.session, self._runner)

    @classmethod
    def from_env(cls, **kwargs: Any) -> MemSidecar:
        """Connect where the environment says: MEMSIDECAR_SOCKET (or MEMSIDECAR_TARGET)."""
        return cls(**kwargs)

    @property
    def aio(self) -> AsyncMemSidecar:
        """The AsyncMemSidecar this client drives. Use it only on `loop` (e.g. through
        `asyncio.run_coroutine_threadsafe(coro, m.loop)`): its channel lives there."""
        return self._async

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop `aio` runs on, in this client's own thread; closed by `close()`."""
        return self._runner.loop

    def wait_ready(self, timeout: float = 10.0) -> None:
        self._runner.run(self._async.wait_ready(timeout))

    def close(self) -> None:
        try:
            self._runner.run(self._async.close())
        finally:
            self._runner.stop()

    def __enter__(self) -> MemSidecar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
