"""Tail: backlog then live, never a gap or a duplicate, bounded buffers, clean endings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from memsidecar.client.blocks.episodic import AsyncEpisodic, Event
from memsidecar.client.errors import ResourceExhaustedError, UnavailableError
from tests.sidecar.blocks.episodic.conftest import Env, Starter
from tests.support import eventually

TIMEOUT = 20.0


async def take(events: AsyncIterator[Event], n: int) -> list[Event]:
    """The next n events of a stream, failing instead of hanging."""
    out: list[Event] = []
    async with asyncio.timeout(TIMEOUT):
        while len(out) < n:
            out.append(await anext(events))
    return out


def tail(ep: AsyncEpisodic, namespace: str, **kwargs: Any) -> contextlib.aclosing[Any]:
    return contextlib.aclosing(ep.tail(namespace, **kwargs))


async def everything(ep: AsyncEpisodic, namespace: str) -> list[int]:
    return [e.cursor async for e in ep.range_all(namespace)]


def assert_no_gap_no_dup(received: list[int], stored: list[int]) -> None:
    assert received == sorted(set(received)), "tail repeated or reordered events"
    assert received == stored, "tail missed events"


async def test_from_start_then_live(ep: AsyncEpisodic) -> None:
    for i in range(3):
        await ep.append("ns", "t", {"i": i})
    async with tail(ep, "ns", from_start=True) as events:
        assert [e.cursor for e in await take(events, 3)] == [1, 2, 3]
        await ep.append("ns", "t", {"i": 3})
        await ep.append("ns", "t", {"i": 4})
        live = await take(events, 2)
        assert [e.cursor for e in live] == [4, 5]
        assert [e.payload for e in live] == [{"i": 3}, {"i": 4}]


async def test_resume_after_a_cursor(ep: AsyncEpisodic) -> None:
    for _ in range(5):
        await ep.append("ns", "t")
    async with tail(ep, "ns", after_cursor=2) as events:
        assert [e.cursor for e in await take(events, 3)] == [3, 4, 5]
        await ep.append("ns", "t")
        assert [e.cursor for e in await take(events, 1)] == [6]


async def test_without_a_cursor_only_new_events(env: Env) -> None:
    for _ in range(3):
        await env.ep.append("ns", "t")
    async with tail(env.ep, "ns") as events:
        first = asyncio.ensure_future(anext(events))
        await eventually(lambda: env.block.service.active_tails == 1)
        await env.ep.append("ns", "t")
        await env.ep.append("ns", "t")
        assert (await asyncio.wait_for(first, TIMEOUT)).cursor == 4
        assert [e.cursor for e in await take(events, 1)] == [5]


async def test_cursor_beyond_the_end_waits(ep: AsyncEpisodic) -> None:
    await ep.append("ns", "t")
    async with tail(ep, "ns", after_cursor=4) as events:
        for _ in range(6):
            await ep.append("ns", "t")
        assert [e.cursor for e in await take(events, 3)] == [5, 6, 7]


async def test_filters(ep: AsyncEpisodic) -> None:
    await ep.append("ns", "msg", session_id="a")
    await ep.append("ns", "tool", session_id="a")
    await ep.append("ns", "msg", session_id="b")
    async with (
        tail(ep, "ns", from_start=True, session_id="a") as by_session,
        tail(ep, "ns", from_start=True, types=["msg"]) as by_type,
        tail(ep, "ns", from_start=True, session_id="a", types="tool") as both,
    ):
        assert [e.cursor for e in await take(by_session, 2)] == [1, 2]
        assert [e.cursor for e in await take(by_type, 2)] == [1, 3]
        assert [e.cursor for e in await take(both, 1)] == [2]
        await ep.append("ns", "msg", session_id="b")  # 4
        await ep.append("ns", "tool", session_id="a")  # 5
        await ep.append("ns", "msg", session_id="a")  # 6
        assert [e.cursor for e in await take(by_session, 2)] == [5, 6]
        assert [e.cursor for e in await take(by_type, 2)] == [4, 6]
        assert [e.cursor for e in await take(both, 1)] == [5]


async def test_backlog_respects_retention(ep: AsyncEpisodic, env: Env) -> None:
    await ep.append("hour", "t")
    env.clock.advance(3601)
    await ep.append("hour", "t")
    async with tail(ep, "hour", from_start=True) as events:
        assert [e.cursor for e in await take(events, 1)] == [2]


async def _appender(ep: AsyncEpisodic, namespace: str, name: str, count: int) -> None:
    for i in range(count):
        await ep.append(namespace, "t", {"by": name, "i": i}, session_id=name)
        if i % 7 == 0:
            await asyncio.sleep(0)


async def test_concurrent_appenders_while_the_backlog_is_sent(start: Starter) -> None:
    # Small pages: the backlog takes many reads, and appends land between them.
    async with start({"blocks.episodic.max_range_limit": 25}) as env:
        ep = env.ep
        for i in range(300):
            await ep.append("ns", "t", {"backlog": i})
        async with tail(ep, "ns", from_start=True) as events:
            reader = asyncio.ensure_future(take(events, 900))
            await asyncio.gather(*(_appender(ep, "ns", f"w{n}", 200) for n in range(3)))
            received = [e.cursor for e in await reader]
        stored = await everything(ep, "ns")
        assert len(stored) == 900
        assert_no_gap_no_dup(received, stored)
        # Each writer's events arrive in its own order.
        for n in range(3):
            mine = [e.payload["i"] async for e in ep.range_all("ns", session_id=f"w{n}")]
            assert mine == list(range(200))


async def test_resume_mid_way_under_concurrent_appends(ep: AsyncEpisodic) -> None:
    for _ in range(50):
        await ep.append("ns", "t")
    writers = asyncio.ensure_future(
        asyncio.gather(*(_appender(ep, "ns", f"w{n}", 200) for n in range(3)))
    )
    async with tail(ep, "ns", from_start=True) as events:
        first = [e.cursor for e in await take(events, 250)]
    async with tail(ep, "ns", after_cursor=first[-1]) as events:
        second = [e.cursor for e in await take(events, 650 - 250)]
    await asyncio.wait_for(writers, TIMEOUT)
    assert_no_gap_no_dup(first + second, await everything(ep, "ns"))


async def test_a_slow_reader_is_ended_and_resumes_without_loss(start: Starter) -> None:
    async with start({"blocks.episodic.tail_buffer": 10}) as env:
        ep = env.ep
        await ep.append("ns", "t")
        received: list[int] = []
        async with tail(ep, "ns", from_start=True) as events:
            received += [e.cursor for e in await take(events, 1)]
            # Append big events without reading until the sidecar's buffer for this
            # tail overflows (the gRPC window fills first, then the tail's queue).
            for _ in range(3000):
                await ep.append("ns", "t", "y" * 16_000)
                if any(s.overflowed for s in env.block.service.tails):
                    break
            assert any(s.overflowed for s in env.block.service.tails)
            with pytest.raises(ResourceExhaustedError, match="tail_buffer") as info:
                async with asyncio.timeout(TIMEOUT):
                    async for event in events:
                        received.append(event.cursor)
        assert f"after_cursor={received[-1]}" in info.value.message
        stored = await everything(ep, "ns")
        async with tail(ep, "ns", after_cursor=received[-1]) as events:
            received += [e.cursor for e in await take(events, len(stored) - len(received))]
        assert_no_gap_no_dup(received, stored)


async def test_client_cancel_ends_the_tail(env: Env) -> None:
    await env.ep.append("ns", "t")
    async with tail(env.ep, "ns", from_start=True) as events:
        await take(events, 1)
        assert env.block.service.active_tails == 1
    await eventually(lambda: env.block.service.active_tails == 0)
    # A tail abandoned while waiting for live events is ended as well.
    async with tail(env.ep, "ns", after_cursor=1) as events:
        waiting = asyncio.ensure_future(anext(events))
        await eventually(lambda: env.block.service.active_tails == 1)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    await eventually(lambda: env.block.service.active_tails == 0)


async def test_closing_the_block_ends_tails_with_a_resume_hint(env: Env) -> None:
    await env.ep.append("ns", "t")
    async with tail(env.ep, "ns", from_start=True) as events:
        await take(events, 1)
        await env.block.close()
        with pytest.raises(UnavailableError, match="after_cursor=1"):
            async with asyncio.timeout(TIMEOUT):
                await anext(events)
    assert env.block.service.active_tails == 0
    with pytest.raises(UnavailableError, match="shutting down"):
        async with tail(env.ep, "ns", from_start=True) as events:
            await anext(events)


async def test_stopping_the_sidecar_ends_tails(start: Starter) -> None:
    async with start({"listen.shutdown_grace_seconds": 0.2}) as env:
        await env.ep.append("ns", "t")
        async with tail(env.ep, "ns", from_start=True) as events:
            await take(events, 1)
            stopping = asyncio.ensure_future(env.sidecar.stop())
            with pytest.raises(UnavailableError):
                async with asyncio.timeout(TIMEOUT):
                    await anext(events)
            await asyncio.wait_for(stopping, TIMEOUT)
        assert env.block.service.active_tails == 0
