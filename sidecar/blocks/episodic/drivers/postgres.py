"""The episodic log on Postgres, shared by every sidecar that points at the database.

Tables (migration 1):

- ``episodic_logs``: one row per (tenant, namespace) holding the last cursor handed
  out and how many events are stored. Every append increments ``last_cursor`` with
  ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` first, so the row lock serialises
  the appends of a namespace across all sidecars until they commit: cursors are
  gap-free and never reused (a rolled-back append rolls its increment back too), and
  appends commit in cursor order. That last property is what a tail relies on: once
  cursor c is visible, every cursor below c is visible or gone for good. (With a
  sequence, cursor 8 could commit before 7, and a reader that saw 8 would skip 7.)
- ``episodic_events``: the events, keyed (tenant, namespace, cursor), indexed by
  session, by type and by time, and unique on the idempotency key.

Retention runs inside the append transaction, under the namespace's lock: expired
events are deleted, then the idempotency key is checked, then the event is inserted
and, with a count limit, the oldest events beyond it are deleted. Reads hide expired
events that no append has dropped yet.

Tails: each append NOTIFYs ``memsidecar_episodic`` with "<namespace digest>:<cursor>".
Every sidecar keeps one LISTEN connection; a notification only wakes that sidecar's
reader for the namespace, which reads the committed events after the last cursor it
delivered and fans them out to its tails. Events always come from the table, in
cursor order, so coalesced or lost notifications drop or repeat nothing. While the
LISTEN connection is down, readers poll every ``poll_seconds`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
from collections.abc import Coroutine
from typing import Any

import asyncpg
from pydantic import Field

from memsidecar.sidecar.backends.postgres import (
    Migration,
    PgPool,
    PostgresOptions,
    acquire_pool,
    release_pool,
    require_schema,
)
from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.episodic.driver import (
    AppendResult,
    EventFilter,
    NewEvent,
    Retention,
    Scope,
    SessionInfo,
    StoredEvent,
    Subscription,
)
from memsidecar.sidecar.blocks.registry import parse_options
from memsidecar.sidecar.errors import Unavailable

log = logging.getLogger("memsidecar.episodic")

CHANNEL = "memsidecar_episodic"
# application_name of each sidecar's LISTEN connection (visible in pg_stat_activity).
LISTENER_NAME = "memsidecar-episodic-listen"

MIGRATIONS = [
    Migration(
        1,
        """
        CREATE TABLE episodic_logs (
            tenant text NOT NULL,
            namespace text NOT NULL,
            last_cursor bigint NOT NULL,
            stored bigint NOT NULL,
            PRIMARY KEY (tenant, namespace)
        );
        CREATE TABLE episodic_events (
            tenant text NOT NULL,
            namespace text NOT NULL,
            cursor bigint NOT NULL,
            id text NOT NULL,
            time_us bigint NOT NULL,
            type text COLLATE "C" NOT NULL,
            role text NOT NULL,
            session_id text COLLATE "C" NOT NULL,
            payload json NOT NULL,
            metadata json NOT NULL,
            idempotency_key text,
            PRIMARY KEY (tenant, namespace, cursor)
        );
        -- time_us included: ListSessions aggregates from the index alone.
        CREATE INDEX episodic_events_session
            ON episodic_events (tenant, namespace, session_id, cursor) INCLUDE (time_us);
        CREATE INDEX episodic_events_type ON episodic_events (tenant, namespace, type, cursor);
        CREATE INDEX episodic_events_time ON episodic_events (tenant, namespace, time_us);
        CREATE UNIQUE INDEX episodic_events_key
            ON episodic_events (tenant, namespace, idempotency_key)
            WHERE idempotency_key IS NOT NULL;
        """,
    ),
]

# Below every time a protobuf Timestamp can hold: "no age limit" in SQL comparisons.
_NO_CUTOFF = -(2**63)

_COLUMNS = "cursor, id, time_us, type, role, session_id, payload, metadata"


class PostgresEpisodicOptions(PostgresOptions):
    # While the LISTEN connection is down, each tailed namespace is re-read at least this
    # often, and reconnecting is retried at this interval.
    poll_seconds: float = Field(default=1.0, gt=0, le=60)
    # How often the idle LISTEN connection is checked with a query (a silently dead
    # connection is otherwise noticed only by the kernel's TCP timeouts).
    listen_check_seconds: float = Field(default=15.0, gt=0, le=600)
    # Events read per query when a tailed namespace catches up.
    read_page: int = Field(default=500, ge=1, le=10_000)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _event(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(
        id=row["id"],
        cursor=row["cursor"],
        time_us=row["time_us"],
        type=row["type"],
        role=row["role"],
        session_id=row["session_id"],
        payload=json.loads(row["payload"]),
        metadata=json.loads(row["metadata"]),
    )


def _deleted(status: str) -> int:
    """The row count of a "DELETE n" command status."""
    return int(status.rsplit(" ", 1)[-1])


def _scope_key(scope: Scope) -> str:
    # A digest: NOTIFY payloads are text (no NUL) of at most 8000 bytes.
    tenant, namespace = scope
    return hashlib.blake2b(f"{tenant}\0{namespace}".encode(), digest_size=16).hexdigest()


def _background(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """A task serving every tail, in a fresh context: it must not inherit the context of
    the RPC that happened to start it (its identity, or its observer and trace span)."""
    return asyncio.create_task(coro, name=name, context=contextvars.Context())


class _Duplicate(Exception):
    """Rolls an append back: its idempotency key names a kept event."""

    def __init__(self, event: StoredEvent) -> None:
        self.event = event


class _Feed:
    """This sidecar's reader of one namespace: fans committed events out to its tails."""

    def __init__(self, scope: Scope, delivered: int) -> None:
        self.scope = scope
        self.key = _scope_key(scope)
        # The highest cursor offered to the tails (or known to be at most the start).
        self.delivered = delivered
        self.subs: set[Subscription] = set()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def subscribe(self, flt: EventFilter, capacity: int) -> Subscription:
        sub = Subscription(flt, capacity, self._forget)
        self.subs.add(sub)
        return sub

    def _forget(self, sub: Subscription) -> None:
        self.subs.discard(sub)
        if not self.subs:
            # Let the reader notice it has no tails left and stop.
            self.wake.set()

    def room(self, most: int) -> int:
        """How many events every live tail can take now (at most `most`, at least 1).

        Reading no more than that keeps a burst found in the table from overflowing a
        tail that keeps up: each read is a database round trip in which tails drain.
        A tail that is full and has not drained by the next read is a slow reader;
        the one event read then overflows it, as an append would with the memory driver.
        """
        for sub in self.subs:
            if not (sub.overflowed or sub.closed):
                most = min(most, sub.capacity - sub.pending)
        return max(1, most)

    def publish(self, event: StoredEvent) -> None:
        for sub in list(self.subs):
            sub.offer(event)
        self.delivered = event.cursor

    def close(self) -> None:
        for sub in list(self.subs):
            sub.close()


class PostgresEpisodic:
    def __init__(self, pool: PgPool, options: PostgresEpisodicOptions) -> None:
        self.pool = pool
        self.poll_seconds = options.poll_seconds
        self.listen_check_seconds = options.listen_check_seconds
        self.read_page = options.read_page
        self._feeds: dict[Scope, _Feed] = {}
        self._by_key: dict[str, _Feed] = {}
        self._listener: asyncio.Task[None] | None = None
        # True while the LISTEN connection is up (readers then wait for notifications).
        self.listening = False
        # That connection's backend pid, for diagnostics.
        self.listen_pid: int | None = None
        self._closed = False

    @property
    def subscriptions(self) -> int:
        return sum(len(feed.subs) for feed in self._feeds.values())

    # --- writes -------------------------------------------------------------

    async def append(
        self, tenant: str, namespace: str, event: NewEvent, retention: Retention, now_us: int
    ) -> AppendResult:
        cutoff = retention.cutoff(now_us)
        try:
            async with self.pool.transaction() as conn:
                # First, so the row lock orders this append after every earlier one.
                row = await conn.fetchrow(
                    """
                    INSERT INTO episodic_logs AS l (tenant, namespace, last_cursor, stored)
                    VALUES ($1, $2, 1, 0)
                    ON CONFLICT (tenant, namespace)
                        DO UPDATE SET last_cursor = l.last_cursor + 1
                    RETURNING last_cursor, stored
                    """,
                    tenant,
                    namespace,
                )
                cursor: int = row["last_cursor"]
                stored: int = row["stored"]
                if cutoff is not None:
                    stored -= _deleted(
                        await conn.execute(
                            "DELETE FROM episodic_events "
                            "WHERE tenant = $1 AND namespace = $2 AND time_us < $3",
                            tenant,
                            namespace,
                            cutoff,
                        )
                    )
                if event.idempotency_key:
                    # A statement of its own, after the lock: its snapshot includes an
                    # append with this key that committed while we waited for the lock.
                    found = await conn.fetchrow(
                        f"SELECT {_COLUMNS} FROM episodic_events "
                        "WHERE tenant = $1 AND namespace = $2 AND idempotency_key = $3",
                        tenant,
                        namespace,
                        event.idempotency_key,
                    )
                    if found is not None:
                        raise _Duplicate(_event(found))
                stored += 1
                if retention.max_events is not None and stored > retention.max_events:
                    # The oldest stored events make room; the new one is newer than all.
                    stored -= _deleted(
                        await conn.execute(
                            """
                            DELETE FROM episodic_events
                            WHERE tenant = $1 AND namespace = $2 AND cursor IN (
                                SELECT cursor FROM episodic_events
                                WHERE tenant = $1 AND namespace = $2
                                ORDER BY cursor LIMIT $3)
                            """,
                            tenant,
                            namespace,
                            stored - retention.max_events,
                        )
                    )
                await conn.execute(
                    """
                    WITH added AS (
                        INSERT INTO episodic_events (tenant, namespace, cursor, id, time_us,
                            type, role, session_id, payload, metadata, idempotency_key)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::json, $10::json, $11)
                    ), counted AS (
                        UPDATE episodic_logs SET stored = $12
                        WHERE tenant = $1 AND namespace = $2
                    )
                    SELECT pg_notify($13, $14)
                    """,
                    tenant,
                    namespace,
                    cursor,
                    event.id,
                    event.time_us,
                    event.type,
                    event.role,
                    event.session_id,
                    _dumps(event.payload),
                    _dumps(event.metadata),
                    event.idempotency_key or None,
                    stored,
                    CHANNEL,
                    f"{_scope_key((tenant, namespace))}:{cursor}",
                )
        except _Duplicate as duplicate:
            return AppendResult(duplicate.event, duplicate=True)
        # This sidecar's own tails need not wait for the notification's round trip.
        feed = self._feeds.get((tenant, namespace))
        if feed is not None:
            feed.wake.set()
        return AppendResult(
            StoredEvent(
                id=event.id,
                cursor=cursor,
                time_us=event.time_us,
                type=event.type,
                role=event.role,
                session_id=event.session_id,
                payload=event.payload,
                metadata=event.metadata,
            ),
            duplicate=False,
        )

    async def delete_session(
        self, tenant: str, namespace: str, session_id: str, retention: Retention, now_us: int
    ) -> int:
        cutoff = retention.cutoff(now_us)
        async with self.pool.transaction() as conn:
            # The namespace's lock first, in the same order as append (no deadlock).
            locked = await conn.fetchval(
                "SELECT stored FROM episodic_logs WHERE tenant = $1 AND namespace = $2 FOR UPDATE",
                tenant,
                namespace,
            )
            if locked is None:
                return 0
            row = await conn.fetchrow(
                """
                WITH gone AS (
                    DELETE FROM episodic_events
                    WHERE tenant = $1 AND namespace = $2 AND session_id = $3
                    RETURNING time_us
                )
                SELECT count(*) AS total, count(*) FILTER (WHERE time_us >= $4) AS kept
                FROM gone
                """,
                tenant,
                namespace,
                session_id,
                _NO_CUTOFF if cutoff is None else cutoff,
            )
            if row["total"]:
                await conn.execute(
                    "UPDATE episodic_logs SET stored = stored - $3 "
                    "WHERE tenant = $1 AND namespace = $2",
                    tenant,
                    namespace,
                    row["total"],
                )
        return int(row["kept"])

    # --- reads --------------------------------------------------------------

    async def range(
        self,
        tenant: str,
        namespace: str,
        flt: EventFilter,
        reverse: bool,
        limit: int,
        retention: Retention,
        now_us: int,
    ) -> list[StoredEvent]:
        if limit <= 0:
            return []
        args: list[Any] = [tenant, namespace, limit]
        where = ["tenant = $1", "namespace = $2"]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if flt.after_cursor:
            where.append(f"cursor > {arg(flt.after_cursor)}")
        if flt.before_cursor:
            where.append(f"cursor < {arg(flt.before_cursor)}")
        cutoff = retention.cutoff(now_us)
        start_us = flt.start_us
        if cutoff is not None:
            start_us = cutoff if start_us is None else max(start_us, cutoff)
        if start_us is not None:
            where.append(f"time_us >= {arg(start_us)}")
        if flt.end_us is not None:
            where.append(f"time_us < {arg(flt.end_us)}")
        if flt.session_id:
            where.append(f"session_id = {arg(flt.session_id)}")
        order = "cursor DESC" if reverse else "cursor"
        if flt.types and not flt.session_id:
            # One index scan per type, each stopping after `limit`, merged by cursor.
            where.append("type = t.name")
            sql = (
                f"SELECT e.* FROM unnest({arg(sorted(flt.types))}::text[]) AS t(name) "
                f"CROSS JOIN LATERAL (SELECT {_COLUMNS} FROM episodic_events "
                f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT $3) AS e "
                f"ORDER BY e.{order} LIMIT $3"
            )
        else:
            if flt.types:
                where.append(f"type = ANY({arg(sorted(flt.types))}::text[])")
            sql = (
                f"SELECT {_COLUMNS} FROM episodic_events WHERE {' AND '.join(where)} "
                f"ORDER BY {order} LIMIT $3"
            )
        async with self.pool.connection() as conn:
            rows = await conn.fetch(sql, *args)
        return [_event(r) for r in rows]

    async def list_sessions(
        self,
        tenant: str,
        namespace: str,
        start_after: str,
        limit: int,
        retention: Retention,
        now_us: int,
    ) -> list[SessionInfo]:
        if limit <= 0:
            return []
        cutoff = retention.cutoff(now_us)
        async with self.pool.connection() as conn:
            rows = await conn.fetch(
                """
                SELECT session_id, count(*) AS n, min(cursor) AS first_cursor,
                       max(cursor) AS last_cursor, min(time_us) AS first_time,
                       max(time_us) AS last_time
                FROM episodic_events
                WHERE tenant = $1 AND namespace = $2 AND session_id > $3 AND time_us >= $5
                GROUP BY session_id ORDER BY session_id LIMIT $4
                """,
                tenant,
                namespace,
                start_after,
                limit,
                _NO_CUTOFF if cutoff is None else cutoff,
            )
        return [
            SessionInfo(
                session_id=r["session_id"],
                event_count=r["n"],
                first_cursor=r["first_cursor"],
                last_cursor=r["last_cursor"],
                first_time_us=r["first_time"],
                last_time_us=r["last_time"],
            )
            for r in rows
        ]

    async def last_cursor(self, tenant: str, namespace: str) -> int:
        async with self.pool.connection() as conn:
            last = await conn.fetchval(
                "SELECT last_cursor FROM episodic_logs WHERE tenant = $1 AND namespace = $2",
                tenant,
                namespace,
            )
        return int(last or 0)

    # --- tails --------------------------------------------------------------

    async def subscribe(
        self, tenant: str, namespace: str, flt: EventFilter, capacity: int
    ) -> Subscription:
        if self._closed:
            raise Unavailable("the episodic block is closed; open the tail again once it is back")
        if self._listener is None:
            self._listener = _background(self._listen_forever(), "episodic-listen")
        scope = (tenant, namespace)
        feed = self._feeds.get(scope)
        if feed is None:
            # Every cursor up to `last` is committed (appends commit in cursor order), so
            # the caller's backlog read covers it and the reader starts after it.
            last = await self.last_cursor(tenant, namespace)
            feed = self._feeds.get(scope)
            if feed is None:
                feed = _Feed(scope, last)
                self._feeds[scope] = self._by_key[feed.key] = feed
                feed.task = _background(self._read_forever(feed), "episodic-feed")
        # No await between finding the reader and joining it: it cannot stop in between.
        return feed.subscribe(flt, capacity)

    async def _read_forever(self, feed: _Feed) -> None:
        failing = False
        while True:
            feed.wake.clear()
            if not feed.subs:
                if self._feeds.get(feed.scope) is feed:
                    del self._feeds[feed.scope]
                    del self._by_key[feed.key]
                return
            try:
                await self._catch_up(feed)
            except Exception as exc:  # the loop must survive, or its tails would stall
                if not failing:
                    log.warning(
                        "episodic tails of namespace %r cannot read (%s); retrying every %ss",
                        feed.scope[1],
                        exc,
                        self.poll_seconds,
                    )
                failing = True
            else:
                if failing:
                    log.info("episodic tails of namespace %r read again", feed.scope[1])
                failing = False
            poll = failing or not self.listening
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds if poll else None):
                    await feed.wake.wait()

    async def _catch_up(self, feed: _Feed) -> None:
        """Offer every committed event after feed.delivered to the tails, in cursor order."""
        tenant, namespace = feed.scope
        while feed.subs:
            limit = feed.room(self.read_page)
            async with self.pool.connection("PostgresEpisodic.tail") as conn:
                rows = await conn.fetch(
                    f"SELECT {_COLUMNS} FROM episodic_events "
                    "WHERE tenant = $1 AND namespace = $2 AND cursor > $3 "
                    "ORDER BY cursor LIMIT $4",
                    tenant,
                    namespace,
                    feed.delivered,
                    limit,
                )
            for row in rows:
                feed.publish(_event(row))
            if len(rows) < limit:
                return

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        key, _, cursor = payload.partition(":")
        feed = self._by_key.get(key)
        if feed is not None and (not cursor.isdigit() or int(cursor) > feed.delivered):
            feed.wake.set()

    def _wake_all(self) -> None:
        for feed in self._feeds.values():
            feed.wake.set()

    async def _listen_forever(self) -> None:
        """Keep one LISTEN connection; reconnect every poll_seconds while it is down."""
        failing = False
        while True:
            try:
                await self._listen_once()
                failing = False
            except Exception as exc:  # connect or check failed: retry, tails poll meanwhile
                if not failing:
                    log.warning(
                        "episodic tail notifications unavailable (%s); tails poll every %ss "
                        "until the connection is back",
                        exc,
                        self.poll_seconds,
                    )
                failing = True
            await asyncio.sleep(self.poll_seconds)

    async def _connect_listener(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self.pool.dsn,
            timeout=self.pool.options.connect_timeout,
            server_settings={"application_name": LISTENER_NAME},
        )

    async def _listen_once(self) -> None:
        """LISTEN until the connection is lost (then return) or fails (then raise)."""
        conn = await self._connect_listener()
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, self._on_notify)
            self.listen_pid = conn.get_server_pid()
            self.listening = True
            # Read what was appended while nobody listened.
            self._wake_all()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.listen_check_seconds):
                        await lost.wait()
                if not lost.is_set():
                    await conn.fetchval("SELECT 1", timeout=self.pool.options.command_timeout)
            log.warning("episodic tail notifications lost; reconnecting")
        finally:
            self.listen_pid = None
            if self.listening:
                self.listening = False
                # Readers waiting for a notification switch to polling.
                self._wake_all()
            conn.terminate()

    # --- lifecycle ----------------------------------------------------------

    async def health(self) -> bool:
        return await self.pool.healthy()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = [feed.task for feed in self._feeds.values() if feed.task is not None]
        for feed in list(self._feeds.values()):
            feed.close()
        if self._listener is not None:
            tasks.append(self._listener)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._feeds.clear()
        self._by_key.clear()
        await release_pool(self.pool)


async def create(options: dict[str, Any], ctx: BlockContext) -> PostgresEpisodic:
    opts = parse_options("episodic", "postgres", PostgresEpisodicOptions, options)
    pool = await acquire_pool(opts)
    try:
        await require_schema(pool, "episodic", MIGRATIONS)
    except BaseException:
        await release_pool(pool)
        raise
    return PostgresEpisodic(pool, opts)
