"""What only the pgvector driver has: HNSW indexes per dimension, iterative index scans
under selective filters, exact re-ranking, and Postgres' limits on stored text."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import numpy as np
import pytest

from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.semantic.driver import (
    Predicate,
    RecordWrite,
    SearchFilter,
    Vector,
    VectorSpace,
)
from memsidecar.sidecar.blocks.semantic.drivers.pgvector import (
    SET_HNSW,
    PgvectorSemantic,
    index_name,
    search_sql,
)
from memsidecar.sidecar.blocks.semantic.registry import DRIVERS
from memsidecar.sidecar.config import load_config
from memsidecar.sidecar.errors import InvalidArgument
from tests.sidecar.blocks.semantic.conftest import SEMANTIC_DRIVERS
from tests.support import ManualClock

DIM = 64
HALF_DIM = 2100  # over vector's 2000-dimension index limit: indexed as halfvec
WIDE_DIM = 4100  # over halfvec's 4000: no index, exact scans
SPACE = VectorSpace("fake", DIM)


@pytest.fixture
async def driver(postgres: str, clock: ManualClock) -> AsyncIterator[PgvectorSemantic]:
    config = load_config(
        None,
        {
            **SEMANTIC_DRIVERS["pgvector"],
            "blocks.semantic.embedders": {
                "small": {"type": "fake", "dimension": DIM},
                "half": {"type": "fake", "dimension": HALF_DIM},
            },
            "blocks.semantic.namespaces": {"*": {"embedder": "small"}},
        },
    )
    settings = config.blocks.semantic
    opened = await DRIVERS.open(settings.driver, settings.options, BlockContext(config, clock))
    assert isinstance(opened, PgvectorSemantic)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def tenant(driver: PgvectorSemantic) -> AsyncIterator[str]:
    """A fresh tenant whose rows are deleted afterwards (they would skew later plans)."""
    name = f"pgv-{uuid.uuid4().hex[:10]}"
    yield name
    async with driver.pool.connection() as conn:
        for table in ("semantic_links", "semantic_versions", "semantic_records"):
            await conn.execute(f"DELETE FROM {table} WHERE tenant = $1", name)
        await conn.execute("DELETE FROM semantic_namespaces WHERE tenant = $1", name)


def write(id: str, vector: Vector, **fields: Any) -> RecordWrite:
    return RecordWrite(
        id=id,
        content=fields.get("content", ""),
        metadata=fields.get("metadata", {}),
        tags=tuple(fields.get("tags", ())),
        category=fields.get("category", ""),
        importance=0.0,
        vector=vector,
        expires_at=None,
    )


async def bulk_load(
    driver: PgvectorSemantic,
    tenant: str,
    namespace: str,
    vectors: np.ndarray[Any, np.dtype[np.float32]],
    buckets: list[int],
) -> list[str]:
    """The first record through the driver (it binds the namespace and makes the index),
    the rest in one statement: thousands of single-row commits would take seconds."""
    ids = [f"r{i:05}" for i in range(len(vectors))]
    tags = [["rare"] if bucket == 7 else ["common"] for bucket in buckets]
    await driver.upsert(
        tenant,
        namespace,
        VectorSpace("fake", vectors.shape[1]),
        write(ids[0], vectors[0], metadata={"bucket": buckets[0]}, tags=tags[0]),
        1.0,
        None,
    )
    chunk = 500  # statements stay well under the pool's command timeout
    async with driver.pool.transaction() as conn:
        for start in range(1, len(ids), chunk):
            part = slice(start, start + chunk)
            for table, dim_column in (("semantic_versions", ""), ("semantic_records", ", dim")):
                await conn.execute(
                    f"""
                    INSERT INTO {table} (tenant, namespace, id, version, content, metadata,
                        tags, category, importance{dim_column}, embedding, created_at,
                        updated_at, expires_at, deleted)
                    SELECT $1, $2, id, 1, '', metadata::jsonb, string_to_array(tags, ','), '',
                        0{", $7" if dim_column else ""}, embedding::vector, 1, 1, NULL, false
                    FROM unnest($3::text[], $4::text[], $5::text[], $6::text[])
                        AS t(id, metadata, tags, embedding)
                    """,
                    tenant,
                    namespace,
                    ids[part],
                    [json.dumps({"bucket": b}) for b in buckets[part]],
                    [",".join(t) for t in tags[part]],
                    [json.dumps(v.tolist()) for v in vectors[part]],
                    *([vectors.shape[1]] if dim_column else []),
                )
        await conn.execute("ANALYZE semantic_records (tenant, namespace, dim, deleted, expires_at)")
    return ids


async def plan(
    conn: asyncpg.Connection, sql: str, params: list[Any], settings: tuple[str, str, str]
) -> str:
    await conn.fetchrow(f"SELECT $1::text, $2::text, {SET_HNSW}", "", "", *settings)
    rows = await conn.fetch(f"EXPLAIN {sql}", *params)
    return "\n".join(row[0] for row in rows)


def exact_top(
    vectors: np.ndarray[Any, np.dtype[np.float32]], query: Vector, k: int, rows: Any = None
) -> list[int]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = unit @ (query / np.linalg.norm(query))
    order = np.argsort(-scores)
    if rows is not None:
        order = np.array([i for i in order if i in rows])
    return [int(i) for i in order[:k]]


async def test_indexes_exist_for_configured_dimensions(driver: PgvectorSemantic) -> None:
    async with driver.pool.connection() as conn:
        names = {
            row["indexname"]: row["indexdef"]
            for row in await conn.fetch(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'semantic_records'"
            )
        }
    small, half = names[index_name(DIM)], names[index_name(HALF_DIM)]
    assert "USING hnsw" in small and "vector_cosine_ops" in small
    assert f"(embedding)::vector({DIM})" in small and f"(dim = {DIM})" in small
    assert "NOT deleted" in small
    assert "halfvec_cosine_ops" in half and f"halfvec({HALF_DIM})" in half


async def test_hnsw_index_serves_plain_and_selective_searches(
    driver: PgvectorSemantic, tenant: str
) -> None:
    """3000 random records, 1% of them in bucket 7 (one data set: loading is the slow part)."""
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(3000, DIM)).astype(np.float32)
    buckets = [i % 100 for i in range(3000)]
    ids = await bulk_load(driver, tenant, "big", vectors, buckets)
    query = rng.normal(size=DIM).astype(np.float32)

    # Unfiltered: the planner orders by the HNSW index, no sort of the namespace.
    sql = search_sql(tenant, "big", DIM, query, 2.0, 10, SearchFilter(), driver.tuning)
    async with driver.pool.connection() as conn, conn.transaction():
        explained = await plan(conn, sql.approximate, sql.params, sql.hnsw_settings)
    assert f"Index Scan using {index_name(DIM)} on semantic_records" in explained, explained
    assert "Sort" not in explained, explained
    hits = await driver.search(tenant, "big", SPACE, query, 10, SearchFilter(), None, 2.0)
    assert len(hits) == 10
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    # Approximate, but close: most of the exact top 10 are found.
    exact = {ids[i] for i in exact_top(vectors, query, 10)}
    assert len(exact & {h.record.id for h in hits}) >= 8

    # 1% selective: whatever plan the planner picks, exactly top_k matching records.
    rows = {i for i, bucket in enumerate(buckets) if bucket == 7}
    matching = {ids[i] for i in rows}
    for where in (
        SearchFilter(predicates=(Predicate(("bucket",), "eq", 7),)),
        SearchFilter(tags_any=("rare",)),
    ):
        hits = await driver.search(tenant, "big", SPACE, query, 10, where, None, 2.0)
        assert len(hits) == 10
        assert {h.record.id for h in hits} <= matching
        assert [h.record.id for h in hits] == [ids[i] for i in exact_top(vectors, query, 10, rows)]

    # The index path on its own: with sorting disabled the planner must order by the
    # HNSW index, and only the iterative scan finds enough matching rows.
    where = SearchFilter(predicates=(Predicate(("bucket",), "eq", 7),))
    sql = search_sql(tenant, "big", DIM, query, 2.0, 10, where, driver.tuning)
    async with driver.pool.connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_sort = off")
        explained = await plan(conn, sql.approximate, sql.params, sql.hnsw_settings)
        assert f"Index Scan using {index_name(DIM)}" in explained, explained
        found = await conn.fetch(sql.approximate, *sql.params)
        assert len(found) >= 10
        assert {row["id"] for row in found} <= matching
        ef, _, max_tuples = sql.hnsw_settings
        await conn.fetchrow(f"SELECT $1::text, $2::text, {SET_HNSW}", "", "", ef, "off", max_tuples)
        without_iteration = await conn.fetch(sql.approximate, *sql.params)
        assert len(without_iteration) < 10


async def test_ties_beyond_the_candidates_are_broken_by_id(
    driver: PgvectorSemantic, tenant: str
) -> None:
    """Far more equal scores than top_k + extra_candidates rows: still the smallest ids."""
    rng = np.random.default_rng(3)
    query = rng.normal(size=DIM).astype(np.float32)
    tied = query + rng.normal(size=DIM).astype(np.float32)
    ids = [f"id-{i:03}" for i in rng.permutation(200)]
    await asyncio.gather(
        *(driver.upsert(tenant, "ties", SPACE, write(id, tied), 1.0, None) for id in ids)
    )
    await driver.upsert(tenant, "ties", SPACE, write("zz-best", query * 3), 1.0, None)
    hits = await driver.search(tenant, "ties", SPACE, query, 5, SearchFilter(), None, 2.0)
    assert [h.record.id for h in hits] == ["zz-best", "id-000", "id-001", "id-002", "id-003"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-6) and hits[1].score < 0.99
    assert len({h.score for h in hits[1:]}) == 1


async def test_several_dimensions_side_by_side(driver: PgvectorSemantic, tenant: str) -> None:
    rng = np.random.default_rng(5)
    for dim, namespace in ((DIM, "small"), (HALF_DIM, "half"), (WIDE_DIM, "wide")):
        space = VectorSpace("fake", dim)
        vectors = rng.normal(size=(30, dim)).astype(np.float32)
        for i, vector in enumerate(vectors):
            await driver.upsert(tenant, namespace, space, write(f"v{i:02}", vector), 1.0, None)
        hits = await driver.search(
            tenant, namespace, space, vectors[4], 3, SearchFilter(), None, 2.0
        )
        assert hits[0].record.id == "v04" and hits[0].score == pytest.approx(1.0, abs=1e-6)
        assert [h.record.id for h in hits] == [
            f"v{i:02}" for i in exact_top(vectors, vectors[4], 3)
        ]
    assert index_name(WIDE_DIM) not in await _index_names(driver)


async def _index_names(driver: PgvectorSemantic) -> set[str]:
    async with driver.pool.connection() as conn:
        rows = await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'semantic_records'"
        )
    return {row["indexname"] for row in rows}


async def test_new_dimension_gets_its_index(driver: PgvectorSemantic, tenant: str) -> None:
    dim = 7 + uuid.uuid4().int % 5  # some rarely used dimension
    vector = np.ones(dim, dtype=np.float32)
    await driver.upsert(tenant, "odd", VectorSpace("fake", dim), write("a", vector), 1.0, None)
    assert index_name(dim) in await _index_names(driver)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"content": "a\x00b"}, "content"),
        ({"metadata": {"k": "a\x00"}}, "metadata"),
        ({"metadata": {"a\x00": 1}}, "metadata"),
        ({"tags": ["t\x00"]}, "tags"),
        ({"category": "c\x00"}, "category"),
    ],
)
async def test_nul_characters_are_refused(
    driver: PgvectorSemantic, tenant: str, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgument, match=f"{field} contains a NUL"):
        await driver.upsert(
            tenant, "nul", SPACE, write("n", np.ones(DIM, np.float32), **fields), 1.0, None
        )
    assert await driver.get(tenant, "nul", "n", 1.0, True) is None
    where = SearchFilter(predicates=(Predicate(("k",), "eq", "a\x00"),))
    with pytest.raises(InvalidArgument, match="filter contains a NUL"):
        await driver.search(tenant, "nul", SPACE, np.ones(DIM, np.float32), 1, where, None, 1.0)


async def _analyze_count(conn: asyncpg.Connection) -> int:
    count = await conn.fetchval(
        "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'semantic_records'"
    )
    return int(count)


@pytest.mark.parametrize("every", [3, 0])
async def test_writes_trigger_a_background_analyze(
    postgres: str, clock: ManualClock, every: int
) -> None:
    """A namespace loaded since the last ANALYZE is planned as a one-row one (an exact
    sort instead of HNSW): the driver analyzes every `analyze_after_writes` writes."""
    config = load_config(
        None,
        {
            **SEMANTIC_DRIVERS["pgvector"],
            "blocks.semantic.embedders": {"small": {"type": "fake", "dimension": DIM}},
            "blocks.semantic.namespaces": {"*": {"embedder": "small"}},
            "blocks.semantic.pgvector": {"analyze_after_writes": every},
        },
    )
    settings = config.blocks.semantic
    opened = await DRIVERS.open(settings.driver, settings.options, BlockContext(config, clock))
    assert isinstance(opened, PgvectorSemantic)
    tenant = f"pgv-{uuid.uuid4().hex[:10]}"
    try:
        async with opened.pool.connection() as conn:
            before = await _analyze_count(conn)
            rng = np.random.default_rng(3)
            for i in range(3):
                vector = rng.normal(size=DIM).astype(np.float32)
                await opened.upsert(tenant, "fresh", SPACE, write(f"r{i}", vector), 1.0, None)
            if every:
                for _ in range(200):  # bounded: up to 10 s
                    if await _analyze_count(conn) > before:
                        break
                    await asyncio.sleep(0.05)
                assert await _analyze_count(conn) > before
            else:
                await asyncio.sleep(0.5)
                assert opened._analyzer is None
            for table in ("semantic_versions", "semantic_records"):
                await conn.execute(f"DELETE FROM {table} WHERE tenant = $1", tenant)
            await conn.execute("DELETE FROM semantic_namespaces WHERE tenant = $1", tenant)
    finally:
        await opened.close()
