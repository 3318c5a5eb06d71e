"""Row 4a: episodic append and range throughput through the SDK, against a Redis stream
(XADD / XRANGE via redis-py): the event log a user would otherwise reach for."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio

from bench.env import Bench, SidecarProcess
from bench.load import Op, throughput
from memsidecar.client import AsyncMemSidecar

SECTION = "episodic"
REFERENCE = "Redis stream XADD/XRANGE via redis-py"
# Longest the range test's top-up appends run, per log.
TOP_UP_SECONDS = 20.0
PAGE = 1000  # events per Range page (the sidecar's default max_range_limit) and XRANGE COUNT


async def count_events(events: AsyncIterator[Any], limit: int) -> int:
    """Iterate up to `limit` events, then close the stream (the sidecar cancels it)."""
    count = 0
    try:
        async for _ in events:
            count += 1
            if count >= limit:
                break
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    return count


async def top_up(op: Op, count: int, seconds: float, writers: int = 16) -> int:
    """Append up to `count` events with concurrent writers for at most `seconds`."""
    if count <= 0:
        return 0
    done = 0
    deadline = time.monotonic() + seconds

    async def writer(c: int) -> None:
        nonlocal done
        i = 0
        while done < count and time.monotonic() < deadline:
            done += 1
            await op(c, i)
            i += 1

    await asyncio.gather(*(writer(c) for c in range(writers)))
    return done


def _payload(caller: int, i: int) -> dict[str, object]:
    # About 250 bytes of JSON, like a tool call or a chat message.
    return {"caller": caller, "i": i, "text": "lorem ipsum dolor sit amet " * 8}


async def run(bench: Bench, driver: str, proc: SidecarProcess, client: AsyncMemSidecar) -> None:
    s = bench.settings
    namespace = "bench-events"
    r = redis.asyncio.Redis(
        unix_socket_path=str(bench.services.redis_socket),
        max_connections=max(s.clients) * 2,
    )
    stream = f"bench:{bench.run_id}:events"
    try:

        async def append(c: int, i: int) -> object:
            return await client.episodic.append(
                namespace, "message", _payload(c, i), role="user", session_id=f"s{c}"
            )

        async def xadd(c: int, i: int) -> object:
            fields: dict[Any, Any] = {"type": "message", "role": "user", "session": f"s{c}"}
            fields["payload"] = json.dumps(_payload(c, i))
            return await r.xadd(stream, fields)

        for clients in s.clients:
            mine = await throughput(append, clients, s.seconds, s.warmup)
            theirs = await throughput(xadd, clients, s.seconds, s.warmup)
            bench.row(
                SECTION,
                f"append [{driver}], {clients} client{'s' if clients > 1 else ''}",
                "events/s",
                mine,
                theirs,
                REFERENCE,
                True,
            )
        # Top both logs up to the same length (bounded in time), then read them back.
        wanted = s.episodic_events
        ours_count = await count_events(client.episodic.range_all(namespace, page=PAGE), wanted)
        ours_count += await top_up(append, wanted - ours_count, TOP_UP_SECONDS)
        theirs_count = await r.xlen(stream)
        theirs_count += await top_up(xadd, wanted - theirs_count, TOP_UP_SECONDS)
        wanted = min(wanted, ours_count, theirs_count)

        start = time.perf_counter()
        read = await count_events(client.episodic.range_all(namespace, page=PAGE), wanted)
        mine_rate = read / (time.perf_counter() - start)

        start = time.perf_counter()
        got, cursor = 0, "-"
        while got < wanted:
            batch: Any = await r.xrange(stream, min=cursor, max="+", count=min(PAGE, wanted - got))
            if not batch:
                break
            for _event_id, fields in batch:
                json.loads(fields[b"payload"])
            got += len(batch)
            last = batch[-1][0].decode()
            cursor = "(" + last
        theirs_rate = got / (time.perf_counter() - start)
        bench.row(
            SECTION,
            f"range [{driver}], pages of {PAGE}, {wanted:,} events",
            "events/s",
            mine_rate,
            theirs_rate,
            REFERENCE,
            True,
        )
    finally:
        # Every event above belongs to a session s<caller>: deleting those empties the log.
        for c in range(max(16, *s.clients)):
            await client.episodic.delete_session(namespace, f"s{c}")
        await r.delete(stream)
        await r.aclose()
