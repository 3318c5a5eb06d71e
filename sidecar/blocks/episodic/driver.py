"""The episodic driver protocol: what a storage backend must do for the episodic block.

Drivers deal in plain Python values; the service owns validation and the wire.
Times are integer microseconds since the epoch (exact, and what SQL timestamps
hold). Every driver passes tests/sidecar/blocks/episodic/test_conformance.py.

The shape is chosen so SQL can do each call with one indexed query:
events (tenant, namespace, cursor) primary key, plus indexes on
(tenant, namespace, session_id, cursor), (tenant, namespace, type, cursor) and
(tenant, namespace, time); a per-namespace counter row for cursors; a unique
(tenant, namespace, idempotency_key) for idempotent appends.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

Scope = tuple[str, str]


@dataclass(frozen=True)
class NewEvent:
    """An event to append; the driver assigns its cursor."""

    id: str
    time_us: int
    type: str
    role: str
    session_id: str
    payload: Any
    metadata: dict[str, Any]
    # "" = none.
    idempotency_key: str = ""


@dataclass(frozen=True)
class StoredEvent:
    id: str
    cursor: int
    time_us: int
    type: str
    role: str
    session_id: str
    payload: Any
    metadata: dict[str, Any]


@dataclass(frozen=True)
class AppendResult:
    event: StoredEvent
    # True when the idempotency key was already used: nothing was appended.
    duplicate: bool


@dataclass(frozen=True)
class Retention:
    """A namespace's retention; the driver applies it as described on EpisodicDriver."""

    max_age_us: int | None = None
    max_events: int | None = None

    def cutoff(self, now_us: int) -> int | None:
        """Events with time_us below this are expired (None = no age limit)."""
        return None if self.max_age_us is None else now_us - self.max_age_us


@dataclass(frozen=True)
class EventFilter:
    """Which events a Range or Tail wants; every set field must match."""

    # Exclusive bounds; 0 = unbounded.
    after_cursor: int = 0
    before_cursor: int = 0
    # Inclusive start, exclusive end; None = unbounded.
    start_us: int | None = None
    end_us: int | None = None
    # "" = any session.
    session_id: str = ""
    # Empty = any type.
    types: frozenset[str] = field(default_factory=frozenset)

    def matches(self, event: StoredEvent) -> bool:
        return (
            (not self.after_cursor or event.cursor > self.after_cursor)
            and (not self.before_cursor or event.cursor < self.before_cursor)
            and (self.start_us is None or event.time_us >= self.start_us)
            and (self.end_us is None or event.time_us < self.end_us)
            and (not self.session_id or event.session_id == self.session_id)
            and (not self.types or event.type in self.types)
        )


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    event_count: int
    first_cursor: int
    last_cursor: int
    # Earliest and latest event time in the session.
    first_time_us: int
    last_time_us: int


class TailOverflow(Exception):
    """A subscription's reader fell more than its capacity behind."""


class Subscription:
    """Live events of one namespace for one tail, in cursor order, bounded.

    Drivers feed it with offer() (never blocking); the tail reads with get().
    When more than `capacity` events wait unread, the subscription overflows:
    get() raises TailOverflow and the reader must resume from its last cursor.
    """

    def __init__(
        self, flt: EventFilter, capacity: int, on_close: Callable[[Subscription], None]
    ) -> None:
        self.filter = flt
        self.capacity = capacity
        self._queue: deque[StoredEvent] = deque()
        self._wakeup = asyncio.Event()
        self._overflowed = False
        self._closed = False
        self._on_close = on_close

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def overflowed(self) -> bool:
        return self._overflowed

    def offer(self, event: StoredEvent) -> None:
        if self._closed or self._overflowed or not self.filter.matches(event):
            return
        if len(self._queue) >= self.capacity:
            self._overflowed = True
            self._queue.clear()
        else:
            self._queue.append(event)
        self._wakeup.set()

    async def get(self) -> StoredEvent | None:
        """The next live event; None once closed (the sidecar is stopping)."""
        while True:
            if self._overflowed:
                raise TailOverflow()
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        self._on_close(self)


class TailHub:
    """In-process fan-out of appended events to the subscriptions of their namespace.

    A driver whose appends can come from other processes (e.g. Postgres with
    LISTEN/NOTIFY) publishes what it hears here, in cursor order.
    """

    def __init__(self) -> None:
        self._subs: dict[Scope, set[Subscription]] = {}

    def subscribe(self, scope: Scope, flt: EventFilter, capacity: int) -> Subscription:
        def forget(sub: Subscription) -> None:
            subs = self._subs.get(scope)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[scope]

        sub = Subscription(flt, capacity, forget)
        self._subs.setdefault(scope, set()).add(sub)
        return sub

    def publish(self, scope: Scope, event: StoredEvent) -> None:
        for sub in list(self._subs.get(scope, ())):
            sub.offer(event)

    @property
    def count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def close(self) -> None:
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.close()


class EpisodicDriver(Protocol):
    """All methods are scoped by tenant and namespace; `now_us` is the caller's clock.

    Retention: an event whose time_us is below retention.cutoff(now_us) is
    expired and behaves as deleted in every method (drop it, or hide it and drop
    it later). On append, expired events go first, then (with max_events) only
    the newest max_events by cursor are kept. An idempotency key is remembered
    exactly as long as its event is kept.

    Cursors start at 1 and strictly increase per (tenant, namespace); a cursor
    is never handed out twice, even after its event is deleted or expired.
    """

    async def append(
        self, tenant: str, namespace: str, event: NewEvent, retention: Retention, now_us: int
    ) -> AppendResult:
        """Store the event with the next cursor and publish it to the namespace's
        subscriptions; when event.idempotency_key names a kept event, return that
        event with duplicate=True and store nothing."""
        ...

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
        """Up to `limit` kept events matching flt, in cursor order (descending when reverse)."""
        ...

    async def list_sessions(
        self,
        tenant: str,
        namespace: str,
        start_after: str,
        limit: int,
        retention: Retention,
        now_us: int,
    ) -> list[SessionInfo]:
        """Up to `limit` non-empty session ids > start_after with kept events, in id order."""
        ...

    async def delete_session(
        self, tenant: str, namespace: str, session_id: str, retention: Retention, now_us: int
    ) -> int:
        """Delete every event of the session; return how many kept events went."""
        ...

    async def last_cursor(self, tenant: str, namespace: str) -> int:
        """The highest cursor ever handed out in the namespace (0 = none yet)."""
        ...

    async def subscribe(
        self, tenant: str, namespace: str, flt: EventFilter, capacity: int
    ) -> Subscription:
        """Start receiving every event appended from now on that matches flt
        (session_id and types); the caller closes the subscription."""
        ...

    async def health(self) -> bool: ...

    async def close(self) -> None:
        """Release the backend and close every subscription."""
        ...
