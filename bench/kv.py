"""Rows 1-2: kv get/put through the SDK over the Unix socket, against redis-py → Redis
(in-process drivers) or the same statements issued with asyncpg (the Postgres driver)."""

from __future__ import annotations

import hashlib
import time
from typing import Any, Protocol

import asyncpg
import redis.asyncio

from bench.env import Bench, SidecarProcess
from bench.load import RssSampler, latency, throughput
from memsidecar.client import AsyncMemSidecar

SECTION = "kv"


def size_label(size: int) -> str:
    if size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    if size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


def key_index(caller: int, iteration: int, keys: int) -> int:
    return (caller * 7919 + iteration * 104729) % keys


class KVTarget(Protocol):
    async def get(self, key: str) -> object: ...

    async def put(self, key: str, value: bytes) -> object: ...


class SidecarKV:
    def __init__(self, client: AsyncMemSidecar, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    async def get(self, key: str) -> object:
        entry = await self.client.kv.get(self.namespace, key)
        if entry is None:
            raise RuntimeError(f"kv key {key!r} missing: the prefill failed")
        return entry

    async def put(self, key: str, value: bytes) -> object:
        return await self.client.kv.put(self.namespace, key, value)


class RedisKV:
    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def get(self, key: str) -> object:
        value = await self.client.get(self.prefix + key)
        if value is None:
            raise RuntimeError(f"redis key {key!r} missing: the prefill failed")
        return value

    async def put(self, key: str, value: bytes) -> object:
        return await self.client.set(self.prefix + key, value)


# The statements of sidecar/blocks/kv/drivers/postgres.py (PostgresKV.get / put), verbatim.
_LIVE = "(expires_at IS NULL OR expires_at > $4)"
_GET = f"SELECT * FROM kv_entries WHERE tenant = $1 AND namespace = $2 AND key = $3 AND {_LIVE}"
_WRITE = """
    INSERT INTO kv_entries
        (tenant, namespace, key, kind, value, version, updated_at, expires_at)
    VALUES ($1, $2, $3, $4, $5, nextval('kv_version_seq'), $6, $7)
    ON CONFLICT (tenant, namespace, key) DO UPDATE SET
        kind = EXCLUDED.kind, value = EXCLUDED.value, version = EXCLUDED.version,
        updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at
    RETURNING *
"""


def _key_lock(tenant: str, namespace: str, key: str) -> int:
    digest = hashlib.blake2b(f"{tenant}\0{namespace}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class AsyncpgKV:
    """What the Postgres driver sends for Get and Put, minus the sidecar around it."""

    def __init__(self, pool: asyncpg.Pool, tenant: str, namespace: str) -> None:
        self.pool = pool
        self.tenant = tenant
        self.namespace = namespace

    async def get(self, key: str) -> object:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(_GET, self.tenant, self.namespace, key, time.time())
        if row is None:
            raise RuntimeError(f"postgres key {key!r} missing: the prefill failed")
        return row

    async def put(self, key: str, value: bytes) -> object:
        now = time.time()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1)", _key_lock(self.tenant, self.namespace, key)
            )
            await conn.fetchrow(_GET, self.tenant, self.namespace, key, now)
            return await conn.fetchrow(
                _WRITE, self.tenant, self.namespace, key, "bytes", value, now, None
            )


async def _measure(
    bench: Bench,
    driver: str,
    ours: KVTarget,
    reference: KVTarget,
    reference_name: str,
    sidecar_pid: int,
    reference_pid: int | None,
) -> None:
    s = bench.settings
    keys = s.kv_keys
    for size in s.kv_sizes:
        value = bytes(range(256)) * (size // 256) + bytes(size % 256)
        label = size_label(size)
        for target in (ours, reference):
            for k in range(keys):
                await target.put(f"{label}-k{k}", value)

        def ops(target: KVTarget, name: str, label: str = label, value: bytes = value) -> Any:
            if name == "get":

                async def get(c: int, i: int) -> object:
                    return await target.get(f"{label}-k{key_index(c, i, keys)}")

                return get

            async def put(c: int, i: int) -> object:
                return await target.put(f"{label}-k{key_index(c, i, keys)}", value)

            return put

        for name in ("get", "put"):
            warm = max(1, s.latency_calls // 10)
            budget = s.latency_seconds
            mine = await latency(ops(ours, name), s.latency_calls, warm, budget)
            theirs = await latency(ops(reference, name), s.latency_calls, warm, budget)
            what = f"{name} {label} [{driver}]"
            bench.row(
                SECTION,
                f"{what} p50, 1 client",
                "µs",
                mine.p50_us,
                theirs.p50_us,
                reference_name,
                False,
            )
            bench.row(
                SECTION,
                f"{what} p99, 1 client",
                "µs",
                mine.p99_us,
                theirs.p99_us,
                reference_name,
                False,
            )
            for clients in s.clients:
                sample_load = clients == max(s.clients) and driver == "memory"
                if sample_load:
                    async with RssSampler(sidecar_pid).running() as ours_rss:
                        mine_tp = await throughput(ops(ours, name), clients, s.seconds, s.warmup)
                    peak = ours_rss.peak_mib
                    if peak is not None:
                        bench.footprint["sidecar_rss_load"] = max(
                            peak, bench.footprint.get("sidecar_rss_load", 0.0)
                        )
                else:
                    mine_tp = await throughput(ops(ours, name), clients, s.seconds, s.warmup)
                if sample_load and reference_pid is not None:
                    async with RssSampler(reference_pid).running() as ref_rss:
                        theirs_tp = await throughput(
                            ops(reference, name), clients, s.seconds, s.warmup
                        )
                    peak = ref_rss.peak_mib
                    if peak is not None:
                        bench.footprint["redis_rss_load"] = max(
                            peak, bench.footprint.get("redis_rss_load", 0.0)
                        )
                else:
                    theirs_tp = await throughput(ops(reference, name), clients, s.seconds, s.warmup)
                bench.row(
                    SECTION,
                    f"{what} throughput, {clients} client{'s' if clients > 1 else ''}",
                    "ops/s",
                    mine_tp,
                    theirs_tp,
                    reference_name,
                    True,
                )


async def run(bench: Bench, driver: str, proc: SidecarProcess, client: AsyncMemSidecar) -> None:
    namespace = "bench-kv"
    ours = SidecarKV(client, namespace)
    if driver in ("postgres",):
        # The same pool size as the sidecar's (PostgresOptions.pool_max default).
        pool = await asyncpg.create_pool(bench.services.pg_dsn, min_size=1, max_size=10)
        ref_tenant = f"{bench.tenant}-ref"
        try:
            await _measure(
                bench,
                driver,
                ours,
                AsyncpgKV(pool, ref_tenant, namespace),
                "same SQL via asyncpg (pool 10)",
                proc.pid,
                None,
            )
        finally:
            async with pool.acquire() as conn:
                await conn.execute(
                    "DELETE FROM kv_entries WHERE tenant = ANY($1::text[])",
                    [bench.tenant, ref_tenant],
                )
            await pool.close()
        return
    r = redis.asyncio.Redis(
        unix_socket_path=str(bench.services.redis_socket),
        max_connections=max(bench.settings.clients) * 2,
    )
    prefix = f"bench:{bench.run_id}:kv:"
    try:
        await _measure(
            bench,
            driver,
            ours,
            RedisKV(r, prefix),
            "redis-py → redis-server (unix socket)",
            proc.pid,
            bench.services.redis_pid,
        )
    finally:
        keys = [key async for key in r.scan_iter(match=prefix + "*", count=1000)]
        for start in range(0, len(keys), 1000):
            await r.delete(*keys[start : start + 1000])
        await r.aclose()
