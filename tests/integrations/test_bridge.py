"""ClientBridge and Adapter without a framework. The coroutines here never touch the
channel (gRPC connects lazily), so no sidecar is needed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator

import pytest

from memsidecar.client import AsyncMemSidecar, MemSidecar
from memsidecar.integrations.bridge import Adapter, ClientBridge, on_own_client

NOWHERE = "/nonexistent/memsidecar.sock"


async def current_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


class Counter:
    """An async generator that records whether it was closed."""

    def __init__(self) -> None:
        self.closed = False

    async def count(self, n: int) -> AsyncGenerator[int, None]:
        try:
            for i in range(n):
                yield i
        finally:
            self.closed = True


class Thing(Adapter):
    def __init__(self, client: MemSidecar | AsyncMemSidecar, fail: bool = False) -> None:
        self._bridge = ClientBridge(client)
        if fail:
            raise ValueError("bad option")


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # from_env connects where these say: nowhere, lazily.
    monkeypatch.setenv("MEMSIDECAR_SOCKET", NOWHERE)
    monkeypatch.delenv("MEMSIDECAR_TARGET", raising=False)


@pytest.fixture
def offline() -> Iterator[MemSidecar]:
    with MemSidecar(socket=NOWHERE) as client:
        yield client


def test_other_clients_are_refused() -> None:
    with pytest.raises(TypeError, match="MemSidecar or an AsyncMemSidecar, not str"):
        ClientBridge("unix:/tmp/x.sock")  # type: ignore[arg-type]


def test_a_sync_client_runs_everything_on_its_loop(offline: MemSidecar) -> None:
    bridge = ClientBridge(offline)
    assert bridge.aio is offline.aio
    assert bridge.call(current_loop()) is offline.loop
    assert asyncio.run(bridge.acall(current_loop())) is offline.loop

    counter = Counter()
    assert list(bridge.iterate(counter.count(3))) == [0, 1, 2]
    early = Counter()
    for _ in bridge.iterate(early.count(3)):
        break
    assert early.closed

    later = Counter()

    async def first_of_async() -> int:
        async for i in bridge.aiterate(later.count(3)):
            return i
        raise AssertionError("empty")

    assert asyncio.run(first_of_async()) == 0 and later.closed


def test_a_closed_client_is_reported() -> None:
    client = MemSidecar(socket=NOWHERE)
    bridge = ClientBridge(client)
    client.close()
    with pytest.raises(RuntimeError, match="was the client closed"):
        bridge.call(current_loop())
    with pytest.raises(RuntimeError, match="was the client closed"):
        asyncio.run(bridge.acall(current_loop()))


async def test_an_async_client_refuses_sync_calls_on_its_own_loop() -> None:
    async with AsyncMemSidecar(socket=NOWHERE) as client:
        bridge = ClientBridge(client)
        loop = asyncio.get_running_loop()
        with pytest.raises(RuntimeError, match="await the async variant"):
            bridge.call(current_loop())
        with pytest.raises(RuntimeError, match="await the async variant"):
            next(bridge.iterate(Counter().count(1)))
        assert await bridge.acall(current_loop()) is loop
        # From another thread, sync calls run on the client's loop.
        assert await asyncio.to_thread(bridge.call, current_loop()) is loop
        assert await asyncio.to_thread(lambda: list(bridge.iterate(Counter().count(2)))) == [
            0,
            1,
        ]


async def test_made_off_its_loop_it_learns_the_loop_from_the_first_async_call() -> None:
    async with AsyncMemSidecar(socket=NOWHERE) as client:
        bridge = await asyncio.to_thread(ClientBridge, client)
        with pytest.raises(RuntimeError, match="call its async methods first"):
            await asyncio.to_thread(bridge.call, current_loop())
        loop = await bridge.acall(current_loop())
        assert await asyncio.to_thread(bridge.call, current_loop()) is loop


def test_an_adapter_closes_only_the_client_it_made(
    offline: MemSidecar,
) -> None:
    with Thing(offline):
        pass
    assert offline.loop.is_running()  # passed in: left open

    with on_own_client(Thing) as thing:
        owned = thing._bridge.owned
        assert owned is not None and owned.loop.is_running()
    assert owned.loop.is_closed() and thing._bridge.owned is None
    thing.close()  # again: nothing left to close

    made: list[MemSidecar] = []

    def failing(client: MemSidecar) -> Thing:
        made.append(client)
        return Thing(client, fail=True)

    with pytest.raises(ValueError, match="bad option"):
        on_own_client(failing)
    assert made[0].loop.is_closed()


async def test_async_with_closes_off_the_loop() -> None:
    async with on_own_client(Thing) as thing:
        owned = thing._bridge.owned
    assert owned is not None and owned.loop.is_closed()
