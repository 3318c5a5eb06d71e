"""What only the Postgres driver has: several sidecars on one database, the LISTEN
connection that wakes their tails, polling while it is down, and database outages.

The shared contract runs on Postgres through conftest.EPISODIC_DRIVERS; these tests
cover the ways it can fail across processes (here two in-process sidecars, each with
its own driver and pool; tests/integration/test_episodic_postgres.py uses processes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from memsidecar.client import AsyncMemSidecar, RetryPolicy
from memsidecar.client.blocks.episodic import AsyncEpisodic, Event
from memsidecar.client.errors import UnavailableError
from memsidecar.sidecar.blocks.episodic import EpisodicBlock
from memsidecar.sidecar.blocks.episodic.driver import EventFilter
from memsidecar.sidecar.blocks.episodic.drivers.postgres import PostgresEpisodic
from memsidecar.sidecar.errors import Unavailable
from memsidecar.sidecar.server import Sidecar
from tests.support import PG_TEST_DSN, eventually, running_sidecar, unique_tenant

TIMEOUT = 20.0
POLL = 0.2


@pytest.fixture(autouse=True)
def _database(postgres: str) -> None:
    """Every test here needs the migrated test database."""


def with_port(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
    return urlunsplit(parts._replace(netloc=f"{netloc}:{port}"))


def settings(tenant: dict[str, Any], dsn: str, **options: Any) -> dict[str, Any]:
    return {
        "blocks.episodic.driver": "postgres",
        "blocks.episodic.options": {"dsn": dsn, "poll_seconds": POLL, **options},
        "blocks.episodic.namespaces": {"ns*": {}, "keep5": {"retention_max_events": 5}},
        **tenant,
    }


def driver_of(sidecar: Sidecar) -> PostgresEpisodic:
    block = sidecar.blocks["episodic"]
    assert isinstance(block, EpisodicBlock) and isinstance(block.driver, PostgresEpisodic)
    return block.driver


@contextlib.asynccontextmanager
async def two_sidecars(
    a_dsn: str = PG_TEST_DSN,
) -> AsyncIterator[tuple[Sidecar, AsyncMemSidecar, Sidecar, AsyncMemSidecar]]:
    """Sidecars A and B of one tenant on one database, each with its own pool
    (B's DSN differs by an application_name, which keys a separate pool)."""
    tenant = unique_tenant()
    b_dsn = f"{PG_TEST_DSN}?application_name=episodic-test-b"
    async with (
        running_sidecar(settings(tenant, a_dsn)) as (sa, a),
        running_sidecar(settings(tenant, b_dsn)) as (sb, b),
    ):
        assert driver_of(sa).pool is not driver_of(sb).pool
        yield sa, a, sb, b


async def take(events: AsyncIterator[Event], n: int) -> list[Event]:
    out: list[Event] = []
    async with asyncio.timeout(TIMEOUT):
        while len(out) < n:
            out.append(await anext(events))
    return out


def tail(ep: AsyncEpisodic, namespace: str, **kwargs: Any) -> contextlib.aclosing[Any]:
    return contextlib.aclosing(ep.tail(namespace, **kwargs))


async def terminate_backend(pid: int) -> None:
    conn = await asyncpg.connect(PG_TEST_DSN)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


class Proxy:
    """A TCP forwarder to the test Postgres that a test cuts and restores: an outage
    for the sidecars connected through it, while the shared server keeps running."""

    def __init__(self) -> None:
        target = urlsplit(PG_TEST_DSN)
        self.target = (target.hostname or "127.0.0.1", target.port or 5432)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            writer.transport.abort()

    async def stop(self) -> None:
        """Refuse new connections and cut every open one."""
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()


async def test_tails_see_appends_from_another_sidecar_exactly_once() -> None:
    async with two_sidecars() as (sa, a, _, b):
        await b.episodic.append("ns", "t", {"n": 0})
        async with tail(a.episodic, "ns", from_start=True) as events:
            assert [e.cursor for e in await take(events, 1)] == [1]
            await eventually(lambda: driver_of(sa).listening, timeout=TIMEOUT)

            async def writer(ep: AsyncEpisodic, name: str) -> None:
                for i in range(40):
                    await ep.append("ns", "t", {"by": name, "i": i})

            reader = asyncio.ensure_future(take(events, 160))
            await asyncio.gather(
                *(writer(b.episodic, f"b{n}") for n in range(3)), writer(a.episodic, "a")
            )
            received = await reader
            assert [e.cursor for e in received] == list(range(2, 162))
            for name in ("a", "b0", "b1", "b2"):
                mine = [e.payload["i"] for e in received if e.payload["by"] == name]
                assert mine == list(range(40))
            # Nothing more is queued: the next event is the next append.
            await b.episodic.append("ns", "t", {"n": "last"})
            [last] = await take(events, 1)
            assert last.cursor == 162 and last.payload == {"n": "last"}


async def test_tails_poll_while_notifications_are_down(monkeypatch: pytest.MonkeyPatch) -> None:
    async with two_sidecars() as (sa, a, _, b):
        driver = driver_of(sa)
        await b.episodic.append("ns", "t")
        async with tail(a.episodic, "ns", from_start=True) as events:
            await take(events, 1)
            await eventually(lambda: driver.listening, timeout=TIMEOUT)
            pid = driver.listen_pid
            assert pid is not None

            async def refuse() -> asyncpg.Connection:
                raise OSError("notifications refused by the test")

            monkeypatch.setattr(driver, "_connect_listener", refuse)
            await terminate_backend(pid)
            await eventually(lambda: not driver.listening, timeout=TIMEOUT)
            # B's notifications reach nobody on A now: only polling can deliver these.
            for n in range(3):
                await b.episodic.append("ns", "t", {"n": n})
            polled = await take(events, 3)
            assert [e.cursor for e in polled] == [2, 3, 4]
            assert not driver.listening
            monkeypatch.undo()
            await eventually(lambda: driver.listening, timeout=TIMEOUT)
            assert driver.listen_pid not in (None, pid)
            await b.episodic.append("ns", "t")
            assert [e.cursor for e in await take(events, 1)] == [5]


async def test_a_burst_found_at_once_does_not_overflow_a_tail_that_keeps_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A's tails learn of B's appends only by polling, every 2 s: B's burst of 100 is
    # found in one read, ten times the tail's buffer. The reader keeps up, so it must
    # get all of them rather than be cut off as a slow reader.
    tenant = unique_tenant()
    a_settings = {
        **settings(tenant, PG_TEST_DSN, poll_seconds=2.0),
        "blocks.episodic.tail_buffer": 10,
    }
    b_settings = settings(tenant, f"{PG_TEST_DSN}?application_name=episodic-test-b")
    async with running_sidecar(a_settings) as (sa, a), running_sidecar(b_settings) as (_, b):
        driver = driver_of(sa)

        async def refuse() -> asyncpg.Connection:
            raise OSError("notifications refused by the test")

        monkeypatch.setattr(driver, "_connect_listener", refuse)
        async with tail(a.episodic, "ns", from_start=True) as events:
            reader = asyncio.ensure_future(take(events, 100))
            await eventually(lambda: driver.subscriptions == 1, timeout=TIMEOUT)
            await asyncio.gather(*(b.episodic.append("ns", "t", {"i": i}) for i in range(100)))
            assert not driver.listening
            received = await reader
        assert [e.cursor for e in received] == list(range(1, 101))


async def test_outage_is_unavailable_and_tails_resume_after_it() -> None:
    proxy = Proxy()
    await proxy.start()
    async with two_sidecars(with_port(PG_TEST_DSN, proxy.port)) as (sa, a, _, b):
        driver = driver_of(sa)
        await b.episodic.append("ns", "t", {"n": 0})
        async with tail(a.episodic, "ns", from_start=True) as events:
            await take(events, 1)
            await eventually(lambda: driver.listening, timeout=TIMEOUT)
            await proxy.stop()
            with pytest.raises(UnavailableError, match=r"postgres at 127\.0\.0\.1"):
                await a.episodic.append("ns", "t", {"n": "lost"})
            with pytest.raises(UnavailableError):
                await a.episodic.list_sessions("ns")
            await eventually(lambda: not driver.listening, timeout=TIMEOUT)
            assert not await sa.blocks["episodic"].health()
            # Appended elsewhere during the outage; A's tail stays open.
            for n in range(1, 4):
                await b.episodic.append("ns", "t", {"n": n})
            await proxy.start()
            during = await take(events, 3)
            assert [(e.cursor, e.payload) for e in during] == [(n + 1, {"n": n}) for n in (1, 2, 3)]
            # A writes again (a retry replaces a pooled connection the outage broke).
            socket = sa.config.listen.socket
            async with AsyncMemSidecar(socket=socket, retry=RetryPolicy(max_retries=5)) as again:
                after = await again.episodic.append("ns", "t", {"n": "after"})
            assert after.cursor == 5 and not after.duplicate
            assert [e.cursor for e in await take(events, 1)] == [5]
            await eventually(lambda: driver.listening, timeout=TIMEOUT)
        assert [e.payload["n"] async for e in b.episodic.range_all("ns")] == [
            0,
            1,
            2,
            3,
            "after",
        ]
    await proxy.stop()


async def test_same_key_through_two_sidecars_is_stored_once() -> None:
    async with two_sidecars() as (_, a, _, b):
        keys = [f"k{i}" for i in range(40)]
        results = await asyncio.gather(
            *(
                client.episodic.append("ns", "t", {"via": via}, idempotency_key=key)
                for key in keys
                for client, via in ((a, "a"), (b, "b"))
            )
        )
        for pair in zip(results[::2], results[1::2], strict=True):
            assert sorted(e.duplicate for e in pair) == [False, True]
            assert pair[0].cursor == pair[1].cursor and pair[0].id == pair[1].id
            assert pair[0].payload == pair[1].payload
        stored = [e async for e in a.episodic.range_all("ns")]
        assert [e.cursor for e in stored] == list(range(1, 41))


async def test_count_retention_stays_exact_under_concurrent_appends_and_deletes() -> None:
    # Appends drop the oldest events while session deletes remove others: both take the
    # namespace's row lock first, so they neither deadlock nor miscount.
    async with two_sidecars() as (sa, a, _, b):

        async def appender(ep: AsyncEpisodic) -> None:
            for i in range(40):
                await ep.append("keep5", "t", session_id=f"s{i % 2}")

        async def deleter(ep: AsyncEpisodic) -> None:
            for i in range(40):
                await ep.delete_session("keep5", f"s{i % 2}")

        await asyncio.gather(
            appender(a.episodic),
            appender(b.episodic),
            appender(a.episodic),
            deleter(a.episodic),
            deleter(b.episodic),
        )
        tenant = sa.config.identity.tenant
        conn = await asyncpg.connect(PG_TEST_DSN)
        try:
            actual = await conn.fetchval(
                "SELECT count(*) FROM episodic_events WHERE tenant = $1 AND namespace = $2",
                tenant,
                "keep5",
            )
            stored, last = await conn.fetchrow(
                "SELECT stored, last_cursor FROM episodic_logs "
                "WHERE tenant = $1 AND namespace = $2",
                tenant,
                "keep5",
            )
        finally:
            await conn.close()
        assert stored == actual <= 5
        assert last == 120
        kept = [e.cursor async for e in a.episodic.range_all("keep5")]
        assert len(kept) == actual and kept == sorted(kept)
        # Each session summary agrees with the events.
        for s in (await b.episodic.list_sessions("keep5")).sessions:
            mine = [e.cursor async for e in a.episodic.range_all("keep5", session_id=s.session_id)]
            assert (s.event_count, s.first_cursor, s.last_cursor) == (len(mine), mine[0], mine[-1])
        for _ in range(7):
            await b.episodic.append("keep5", "t")
        assert [e.cursor async for e in a.episodic.range_all("keep5")] == list(range(123, 128))


async def test_closing_twice_releases_the_pool_once() -> None:
    tenant = unique_tenant()
    async with (
        running_sidecar(settings(tenant, PG_TEST_DSN)) as (sa, _),
        running_sidecar(settings(tenant, PG_TEST_DSN)) as (sb, b),
    ):
        # Same DSN in one process: one shared pool.
        assert driver_of(sa).pool is driver_of(sb).pool
        await driver_of(sa).close()
        await driver_of(sa).close()
        assert (await b.episodic.append("ns", "t")).cursor == 1
        with pytest.raises(Unavailable, match="closed"):
            await driver_of(sa).subscribe(tenant["identity.tenant"], "ns", EventFilter(), 10)
