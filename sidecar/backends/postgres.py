"""Postgres for every block that stores there: a shared asyncpg pool per DSN, error
mapping (connection trouble → UNAVAILABLE), and versioned per-block schema migrations.

Migrations are applied only by `memsidecar migrate` (in Kubernetes: once per store, by
the operator). A sidecar checks the schema version at start and refuses to serve an
older schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from pydantic import Field, model_validator

from memsidecar.sidecar.errors import MemError, SchemaOutdated, Unavailable
from memsidecar.sidecar.models import StrictModel
from memsidecar.sidecar.observability.backend import caller_operation, current_observer

SCHEMA_TABLE = "memsidecar_schema"


class PostgresOptions(StrictModel):
    # A libpq DSN, e.g. postgresql://user:pass@host:5432/db; or name an env var with dsn_env
    # (in Kubernetes, filled from a Secret).
    dsn: str | None = None
    dsn_env: str | None = None
    pool_min: int = Field(default=1, ge=0)
    pool_max: int = Field(default=10, ge=1)
    # Seconds before a query / a connection attempt gives up (→ UNAVAILABLE).
    command_timeout: float = Field(default=10.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _one_dsn(self) -> PostgresOptions:
        if bool(self.dsn) == bool(self.dsn_env):
            raise ValueError("set exactly one of dsn or dsn_env")
        if self.dsn_env and not os.environ.get(self.dsn_env):
            raise ValueError(f"dsn_env names {self.dsn_env}, which is not set")
        if self.pool_min > self.pool_max:
            raise ValueError("pool_min must not exceed pool_max")
        return self

    @property
    def resolved_dsn(self) -> str:
        return self.dsn or os.environ[self.dsn_env or ""]


@dataclass(frozen=True)
class Migration:
    version: int
    sql: str


# Errors that mean "the database could not be reached or the connection broke".
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
)


def _where(dsn: str) -> str:
    """host:port/db of a URL DSN without credentials, for messages."""
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"


class PgPool:
    """A lazily connected, shared pool; every query goes through `connection()`."""

    def __init__(self, options: PostgresOptions) -> None:
        self.options = options
        self.dsn = options.resolved_dsn
        self.where = _where(self.dsn)
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self.refs = 0

    async def _get(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=self.options.pool_min,
                        max_size=self.options.pool_max,
                        command_timeout=self.options.command_timeout,
                        timeout=self.options.connect_timeout,
                    )
        return self._pool

    def connection(
        self, operation: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        """A pooled connection; connection failures surface as Unavailable.

        While a sidecar observes the call (sidecar/observability) the time the connection
        is held is recorded, and traced as a child span, under `operation`: by default
        the calling driver method, e.g. "PostgresKV.get"."""
        if operation is None and current_observer() is not None:
            operation = caller_operation()
        return self._observed(operation)

    @contextlib.asynccontextmanager
    async def _observed(self, operation: str | None) -> AsyncIterator[asyncpg.Connection]:
        observer = current_observer() if operation is not None else None
        if observer is None or operation is None:
            async with self._connection() as conn:
                yield conn
            return
        with observer.backend_call("postgres", operation):
            async with self._connection() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            pool = await self._get()
            async with pool.acquire(timeout=self.options.connect_timeout) as conn:
                yield conn
        except MemError:
            raise
        except _UNAVAILABLE_ERRORS as exc:
            raise Unavailable(
                f"postgres at {self.where} is unavailable ({type(exc).__name__}: {exc}); "
                "the call changed nothing it did not acknowledge — retry"
            ) from exc

    def transaction(
        self, operation: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        """connection() in a transaction; `operation` as for connection()."""
        if operation is None and current_observer() is not None:
            operation = caller_operation()
        return self._transaction(operation)

    @contextlib.asynccontextmanager
    async def _transaction(self, operation: str | None) -> AsyncIterator[asyncpg.Connection]:
        async with self.connection(operation) as conn, conn.transaction():
            yield conn

    async def healthy(self) -> bool:
        try:
            async with self.connection() as conn:
                return bool(await conn.fetchval("SELECT 1") == 1)
        except MemError:
            return False

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


_shared: dict[str, PgPool] = {}


async def acquire_pool(options: dict[str, Any] | PostgresOptions) -> PgPool:
    """The process-wide pool for this DSN (blocks on one database share it)."""
    opts = options if isinstance(options, PostgresOptions) else PostgresOptions(**options)
    pool = _shared.get(opts.resolved_dsn)
    if pool is None:
        pool = _shared[opts.resolved_dsn] = PgPool(opts)
    pool.refs += 1
    return pool


async def release_pool(pool: PgPool) -> None:
    pool.refs -= 1
    if pool.refs <= 0:
        _shared.pop(pool.dsn, None)
        await pool.close()


_SCHEMA_DDL = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (
    block text PRIMARY KEY,
    version integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


async def schema_version(conn: asyncpg.Connection, block: str) -> int:
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", SCHEMA_TABLE)
    if not exists:
        return 0
    version = await conn.fetchval(f"SELECT version FROM {SCHEMA_TABLE} WHERE block = $1", block)
    return int(version or 0)


async def apply_migrations(pool: PgPool, block: str, migrations: Sequence[Migration]) -> int:
    """Apply pending migrations of one block in one transaction; return how many ran.

    An advisory lock serialises concurrent migrate runs against the same database.
    """
    async with pool.transaction() as conn:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('memsidecar-migrate'))")
        await conn.execute(_SCHEMA_DDL)
        current = await schema_version(conn, block)
        pending = [m for m in migrations if m.version > current]
        for migration in pending:
            await conn.execute(migration.sql)
        if pending:
            await conn.execute(
                f"INSERT INTO {SCHEMA_TABLE} (block, version) VALUES ($1, $2) "
                "ON CONFLICT (block) DO UPDATE SET version = $2, applied_at = now()",
                block,
                pending[-1].version,
            )
        return len(pending)


async def require_schema(pool: PgPool, block: str, migrations: Sequence[Migration]) -> None:
    """Refuse to run against a schema older than this code needs."""
    async with pool.connection() as conn:
        current = await schema_version(conn, block)
    needed = migrations[-1].version if migrations else 0
    if current < needed:
        raise SchemaOutdated(
            f"the {block} schema in postgres at {pool.where} is at version {current}, "
            f"this sidecar needs {needed}: run `memsidecar migrate --config <this config>`"
        )
    if current > needed:
        raise SchemaOutdated(
            f"the {block} schema in postgres at {pool.where} is at version {current}, newer "
            f"than this sidecar knows ({needed}): upgrade the sidecar"
        )
