"""Sessions on Postgres, in the table the lease migrations create (sessions live with
the leases they hold; `memsidecar migrate` creates both).

Several sidecars may share the database, and each re-arms timers for every open
session when it starts; so ending a session as orphaned is guarded in SQL by the
stored last heartbeat: a session is only orphaned when no heartbeat was stored for
longer than midway between its interval and its timeout. A session heartbeating
through another sidecar (last heartbeat at most about one interval ago) is never
orphaned, and clock differences between the monitor's timer and the database
rows cannot keep a truly silent session alive.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from memsidecar.sidecar.backends.postgres import (
    PgPool,
    PostgresOptions,
    acquire_pool,
    release_pool,
    require_schema,
)
from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.lease.drivers.postgres import MIGRATIONS, PostgresLeaseOptions
from memsidecar.sidecar.blocks.registry import parse_options
from memsidecar.sidecar.blocks.session.driver import (
    Ended,
    SessionRecord,
    already_exists,
    not_found,
    not_open,
    too_many_open,
)
from memsidecar.sidecar.errors import FailedPrecondition


def _record(row: asyncpg.Record) -> SessionRecord:
    return SessionRecord(
        session_id=row["session_id"],
        state=row["state"],
        heartbeat_interval=row["heartbeat_interval"],
        heartbeat_timeout=row["heartbeat_timeout"],
        on_orphan=row["on_orphan"],
        opened_at=row["opened_at"],
        last_heartbeat_at=row["last_heartbeat_at"],
        checkpoint_namespace=row["checkpoint_namespace"],
        metadata=json.loads(row["metadata"]),
        ended_at=row["ended_at"],
    )


class PostgresSessions:
    def __init__(self, pool: PgPool) -> None:
        self.pool = pool

    async def create(self, tenant: str, record: SessionRecord, max_open: int) -> None:
        async with self.pool.transaction() as conn:
            # Serialise opens per tenant so the open-session limit holds across sidecars.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('session:' || $1))", tenant)
            existing = await conn.fetchval(
                "SELECT state FROM agent_sessions WHERE tenant = $1 AND session_id = $2",
                tenant,
                record.session_id,
            )
            if existing is not None:
                raise already_exists(record.session_id, existing)
            open_count = await conn.fetchval(
                "SELECT count(*) FROM agent_sessions WHERE tenant = $1 AND state = 'open'", tenant
            )
            if open_count >= max_open:
                raise too_many_open(max_open)
            await conn.execute(
                """
                INSERT INTO agent_sessions (tenant, session_id, state, heartbeat_interval,
                    heartbeat_timeout, on_orphan, opened_at, last_heartbeat_at,
                    checkpoint_namespace, metadata)
                VALUES ($1, $2, 'open', $3, $4, $5, $6, $7, $8, $9)
                """,
                tenant,
                record.session_id,
                record.heartbeat_interval,
                record.heartbeat_timeout,
                record.on_orphan,
                record.opened_at,
                record.last_heartbeat_at,
                record.checkpoint_namespace,
                json.dumps(record.metadata),
            )

    async def get(self, tenant: str, session_id: str) -> SessionRecord | None:
        async with self.pool.connection() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM agent_sessions WHERE tenant = $1 AND session_id = $2",
                tenant,
                session_id,
            )
        return _record(row) if row else None

    async def _refuse(self, conn: asyncpg.Connection, tenant: str, session_id: str) -> None:
        row = await conn.fetchrow(
            "SELECT * FROM agent_sessions WHERE tenant = $1 AND session_id = $2",
            tenant,
            session_id,
        )
        if row is None:
            raise not_found(session_id)
        record = _record(row)
        if record.state != "open":
            raise not_open(record)

    async def heartbeat(self, tenant: str, session_id: str, now: float) -> SessionRecord:
        async with self.pool.connection() as conn:
            row = await conn.fetchrow(
                "UPDATE agent_sessions SET last_heartbeat_at = $3 "
                "WHERE tenant = $1 AND session_id = $2 AND state = 'open' RETURNING *",
                tenant,
                session_id,
                now,
            )
            if row is None:
                await self._refuse(conn, tenant, session_id)
        return _record(row)

    async def end(self, tenant: str, session_id: str, state: Ended, now: float) -> SessionRecord:
        async with self.pool.connection() as conn:
            row = await conn.fetchrow(
                "UPDATE agent_sessions SET state = $3, ended_at = $4 "
                "WHERE tenant = $1 AND session_id = $2 AND state = 'open' "
                "AND ($3 <> 'orphaned' "
                "     OR last_heartbeat_at + (heartbeat_interval + heartbeat_timeout) / 2 <= $4) "
                "RETURNING *",
                tenant,
                session_id,
                state,
                now,
            )
            if row is None:
                await self._refuse(conn, tenant, session_id)
                raise FailedPrecondition(
                    f"session {session_id!r} is still heartbeating (through another sidecar); "
                    "it is not orphaned"
                )
        return _record(row)

    async def list_open(self) -> list[tuple[str, SessionRecord]]:
        async with self.pool.connection() as conn:
            rows = await conn.fetch("SELECT * FROM agent_sessions WHERE state = 'open'")
        return [(row["tenant"], _record(row)) for row in rows]

    async def forget_ended(self, before: float) -> int:
        async with self.pool.connection() as conn:
            status = await conn.execute(
                "DELETE FROM agent_sessions WHERE state <> 'open' AND ended_at < $1", before
            )
        return int(status.split()[-1])

    async def health(self) -> bool:
        return await self.pool.healthy()

    async def close(self) -> None:
        await release_pool(self.pool)


async def create(options: dict[str, Any], ctx: BlockContext) -> PostgresSessions:
    # Sessions follow the lease block's driver, so its options are under blocks.lease.
    opts: PostgresOptions = parse_options("lease", "postgres", PostgresLeaseOptions, options)
    pool = await acquire_pool(opts)
    try:
        await require_schema(pool, "lease", MIGRATIONS)
    except BaseException:
        await release_pool(pool)
        raise
    return PostgresSessions(pool)
