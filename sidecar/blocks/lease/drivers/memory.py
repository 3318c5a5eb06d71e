"""In-memory leases: one slot per key holding its fencing counter and latest lease.

Every method runs without awaiting between its read and its write, so each is
atomic on the event loop. Waiters for a key share a signal that is fired when
the key's lease changes hands.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from dataclasses import dataclass, field, replace
from typing import Any

from sortedcontainers import SortedDict

from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.lease.driver import AcquireResult, LeaseRecord, not_holder
from memsidecar.sidecar.blocks.registry import parse_options
from memsidecar.sidecar.blocks.settings import NoOptions

Scope = tuple[str, str]
SlotKey = tuple[str, str, str]


@dataclass
class _Slot:
    # The last fencing token issued for the key; never goes down, never forgotten.
    token: int = 0
    # The latest lease (possibly expired); None once released.
    lease: LeaseRecord | None = None


@dataclass
class _Signal:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: int = 0


class MemoryLeases:
    def __init__(self) -> None:
        self._slots: dict[Scope, SortedDict] = {}
        # (tenant, session_id) -> keys of leases granted with that session.
        self._by_session: dict[tuple[str, str], set[SlotKey]] = {}
        self._signals: dict[SlotKey, _Signal] = {}

    def _slot(self, tenant: str, namespace: str, key: str) -> _Slot:
        table = self._slots.setdefault((tenant, namespace), SortedDict())
        slot: _Slot | None = table.get(key)
        if slot is None:
            slot = table[key] = _Slot()
        return slot

    def _peek(self, tenant: str, namespace: str, key: str) -> _Slot | None:
        table = self._slots.get((tenant, namespace))
        return table.get(key) if table is not None else None

    def _notify(self, where: SlotKey) -> None:
        signal = self._signals.pop(where, None)
        if signal is not None:
            signal.event.set()

    def _detach(self, tenant: str, lease: LeaseRecord) -> None:
        if not lease.session_id:
            return
        keys = self._by_session.get((tenant, lease.session_id))
        if keys is not None:
            keys.discard((tenant, lease.namespace, lease.key))
            if not keys:
                del self._by_session[(tenant, lease.session_id)]

    def _set(self, tenant: str, slot: _Slot, lease: LeaseRecord | None) -> None:
        if slot.lease is not None:
            self._detach(tenant, slot.lease)
        slot.lease = lease
        if lease is not None and lease.session_id:
            self._by_session.setdefault((tenant, lease.session_id), set()).add(
                (tenant, lease.namespace, lease.key)
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
        slot = self._slot(tenant, namespace, key)
        current = slot.lease
        if current is not None and current.live(now) and current.holder_id != holder_id:
            return AcquireResult(False, current)
        slot.token += 1
        lease = LeaseRecord(namespace, key, holder_id, slot.token, now, expires_at, session_id)
        self._set(tenant, slot, lease)
        self._notify((tenant, namespace, key))
        return AcquireResult(True, lease)

    async def wait_change(
        self, tenant: str, namespace: str, key: str, fencing_token: int, timeout: float
    ) -> None:
        slot = self._peek(tenant, namespace, key)
        if slot is None or slot.lease is None or slot.lease.fencing_token != fencing_token:
            return
        where = (tenant, namespace, key)
        signal = self._signals.setdefault(where, _Signal())
        signal.waiters += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.event.wait(), timeout)
        finally:
            signal.waiters -= 1
            if signal.waiters == 0 and self._signals.get(where) is signal:
                del self._signals[where]

    def _owned(
        self,
        op: str,
        tenant: str,
        namespace: str,
        key: str,
        holder_id: str,
        fencing_token: int,
        now: float,
    ) -> tuple[_Slot, LeaseRecord]:
        slot = self._peek(tenant, namespace, key)
        current = slot.lease if slot is not None else None
        if (
            slot is None
            or current is None
            or current.holder_id != holder_id
            or current.fencing_token != fencing_token
            or not current.live(now)
        ):
            raise not_holder(op, key, holder_id, fencing_token, current, now)
        return slot, current

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
        slot, current = self._owned("renew", tenant, namespace, key, holder_id, fencing_token, now)
        renewed = replace(current, expires_at=expires_at)
        slot.lease = renewed
        return renewed

    async def release(
        self, tenant: str, namespace: str, key: str, holder_id: str, fencing_token: int, now: float
    ) -> LeaseRecord:
        slot, current = self._owned(
            "release", tenant, namespace, key, holder_id, fencing_token, now
        )
        self._set(tenant, slot, None)
        self._notify((tenant, namespace, key))
        return current

    async def get(self, tenant: str, namespace: str, key: str, now: float) -> LeaseRecord | None:
        slot = self._peek(tenant, namespace, key)
        if slot is None or slot.lease is None or not slot.lease.live(now):
            return None
        return slot.lease

    async def list(
        self, tenant: str, namespace: str, prefix: str, limit: int, now: float
    ) -> builtins.list[LeaseRecord]:
        table = self._slots.get((tenant, namespace))
        if table is None:
            return []
        out: builtins.list[LeaseRecord] = []
        for key in table.irange(minimum=prefix):
            if not key.startswith(prefix):
                break
            lease = table[key].lease
            if lease is not None and lease.live(now):
                out.append(lease)
                if len(out) >= limit:
                    break
        return out

    def _session_slots(self, tenant: str, session_id: str, now: float) -> builtins.list[_Slot]:
        slots: builtins.list[_Slot] = []
        for _, namespace, key in sorted(self._by_session.get((tenant, session_id), ())):
            slot = self._peek(tenant, namespace, key)
            if slot is not None and slot.lease is not None and slot.lease.live(now):
                slots.append(slot)
        return slots

    async def session_leases(
        self, tenant: str, session_id: str, now: float
    ) -> builtins.list[LeaseRecord]:
        return [s.lease for s in self._session_slots(tenant, session_id, now) if s.lease]

    async def release_session(
        self, tenant: str, session_id: str, now: float
    ) -> builtins.list[LeaseRecord]:
        released: builtins.list[LeaseRecord] = []
        for slot in self._session_slots(tenant, session_id, now):
            lease = slot.lease
            if lease is None:
                continue
            released.append(lease)
            self._set(tenant, slot, None)
            self._notify((tenant, lease.namespace, lease.key))
        # Expired leases of the session need no release; forget the attachment.
        self._by_session.pop((tenant, session_id), None)
        return released

    async def count_live(self, now: float) -> int:
        return sum(
            1
            for table in self._slots.values()
            for slot in table.values()
            if slot.lease is not None and slot.lease.live(now)
        )

    async def health(self) -> bool:
        return True

    async def close(self) -> None:
        for signal in self._signals.values():
            signal.event.set()
        self._signals.clear()
        self._slots.clear()
        self._by_session.clear()


async def create(options: dict[str, Any], ctx: BlockContext) -> MemoryLeases:
    parse_options("lease", "memory", NoOptions, options)
    return MemoryLeases()
