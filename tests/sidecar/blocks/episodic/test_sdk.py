"""SDK behaviour: retried appends are never stored twice; the blocking client works."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from memsidecar.client import MemSidecar
from memsidecar.client.blocks.episodic import AsyncEpisodic
from memsidecar.client.transport import Transport
from tests.sidecar.blocks.episodic.conftest import Env
from tests.support import eventually


class ReplayingTransport(Transport):
    """Sends every unary request twice, as a retry after a lost response would."""

    async def unary(self, method: Callable[..., Awaitable[Any]], request: Any) -> Any:
        await super().unary(method, request)
        return await super().unary(method, request)


async def test_a_replayed_append_is_stored_once(env: Env) -> None:
    t = env.client.transport
    ep = AsyncEpisodic(ReplayingTransport(t.channel, t.retry, t.timeout, t.token))
    event = await ep.append("ns", "t", {"n": 1})
    assert event.duplicate  # the second send found the first one's key
    other = await ep.append("ns", "t", {"n": 1})
    assert other.cursor == event.cursor + 1
    assert [e.cursor async for e in env.ep.range("ns")] == [event.cursor, other.cursor]


async def test_explicit_empty_key_means_no_deduplication(env: Env) -> None:
    t = env.client.transport
    ep = AsyncEpisodic(ReplayingTransport(t.channel, t.retry, t.timeout, t.token))
    event = await ep.append("ns", "t", idempotency_key="")
    assert not event.duplicate
    assert [e.cursor async for e in env.ep.range("ns")] == [1, 2]


async def test_blocking_client(env: Env) -> None:
    socket = env.sidecar.config.listen.socket

    def use() -> None:
        with MemSidecar(socket=socket) as m:
            first = m.episodic.append("ns", "message", {"text": "hi"}, session_id="s")
            m.episodic.append("ns", "message", {"text": "there"}, session_id="s")
            assert [e.cursor for e in m.episodic.range("ns")] == [first.cursor, first.cursor + 1]
            assert [e.payload["text"] for e in m.episodic.window("ns", "s", 5)] == ["hi", "there"]
            assert m.episodic.list_sessions("ns").sessions[0].event_count == 2
            tail = m.episodic.tail("ns", from_start=True)
            assert [e.cursor for e in itertools.islice(tail, 2)] == [1, 2]
            tail.close()
            assert m.episodic.delete_session("ns", "s") == 2

    await asyncio.wait_for(asyncio.to_thread(use), 20)
    await eventually(lambda: env.block.service.active_tails == 0)
