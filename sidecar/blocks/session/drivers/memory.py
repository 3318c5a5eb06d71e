"""In-memory sessions: a dict per tenant. Each method runs without awaiting between
its read and its write, so each is atomic on the event loop."""

from __future__ import annotations

import heapq
from dataclasses import replace
from typing import Any

from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.registry import parse_options
from memsidecar.sidecar.blocks.session.driver import (
    Ended,
    SessionRecord,
    already_exists,
    not_found,
    not_open,
    too_many_open,
)
from memsidecar.sidecar.blocks.settings import NoOptions


class MemorySessions:
    def __init__(self) -> None:
        self._sessions: dict[str, dict[str, SessionRecord]] = {}
        self._open_count: dict[str, int] = {}
        # (ended_at, tenant, session_id) of ended sessions, soonest forgotten first.
        self._ended: list[tuple[float, str, str]] = []

    async def create(self, tenant: str, record: SessionRecord, max_open: int) -> None:
        table = self._sessions.setdefault(tenant, {})
        existing = table.get(record.session_id)
        if existing is not None:
            raise already_exists(record.session_id, existing.state)
        if self._open_count.get(tenant, 0) >= max_open:
            raise too_many_open(max_open)
        table[record.session_id] = record
        self._open_count[tenant] = self._open_count.get(tenant, 0) + 1

    async def get(self, tenant: str, session_id: str) -> SessionRecord | None:
        return self._sessions.get(tenant, {}).get(session_id)

    def _open(self, tenant: str, session_id: str) -> SessionRecord:
        record = self._sessions.get(tenant, {}).get(session_id)
        if record is None:
            raise not_found(session_id)
        if record.state != "open":
            raise not_open(record)
        return record

    async def heartbeat(self, tenant: str, session_id: str, now: float) -> SessionRecord:
        record = replace(self._open(tenant, session_id), last_heartbeat_at=now)
        self._sessions[tenant][session_id] = record
        return record

    async def end(self, tenant: str, session_id: str, state: Ended, now: float) -> SessionRecord:
        record = replace(self._open(tenant, session_id), state=state, ended_at=now)
        self._sessions[tenant][session_id] = record
        self._open_count[tenant] -= 1
        heapq.heappush(self._ended, (now, tenant, session_id))
        return record

    async def list_open(self) -> list[tuple[str, SessionRecord]]:
        return [
            (tenant, record)
            for tenant, table in self._sessions.items()
            for record in table.values()
            if record.state == "open"
        ]

    async def forget_ended(self, before: float) -> int:
        dropped = 0
        while self._ended and self._ended[0][0] < before:
            _, tenant, session_id = heapq.heappop(self._ended)
            table = self._sessions.get(tenant, {})
            record = table.get(session_id)
            if record is not None and record.ended_at is not None and record.ended_at < before:
                del table[session_id]
                dropped += 1
        return dropped

    async def health(self) -> bool:
        return True

    async def close(self) -> None:
        self._sessions.clear()
        self._open_count.clear()
        self._ended.clear()


async def create(options: dict[str, Any], ctx: BlockContext) -> MemorySessions:
    # Sessions follow the lease block's driver, so its options are under blocks.lease.
    parse_options("lease", "memory", NoOptions, options)
    return MemorySessions()
