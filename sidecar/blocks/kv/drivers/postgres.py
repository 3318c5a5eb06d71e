"""kv on Postgres: one row per live key, versions from a global sequence.

Writes to one key are serialised by a transaction-scoped advisory lock on the key,
so versions are handed out (and committed) in lock order: they grow per key and,
coming from one sequence, are never reused within a namespace.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import asyncpg

from memsidecar.sidecar.backends.postgres import (
    Migration,
    PgPool,
    PostgresOptions,
    acquire_pool,
    release_pool,
    require_schema,
)
from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.kv.driver import (
    KVEntry,
    KVValue,
    ValueKind,
    increment_result,
    version_conflict,
)
from memsidecar.sidecar.blocks.registry import parse_options

MIGRATIONS = [
    Migration(
        1,
        """
        CREATE SEQUENCE kv_version_seq;
        CREATE TABLE kv_entries (
            tenant text NOT NULL,
            namespace text NOT NULL,
            key text COLLATE "C" NOT NULL,
            kind text NOT NULL,
            value bytea NOT NULL,
            version bigint NOT NULL,
            updated_at double precision NOT NULL,
            expires_at double precision,
            PRIMARY KEY (tenant, namespace, key)
        );
        CREATE INDEX kv_entries_expiry ON kv_entries (expires_at) WHERE expires_at IS NOT NULL;
        """,
    ),
]

_LIVE = "(expires_at IS NULL OR expires_at > $NOW)"


def _encode(value: KVValue) -> bytes:
    data = value.data
    if value.kind == "bytes":
        return bytes(data)
    if value.kind == "string":
        return str(data).encode()
    if value.kind == "int":
        return str(int(data)).encode()
    if value.kind == "double":
        return float(data).hex().encode()
    if value.kind == "bool":
        return b"1" if data else b"0"
    return json.dumps(data, separators=(",", ":")).encode()


def _decode(kind: str, raw: bytes) -> KVValue:
    k: ValueKind = kind  # type: ignore[assignment]
    if kind == "bytes":
        return KVValue(k, bytes(raw))
    text = bytes(raw).decode()
    if kind == "string":
        return KVValue(k, text)
    if kind == "int":
        return KVValue(k, int(text))
    if kind == "double":
        return KVValue(k, float.fromhex(text))
    if kind == "bool":
        return KVValue(k, text == "1")
    return KVValue(k, json.loads(text))


def _entry(row: asyncpg.Record) -> KVEntry:
    return KVEntry(
        key=row["key"],
        value=_decode(row["kind"], row["value"]),
        version=row["version"],
        updated_at=row["updated_at"],
        expires_at=row["expires_at"],
    )


def _key_lock(tenant: str, namespace: str, key: str) -> int:
    digest = hashlib.blake2b(f"{tenant}\0{namespace}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresKV:
    def __init__(self, pool: PgPool) -> None:
        self.pool = pool

    async def _current(
        self, conn: asyncpg.Connection, tenant: str, namespace: str, key: str, now: float
    ) -> KVEntry | None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _key_lock(tenant, namespace, key))
        row = await conn.fetchrow(
            "SELECT * FROM kv_entries WHERE tenant = $1 AND namespace = $2 AND key = $3 AND "
            + _LIVE.replace("$NOW", "$4"),
            tenant,
            namespace,
            key,
            now,
        )
        return _entry(row) if row else None

    async def _write(
        self,
        conn: asyncpg.Connection,
        tenant: str,
        namespace: str,
        key: str,
        value: KVValue,
        now: float,
        expires_at: float | None,
    ) -> KVEntry:
        row = await conn.fetchrow(
            """
            INSERT INTO kv_entries
                (tenant, namespace, key, kind, value, version, updated_at, expires_at)
            VALUES ($1, $2, $3, $4, $5, nextval('kv_version_seq'), $6, $7)
            ON CONFLICT (tenant, namespace, key) DO UPDATE SET
                kind = EXCLUDED.kind, value = EXCLUDED.value, version = EXCLUDED.version,
                updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at
            RETURNING *
            """,
            tenant,
            namespace,
            key,
            value.kind,
            _encode(value),
            now,
            expires_at,
        )
        return _entry(row)

    async def get(self, tenant: str, namespace: str, key: str, now: float) -> KVEntry | None:
        async with self.pool.connection() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM kv_entries WHERE tenant = $1 AND namespace = $2 AND key = $3 AND "
                + _LIVE.replace("$NOW", "$4"),
                tenant,
                namespace,
                key,
                now,
            )
        return _entry(row) if row else None

    async def multi_get(
        self, tenant: str, namespace: str, keys: list[str], now: float
    ) -> dict[str, KVEntry]:
        async with self.pool.connection() as conn:
            rows = await conn.fetch(
                "SELECT * FROM kv_entries WHERE tenant = $1 AND namespace = $2 "
                "AND key = ANY($3::text[]) AND " + _LIVE.replace("$NOW", "$4"),
                tenant,
                namespace,
                list(set(keys)),
                now,
            )
        return {row["key"]: _entry(row) for row in rows}

    async def put(
        self,
        tenant: str,
        namespace: str,
        key: str,
        value: KVValue,
        now: float,
        expires_at: float | None,
        if_version: int | None,
    ) -> KVEntry:
        async with self.pool.transaction() as conn:
            current = await self._current(conn, tenant, namespace, key, now)
            if if_version is not None and (current.version if current else 0) != if_version:
                raise version_conflict(key, if_version, current.version if current else None)
            return await self._write(conn, tenant, namespace, key, value, now, expires_at)

    async def delete(
        self, tenant: str, namespace: str, key: str, now: float, if_version: int | None
    ) -> bool:
        async with self.pool.transaction() as conn:
            current = await self._current(conn, tenant, namespace, key, now)
            if if_version is not None and (current.version if current else 0) != if_version:
                raise version_conflict(key, if_version, current.version if current else None)
            # Expired rows go too; only a live one counts as deleted.
            await conn.execute(
                "DELETE FROM kv_entries WHERE tenant = $1 AND namespace = $2 AND key = $3",
                tenant,
                namespace,
                key,
            )
            return current is not None

    async def scan(
        self, tenant: str, namespace: str, prefix: str, start_after: str, limit: int, now: float
    ) -> list[KVEntry]:
        async with self.pool.connection() as conn:
            rows = await conn.fetch(
                "SELECT * FROM kv_entries WHERE tenant = $1 AND namespace = $2 "
                "AND key >= $3 AND starts_with(key, $3) AND key > $4 AND "
                + _LIVE.replace("$NOW", "$5")
                + " ORDER BY key LIMIT $6",
                tenant,
                namespace,
                prefix,
                start_after,
                now,
                limit,
            )
        return [_entry(row) for row in rows]

    async def increment(
        self,
        tenant: str,
        namespace: str,
        key: str,
        delta: int,
        now: float,
        expires_at: float | None,
    ) -> KVEntry:
        async with self.pool.transaction() as conn:
            current = await self._current(conn, tenant, namespace, key, now)
            result = increment_result(key, current, delta)
            keep_expiry = current.expires_at if current is not None else expires_at
            return await self._write(
                conn, tenant, namespace, key, KVValue("int", result), now, keep_expiry
            )

    async def sweep(self, now: float) -> int:
        async with self.pool.connection() as conn:
            status = await conn.execute("DELETE FROM kv_entries WHERE expires_at <= $1", now)
        return int(status.split()[-1])

    async def health(self) -> bool:
        return await self.pool.healthy()

    async def close(self) -> None:
        await release_pool(self.pool)


async def create(options: dict[str, Any], ctx: BlockContext) -> PostgresKV:
    opts = parse_options("kv", "postgres", PostgresOptions, options)
    pool = await acquire_pool(opts)
    try:
        await require_schema(pool, "kv", MIGRATIONS)
    except BaseException:
        await release_pool(pool)
        raise
    return PostgresKV(pool)
