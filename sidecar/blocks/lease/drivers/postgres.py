"""Leases on Postgres: one row per key that keeps the key's fencing counter for ever.

Acquire is one INSERT ... ON CONFLICT DO UPDATE guarded by "free, expired or mine",
so the row lock makes grants on a key strictly serial across every sidecar sharing
the database, and the counter only grows. Waiters are woken by NOTIFY from whichever
sidecar released or replaced the lease, and re-check at least every
`wait_poll_seconds` in case a notification was missed (e.g. a reconnect).

The same migrations also create the sessions table (sessions live with the leases
they hold; see sidecar/blocks/session/drivers/postgres.py).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import logging
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
from memsidecar.sidecar.blocks.lease.driver import AcquireResult, LeaseRecord, not_holder
from memsidecar.sidecar.blocks.registry import parse_options

log = logging.getLogger("memsidecar.lease")

CHANNEL = "memsidecar_lease"

MIGRATIONS = [
    Migration(
        1,
        """
        CREATE TABLE lease_slots (
            tenant text NOT NULL,
            namespace text NOT NULL,
            key text COLLATE "C" NOT NULL,
            fencing_token bigint NOT NULL,
            holder_id text,
            session_id text NOT NULL DEFAULT '',
            acquired_at double precision,
            expires_at double precision,
            PRIMARY KEY (tenant, namespace, key)
        );
        CREATE INDEX lease_slots_session ON lease_slots (tenant, session_id)
            WHERE session_id <> '' AND holder_id IS NOT NULL;
        CREATE TABLE agent_sessions (
            tenant text NOT NULL,
            session_id text NOT NULL,
            state text NOT NULL,
            heartbeat_interval double precision NOT NULL,
            heartbeat_timeout double precision NOT NULL,
            on_orphan text NOT NULL,
            opened_at double precision NOT NULL,
            last_heartbeat_at double precision NOT NULL,
            checkpoint_namespace text NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{}',
            ended_at double precision,
            PRIMARY KEY (tenant, session_id)
        );
        CREATE INDEX agent_sessions_open ON agent_sessions (tenant) WHERE state = 'open';
        """,
    ),
]


class PostgresLeaseOptions(PostgresOptions):
    # Upper bound between re-checks while waiting for a held lease.
    wait_poll_seconds: float = Field(default=0.5, gt=0, le=10)


def _record(row: asyncpg.Record) -> LeaseRecord:
    return LeaseRecord(
        namespace=row["namespace"],
        key=row["key"],
        holder_id=row["holder_id"],
        fencing_token=row["fencing_token"],
        acquired_at=row["acquired_at"],
        expires_at=row["expires_at"],
        session_id=row["session_id"],
    )


def _channel_key(tenant: str, namespace: str, key: str) -> str:
    # A digest: NOTIFY payloads are text (no NUL) and at most 8000 bytes.
    return hashlib.blake2b(f"{tenant}\0{namespace}\0{key}".encode(), digest_size=16).hexdigest()


class PostgresLeases:
    def __init__(self, pool: PgPool, wait_poll_seconds: float) -> None:
        self.pool = pool
        self.wait_poll_seconds = wait_poll_seconds
        self._events: dict[str, asyncio.Event] = {}
        self._listener: asyncpg.Connection | None = None
        self._listener_lock = asyncio.Lock()

    async def _listen(self) -> None:
        """Subscribe once to lease notifications; on failure waiters fall back to polling."""
        if self._listener is not None and not self._listener.is_closed():
            return
        async with self._listener_lock:
            if self._listener is not None and not self._listener.is_closed():
                return
            try:
                conn = await asyncpg.connect(
                    self.pool.dsn, timeout=self.pool.options.connect_timeout
                )
                await conn.add_listener(CHANNEL, self._on_notify)
                self._listener = conn
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                log.warning("lease notifications unavailable (%s); waiters poll instead", exc)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        event = self._events.pop(payload, None)
        if event is not None:
            event.set()

    @staticmethod
    async def _notify(conn: asyncpg.Connection, tenant: str, namespace: str, key: str) -> None:
        await conn.execute(
            "SELECT pg_notify($1, $2)", CHANNEL, _channel_key(tenant, namespace, key)
        )

    async def acquire(
        self,
        tenant: str,
        namespace: str,
        key: str,
        holder_id: str,
        session_id: str,
        now: float,
        expires_at: float,
    ) -> AcquireResult:
        async with self.pool.transaction() as conn:
            row = await conn.fetchrow(
                """
                INSERT INTO lease_slots AS s (tenant, namespace, key, fencing_token, holder_id,
                                              session_id, acquired_at, expires_at)
                VALUES ($1, $2, $3, 1, $4, $5, $6, $7)
                ON CONFLICT (tenant, namespace, key) DO UPDATE SET
                    fencing_token = s.fencing_token + 1, holder_id = EXCLUDED.holder_id,
                    session_id = EXCLUDED.session_id, acquired_at = EXCLUDED.acquired_at,
                    expires_at = EXCLUDED.expires_at
                WHERE s.holder_id IS NULL OR s.expires_at <= $6 OR s.holder_id = $4
                RETURNING *
                """,
                tenant,
                namespace,
                key,
                holder_id,
                session_id,
                now,
                expires_at,
            )
            if row is not None:
                await self._notify(conn, tenant, namespace, key)
                return AcquireResult(True, _record(row))
            current = await conn.fetchrow(
                "SELECT * FROM lease_slots WHERE tenant = $1 AND namespace = $2 AND key = $3",
                tenant,
                namespace,
                key,
            )
        return AcquireResult(False, _record(current))

    async def wait_change(
        self, tenant: str, namespace: str, key: str, fencing_token: int, timeout: float
    ) -> None:
        await self._listen()
        channel_key = _channel_key(tenant, namespace, key)
        event = self._events.setdefault(channel_key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(timeout, self.wait_poll_seconds))

    async def _current(
        self, conn: asyncpg.Connection, tenant: str, namespace: str, key: str
    ) -> LeaseRecord | None:
        row = await conn.fetchrow(
            "SELECT * FROM lease_slots WHERE tenant = $1 AND namespace = $2 AND key = $3 "
            "AND holder_id IS NOT NULL FOR UPDATE",
            tenant,
            namespace,
            key,
        )
        return _record(row) if row else None

    async def renew(
        self,
        tenant: str,
        namespace: str,
        key: str,
        holder_id: str,
        fencing_token: int,
        now: float,
        expires_at: float,
    ) -> LeaseRecord:
        async with self.pool.transaction() as conn:
            current = await self._current(conn, tenant, namespace, key)
            if not _owned(current, holder_id, fencing_token, now):
                raise not_holder("renew", key, holder_id, fencing_token, current, now)
            row = await conn.fetchrow(
                "UPDATE lease_slots SET expires_at = $4 "
                "WHERE tenant = $1 AND namespace = $2 AND key = $3 RETURNING *",
                tenant,
                namespace,
                key,
                expires_at,
            )
        return _record(row)

    async def release(
        self, tenant: str, namespace: str, key: str, holder_id: str, fencing_token: int, now: float
    ) -> LeaseRecord:
        async with self.pool.transaction() as conn:
            current = await self._current(conn, tenant, namespace, key)
            if current is None or not _owned(current, holder_id, fencing_token, now):
                raise not_holder("release", key, holder_id, fencing_token, current, now)
            await self._free(conn, tenant, namespace, key)
        return current

    async def _free(self, conn: asyncpg.Connection, tenant: str, namespace: str, key: str) -> None:
        # The row (and its fencing counter) stays; only the holder goes.
        await conn.execute(
            "UPDATE lease_slots SET holder_id = NULL, session_id = '', acquired_at = NULL, "
            "expires_at = NULL WHERE tenant = $1 AND namespace = $2 AND key = $3",
            tenant,
            namespace,
            key,
        )
        await self._notify(conn, tenant, namespace, key)

    async def get(self, tenant: str, namespace: str, key: str, now: float) -> LeaseRecord | None:
        async with self.pool.connection() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM lease_slots WHERE tenant = $1 AND namespace = $2 AND key = $3 "
                "AND holder_id IS NOT NULL AND expires_at > $4",
                tenant,
                namespace,
                key,
                now,
            )
        return _record(row) if row else None

    async def list(
        self, tenant: str, namespace: str, prefix: str, limit: int, now: float
    ) -> builtins.list[LeaseRecord]:
        async with self.pool.connection() as conn:
            rows = await conn.fetch(
                "SELECT * FROM lease_slots WHERE tenant = $1 AND namespace = $2 "
                "AND key >= $3 AND starts_with(key, $3) AND holder_id IS NOT NULL "
                "AND expires_at > $4 ORDER BY key LIMIT $5",
                tenant,
                namespace,
                prefix,
                now,
                limit,
            )
        return [_record(r) for r in rows]

    async def session_leases(
        self, tenant: str, session_id: str, now: float
    ) -> builtins.list[LeaseRecord]:
        async with self.pool.connection() as conn:
            rows = await conn.fetch(
                "SELECT * FROM lease_slots WHERE tenant = $1 AND session_id = $2 "
                "AND holder_id IS NOT NULL AND expires_at > $3 ORDER BY namespace, key",
                tenant,
                session_id,
                now,
            )
        return [_record(r) for r in rows]

    async def release_session(
        self, tenant: str, session_id: str, now: float
    ) -> builtins.list[LeaseRecord]:
        async with self.pool.transaction() as conn:
            rows = await conn.fetch(
                "SELECT * FROM lease_slots WHERE tenant = $1 AND session_id = $2 "
                "AND holder_id IS NOT NULL AND expires_at > $3 ORDER BY namespace, key FOR UPDATE",
                tenant,
                session_id,
                now,
            )
            for row in rows:
                await self._free(conn, tenant, row["namespace"], row["key"])
            # Expired leases of the session need no release; forget the attachment.
            await conn.execute(
                "UPDATE lease_slots SET session_id = '' WHERE tenant = $1 AND session_id = $2",
                tenant,
                session_id,
            )
        return [_record(r) for r in rows]

    async def health(self) -> bool:
        return await self.pool.healthy()

    async def close(self) -> None:
        for event in self._events.values():
            event.set()
        self._events.clear()
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()
        await release_pool(self.pool)


def _owned(current: LeaseRecord | None, holder_id: str, fencing_token: int, now: float) -> bool:
    return (
        current is not None
        and current.holder_id == holder_id
        and current.fencing_token == fencing_token
        and current.live(now)
    )


async def create(options: dict[str, Any], ctx: BlockContext) -> PostgresLeases:
    opts = parse_options("lease", "postgres", PostgresLeaseOptions, options)
    pool = await acquire_pool(opts)
    try:
        await require_schema(pool, "lease", MIGRATIONS)
    except BaseException:
        await release_pool(pool)
        raise
    return PostgresLeases(pool, opts.wait_poll_seconds)
