"""In-memory episodic log: per (tenant, namespace) a cursor-ordered map of events
plus indexes by session, type and time.

No method awaits while it reads or changes state, so each one is atomic on the
event loop and an append is published to tails in cursor order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

from sortedcontainers import SortedDict, SortedList

from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.episodic.driver import (
    AppendResult,
    EventFilter,
    NewEvent,
    Retention,
    Scope,
    SessionInfo,
    StoredEvent,
    Subscription,
    TailHub,
)
from memsidecar.sidecar.blocks.registry import parse_options
from memsidecar.sidecar.blocks.settings import NoOptions


class _Session:
    __slots__ = ("cursors", "times")

    def __init__(self) -> None:
        self.cursors = SortedList()
        # (time_us, cursor), for the earliest and latest time.
        self.times = SortedList()


class _Log:
    __slots__ = ("by_session", "by_time", "by_type", "cursor_key", "events", "keys", "last_cursor")

    def __init__(self) -> None:
        self.last_cursor = 0
        self.events = SortedDict()  # cursor -> StoredEvent
        self.by_session: SortedDict = SortedDict()  # session_id -> _Session
        self.by_type: dict[str, SortedList] = {}  # type -> cursors
        self.by_time = SortedList()  # (time_us, cursor)
        self.keys: dict[str, int] = {}  # idempotency key -> cursor
        self.cursor_key: dict[int, str] = {}


class MemoryEpisodic:
    def __init__(self) -> None:
        self._logs: dict[Scope, _Log] = {}
        self._hub = TailHub()

    @property
    def subscriptions(self) -> int:
        return self._hub.count

    def _remove(self, log: _Log, cursor: int) -> None:
        event: StoredEvent = log.events.pop(cursor)
        if event.session_id:
            session: _Session = log.by_session[event.session_id]
            session.cursors.remove(cursor)
            session.times.remove((event.time_us, cursor))
            if not session.cursors:
                del log.by_session[event.session_id]
        of_type = log.by_type[event.type]
        of_type.remove(cursor)
        if not of_type:
            del log.by_type[event.type]
        log.by_time.remove((event.time_us, cursor))
        key = log.cursor_key.pop(cursor, None)
        if key is not None:
            del log.keys[key]

    def _expire(self, log: _Log, retention: Retention, now_us: int) -> None:
        cutoff = retention.cutoff(now_us)
        if cutoff is None:
            return
        while log.by_time and log.by_time[0][0] < cutoff:
            self._remove(log, log.by_time[0][1])

    def _live_log(self, scope: Scope, retention: Retention, now_us: int) -> _Log | None:
        log = self._logs.get(scope)
        if log is not None:
            self._expire(log, retention, now_us)
        return log

    async def append(
        self, tenant: str, namespace: str, event: NewEvent, retention: Retention, now_us: int
    ) -> AppendResult:
        scope = (tenant, namespace)
        log = self._logs.get(scope)
        if log is None:
            log = self._logs[scope] = _Log()
        self._expire(log, retention, now_us)
        key = event.idempotency_key
        if key and key in log.keys:
            return AppendResult(log.events[log.keys[key]], duplicate=True)
        log.last_cursor += 1
        cursor = log.last_cursor
        stored = StoredEvent(
            id=event.id,
            cursor=cursor,
            time_us=event.time_us,
            type=event.type,
            role=event.role,
            session_id=event.session_id,
            payload=event.payload,
            metadata=event.metadata,
        )
        log.events[cursor] = stored
        if stored.session_id:
            session = log.by_session.get(stored.session_id)
            if session is None:
                session = log.by_session[stored.session_id] = _Session()
            session.cursors.add(cursor)
            session.times.add((stored.time_us, cursor))
        log.by_type.setdefault(stored.type, SortedList()).add(cursor)
        log.by_time.add((stored.time_us, cursor))
        if key:
            log.keys[key] = cursor
            log.cursor_key[cursor] = key
        if retention.max_events is not None:
            while len(log.events) > retention.max_events:
                self._remove(log, log.events.peekitem(0)[0])
        self._hub.publish(scope, stored)
        return AppendResult(stored, duplicate=False)

    async def range(
        self,
        tenant: str,
        namespace: str,
        flt: EventFilter,
        reverse: bool,
        limit: int,
        retention: Retention,
        now_us: int,
    ) -> list[StoredEvent]:
        log = self._live_log((tenant, namespace), retention, now_us)
        if log is None or limit <= 0:
            return []
        low = flt.after_cursor + 1
        high = flt.before_cursor - 1 if flt.before_cursor else None
        cursors: Iterable[int]
        if flt.session_id:
            session = log.by_session.get(flt.session_id)
            if session is None:
                return []
            cursors = session.cursors.irange(low, high, reverse=reverse)
        elif flt.types:
            cursors = heapq.merge(
                *(
                    log.by_type[t].irange(low, high, reverse=reverse)
                    for t in sorted(flt.types)
                    if t in log.by_type
                ),
                reverse=reverse,
            )
        else:
            cursors = log.events.irange(low, high, reverse=reverse)
        out: list[StoredEvent] = []
        for cursor in cursors:
            event: StoredEvent = log.events[cursor]
            if flt.matches(event):
                out.append(event)
                if len(out) >= limit:
                    break
        return out

    async def list_sessions(
        self,
        tenant: str,
        namespace: str,
        start_after: str,
        limit: int,
        retention: Retention,
        now_us: int,
    ) -> list[SessionInfo]:
        log = self._live_log((tenant, namespace), retention, now_us)
        if log is None or limit <= 0:
            return []
        out: list[SessionInfo] = []
        for session_id in log.by_session.irange(minimum=start_after, inclusive=(False, True)):
            session: _Session = log.by_session[session_id]
            out.append(
                SessionInfo(
                    session_id=session_id,
                    event_count=len(session.cursors),
                    first_cursor=session.cursors[0],
                    last_cursor=session.cursors[-1],
                    first_time_us=session.times[0][0],
                    last_time_us=session.times[-1][0],
                )
            )
            if len(out) >= limit:
                break
        return out

    async def delete_session(
        self, tenant: str, namespace: str, session_id: str, retention: Retention, now_us: int
    ) -> int:
        log = self._live_log((tenant, namespace), retention, now_us)
        if log is None:
            return 0
        session = log.by_session.get(session_id)
        if session is None:
            return 0
        cursors = list(session.cursors)
        for cursor in cursors:
            self._remove(log, cursor)
        return len(cursors)

    async def last_cursor(self, tenant: str, namespace: str) -> int:
        log = self._logs.get((tenant, namespace))
        return 0 if log is None else log.last_cursor

    async def subscribe(
        self, tenant: str, namespace: str, flt: EventFilter, capacity: int
    ) -> Subscription:
        return self._hub.subscribe((tenant, namespace), flt, capacity)

    async def health(self) -> bool:
        return True

    async def close(self) -> None:
        self._hub.close()
        self._logs.clear()


async def create(options: dict[str, Any], ctx: BlockContext) -> MemoryEpisodic:
    parse_options("episodic", "memory", NoOptions, options)
    return MemoryEpisodic()
