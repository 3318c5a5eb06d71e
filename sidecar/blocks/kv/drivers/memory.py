"""In-memory kv: a sorted dict per (tenant, namespace) and a heap of expiry times."""

from __future__ import annotations

import asyncio
import heapq
from typing import Any

from sortedcontainers import SortedDict

from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.kv.driver import (
    KVEntry,
    KVValue,
    increment_result,
    version_conflict,
)
from memsidecar.sidecar.blocks.registry import parse_options
from memsidecar.sidecar.blocks.settings import NoOptions

Scope = tuple[str, str]


class MemoryKV:
    def __init__(self) -> None:
        self._data: dict[Scope, SortedDict] = {}
        self._revision: dict[Scope, int] = {}
        self._expiries: list[tuple[float, Scope, str]] = []
        # One lock keeps read-modify-write methods atomic across awaits.
        self._lock = asyncio.Lock()

    def _table(self, scope: Scope) -> SortedDict:
        return self._data.setdefault(scope, SortedDict())

    def _purge_expired(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            at, scope, key = heapq.heappop(self._expiries)
            table = self._data.get(scope)
            if table is None:
                continue
            entry = table.get(key)
            if entry is not None and entry.expires_at == at:
                del table[key]

    def _live(self, scope: Scope, key: str, now: float) -> KVEntry | None:
        self._purge_expired(now)
        table = self._data.get(scope)
        return table.get(key) if table is not None else None

    def _write(
        self, scope: Scope, key: str, value: KVValue, now: float, expires_at: float | None
    ) -> KVEntry:
        revision = self._revision.get(scope, 0) + 1
        self._revision[scope] = revision
        entry = KVEntry(key, value, revision, now, expires_at)
        self._table(scope)[key] = entry
        if expires_at is not None:
            heapq.heappush(self._expiries, (expires_at, scope, key))
        return entry

    async def get(self, tenant: str, namespace: str, key: str, now: float) -> KVEntry | None:
        return self._live((tenant, namespace), key, now)

    async def multi_get(
        self, tenant: str, namespace: str, keys: list[str], now: float
    ) -> dict[str, KVEntry]:
        found = {k: self._live((tenant, namespace), k, now) for k in keys}
        return {k: e for k, e in found.items() if e is not None}

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
        scope = (tenant, namespace)
        async with self._lock:
            current = self._live(scope, key, now)
            if if_version is not None:
                have = current.version if current else 0
                if have != if_version:
                    raise version_conflict(key, if_version, current.version if current else None)
            return self._write(scope, key, value, now, expires_at)

    async def delete(
        self, tenant: str, namespace: str, key: str, now: float, if_version: int | None
    ) -> bool:
        scope = (tenant, namespace)
        async with self._lock:
            current = self._live(scope, key, now)
            if if_version is not None and (current.version if current else 0) != if_version:
                raise version_conflict(key, if_version, current.version if current else None)
            if current is None:
                return False
            del self._data[scope][key]
            return True

    async def scan(
        self, tenant: str, namespace: str, prefix: str, start_after: str, limit: int, now: float
    ) -> list[KVEntry]:
        self._purge_expired(now)
        table = self._data.get((tenant, namespace))
        if table is None:
            return []
        low = max(prefix, start_after)
        out: list[KVEntry] = []
        for key in table.irange(minimum=low, inclusive=(True, True)):
            if not key.startswith(prefix):
                break
            if key == start_after:
                continue
            out.append(table[key])
            if len(out) >= limit:
                break
        return out

    async def increment(
        self,
        tenant: str,
        namespace: str,
        key: str,
        delta: int,
        now: float,
        expires_at: float | None,
    ) -> KVEntry:
        scope = (tenant, namespace)
        async with self._lock:
            current = self._live(scope, key, now)
            result = increment_result(key, current, delta)
            keep_expiry = current.expires_at if current is not None else expires_at
            return self._write(scope, key, KVValue("int", result), now, keep_expiry)

    async def sweep(self, now: float) -> int:
        before = sum(len(t) for t in self._data.values())
        self._purge_expired(now)
        return before - sum(len(t) for t in self._data.values())

    async def health(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()


async def create(options: dict[str, Any], ctx: BlockContext) -> MemoryKV:
    parse_options("kv", "memory", NoOptions, options)
    return MemoryKV()
