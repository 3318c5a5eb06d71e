"""The episodic contract, run through the SDK against every driver in conftest.EPISODIC_DRIVERS."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from memsidecar.client.blocks.episodic import AsyncEpisodic, Event
from memsidecar.client.errors import InvalidArgumentError, NotFoundError
from memsidecar.episodic.v1 import episodic_pb2
from memsidecar.sidecar.errors import InvalidArgument, NotFound
from tests.sidecar.blocks.episodic.conftest import Env, Starter
from tests.support import ManualClock


async def all_events(ep: AsyncEpisodic, namespace: str, **filters: Any) -> list[Event]:
    return [e async for e in ep.range_all(namespace, **filters)]


async def cursors(ep: AsyncEpisodic, namespace: str, **filters: Any) -> list[int]:
    return [e.cursor async for e in ep.range(namespace, **filters)]


def at(clock: ManualClock) -> datetime:
    return datetime.fromtimestamp(clock.now, UTC)


# --- Append ---------------------------------------------------------------------------


async def test_append_returns_the_stored_event(ep: AsyncEpisodic, clock: ManualClock) -> None:
    event = await ep.append(
        "ns",
        "message",
        {"text": "hello", "n": [1, None, True]},
        role="user",
        session_id="s1",
        metadata={"lang": "en", "tags": ["a"]},
    )
    assert event.cursor == 1
    assert uuid.UUID(event.id)
    assert event.namespace == "ns"
    assert (event.type, event.role, event.session_id) == ("message", "user", "s1")
    assert event.payload == {"text": "hello", "n": [1, None, True]}
    assert event.metadata == {"lang": "en", "tags": ["a"]}
    assert event.time == at(clock)
    assert not event.duplicate
    [stored] = await all_events(ep, "ns")
    assert stored == event


async def test_payload_may_be_any_json_value(ep: AsyncEpisodic) -> None:
    payloads: list[Any] = [None, "text", 2.5, False, [1, "two"], {"nested": {"deep": [{}]}}]
    for payload in payloads:
        await ep.append("ns", "t", payload)
    assert [e.payload for e in await all_events(ep, "ns")] == payloads


async def test_explicit_time_keeps_microseconds(ep: AsyncEpisodic) -> None:
    when = datetime(2030, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert (await ep.append("ns", "t", time=when)).time == when
    naive = datetime(2030, 5, 1, 12, 0, 1)
    assert (await ep.append("ns", "t", time=naive)).time == naive.replace(tzinfo=UTC)
    seconds = 1_900_000_000.25
    assert (await ep.append("ns", "t", time=seconds)).time.timestamp() == seconds


async def test_cursors_increase_per_namespace(ep: AsyncEpisodic) -> None:
    a = [(await ep.append("ns-a", "t")).cursor for _ in range(5)]
    b = [(await ep.append("ns-b", "t")).cursor for _ in range(3)]
    assert a == [1, 2, 3, 4, 5]
    assert b == [1, 2, 3]


async def test_idempotency_key_returns_the_first_event(ep: AsyncEpisodic) -> None:
    first = await ep.append("ns", "order", {"n": 1}, idempotency_key="k1", session_id="s")
    again = await ep.append("ns", "order", {"n": 2}, idempotency_key="k1", session_id="other")
    assert again.duplicate and not first.duplicate
    assert again.cursor == first.cursor and again.id == first.id
    assert again.payload == {"n": 1} and again.session_id == "s"
    assert await cursors(ep, "ns") == [1]
    # Keys are per namespace.
    elsewhere = await ep.append("ns2", "order", idempotency_key="k1")
    assert not elsewhere.duplicate


async def test_idempotency_key_is_forgotten_with_its_event(ep: AsyncEpisodic) -> None:
    first = await ep.append("ns", "t", idempotency_key="k", session_id="s")
    assert await ep.delete_session("ns", "s") == 1
    again = await ep.append("ns", "t", idempotency_key="k", session_id="s")
    assert not again.duplicate
    assert again.cursor > first.cursor


async def test_sdk_makes_a_key_per_call(ep: AsyncEpisodic) -> None:
    await ep.append("ns", "t", {"same": True})
    await ep.append("ns", "t", {"same": True})
    assert await cursors(ep, "ns") == [1, 2]


# --- Range ----------------------------------------------------------------------------


async def _populate(ep: AsyncEpisodic, clock: ManualClock) -> list[Event]:
    """10 events one second apart: sessions a/b/none, types msg/tool/note."""
    events = []
    for i in range(10):
        session = ["a", "b", ""][i % 3]
        kind = ["msg", "tool", "note", "msg", "msg"][i % 5]
        events.append(await ep.append("ns", kind, {"i": i}, session_id=session))
        clock.advance(1)
    return events


async def test_range_filters(ep: AsyncEpisodic, clock: ManualClock) -> None:
    events = await _populate(ep, clock)
    every = [e.cursor for e in events]
    assert await cursors(ep, "ns") == every
    assert await cursors(ep, "ns", after_cursor=3) == every[3:]
    assert await cursors(ep, "ns", before_cursor=4) == [1, 2, 3]
    assert await cursors(ep, "ns", after_cursor=2, before_cursor=6) == [3, 4, 5]
    assert await cursors(ep, "ns", session_id="a") == [
        e.cursor for e in events if e.session_id == "a"
    ]
    assert await cursors(ep, "ns", types=["tool", "note"]) == [
        e.cursor for e in events if e.type in {"tool", "note"}
    ]
    assert await cursors(ep, "ns", types="msg", session_id="b") == [
        e.cursor for e in events if e.type == "msg" and e.session_id == "b"
    ]
    start, end = events[2].time, events[5].time
    assert await cursors(ep, "ns", start_time=start, end_time=end) == [3, 4, 5]
    assert await cursors(ep, "ns", start_time=start.timestamp()) == every[2:]
    assert await cursors(ep, "ns", end_time=end) == [1, 2, 3, 4, 5]
    assert await cursors(ep, "ns", types=["absent"]) == []
    assert await cursors(ep, "ns", session_id="nobody") == []


async def test_range_reverse_and_limit(ep: AsyncEpisodic, clock: ManualClock) -> None:
    events = await _populate(ep, clock)
    every = [e.cursor for e in events]
    assert await cursors(ep, "ns", reverse=True) == every[::-1]
    assert await cursors(ep, "ns", reverse=True, limit=3) == [10, 9, 8]
    assert await cursors(ep, "ns", limit=3) == [1, 2, 3]
    assert await cursors(ep, "ns", reverse=True, before_cursor=5, limit=2) == [4, 3]
    variants: list[dict[str, Any]] = [
        {},
        {"session_id": "a"},
        {"types": ["msg", "note"]},
        {"after_cursor": 4},
    ]
    for filters in variants:
        forward = await cursors(ep, "ns", **filters)
        assert await cursors(ep, "ns", reverse=True, **filters) == forward[::-1]
    paged = [e.cursor for e in await all_events(ep, "ns", page=3)]
    assert paged == every
    paged_back = [e.cursor for e in await all_events(ep, "ns", page=4, reverse=True)]
    assert paged_back == every[::-1]


async def test_range_default_and_maximum_limit(start: Starter) -> None:
    overrides = {"blocks.episodic.default_range_limit": 4, "blocks.episodic.max_range_limit": 6}
    async with start(overrides) as env:
        for _ in range(8):
            await env.ep.append("ns", "t")
        assert await cursors(env.ep, "ns") == [1, 2, 3, 4]
        assert await cursors(env.ep, "ns", limit=6) == [1, 2, 3, 4, 5, 6]
        with pytest.raises(InvalidArgumentError, match="max_range_limit"):
            await cursors(env.ep, "ns", limit=7)
        with pytest.raises(InvalidArgumentError, match="negative"):
            await cursors(env.ep, "ns", limit=-1)


# --- ListSessions, Window, DeleteSession ------------------------------------------------


async def test_list_sessions(ep: AsyncEpisodic, clock: ManualClock) -> None:
    await ep.append("ns", "t", session_id="b")
    first_b = at(clock)
    clock.advance(5)
    await ep.append("ns", "t", session_id="a")
    await ep.append("ns", "t")  # no session: not listed
    await ep.append("ns", "t", session_id="b")
    clock.advance(5)
    await ep.append("ns", "t", session_id="c")
    await ep.append("ns", "t", session_id="b")
    page = await ep.list_sessions("ns")
    assert [s.session_id for s in page.sessions] == ["a", "b", "c"]
    assert page.next_start_after == ""
    b = page.sessions[1]
    assert (b.event_count, b.first_cursor, b.last_cursor) == (3, 1, 6)
    assert b.first_time == first_b and b.last_time == first_b + timedelta(seconds=10)
    first = await ep.list_sessions("ns", limit=2)
    assert [s.session_id for s in first.sessions] == ["a", "b"]
    assert first.next_start_after == "b"
    rest = await ep.list_sessions("ns", start_after=first.next_start_after, limit=2)
    assert [s.session_id for s in rest.sessions] == ["c"] and rest.next_start_after == ""
    exact = await ep.list_sessions("ns", limit=3)
    assert exact.next_start_after == ""
    assert [s.session_id async for s in ep.sessions("ns", page=1)] == ["a", "b", "c"]
    assert (await ep.list_sessions("ns2")).sessions == []


async def test_window_is_the_last_n_oldest_first(ep: AsyncEpisodic) -> None:
    for i in range(6):
        await ep.append("ns", "t", {"i": i}, session_id="s")
        await ep.append("ns", "t", {"i": i}, session_id="other")
    window = await ep.window("ns", "s", 3)
    assert [e.payload["i"] for e in window] == [3, 4, 5]
    assert all(e.session_id == "s" for e in window)
    assert [e.cursor for e in window] == sorted(e.cursor for e in window)
    assert len(await ep.window("ns", "s", 100)) == 6
    assert await ep.window("ns", "nobody", 5) == []


async def test_window_limits(start: Starter) -> None:
    async with start({"blocks.episodic.max_window": 10}) as env:
        await env.ep.append("ns", "t", session_id="s")
        assert len(await env.ep.window("ns", "s", 10)) == 1
        for bad in (0, -1, 11):
            with pytest.raises(InvalidArgumentError, match="last_n"):
                await env.ep.window("ns", "s", bad)
        with pytest.raises(InvalidArgumentError, match="session_id is required"):
            await env.ep.window("ns", "", 1)


async def test_delete_session(ep: AsyncEpisodic) -> None:
    for _ in range(3):
        await ep.append("ns", "t", session_id="gone")
        await ep.append("ns", "t", session_id="kept")
    last = (await ep.append("ns", "t", session_id="gone")).cursor
    assert await ep.delete_session("ns", "gone") == 4
    assert await ep.delete_session("ns", "gone") == 0
    assert await ep.window("ns", "gone", 10) == []
    assert await cursors(ep, "ns", session_id="gone") == []
    assert [s.session_id for s in (await ep.list_sessions("ns")).sessions] == ["kept"]
    assert len(await all_events(ep, "ns")) == 3
    # Cursors are not reused, even the last one.
    assert (await ep.append("ns", "t", session_id="gone")).cursor == last + 1
    with pytest.raises(InvalidArgumentError, match="session_id is required"):
        await ep.delete_session("ns", "")


# --- Retention --------------------------------------------------------------------------


async def test_count_retention_keeps_the_newest(ep: AsyncEpisodic) -> None:
    for i in range(5):
        await ep.append("keep3", "t", {"i": i}, session_id="s", idempotency_key=f"k{i}")
    assert await cursors(ep, "keep3") == [3, 4, 5]
    [summary] = (await ep.list_sessions("keep3")).sessions
    assert (summary.event_count, summary.first_cursor) == (3, 3)
    # The dropped event's key is forgotten; a kept one still dedupes.
    assert not (await ep.append("keep3", "t", idempotency_key="k0")).duplicate
    assert (await ep.append("keep3", "t", idempotency_key="k4")).duplicate
    assert await cursors(ep, "keep3") == [4, 5, 6]
    assert (await ep.append("keep3", "t")).cursor == 7


async def test_age_retention(ep: AsyncEpisodic, clock: ManualClock) -> None:
    old = await ep.append("hour", "t", session_id="s", idempotency_key="old")
    clock.advance(1800)
    recent = await ep.append("hour", "t", session_id="s")
    assert await cursors(ep, "hour") == [old.cursor, recent.cursor]
    clock.advance(1801)  # old is now 3601s old, recent 1801s
    assert await cursors(ep, "hour") == [recent.cursor]
    assert [e.cursor for e in await ep.window("hour", "s", 10)] == [recent.cursor]
    [summary] = (await ep.list_sessions("hour")).sessions
    assert summary.event_count == 1 and summary.first_cursor == recent.cursor
    # Expired events' keys are forgotten, and their cursors are not reused.
    again = await ep.append("hour", "t", idempotency_key="old")
    assert not again.duplicate and again.cursor == recent.cursor + 1
    clock.advance(1800)
    assert await cursors(ep, "hour") == [again.cursor]
    assert await ep.delete_session("hour", "s") == 0


async def test_age_retention_uses_event_time(ep: AsyncEpisodic, clock: ManualClock) -> None:
    backdated = await ep.append("hour", "t", time=clock.now - 3000)
    fresh = await ep.append("hour", "t")
    clock.advance(601)
    assert await cursors(ep, "hour") == [fresh.cursor]
    assert backdated.cursor < fresh.cursor
    with pytest.raises(InvalidArgumentError, match="retention_max_age"):
        await ep.append("hour", "t", time=clock.now - 3601)
    assert await cursors(ep, "hour") == [fresh.cursor]


async def test_age_and_count_retention_together(ep: AsyncEpisodic, clock: ManualClock) -> None:
    for _ in range(7):
        await ep.append("both", "t")
        clock.advance(10)
    assert await cursors(ep, "both") == [3, 4, 5, 6, 7]
    clock.advance(60)  # events 3..7 are now 110, 100, 90, 80, 70 seconds old
    assert await cursors(ep, "both") == [4, 5, 6, 7]  # exactly max_age old is kept
    clock.advance(1)
    assert await cursors(ep, "both") == [5, 6, 7]


# --- Bad input --------------------------------------------------------------------------

LONG = "x" * 257

BAD_APPENDS: list[tuple[Callable[[AsyncEpisodic], Awaitable[Any]], str]] = [
    (lambda ep: ep.append("ns", "", idempotency_key="k"), "type is required"),
    (lambda ep: ep.append("ns", LONG, idempotency_key="k"), "max_field_chars"),
    (lambda ep: ep.append("ns", "t", role=LONG, idempotency_key="k"), "role is 257"),
    (lambda ep: ep.append("ns", "t", session_id=LONG, idempotency_key="k"), "session_id is 257"),
    (lambda ep: ep.append("ns", "t", idempotency_key="k" * 129), "max_idempotency_key_chars"),
    (lambda ep: ep.append("ns", "a\x00b", idempotency_key="k"), "NUL"),
    (lambda ep: ep.append("ns", "t", session_id="s\x00", idempotency_key="k"), "NUL"),
    (lambda ep: ep.append("ns", "t", {"x": "a\x00"}, idempotency_key="k"), "NUL"),
    (lambda ep: ep.append("ns", "t", metadata={"k\x00": 1}, idempotency_key="k"), "NUL"),
    (lambda ep: ep.append("ns", "t", {"x": float("nan")}, idempotency_key="k"), "payload"),
    (lambda ep: ep.append("ns", "t", "y" * 300_000, idempotency_key="k"), "max_event_bytes"),
    (
        lambda ep: ep.append("ns", "t", metadata={"big": "y" * 300_000}, idempotency_key="k"),
        "max_event_bytes",
    ),
    (lambda ep: ep.append("", "t", idempotency_key="k"), "namespace is required"),
    (lambda ep: ep.append("ns/x", "t", idempotency_key="k"), "is invalid"),
]


@pytest.mark.parametrize(("call", "message"), BAD_APPENDS)
async def test_bad_append_is_rejected_and_changes_nothing(
    ep: AsyncEpisodic, call: Callable[[AsyncEpisodic], Awaitable[Any]], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        await call(ep)
    assert await cursors(ep, "ns") == []
    assert (await ep.list_sessions("ns")).sessions == []
    # The idempotency key of the rejected append was not consumed.
    assert not (await ep.append("ns", "t", idempotency_key="k")).duplicate


async def test_field_limit_is_the_setting(start: Starter) -> None:
    async with start({"blocks.episodic.max_field_chars": 8}) as env:
        await env.ep.append("ns", "12345678")
        with pytest.raises(InvalidArgumentError, match="max_field_chars"):
            await env.ep.append("ns", "123456789")
        assert len(await all_events(env.ep, "ns")) == 1


async def test_event_size_limit_is_the_setting(start: Starter) -> None:
    async with start({"blocks.episodic.max_event_bytes": "1KiB"}) as env:
        await env.ep.append("ns", "t", "y" * 800)
        with pytest.raises(InvalidArgumentError, match="1024 bytes"):
            await env.ep.append("ns", "t", "y" * 1100)
        assert len(await all_events(env.ep, "ns")) == 1


BAD_READS: list[tuple[Callable[[AsyncEpisodic], Awaitable[Any]], str]] = [
    (lambda ep: cursors(ep, "ns", after_cursor=-1), "bad cursor"),
    (lambda ep: cursors(ep, "ns", before_cursor=-5), "bad cursor"),
    (lambda ep: cursors(ep, "ns", after_cursor=5, before_cursor=5), "bad cursor"),
    (lambda ep: cursors(ep, "ns", after_cursor=5, before_cursor=2), "bad cursor"),
    (lambda ep: cursors(ep, "ns", start_time=100.0, end_time=100.0), "end_time"),
    (lambda ep: cursors(ep, "ns", start_time=100.0, end_time=50.0), "end_time"),
    (lambda ep: cursors(ep, "ns", types=[""]), "types"),
    (lambda ep: cursors(ep, "ns", types=["t"] * 101), "max_filter_types"),
    (lambda ep: cursors(ep, "ns", session_id=LONG), "max_field_chars"),
    (lambda ep: ep.list_sessions("ns", limit=-1), "negative"),
    (lambda ep: ep.list_sessions("ns", limit=1001), "max_range_limit"),
    (lambda ep: ep.list_sessions("ns", start_after=LONG), "max_field_chars"),
    (lambda ep: anext(ep.tail("ns", after_cursor=-1)), "bad cursor"),
    (lambda ep: anext(ep.tail("ns", after_cursor=3, from_start=True)), "not both"),
    (lambda ep: anext(ep.tail("ns", types=["t", ""])), "types"),
    (lambda ep: ep.window("ns", "s" * 257, 1), "max_field_chars"),
]


@pytest.mark.parametrize(("call", "message"), BAD_READS)
async def test_bad_reads_are_rejected(
    ep: AsyncEpisodic, call: Callable[[AsyncEpisodic], Awaitable[Any]], message: str
) -> None:
    await ep.append("ns", "t", session_id="s")
    with pytest.raises(InvalidArgumentError, match=message):
        await call(ep)
    assert await cursors(ep, "ns") == [1]


async def test_invalid_timestamps_on_the_wire(ep: AsyncEpisodic) -> None:
    bad = Timestamp(seconds=10**13)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await ep._stub.Append(episodic_pb2.AppendRequest(namespace="ns", type="t", time=bad))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid timestamp" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _ = [
            e async for e in ep._stub.Range(episodic_pb2.RangeRequest(namespace="ns", end_time=bad))
        ]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await cursors(ep, "ns") == []


# --- Namespaces and tenants ---------------------------------------------------------------

UNKNOWN: list[Callable[[AsyncEpisodic], Awaitable[Any]]] = [
    lambda ep: ep.append("other", "t"),
    lambda ep: cursors(ep, "other"),
    lambda ep: anext(ep.tail("other", from_start=True)),
    lambda ep: ep.list_sessions("other"),
    lambda ep: ep.window("other", "s", 1),
    lambda ep: ep.delete_session("other", "s"),
]


@pytest.mark.parametrize("call", UNKNOWN)
async def test_unknown_namespace_is_not_found(
    ep: AsyncEpisodic, call: Callable[[AsyncEpisodic], Awaitable[Any]]
) -> None:
    with pytest.raises(NotFoundError, match=r"unknown episodic namespace 'other'.*keep3"):
        await call(ep)


async def test_system_events(env: Env) -> None:
    cursor = await env.block.append_system_event(
        env.tenant, "ns", "checkpoint", "s1", {"reason": "orphaned", "n": 2}
    )
    user = await env.ep.append("ns", "message", session_id="s1")
    assert user.cursor == cursor + 1
    [event] = [e async for e in env.ep.range("ns", types="checkpoint")]
    assert [e.cursor for e in await env.ep.window("ns", "s1", 2)] == [cursor, user.cursor]
    assert event.cursor == cursor and event.role == "system" and event.session_id == "s1"
    assert event.payload == {"reason": "orphaned", "n": 2}
    with pytest.raises(NotFound):
        await env.block.append_system_event(env.tenant, "other", "checkpoint", "s1", {})
    with pytest.raises(InvalidArgument, match="type is required"):
        await env.block.append_system_event(env.tenant, "ns", "", "s1", {})
    with pytest.raises(InvalidArgument, match="not JSON"):
        await env.block.append_system_event(env.tenant, "ns", "t", "s1", {"when": datetime.now()})
    with pytest.raises(InvalidArgument, match="finite"):
        await env.block.append_system_event(env.tenant, "ns", "t", "s1", {"x": float("inf")})
    assert len(await all_events(env.ep, "ns")) == 2


async def test_tenants_are_separate(env: Env) -> None:
    await env.ep.append("ns", "t")
    await env.ep.append("ns", "t")
    # Another tenant's first event in the same namespace gets cursor 1 and stays invisible.
    assert await env.block.append_system_event(f"{env.tenant}-b", "ns", "t", "s", {}) == 1
    assert await cursors(env.ep, "ns") == [1, 2]
    assert (await env.ep.list_sessions("ns")).sessions == []
