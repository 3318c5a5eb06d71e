"""semantic on Postgres with pgvector: HNSW approximate search, re-ranked exactly.

Tables (tenant is part of every key and every query):
- semantic_records: the current version of each record (a soft-deleted one included),
  with its vector in an unsized `vector` column and the dimension in `dim`.
- semantic_versions: every version, for History.
- semantic_links: typed links between two records of a namespace.
- semantic_namespaces: the vector space (embedder, dimension) each (tenant, namespace)
  was bound to. The binding is only enforced while the namespace holds a live record
  (soft-deleted included, expired not), so it is checked, never cleaned up.

Indexes: HNSW needs a fixed dimension, so there is one partial expression index per
dimension in use, created by the driver when a namespace first binds that dimension:
  CREATE INDEX semantic_records_hnsw_<d> ON semantic_records
      USING hnsw ((embedding::vector(<d>)) vector_cosine_ops) WHERE dim = <d> AND NOT deleted
(halfvec for 2000 < d <= 4000, where `vector` indexes stop; above 4000 searches are exact
scans). Searches use the same expression and predicate, with the dimension inlined as a
literal so the planner can match the partial index.

Search: in one read-only repeatable-read transaction, set hnsw.iterative_scan (so a
filtered search keeps scanning the index until enough rows pass the filter),
hnsw.ef_search and hnsw.max_scan_tuples, and fetch top_k + extra_candidates rows ordered
by the indexed distance. Those are re-scored exactly (cosine in float64, like the memory
driver) and sorted by score, then id. When the index gave fewer rows than that (fewer
rows match, or the scan gave up at max_scan_tuples), the same query runs again ordered
by an expression the index does not cover: an exact scan of the matching rows. When ties at the
k-th score may reach past the fetched rows, the tied rows are fetched exactly too.

Writes to one record are serialised by a transaction-scoped advisory lock on
(tenant, namespace, id); a link takes the locks of both ends in a fixed order.
Expired records are invisible to every query and are removed when their id is
written again or by sweep().
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

from memsidecar.sidecar.backends.postgres import (
    Migration,
    PgPool,
    PostgresOptions,
    acquire_pool,
    release_pool,
    require_schema,
)
from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.registry import DriverConfigError, parse_options
from memsidecar.sidecar.blocks.semantic.driver import (
    Found,
    LinkType,
    Predicate,
    RecordWrite,
    ScoredRecord,
    SearchFilter,
    StoredLink,
    StoredRecord,
    Vector,
    VectorSpace,
    record_not_found,
    space_mismatch,
    too_many_links,
    version_conflict,
)
from memsidecar.sidecar.blocks.semantic.filters import json_type
from memsidecar.sidecar.blocks.semantic.settings import PgvectorSettings
from memsidecar.sidecar.errors import Aborted, InvalidArgument

log = logging.getLogger("memsidecar.semantic.pgvector")

MIGRATIONS = [
    Migration(
        1,
        """
        CREATE EXTENSION IF NOT EXISTS vector;
        CREATE TABLE semantic_namespaces (
            tenant text NOT NULL,
            namespace text NOT NULL,
            embedder text NOT NULL,
            dimension integer NOT NULL,
            PRIMARY KEY (tenant, namespace)
        );
        CREATE TABLE semantic_records (
            tenant text NOT NULL,
            namespace text NOT NULL,
            id text COLLATE "C" NOT NULL,
            version bigint NOT NULL,
            content text NOT NULL,
            metadata jsonb NOT NULL,
            tags text[] NOT NULL,
            category text NOT NULL,
            importance double precision NOT NULL,
            dim integer NOT NULL,
            embedding vector NOT NULL,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            expires_at double precision,
            deleted boolean NOT NULL,
            PRIMARY KEY (tenant, namespace, id),
            CHECK (vector_dims(embedding) = dim)
        );
        CREATE INDEX semantic_records_expiry ON semantic_records (expires_at)
            WHERE expires_at IS NOT NULL;
        -- A namespace name says much about the tenant (and the reverse): without this the
        -- planner multiplies their selectivities, underestimates a namespace's rows, and
        -- scans exactly where the HNSW index would be cheaper.
        CREATE STATISTICS semantic_records_scope (dependencies, ndistinct, mcv)
            ON tenant, namespace FROM semantic_records;
        CREATE TABLE semantic_versions (
            tenant text NOT NULL,
            namespace text NOT NULL,
            id text COLLATE "C" NOT NULL,
            version bigint NOT NULL,
            content text NOT NULL,
            metadata jsonb NOT NULL,
            tags text[] NOT NULL,
            category text NOT NULL,
            importance double precision NOT NULL,
            embedding vector NOT NULL,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            expires_at double precision,
            deleted boolean NOT NULL,
            PRIMARY KEY (tenant, namespace, id, version)
        );
        CREATE TABLE semantic_links (
            tenant text NOT NULL,
            namespace text NOT NULL,
            from_id text COLLATE "C" NOT NULL,
            to_id text COLLATE "C" NOT NULL,
            type text NOT NULL CHECK (type IN ('supersedes', 'contradicts', 'extends')),
            created_at double precision NOT NULL,
            PRIMARY KEY (tenant, namespace, from_id, to_id, type)
        );
        CREATE INDEX semantic_links_to ON semantic_links (tenant, namespace, to_id);
        """,
    ),
]

# pgvector limits: `vector` stores up to 16000 dimensions and indexes up to 2000;
# `halfvec` indexes up to 4000.
MAX_DIMENSION = 16000
MAX_VECTOR_INDEX = 2000
MAX_HALFVEC_INDEX = 4000

INDEX_PREFIX = "semantic_records_hnsw_"

_COLUMNS = (
    "id, version, content, metadata::text AS metadata, tags, category, importance, "
    "embedding::real[] AS vector, created_at, updated_at, expires_at, deleted"
)


def _live(alias: str, now: str) -> str:
    return f"({alias}.expires_at IS NULL OR {alias}.expires_at > {now})"


# Links whose both ends exist and have not expired; $1 tenant, $2 namespace, $3 the id,
# $4 now.
_LIVE_LINKS = f"""
    FROM semantic_links l
    JOIN semantic_records a
        ON a.tenant = l.tenant AND a.namespace = l.namespace AND a.id = l.from_id
    JOIN semantic_records b
        ON b.tenant = l.tenant AND b.namespace = l.namespace AND b.id = l.to_id
    WHERE l.tenant = $1 AND l.namespace = $2 AND (l.from_id = $3 OR l.to_id = $3)
        AND {_live("a", "$4")} AND {_live("b", "$4")}
"""


def index_name(dimension: int) -> str:
    return f"{INDEX_PREFIX}{dimension}"


def indexed_expression(dimension: int) -> str | None:
    """The expression the HNSW index of this dimension covers; None when none can."""
    if dimension <= MAX_VECTOR_INDEX:
        return f"(embedding::vector({dimension}))"
    if dimension <= MAX_HALFVEC_INDEX:
        return f"(embedding::halfvec({dimension}))"
    return None


def _query_vector(dimension: int, param: str) -> str:
    if dimension <= MAX_VECTOR_INDEX:
        return f"({param}::real[]::vector({dimension}))"
    if dimension <= MAX_HALFVEC_INDEX:
        return f"({param}::real[]::vector({dimension})::halfvec({dimension}))"
    return f"({param}::real[]::vector)"


def _lock_key(tenant: str, namespace: str, id: str) -> int:
    digest = hashlib.blake2b(
        f"semantic\0{tenant}\0{namespace}\0{id}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def _vector(raw: Sequence[float] | Vector) -> Vector:
    vector = np.array(raw, dtype=np.float32)  # a copy: the caller's array stays writable
    vector.flags.writeable = False
    return vector


def _record(row: asyncpg.Record) -> StoredRecord:
    return StoredRecord(
        id=row["id"],
        content=row["content"],
        metadata=json.loads(row["metadata"]),
        tags=tuple(row["tags"]),
        category=row["category"],
        importance=row["importance"],
        vector=_vector(row["vector"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expires_at=row["expires_at"],
        deleted=row["deleted"],
    )


def _link(row: Sequence[Any]) -> StoredLink:
    from_id, to_id, type, created_at = row
    link_type: LinkType = type
    return StoredLink(from_id, to_id, link_type, created_at)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)


def _check_storable(write: RecordWrite) -> None:
    """Postgres text and jsonb cannot hold NUL characters; say so instead of failing inside."""
    fields = {
        "content": [write.content],
        "category": [write.category],
        "tags": list(write.tags),
        "metadata": list(_strings(write.metadata)),
    }
    for field, values in fields.items():
        if any("\x00" in value for value in values):
            raise InvalidArgument(
                f"{field} contains a NUL character (\\u0000), which the pgvector driver "
                "cannot store; remove it"
            )


class _Params:
    """Positional query parameters, numbered after the ones a query starts with."""

    def __init__(self, *initial: Any) -> None:
        self.values: list[Any] = list(initial)

    def add(self, value: Any, cast: str) -> str:
        self.values.append(value)
        return f"${len(self.values)}::{cast}"


def _predicate_sql(predicate: Predicate, params: _Params) -> str:
    """One condition with exactly filters.predicate_holds' meaning.

    `->` with a text key only descends into objects (on lists and scalars it yields
    NULL), like filters.lookup; jsonb equality compares numbers numerically, never
    equates different types, and compares lists in order and objects by keys, like
    filters.json_equal. A NULL result means false.
    """
    field = "metadata" + "".join(f" -> {params.add(key, 'text')}" for key in predicate.path)
    field = f"({field})"
    op, value = predicate.op, predicate.value
    if op == "eq":
        return f"{field} = {params.add(json.dumps(value), 'jsonb')}"
    if op == "ne":
        kind = _JSONB_TYPES[json_type(value)]
        return (
            f"(jsonb_typeof({field}) = {params.add(kind, 'text')} "
            f"AND {field} <> {params.add(json.dumps(value), 'jsonb')})"
        )
    if op == "in":
        items = [json.dumps(item) for item in value]
        return f"{field} = ANY({params.add(items, 'jsonb[]')})"
    sql_op = _ORDERING[op]
    if isinstance(value, str):
        return (
            f"(CASE WHEN jsonb_typeof({field}) = 'string' THEN "
            f"({field} #>> '{{}}') COLLATE \"C\" {sql_op} {params.add(value, 'text')} "
            'COLLATE "C" END)'
        )
    return (
        f"(CASE WHEN jsonb_typeof({field}) = 'number' THEN "
        f"{field} {sql_op} {params.add(json.dumps(value), 'jsonb')} END)"
    )


_JSONB_TYPES = {
    "null": "null",
    "bool": "boolean",
    "number": "number",
    "string": "string",
    "list": "array",
    "object": "object",
}
_ORDERING = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def filter_sql(where: SearchFilter, params: _Params) -> str:
    """SQL conditions (each starting with AND) for a SearchFilter."""
    parts = [_predicate_sql(p, params) for p in where.predicates]
    if where.category:
        parts.append(f"category = {params.add(where.category, 'text')}")
    if where.tags_all:
        parts.append(f"tags @> {params.add(list(where.tags_all), 'text[]')}")
    if where.tags_any:
        parts.append(f"tags && {params.add(list(where.tags_any), 'text[]')}")
    return "".join(f" AND {part}" for part in parts)


def _filter_has_nul(where: SearchFilter) -> bool:
    texts = [where.category, *where.tags_all, *where.tags_any]
    for predicate in where.predicates:
        texts.extend(predicate.path)
        texts.extend(_strings(predicate.value))
    return any("\x00" in text for text in texts)


def _scores(rows: Sequence[asyncpg.Record], query: Vector) -> list[tuple[float, str, Any]]:
    """(cosine similarity in float64, id, row) for each row, like the memory driver."""
    if not rows:
        return []
    unit = query.astype(np.float64)
    unit /= np.linalg.norm(unit)
    matrix = np.asarray([row["vector"] for row in rows], dtype=np.float32).astype(np.float64)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    scores = np.clip(matrix @ unit, -1.0, 1.0).tolist()
    return [(score, row["id"], row) for score, row in zip(scores, rows, strict=True)]


# Settings of a search transaction: $3 ef_search, $4 iterative_scan, $5 max_scan_tuples.
# Custom plans, so the planner weighs each namespace's own size (index or exact scan)
# instead of settling on one generic plan for every tenant.
SET_HNSW = (
    "set_config('hnsw.ef_search', $3, true), set_config('hnsw.iterative_scan', $4, true), "
    "set_config('hnsw.max_scan_tuples', $5, true), "
    "set_config('plan_cache_mode', 'force_custom_plan', true)"
)
# After failing to create an index (no privilege, busy table), wait this long to retry.
INDEX_RETRY_SECONDS = 60.0
_EXACT_DISTANCE = "(embedding <=> ($3::real[]::vector))"


@dataclass(frozen=True)
class SearchSql:
    """The queries of one search; both take `params`."""

    # Ordered by the indexed distance: the planner may use the HNSW index.
    approximate: str
    # Ordered by a distance no index covers: an exact scan of the matching rows.
    exact: str
    # The WHERE clause both share (scope, dimension, not deleted, not expired, filters).
    conditions: str
    params: list[Any]
    # Rows each query fetches: top_k + extra_candidates.
    candidates: int
    # Values for SET_HNSW.
    hnsw_settings: tuple[str, str, str]


def search_sql(
    tenant: str,
    namespace: str,
    dimension: int,
    query: Vector,
    now: float,
    top_k: int,
    where: SearchFilter,
    tuning: PgvectorSettings,
) -> SearchSql:
    """The dimension is inlined as a literal so the planner can match the partial index."""
    candidates = top_k + tuning.extra_candidates
    # $5, the row limit, comes before the filter's parameters so every query of the
    # search (the tie completion too) can use the same leading ones.
    params = _Params(tenant, namespace, query.tolist(), now, candidates)
    conditions = (
        f"tenant = $1 AND namespace = $2 AND dim = {dimension} AND NOT deleted "
        f"AND (expires_at IS NULL OR expires_at > $4){filter_sql(where, params)}"
    )
    expression = indexed_expression(dimension)
    distance = (
        f"({expression} <=> {_query_vector(dimension, '$3')})"
        if expression is not None
        else _EXACT_DISTANCE
    )
    limit = "$5::integer"
    return SearchSql(
        approximate=(
            f"SELECT {_COLUMNS}, {distance} AS distance FROM semantic_records "
            f"WHERE {conditions} ORDER BY {distance} LIMIT {limit}"
        ),
        exact=(
            f"SELECT {_COLUMNS}, {_EXACT_DISTANCE} AS distance FROM semantic_records "
            f"WHERE {conditions} ORDER BY {_EXACT_DISTANCE} LIMIT {limit}"
        ),
        conditions=conditions,
        params=params.values,
        candidates=candidates,
        hnsw_settings=(
            str(min(1000, max(tuning.ef_search, candidates))),
            tuning.iterative_scan,
            str(tuning.max_scan_tuples),
        ),
    )


class PgvectorSemantic:
    def __init__(self, pool: PgPool, tuning: PgvectorSettings) -> None:
        self.pool = pool
        self.tuning = tuning
        # Dimensions whose HNSW index is known to exist.
        self._indexed: set[int] = set()
        # Dimension -> monotonic time before which index creation is not tried again.
        self._index_retry: dict[int, float] = {}
        self._writes_since_analyze = 0
        self._analyzer: asyncio.Task[None] | None = None

    # -- indexes ---------------------------------------------------------------------

    async def load_indexes(self) -> None:
        async with self.pool.connection() as conn:
            names = await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'semantic_records' "
                "AND indexname LIKE $1",
                INDEX_PREFIX + "%",
            )
        for row in names:
            suffix = row["indexname"][len(INDEX_PREFIX) :]
            if suffix.isdigit():
                self._indexed.add(int(suffix))

    async def ensure_index(self, dimension: int) -> None:
        """Create the HNSW index for `dimension` unless it exists (once per process).

        Made when a namespace binds a new dimension, so the index is empty or small
        and the short table lock it takes is brief; lock_timeout keeps a busy table
        from stalling the write (the write goes on, a later one retries the index).
        """
        expression = indexed_expression(dimension)
        if dimension in self._indexed or expression is None:
            return
        if time.monotonic() < self._index_retry.get(dimension, 0.0):
            return
        opclass = "vector_cosine_ops" if dimension <= MAX_VECTOR_INDEX else "halfvec_cosine_ops"
        name = index_name(dimension)
        sql = (
            f"CREATE INDEX IF NOT EXISTS {name} ON semantic_records USING hnsw "
            f"({expression} {opclass}) WITH (m = {self.tuning.m}, "
            f"ef_construction = {self.tuning.ef_construction}) "
            f"WHERE dim = {dimension} AND NOT deleted"
        )
        try:
            async with self.pool.transaction() as conn:
                await conn.execute("SET LOCAL lock_timeout = '2s'")
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", name)
                exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
                if not exists:
                    await conn.execute(sql)
                    log.info("created HNSW index %s for %d-dimensional vectors", name, dimension)
        except (asyncpg.InsufficientPrivilegeError, asyncpg.LockNotAvailableError) as exc:
            log.warning(
                "could not create the HNSW index for %d-dimensional vectors (%s); searches "
                "of that dimension scan exactly until it exists. Run as the table owner: %s",
                dimension,
                exc,
                sql,
            )
            self._index_retry[dimension] = time.monotonic() + INDEX_RETRY_SECONDS
            return
        self._indexed.add(dimension)

    # -- shared steps ----------------------------------------------------------------

    @staticmethod
    async def _lock(conn: asyncpg.Connection, tenant: str, namespace: str, *ids: str) -> None:
        for id in sorted(set(ids)):
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(tenant, namespace, id))

    @staticmethod
    async def _head(
        conn: asyncpg.Connection, tenant: str, namespace: str, id: str
    ) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await conn.fetchrow(
            "SELECT version, created_at, expires_at, deleted FROM semantic_records "
            "WHERE tenant = $1 AND namespace = $2 AND id = $3 FOR UPDATE",
            tenant,
            namespace,
            id,
        )
        return row

    @staticmethod
    async def _remove(conn: asyncpg.Connection, tenant: str, namespace: str, id: str) -> None:
        """Remove a record with every version and link (the caller holds its lock)."""
        await conn.execute(
            """
            WITH v AS (
                DELETE FROM semantic_versions WHERE tenant = $1 AND namespace = $2 AND id = $3
            ), l AS (
                DELETE FROM semantic_links WHERE tenant = $1 AND namespace = $2
                    AND (from_id = $3 OR to_id = $3)
            )
            DELETE FROM semantic_records WHERE tenant = $1 AND namespace = $2 AND id = $3
            """,
            tenant,
            namespace,
            id,
        )

    async def _current(
        self, conn: asyncpg.Connection, tenant: str, namespace: str, id: str, now: float
    ) -> asyncpg.Record | None:
        """Lock `id` and read its current version; an expired record is removed first."""
        await self._lock(conn, tenant, namespace, id)
        head = await self._head(conn, tenant, namespace, id)
        if head is not None and head["expires_at"] is not None and head["expires_at"] <= now:
            await self._remove(conn, tenant, namespace, id)
            return None
        return head

    @staticmethod
    async def _has_live_records(
        conn: asyncpg.Connection, tenant: str, namespace: str, now: float
    ) -> bool:
        return bool(
            await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM semantic_records r WHERE r.tenant = $1 "
                f"AND r.namespace = $2 AND {_live('r', '$3')})",
                tenant,
                namespace,
                now,
            )
        )

    async def _bind(
        self,
        conn: asyncpg.Connection,
        tenant: str,
        namespace: str,
        space: VectorSpace,
        now: float,
    ) -> None:
        """Hold the namespace's binding to `space` for this transaction, or raise.

        Writers in the bound space share a row lock on the binding; rebinding an
        emptied namespace takes it exclusively and checks again for live records.
        """
        inserted = await conn.fetchval(
            "INSERT INTO semantic_namespaces (tenant, namespace, embedder, dimension) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
            tenant,
            namespace,
            space.embedder,
            space.dimension,
        )
        if inserted:
            return
        select = (
            "SELECT embedder, dimension FROM semantic_namespaces "
            "WHERE tenant = $1 AND namespace = $2 FOR "
        )
        row = await conn.fetchrow(select + "SHARE", tenant, namespace)
        if row is None:
            raise Aborted(
                f"the binding of semantic namespace {namespace!r} changed during the write; retry"
            )
        bound = VectorSpace(row["embedder"], row["dimension"])
        if bound == space:
            return
        if await self._has_live_records(conn, tenant, namespace, now):
            raise space_mismatch(namespace, bound, space)
        row = await conn.fetchrow(select + "UPDATE", tenant, namespace)
        bound = VectorSpace(row["embedder"], row["dimension"])
        if bound != space and await self._has_live_records(conn, tenant, namespace, now):
            raise space_mismatch(namespace, bound, space)
        await conn.execute(
            "UPDATE semantic_namespaces SET embedder = $3, dimension = $4 "
            "WHERE tenant = $1 AND namespace = $2",
            tenant,
            namespace,
            space.embedder,
            space.dimension,
        )

    # -- the driver protocol ---------------------------------------------------------

    async def upsert(
        self,
        tenant: str,
        namespace: str,
        space: VectorSpace,
        write: RecordWrite,
        now: float,
        if_version: int | None,
    ) -> StoredRecord:
        _check_storable(write)
        await self.ensure_index(space.dimension)
        async with self._transaction() as conn:
            head = await self._current(conn, tenant, namespace, write.id, now)
            await self._bind(conn, tenant, namespace, space, now)
            if if_version is not None:
                live = head is not None and not head["deleted"]
                if (head["version"] if head is not None and live else 0) != if_version:
                    raise version_conflict(
                        write.id,
                        if_version,
                        head["version"] if head is not None else None,
                        head is not None and head["deleted"],
                    )
            version = head["version"] + 1 if head is not None else 1
            created_at = head["created_at"] if head is not None else now
            await conn.execute(
                """
                WITH v AS (
                    INSERT INTO semantic_versions (tenant, namespace, id, version, content,
                        metadata, tags, category, importance, embedding, created_at,
                        updated_at, expires_at, deleted)
                    VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10::real[]::vector,
                        $11, $12, $13, false)
                    RETURNING *
                )
                INSERT INTO semantic_records (tenant, namespace, id, version, content, metadata,
                    tags, category, importance, dim, embedding, created_at, updated_at,
                    expires_at, deleted)
                SELECT tenant, namespace, id, version, content, metadata, tags, category,
                    importance, $14, embedding, created_at, updated_at, expires_at, deleted
                FROM v
                ON CONFLICT (tenant, namespace, id) DO UPDATE SET
                    version = EXCLUDED.version, content = EXCLUDED.content,
                    metadata = EXCLUDED.metadata, tags = EXCLUDED.tags,
                    category = EXCLUDED.category, importance = EXCLUDED.importance,
                    dim = EXCLUDED.dim, embedding = EXCLUDED.embedding,
                    created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
                    expires_at = EXCLUDED.expires_at, deleted = EXCLUDED.deleted
                """,
                tenant,
                namespace,
                write.id,
                version,
                write.content,
                json.dumps(write.metadata, separators=(",", ":"), ensure_ascii=False),
                list(write.tags),
                write.category,
                write.importance,
                write.vector.tolist(),
                created_at,
                now,
                write.expires_at,
                space.dimension,
            )
        self._count_write()
        return StoredRecord(
            id=write.id,
            content=write.content,
            metadata=write.metadata,
            tags=write.tags,
            category=write.category,
            importance=write.importance,
            vector=_vector(write.vector),
            version=version,
            created_at=created_at,
            updated_at=now,
            expires_at=write.expires_at,
        )

    async def get(
        self, tenant: str, namespace: str, id: str, now: float, include_deleted: bool
    ) -> Found | None:
        async with self.pool.connection() as conn:
            row = await conn.fetchrow(
                f"""
                SELECT {_COLUMNS}, ARRAY(
                    SELECT ROW(l.from_id, l.to_id, l.type, l.created_at) {_LIVE_LINKS}
                    ORDER BY l.created_at, l.from_id, l.to_id, l.type COLLATE "C"
                ) AS links
                FROM semantic_records r
                WHERE r.tenant = $1 AND r.namespace = $2 AND r.id = $3 AND {_live("r", "$4")}
                """,
                tenant,
                namespace,
                id,
                now,
            )
        if row is None or (row["deleted"] and not include_deleted):
            return None
        return Found(_record(row), [_link(link) for link in row["links"]])

    async def search(
        self,
        tenant: str,
        namespace: str,
        space: VectorSpace,
        query: Vector,
        top_k: int,
        where: SearchFilter,
        min_score: float | None,
        now: float,
    ) -> list[ScoredRecord]:
        if _filter_has_nul(where):
            raise InvalidArgument(
                "a search filter contains a NUL character (\\u0000), which the pgvector "
                "driver cannot store or compare; remove it"
            )
        sql = search_sql(tenant, namespace, space.dimension, query, now, top_k, where, self.tuning)
        async with (
            self.pool.connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            bound = await conn.fetchrow(
                f"""
                SELECT {SET_HNSW}, n.embedder, n.dimension,
                    EXISTS (SELECT 1 FROM semantic_records r WHERE r.tenant = $1
                        AND r.namespace = $2 AND (r.expires_at IS NULL OR r.expires_at > $6))
                        AS live
                FROM (SELECT 1) AS one
                LEFT JOIN semantic_namespaces n ON n.tenant = $1 AND n.namespace = $2
                """,
                tenant,
                namespace,
                *sql.hnsw_settings,
                now,
            )
            if bound["embedder"] is None or not bound["live"]:
                return []
            bound_space = VectorSpace(bound["embedder"], bound["dimension"])
            if bound_space != space:
                raise space_mismatch(namespace, bound_space, space)
            rows = await conn.fetch(sql.approximate, *sql.params)
            if len(rows) < sql.candidates:
                # Fewer rows match than asked for, or the index scan gave up (at
                # max_scan_tuples, or where the graph holds many duplicates): either
                # way the exact query is cheap in the first case and needed in the second.
                rows = await conn.fetch(sql.exact, *sql.params)
            ranked = sorted(_scores(rows, query), key=lambda hit: (-hit[0], hit[1]))
            if len(rows) == sql.candidates and len(ranked) >= top_k:
                kth = ranked[top_k - 1][0]
                if ranked[-1][0] == kth:
                    ranked = await self._complete_ties(conn, ranked, kth, sql, query)
        # Records are built for the top_k kept only, not for every candidate fetched.
        kept = [(score, row) for score, _, row in ranked if min_score is None or score >= min_score]
        return [ScoredRecord(_record(row), score) for score, row in kept[:top_k]]

    async def _complete_ties(
        self,
        conn: asyncpg.Connection,
        ranked: list[tuple[float, str, Any]],
        kth: float,
        sql: SearchSql,
        query: Vector,
    ) -> list[tuple[float, str, Any]]:
        """More rows may tie with the k-th than were fetched: fetch the tied rows with
        the smallest ids exactly (up to the candidate count), so ties are broken by id as
        the contract says."""
        # Postgres computes the distance in float32: allow for its rounding.
        tied = _Params(*sql.params)
        low = tied.add(1.0 - kth - 1e-5, "float8")
        high = tied.add(1.0 - kth + 1e-5, "float8")
        exact = _EXACT_DISTANCE
        rows = await conn.fetch(
            f"SELECT {_COLUMNS}, {exact} AS distance FROM semantic_records "
            f"WHERE {sql.conditions} AND {exact} BETWEEN {low} AND {high} "
            "ORDER BY id LIMIT $5::integer",
            *tied.values,
        )
        seen = {id for _, id, _ in ranked}
        extra = [hit for hit in _scores(rows, query) if hit[1] not in seen]
        return sorted(ranked + extra, key=lambda hit: (-hit[0], hit[1]))

    async def delete(self, tenant: str, namespace: str, id: str, hard: bool, now: float) -> bool:
        async with self._transaction() as conn:
            head = await self._current(conn, tenant, namespace, id, now)
            if head is None:
                return False
            if hard:
                await self._remove(conn, tenant, namespace, id)
                return True
            if head["deleted"]:
                return False
            await conn.execute(
                """
                WITH v AS (
                    INSERT INTO semantic_versions (tenant, namespace, id, version, content,
                        metadata, tags, category, importance, embedding, created_at,
                        updated_at, expires_at, deleted)
                    SELECT tenant, namespace, id, version + 1, content, metadata, tags,
                        category, importance, embedding, created_at, $4, expires_at, true
                    FROM semantic_records WHERE tenant = $1 AND namespace = $2 AND id = $3
                    RETURNING version
                )
                UPDATE semantic_records r SET version = v.version, updated_at = $4,
                    deleted = true
                FROM v WHERE r.tenant = $1 AND r.namespace = $2 AND r.id = $3
                """,
                tenant,
                namespace,
                id,
                now,
            )
            return True

    async def history(
        self, tenant: str, namespace: str, id: str, limit: int, now: float
    ) -> list[StoredRecord] | None:
        async with self.pool.connection() as conn:
            rows = await conn.fetch(
                f"""
                SELECT {_COLUMNS} FROM semantic_versions v
                WHERE tenant = $1 AND namespace = $2 AND id = $3 AND EXISTS (
                    SELECT 1 FROM semantic_records r WHERE r.tenant = $1 AND r.namespace = $2
                        AND r.id = $3 AND {_live("r", "$4")})
                ORDER BY version DESC LIMIT $5
                """,
                tenant,
                namespace,
                id,
                now,
                limit,
            )
        if not rows:
            return None
        return [_record(row) for row in rows]

    async def link(
        self,
        tenant: str,
        namespace: str,
        link: StoredLink,
        remove: bool,
        max_links: int,
        now: float,
    ) -> tuple[StoredLink, bool]:
        async with self._transaction() as conn:
            await self._lock(conn, tenant, namespace, link.from_id, link.to_id)
            existing = await conn.fetchrow(
                f"""
                SELECT l.from_id, l.to_id, l.type, l.created_at {_LIVE_LINKS}
                    AND l.from_id = $3 AND l.to_id = $5 AND l.type = $6
                """,
                tenant,
                namespace,
                link.from_id,
                now,
                link.to_id,
                link.type,
            )
            if remove:
                if existing is None:
                    return link, False
                await conn.execute(
                    "DELETE FROM semantic_links WHERE tenant = $1 AND namespace = $2 "
                    "AND from_id = $3 AND to_id = $4 AND type = $5",
                    tenant,
                    namespace,
                    link.from_id,
                    link.to_id,
                    link.type,
                )
                return _link(tuple(existing)), True
            for end in (link.from_id, link.to_id):
                live = await conn.fetchval(
                    "SELECT true FROM semantic_records r WHERE r.tenant = $1 AND "
                    f"r.namespace = $2 AND r.id = $3 AND NOT r.deleted AND {_live('r', '$4')}",
                    tenant,
                    namespace,
                    end,
                    now,
                )
                if not live:
                    raise record_not_found(namespace, end)
            if existing is not None:
                return _link(tuple(existing)), False
            for end in (link.from_id, link.to_id):
                count = await conn.fetchval(
                    f"SELECT count(*) {_LIVE_LINKS}", tenant, namespace, end, now
                )
                if count >= max_links:
                    raise too_many_links(end, max_links)
            # A link row left behind by an expired end is replaced.
            await conn.execute(
                """
                INSERT INTO semantic_links (tenant, namespace, from_id, to_id, type, created_at)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (tenant, namespace, from_id, to_id, type)
                DO UPDATE SET created_at = EXCLUDED.created_at
                """,
                tenant,
                namespace,
                link.from_id,
                link.to_id,
                link.type,
                link.created_at,
            )
            return link, True

    async def sweep(self, now: float, batch: int = 1000) -> int:
        """Remove expired records in batches; rows a writer holds are left for next time."""
        total = 0
        while True:
            async with self._transaction() as conn:
                removed = await conn.fetchval(
                    """
                    WITH gone AS (
                        DELETE FROM semantic_records WHERE (tenant, namespace, id) IN (
                            SELECT tenant, namespace, id FROM semantic_records
                            WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)
                        RETURNING tenant, namespace, id
                    ), v AS (
                        DELETE FROM semantic_versions v USING gone
                        WHERE v.tenant = gone.tenant AND v.namespace = gone.namespace
                            AND v.id = gone.id
                    ), l AS (
                        DELETE FROM semantic_links l USING gone
                        WHERE l.tenant = gone.tenant AND l.namespace = gone.namespace
                            AND (l.from_id = gone.id OR l.to_id = gone.id)
                    )
                    SELECT count(*) FROM gone
                    """,
                    now,
                    batch,
                )
            total += int(removed)
            if removed < batch:
                return total

    async def health(self) -> bool:
        return await self.pool.healthy()

    async def close(self) -> None:
        if self._analyzer is not None:
            self._analyzer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._analyzer
        await release_pool(self.pool)

    # -- planner statistics ------------------------------------------------------------

    def _count_write(self) -> None:
        """Start a background ANALYZE every `analyze_after_writes` writes.

        The (tenant, namespace) statistics know only namespaces sampled by the last
        ANALYZE: a namespace loaded since is estimated at one row, and the planner sorts
        it exactly through the primary key instead of using HNSW (38-49 ms instead of
        ~5 ms at 10k records, docs/benchmarks.md). Autovacuum analyzes only after 10% of
        the table changed, which a new namespace in a large table may never reach.
        """
        every = self.tuning.analyze_after_writes
        if every == 0:
            return
        self._writes_since_analyze += 1
        running = self._analyzer is not None and not self._analyzer.done()
        if self._writes_since_analyze >= every and not running:
            self._writes_since_analyze = 0
            self._analyzer = asyncio.create_task(self._analyze())

    async def _analyze(self) -> None:
        try:
            async with self.pool.connection() as conn:
                await conn.execute("ANALYZE semantic_records")
        except Exception as exc:
            # Only plan quality depends on it: searches stay correct either way.
            log.warning("background ANALYZE semantic_records failed: %s", exc)

    # -- transactions ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """pool.transaction(); a lock conflict Postgres resolved by aborting is ABORTED."""
        try:
            async with self.pool.transaction() as conn:
                yield conn
        except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as error:
            raise Aborted(
                f"the write collided with a concurrent one ({error}); nothing changed, retry"
            ) from error


async def create(options: dict[str, Any], ctx: BlockContext) -> PgvectorSemantic:
    opts = parse_options("semantic", "pgvector", PostgresOptions, options)
    settings = ctx.config.blocks.semantic
    for key, embedder in settings.embedders.items():
        if embedder.dimension > MAX_DIMENSION:
            raise DriverConfigError(
                f"blocks.semantic.embedders.{key}.dimension: {embedder.dimension} is over "
                f"pgvector's limit of {MAX_DIMENSION} dimensions"
            )
    pool = await acquire_pool(opts)
    try:
        await require_schema(pool, "semantic", MIGRATIONS)
        driver = PgvectorSemantic(pool, settings.pgvector)
        await driver.load_indexes()
        for dimension in sorted({e.dimension for e in settings.embedders.values()}):
            await driver.ensure_index(dimension)
    except BaseException:
        await release_pool(pool)
        raise
    return driver
