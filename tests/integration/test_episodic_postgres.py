"""Episodic on one Postgres shared by two real sidecar processes: cursors stay gap-free
and strictly increasing under concurrent appends from both, idempotency keys hold
across them, and a tail on one sees every event appended through the other once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from memsidecar import AsyncMemSidecar
from memsidecar.client.blocks.episodic import Event
from tests.support import SidecarProcess, sidecar_process

TIMEOUT = 60.0


@pytest.fixture(scope="module")
def sidecars(postgres: str) -> Iterator[tuple[SidecarProcess, SidecarProcess]]:
    """Sidecars A and B: separate processes, one tenant, one database."""
    env = {
        "MEMSIDECAR_BLOCKS__EPISODIC__DRIVER": "postgres",
        "MEMSIDECAR_BLOCKS__EPISODIC__OPTIONS": json.dumps({"dsn": postgres}),
        "MEMSIDECAR_IDENTITY__TENANT": f"t-{uuid.uuid4().hex[:12]}",
    }
    with sidecar_process(env=env) as a, sidecar_process(env=env) as b:
        yield a, b


@contextlib.asynccontextmanager
async def clients(
    sidecars: tuple[SidecarProcess, SidecarProcess],
) -> AsyncIterator[tuple[AsyncMemSidecar, AsyncMemSidecar]]:
    a, b = sidecars
    async with AsyncMemSidecar(socket=a.socket) as ca, AsyncMemSidecar(socket=b.socket) as cb:
        yield ca, cb


def fresh_namespace() -> str:
    return f"ns-{uuid.uuid4().hex[:8]}"


async def take(events: AsyncIterator[Event], n: int) -> list[Event]:
    out: list[Event] = []
    async with asyncio.timeout(TIMEOUT):
        while len(out) < n:
            out.append(await anext(events))
    return out


def test_concurrent_appends_through_two_sidecars_get_gap_free_increasing_cursors(
    sidecars: tuple[SidecarProcess, SidecarProcess],
) -> None:
    ns = fresh_namespace()
    writers, each = 10, 30  # per sidecar: 2 x 300 appends in all

    async def run() -> None:
        async with clients(sidecars) as (a, b):

            async def writer(m: AsyncMemSidecar, name: str) -> list[int]:
                mine = []
                for i in range(each):
                    event = await m.episodic.append(ns, "t", {"by": name, "i": i})
                    assert not event.duplicate
                    mine.append(event.cursor)
                return mine

            results = await asyncio.gather(
                *(writer(m, f"{via}{n}") for n in range(writers) for m, via in ((a, "a"), (b, "b")))
            )
            total = 2 * writers * each
            handed_out = sorted(c for mine in results for c in mine)
            assert handed_out == list(range(1, total + 1)), "cursors reused or with gaps"
            for mine in results:
                assert mine == sorted(mine) and len(set(mine)) == len(mine)
            # Read back through either sidecar: strictly increasing in range order.
            for m in (a, b):
                stored = [e async for e in m.episodic.range_all(ns, page=97)]
                assert [e.cursor for e in stored] == list(range(1, total + 1))
                backwards = [e.cursor async for e in m.episodic.range_all(ns, reverse=True)]
                assert backwards == list(range(total, 0, -1))
            # Each writer's events are stored in the order it appended them.
            by_writer: dict[str, list[int]] = {}
            for e in stored:
                by_writer.setdefault(e.payload["by"], []).append(e.payload["i"])
            assert by_writer == {name: list(range(each)) for name in by_writer}
            assert len(by_writer) == 2 * writers

    asyncio.run(run())


def test_an_idempotency_key_is_used_once_across_sidecars(
    sidecars: tuple[SidecarProcess, SidecarProcess],
) -> None:
    ns = fresh_namespace()

    async def run() -> None:
        async with clients(sidecars) as (a, b):
            keys = [f"order-{i}" for i in range(50)]
            sent = [
                m.episodic.append(ns, "order", {"via": via, "key": key}, idempotency_key=key)
                for key in keys
                for m, via in ((a, "a"), (b, "b"))
            ]
            results = await asyncio.gather(*sent)
            for first, second in zip(results[::2], results[1::2], strict=True):
                assert sorted([first.duplicate, second.duplicate]) == [False, True]
                assert (first.cursor, first.id, first.payload) == (
                    second.cursor,
                    second.id,
                    second.payload,
                )
            stored = [e async for e in b.episodic.range_all(ns)]
            assert [e.cursor for e in stored] == list(range(1, 51))
            assert sorted(e.payload["key"] for e in stored) == sorted(keys)

    asyncio.run(run())


def test_a_tail_on_one_sidecar_sees_every_event_appended_through_the_other_once(
    sidecars: tuple[SidecarProcess, SidecarProcess],
) -> None:
    ns = fresh_namespace()
    writers, each = 6, 50

    async def run() -> None:
        async with clients(sidecars) as (a, b):
            await b.episodic.append(ns, "t", {"by": "setup"})
            async with tail(a, ns) as events:
                # The tail is live once the stored event has arrived: what follows is
                # delivered by A's listener, not read as backlog.
                assert [e.cursor for e in await take(events, 1)] == [1]
                reader = asyncio.ensure_future(take(events, writers * each))

                async def writer(name: str) -> None:
                    for i in range(each):
                        await b.episodic.append(ns, "t", {"by": name, "i": i})

                await asyncio.gather(*(writer(f"w{n}") for n in range(writers)))
                received = await reader
                cursors = [e.cursor for e in received]
                assert cursors == list(range(2, writers * each + 2)), "gap, repeat or reorder"
                stored = [e async for e in b.episodic.range_all(ns)]
                assert [_summary(e) for e in received] == [_summary(e) for e in stored[1:]]
                for n in range(writers):
                    mine = [e.payload["i"] for e in received if e.payload["by"] == f"w{n}"]
                    assert mine == list(range(each))
                # Nothing else is queued: the next event delivered is the next one appended.
                marker = await b.episodic.append(ns, "marker")
                [after] = await take(events, 1)
                assert (after.cursor, after.type) == (marker.cursor, "marker")

    asyncio.run(run())


def tail(m: AsyncMemSidecar, namespace: str) -> contextlib.aclosing[Any]:
    return contextlib.aclosing(m.episodic.tail(namespace, from_start=True))


def _summary(e: Event) -> tuple[Any, ...]:
    return (e.cursor, e.id, e.type, json.dumps(e.payload, sort_keys=True))
