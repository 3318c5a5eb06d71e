"""Row 3: semantic upsert and top-10 search of 384-dimension vectors, unfiltered and with
a 10%-selective metadata filter, through the SDK (every registered driver the bench can
configure) against the equivalent raw pgvector SQL via asyncpg; recall@10 of both
against exact search (numpy, in the bench process)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np
import numpy.typing as npt

from bench.env import Bench, SidecarProcess
from bench.load import Latency, latency, throughput
from memsidecar.client import AsyncMemSidecar
from memsidecar.sidecar.blocks.semantic.settings import PgvectorSettings

SECTION = "semantic"
TOP_K = 10
GROUPS = 10  # metadata "group" takes 10 values: a filter on one selects 10%
FILTER_GROUP = 3
REFERENCE = "raw pgvector SQL via asyncpg"
# Drivers keeping records in semantic_records (pgvector's schema).
DATABASE_DRIVERS = ("pgvector",)

Matrix = npt.NDArray[np.float32]


@dataclass
class DataSet:
    vectors: Matrix
    groups: npt.NDArray[np.int64]
    queries: Matrix
    # Exact top-10 ids per query: unfiltered, and within FILTER_GROUP.
    truth: list[list[str]]
    truth_filtered: list[list[str]]


def _unit(matrix: npt.NDArray[np.float64]) -> Matrix:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: Matrix = (matrix / norms).astype(np.float32)
    return unit


def _exact(vectors: Matrix, query: Matrix, rows: npt.NDArray[np.intp]) -> list[str]:
    scores = vectors[rows].astype(np.float64) @ query.astype(np.float64)
    order = np.lexsort((rows, -scores))[:TOP_K]
    return [f"r{int(rows[i])}" for i in order]


def dataset(size: int, dim: int, queries: int, seed: int = 7) -> DataSet:
    """Clustered vectors (like embeddings of texts on a few hundred topics), a group
    label per record independent of its cluster, and queries near random records."""
    rng = np.random.default_rng(seed)
    clusters = max(8, size // 200)
    centers = rng.normal(size=(clusters, dim))
    assign = rng.integers(0, clusters, size)
    vectors = _unit(centers[assign] + rng.normal(scale=0.6, size=(size, dim)))
    groups = rng.integers(0, GROUPS, size)
    picks = rng.integers(0, size, queries)
    qs = _unit(vectors[picks].astype(np.float64) + rng.normal(scale=0.02, size=(queries, dim)))
    every = np.arange(size)
    in_group = np.flatnonzero(groups == FILTER_GROUP)
    return DataSet(
        vectors=vectors,
        groups=groups,
        queries=qs,
        truth=[_exact(vectors, q, every) for q in qs],
        truth_filtered=[_exact(vectors, q, in_group) for q in qs],
    )


def recall(found: dict[int, list[str]], truth: list[list[str]]) -> float:
    hits = sum(len(set(found.get(i, [])) & set(t)) for i, t in enumerate(truth))
    return hits / sum(len(t) for t in truth)


async def load(count: int, clients: int, write: Callable[[int], Awaitable[object]]) -> float:
    """Write records 0..count-1 with `clients` concurrent writers; records per second."""
    next_index = 0

    async def writer() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            await write(index)

    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(clients)))
    return count / (time.perf_counter() - start)


@dataclass
class SearchFigures:
    load_rate: float
    plain: Latency
    filtered: Latency
    plain_qps: float
    filtered_qps: float
    recall: float
    recall_filtered: float


Search = Callable[[Sequence[float], bool], Awaitable[list[str]]]


async def measure_search(
    bench: Bench, data: DataSet, search: Search
) -> tuple[Latency, Latency, float, float, float, float]:
    s = bench.settings
    queries = [q.tolist() for q in data.queries]
    count = len(queries)
    found: dict[bool, dict[int, list[str]]] = {False: {}, True: {}}

    def op(filtered: bool) -> Callable[[int, int], Awaitable[object]]:
        async def call(c: int, i: int) -> object:
            index = (c * 31 + i) % count
            ids = await search(queries[index], filtered)
            found[filtered][index] = ids
            return ids

        return call

    warm = min(10, count)
    plain = await latency(op(False), count, warm)
    filtered = await latency(op(True), count, warm)
    clients = min(16, max(s.clients))
    plain_qps = await throughput(op(False), clients, s.seconds, s.warmup)
    filtered_qps = await throughput(op(True), clients, s.seconds, s.warmup)
    return (
        plain,
        filtered,
        plain_qps,
        filtered_qps,
        recall(found[False], data.truth),
        recall(found[True], data.truth_filtered),
    )


async def pgvector_version(conn: asyncpg.Connection) -> tuple[int, ...]:
    text = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    return tuple(int(p) for p in str(text).split("."))


async def reference(bench: Bench, size: int, data: DataSet) -> SearchFigures:
    """The reference figures for one data set size, measured once per run."""
    key = f"semantic-reference-{size}"
    cached = bench.cache.get(key)
    if isinstance(cached, SearchFigures):
        return cached
    tuning = PgvectorSettings()
    dim = bench.settings.semantic_dim
    table = f"bench_vectors_{bench.run_id}_{size}"
    conn = await asyncpg.connect(bench.services.pg_dsn)
    try:
        iterative = await pgvector_version(conn) >= (0, 8)
        await conn.execute(
            f"CREATE TABLE {table} (id text PRIMARY KEY, metadata jsonb NOT NULL, "
            f"embedding vector({dim}) NOT NULL)"
        )
        await conn.execute(
            f"CREATE INDEX ON {table} USING hnsw (embedding vector_cosine_ops) "
            f"WITH (m = {tuning.m}, ef_construction = {tuning.ef_construction})"
        )
    finally:
        await conn.close()

    async def drop() -> None:
        c = await asyncpg.connect(bench.services.pg_dsn)
        try:
            await c.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            await c.close()

    bench.cleanups.append(drop)

    async def init(c: asyncpg.Connection) -> None:
        await c.execute(f"SET hnsw.ef_search = {tuning.ef_search}")
        if iterative:
            await c.execute(f"SET hnsw.iterative_scan = {tuning.iterative_scan}")

    clients = bench.settings.semantic_load_clients
    pool = await asyncpg.create_pool(
        bench.services.pg_dsn, min_size=1, max_size=max(10, clients), init=init
    )
    try:
        vectors, groups = data.vectors, data.groups

        async def insert(i: int) -> object:
            return await pool.execute(
                f"INSERT INTO {table} (id, metadata, embedding) "
                "VALUES ($1, $2::jsonb, $3::real[]::vector)",
                f"r{i}",
                json.dumps({"group": int(groups[i])}),
                vectors[i].tolist(),
            )

        load_rate = await load(size, clients, insert)
        async with pool.acquire() as c:
            await c.execute(f"ANALYZE {table}")
        distance = f"embedding <=> $1::real[]::vector({dim})"
        plain_sql = (
            f"SELECT id, metadata::text, {distance} AS distance FROM {table} "
            f"ORDER BY {distance} LIMIT {TOP_K}"
        )
        filtered_sql = (
            f"SELECT id, metadata::text, {distance} AS distance FROM {table} "
            f"WHERE (metadata -> 'group') = $2::jsonb ORDER BY {distance} LIMIT {TOP_K}"
        )
        group = json.dumps(FILTER_GROUP)

        async def search(query: Sequence[float], filtered: bool) -> list[str]:
            if filtered:
                rows = await pool.fetch(filtered_sql, query, group)
            else:
                rows = await pool.fetch(plain_sql, query)
            return [row["id"] for row in rows]

        figures = SearchFigures(load_rate, *(await measure_search(bench, data, search)))
    finally:
        await pool.close()
    bench.cache[key] = figures
    return figures


# Unfiltered searches timed right after a namespace is loaded, before the bench runs its own
# ANALYZE (database drivers): what a user sees with only what the driver itself does.
FRESH_QUERIES = 50


async def analyze(bench: Bench, table: str) -> None:
    conn = await asyncpg.connect(bench.services.pg_dsn)
    try:
        await conn.execute(f"ANALYZE {table}")
    finally:
        await conn.close()


async def ours(
    bench: Bench,
    client: AsyncMemSidecar,
    namespace: str,
    size: int,
    data: DataSet,
    table: str | None,
) -> tuple[SearchFigures, Latency | None]:
    """Our figures; for a database driver (its records in `table`) also the unfiltered
    latency right after loading, before the table's statistics know the new namespace —
    the main figures are taken after ANALYZE, like the reference's."""
    vectors, groups = data.vectors, data.groups

    async def upsert(i: int) -> object:
        return await client.semantic.upsert(
            namespace,
            "",
            id=f"r{i}",
            metadata={"group": int(groups[i])},
            vector=vectors[i].tolist(),
        )

    load_rate = await load(size, bench.settings.semantic_load_clients, upsert)
    where = {"group": FILTER_GROUP}

    async def search(query: Sequence[float], filtered: bool) -> list[str]:
        hits = await client.semantic.search(
            namespace, query, top_k=TOP_K, where=where if filtered else None
        )
        return [hit.record.id for hit in hits]

    fresh: Latency | None = None
    if table is not None:
        queries = [q.tolist() for q in data.queries[:FRESH_QUERIES]]

        async def fresh_search(c: int, i: int) -> object:
            return await search(queries[i % len(queries)], False)

        fresh = await latency(fresh_search, len(queries), 0)
        await analyze(bench, table)
    return SearchFigures(load_rate, *(await measure_search(bench, data, search))), fresh


def _size_label(size: int) -> str:
    return f"{size // 1000}k" if size % 1000 == 0 else str(size)


async def run(bench: Bench, driver: str, proc: SidecarProcess, client: AsyncMemSidecar) -> None:
    s = bench.settings
    for size in s.semantic_sizes:
        bench.log(f"semantic: {size} records, {s.semantic_dim} dimensions [{driver}]")
        data = dataset(size, s.semantic_dim, s.semantic_queries)
        table = "semantic_records" if driver in DATABASE_DRIVERS else None
        mine, fresh = await ours(bench, client, f"bench-sem-{size}", size, data, table)
        ref = await reference(bench, size, data)
        n = _size_label(size)
        tag = f"[{driver}] {n} x {s.semantic_dim}-d"
        clients = min(16, max(s.clients))
        rows: list[tuple[str, str, float, float, bool]] = [
            (
                f"upsert {tag}, {s.semantic_load_clients} clients",
                "records/s",
                mine.load_rate,
                ref.load_rate,
                True,
            ),
            (
                f"search top-10 {tag} p50",
                "ms",
                mine.plain.p50_us / 1e3,
                ref.plain.p50_us / 1e3,
                False,
            ),
            (
                f"search top-10 {tag} p99",
                "ms",
                mine.plain.p99_us / 1e3,
                ref.plain.p99_us / 1e3,
                False,
            ),
            (
                f"search top-10 {tag} 10% filter p50",
                "ms",
                mine.filtered.p50_us / 1e3,
                ref.filtered.p50_us / 1e3,
                False,
            ),
            (
                f"search top-10 {tag} 10% filter p99",
                "ms",
                mine.filtered.p99_us / 1e3,
                ref.filtered.p99_us / 1e3,
                False,
            ),
            (f"search {tag}, {clients} clients", "queries/s", mine.plain_qps, ref.plain_qps, True),
            (
                f"search {tag} 10% filter, {clients} clients",
                "queries/s",
                mine.filtered_qps,
                ref.filtered_qps,
                True,
            ),
            (f"recall@10 {tag}", "fraction", mine.recall, ref.recall, True),
            (
                f"recall@10 {tag} 10% filter",
                "fraction",
                mine.recall_filtered,
                ref.recall_filtered,
                True,
            ),
        ]
        if fresh is not None:
            rows.insert(
                2,
                (
                    f"search top-10 {tag} p50, fresh namespace (no manual ANALYZE)",
                    "ms",
                    fresh.p50_us / 1e3,
                    ref.plain.p50_us / 1e3,
                    False,
                ),
            )
        for what, unit, our_value, ref_value, higher in rows:
            bench.row(SECTION, what, unit, our_value, ref_value, REFERENCE, higher)
    if driver in DATABASE_DRIVERS:

        async def clean() -> None:
            c = await asyncpg.connect(bench.services.pg_dsn)
            try:
                for table in (
                    "semantic_links",
                    "semantic_versions",
                    "semantic_records",
                    "semantic_namespaces",
                ):
                    await c.execute(f"DELETE FROM {table} WHERE tenant = $1", bench.tenant)
                # Dead tuples left in the shared HNSW index would slow later runs.
                await c.execute("VACUUM semantic_records")
            finally:
                await c.close()

        bench.cleanups.append(clean)
