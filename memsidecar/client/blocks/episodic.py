"""The episodic block client: an append-only event log with sessions and live tails.

ev = await m.episodic.append("chat", "message", {"text": "hi"}, role="user", session_id="s1")
async for e in m.episodic.tail("chat", after_cursor=ev.cursor): ...
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from memsidecar.client.convert import from_struct, from_value, to_struct, to_value
from memsidecar.client.transport import Transport
from memsidecar.episodic.v1 import episodic_pb2, episodic_pb2_grpc

# A point in time: an aware or naive (= UTC) datetime, or seconds since the epoch.
TimeLike = datetime | float | int


@dataclass(frozen=True)
class Event:
    namespace: str
    id: str
    # Strictly increasing per namespace, never reused; resume reads after it.
    cursor: int
    time: datetime
    type: str
    role: str
    session_id: str
    # Any JSON value (numbers travel as doubles: whole ones come back as int).
    payload: Any
    metadata: dict[str, Any]
    # True when append() found its idempotency key already used: this is the stored
    # event and nothing new was appended.
    duplicate: bool = False


@dataclass(frozen=True)
class SessionSummary:
    session_id: str
    event_count: int
    first_cursor: int
    last_cursor: int
    # Earliest and latest event time in the session.
    first_time: datetime
    last_time: datetime


@dataclass(frozen=True)
class SessionPage:
    sessions: list[SessionSummary]
    # Pass as start_after for the next page; "" when this is the last one.
    next_start_after: str


def _timestamp(value: TimeLike | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    if isinstance(value, datetime):
        ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    else:
        # Microseconds: what the sidecar keeps, and exact for float seconds near now.
        ts.FromMicroseconds(round(float(value) * 1_000_000))
    return ts


def _datetime(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _types(types: str | Iterable[str]) -> list[str]:
    return [types] if isinstance(types, str) else list(types)


def _event(e: episodic_pb2.Event, duplicate: bool = False) -> Event:
    return Event(
        namespace=e.namespace,
        id=e.id,
        cursor=e.cursor,
        time=_datetime(e.time),
        type=e.type,
        role=e.role,
        session_id=e.session_id,
        payload=from_value(e.payload) if e.HasField("payload") else None,
        metadata=from_struct(e, "metadata"),
        duplicate=duplicate,
    )


def _session(s: episodic_pb2.SessionSummary) -> SessionSummary:
    return SessionSummary(
        session_id=s.session_id,
        event_count=s.event_count,
        first_cursor=s.first_cursor,
        last_cursor=s.last_cursor,
        first_time=_datetime(s.first_time),
        last_time=_datetime(s.last_time),
    )


class AsyncEpisodic:
    def __init__(self, transport: Transport) -> None:
        self._t = transport
        self._stub = episodic_pb2_grpc.EpisodicStub(transport.channel)

    async def append(
        self,
        namespace: str,
        type: str,
        payload: Any = None,
        *,
        role: str = "",
        session_id: str = "",
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        time: TimeLike | None = None,
    ) -> Event:
        """Append one event and return it as stored (with its cursor).

        Without an idempotency_key a fresh one is made per call, so a retried
        append (after UNAVAILABLE) can never be stored twice. Reusing a key while
        its event is kept returns that event with duplicate=True.
        """
        request = episodic_pb2.AppendRequest(
            namespace=namespace,
            type=type,
            role=role,
            session_id=session_id,
            payload=to_value(payload),
            metadata=to_struct(metadata),
            idempotency_key=str(uuid.uuid4()) if idempotency_key is None else idempotency_key,
            time=_timestamp(time),
        )
        r = await self._t.unary(self._stub.Append, request)
        return _event(r.event, duplicate=r.duplicate)

    async def range(
        self,
        namespace: str,
        *,
        after_cursor: int = 0,
        before_cursor: int = 0,
        start_time: TimeLike | None = None,
        end_time: TimeLike | None = None,
        session_id: str = "",
        types: str | Iterable[str] = (),
        reverse: bool = False,
        limit: int = 0,
    ) -> AsyncIterator[Event]:
        """One page of stored events matching every filter given, oldest first
        (newest first with reverse). Cursor bounds are exclusive; start_time is
        inclusive, end_time exclusive; limit 0 = the sidecar's default page."""
        request = episodic_pb2.RangeRequest(
            namespace=namespace,
            after_cursor=after_cursor,
            before_cursor=before_cursor,
            start_time=_timestamp(start_time),
            end_time=_timestamp(end_time),
            session_id=session_id,
            types=_types(types),
            reverse=reverse,
            limit=limit,
        )
        async for e in self._t.stream(self._stub.Range, request):
            yield _event(e)

    async def range_all(
        self,
        namespace: str,
        *,
        after_cursor: int = 0,
        before_cursor: int = 0,
        start_time: TimeLike | None = None,
        end_time: TimeLike | None = None,
        session_id: str = "",
        types: str | Iterable[str] = (),
        reverse: bool = False,
        page: int = 0,
    ) -> AsyncIterator[Event]:
        """Every stored event matching the filters, paging by cursor."""
        wanted = _types(types)
        while True:
            count = 0
            async for event in self.range(
                namespace,
                after_cursor=after_cursor,
                before_cursor=before_cursor,
                start_time=start_time,
                end_time=end_time,
                session_id=session_id,
                types=wanted,
                reverse=reverse,
                limit=page,
            ):
                count += 1
                if reverse:
                    before_cursor = event.cursor
                else:
                    after_cursor = event.cursor
                yield event
            if count == 0:
                return

    async def tail(
        self,
        namespace: str,
        *,
        after_cursor: int = 0,
        from_start: bool = False,
        session_id: str = "",
        types: str | Iterable[str] = (),
    ) -> AsyncIterator[Event]:
        """Stored events after `after_cursor` (every one with from_start), then new
        events as they are appended, never dropping or repeating one; with neither,
        only events appended from now on. Runs until you stop iterating.

        It ends with ResourceExhaustedError when you read too slowly, or
        UnavailableError when the sidecar stops: open it again with
        after_cursor=<the last cursor you processed> to continue without a gap.
        """
        request = episodic_pb2.TailRequest(
            namespace=namespace,
            after_cursor=after_cursor,
            from_start=from_start,
            session_id=session_id,
            types=_types(types),
        )
        async for e in self._t.stream(self._stub.Tail, request):
            yield _event(e)

    async def list_sessions(
        self, namespace: str, *, start_after: str = "", limit: int = 0
    ) -> SessionPage:
        """One page of the namespace's sessions in session-id order."""
        request = episodic_pb2.ListSessionsRequest(
            namespace=namespace, start_after=start_after, limit=limit
        )
        r = await self._t.unary(self._stub.ListSessions, request)
        return SessionPage([_session(s) for s in r.sessions], r.next_start_after)

    async def sessions(self, namespace: str, *, page: int = 0) -> AsyncIterator[SessionSummary]:
        """Every session of the namespace, paging through list_sessions."""
        start_after = ""
        while True:
            result = await self.list_sessions(namespace, start_after=start_after, limit=page)
            for summary in result.sessions:
                yield summary
            if not result.next_start_after:
                return
            start_after = result.next_start_after

    async def window(self, namespace: str, session_id: str, last_n: int) -> list[Event]:
        """The last `last_n` events of a session, oldest first."""
        request = episodic_pb2.WindowRequest(
            namespace=namespace, session_id=session_id, last_n=last_n
        )
        r = await self._t.unary(self._stub.Window, request)
        return [_event(e) for e in r.events]

    async def delete_session(self, namespace: str, session_id: str) -> int:
        """Delete every event of a session; returns how many were deleted."""
        request = episodic_pb2.DeleteSessionRequest(namespace=namespace, session_id=session_id)
        return int((await self._t.unary(self._stub.DeleteSession, request)).deleted)
