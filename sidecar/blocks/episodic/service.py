"""The episodic gRPC service: validates requests, scopes them to the caller's tenant,
applies the namespace's retention, calls the driver, and runs live tails."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import json_format

from memsidecar.episodic.v1 import episodic_pb2, episodic_pb2_grpc
from memsidecar.sidecar.blocks.episodic.convert import (
    check_json,
    dict_to_struct,
    event_to_proto,
    json_to_value,
    micros_of,
    session_to_proto,
    struct_from_proto,
    timestamp_us,
    value_from_proto,
)
from memsidecar.sidecar.blocks.episodic.driver import (
    AppendResult,
    EpisodicDriver,
    EventFilter,
    NewEvent,
    Retention,
    Subscription,
    TailOverflow,
)
from memsidecar.sidecar.blocks.episodic.settings import EpisodicNamespace, EpisodicSettings
from memsidecar.sidecar.clock import Clock
from memsidecar.sidecar.errors import InvalidArgument, ResourceExhausted, Unavailable
from memsidecar.sidecar.identity import current_identity
from memsidecar.sidecar.validation import page_limit

Ctx = grpc.aio.ServicerContext[Any, Any]

INT64_MAX = 2**63 - 1


def retention_of(ns: EpisodicNamespace) -> Retention:
    age = ns.retention_max_age
    return Retention(
        max_age_us=None if age is None else age // timedelta(microseconds=1),
        max_events=ns.retention_max_events,
    )


def _resume_hint(position: int) -> str:
    return f"after_cursor={position}" if position else "from_start=true"


class EpisodicService(episodic_pb2_grpc.EpisodicServicer):
    def __init__(self, driver: EpisodicDriver, settings: EpisodicSettings, clock: Clock) -> None:
        self.driver = driver
        self.settings = settings
        self.clock = clock
        self._tails: set[Subscription] = set()
        self._closing = False

    @property
    def active_tails(self) -> int:
        return len(self._tails)

    @property
    def tails(self) -> frozenset[Subscription]:
        """The live tails' subscriptions (for tests and diagnostics)."""
        return frozenset(self._tails)

    def close(self) -> None:
        """End every live tail (they finish with UNAVAILABLE and a resume hint)."""
        self._closing = True
        for sub in list(self._tails):
            sub.close()

    # --- validation helpers -------------------------------------------------

    def _now_us(self) -> int:
        return round(self.clock() * 1_000_000)

    def _namespace(self, namespace: str) -> Retention:
        return retention_of(self.settings.namespace("episodic", namespace))

    def _scope(self, namespace: str) -> tuple[str, str, Retention]:
        retention = self._namespace(namespace)
        return current_identity().tenant, namespace, retention

    def _field(
        self, value: str, name: str, *, required: bool = False, setting: str = "max_field_chars"
    ) -> str:
        if not value:
            if required:
                raise InvalidArgument(f"{name} is required and must not be empty")
            return value
        limit: int = getattr(self.settings, setting)
        if len(value) > limit:
            raise InvalidArgument(
                f"{name} is {len(value)} characters, over the limit of {limit} "
                f"(blocks.episodic.{setting})"
            )
        if "\x00" in value:
            raise InvalidArgument(f"{name} must not contain NUL characters")
        return value

    def _types(self, types: list[str]) -> frozenset[str]:
        limit = self.settings.max_filter_types
        if len(types) > limit:
            raise InvalidArgument(
                f"{len(types)} types given; at most {limit} may be filtered on "
                "(blocks.episodic.max_filter_types)"
            )
        return frozenset(self._field(t, "types[]", required=True) for t in types)

    @staticmethod
    def _cursor(value: int, name: str) -> int:
        if value < 0:
            raise InvalidArgument(
                f"bad cursor: {name} must be 0 or the cursor of an event, got {value}"
            )
        return value

    # --- append -------------------------------------------------------------

    async def append_event(
        self,
        tenant: str,
        namespace: str,
        *,
        type: str,
        role: str = "",
        session_id: str = "",
        payload: Any = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str = "",
        time_us: int | None = None,
    ) -> AppendResult:
        """Validate and append one event (the Append RPC and system events share this)."""
        retention = self._namespace(namespace)
        self._field(type, "type", required=True)
        self._field(role, "role")
        self._field(session_id, "session_id")
        self._field(idempotency_key, "idempotency_key", setting="max_idempotency_key_chars")
        metadata = metadata or {}
        payload_value = json_to_value(payload, "payload")
        check_json(metadata, "metadata")
        now_us = self._now_us()
        if time_us is None:
            time_us = now_us
        cutoff = retention.cutoff(now_us)
        if cutoff is not None and time_us < cutoff:
            age = (now_us - time_us) / 1_000_000
            keep = (now_us - cutoff) / 1_000_000
            raise InvalidArgument(
                f"time is {age:g}s old but episodic namespace {namespace!r} keeps events for "
                f"{keep:g}s (retention_max_age), so it would be dropped at once; send a later "
                "time, or none to use the sidecar's clock"
            )
        wire = episodic_pb2.Event(
            id=str(uuid.uuid4()),
            cursor=INT64_MAX,
            time=timestamp_us(time_us),
            type=type,
            role=role,
            session_id=session_id,
            payload=payload_value,
            metadata=dict_to_struct(metadata),
            namespace=namespace,
        )
        size = wire.ByteSize()
        if size > self.settings.max_event_bytes:
            raise InvalidArgument(
                f"event is {size} bytes encoded, over this sidecar's limit of "
                f"{self.settings.max_event_bytes} bytes (blocks.episodic.max_event_bytes); "
                "put large content in the artifact block and reference its id"
            )
        event = NewEvent(
            id=wire.id,
            time_us=time_us,
            type=type,
            role=role,
            session_id=session_id,
            # Normalised through the wire form, so every path stores the same values.
            payload=json_format.MessageToDict(wire.payload),
            metadata=json_format.MessageToDict(wire.metadata),
            idempotency_key=idempotency_key,
        )
        return await self.driver.append(tenant, namespace, event, retention, now_us)

    async def Append(
        self, request: episodic_pb2.AppendRequest, context: Ctx
    ) -> episodic_pb2.AppendResponse:
        tenant, ns, _ = self._scope(request.namespace)
        result = await self.append_event(
            tenant,
            ns,
            type=request.type,
            role=request.role,
            session_id=request.session_id,
            payload=value_from_proto(request, "payload"),
            metadata=struct_from_proto(request, "metadata"),
            idempotency_key=request.idempotency_key,
            time_us=micros_of(request, "time"),
        )
        return episodic_pb2.AppendResponse(
            event=event_to_proto(ns, result.event), duplicate=result.duplicate
        )

    # --- reads --------------------------------------------------------------

    async def Range(
        self, request: episodic_pb2.RangeRequest, context: Ctx
    ) -> AsyncIterator[episodic_pb2.Event]:
        tenant, ns, retention = self._scope(request.namespace)
        after = self._cursor(request.after_cursor, "after_cursor")
        before = self._cursor(request.before_cursor, "before_cursor")
        if before and before <= after:
            raise InvalidArgument(
                f"bad cursor: before_cursor ({before}) must be greater than after_cursor "
                f"({after}), or 0 for no upper bound"
            )
        start_us = micros_of(request, "start_time")
        end_us = micros_of(request, "end_time")
        if start_us is not None and end_us is not None and end_us <= start_us:
            raise InvalidArgument(
                "end_time must be later than start_time (start is inclusive, end exclusive)"
            )
        limit = page_limit(
            request.limit,
            self.settings.default_range_limit,
            self.settings.max_range_limit,
            "blocks.episodic.max_range_limit",
        )
        flt = EventFilter(
            after_cursor=after,
            before_cursor=before,
            start_us=start_us,
            end_us=end_us,
            session_id=self._field(request.session_id, "session_id"),
            types=self._types(list(request.types)),
        )
        events = await self.driver.range(
            tenant, ns, flt, request.reverse, limit, retention, self._now_us()
        )
        for event in events:
            yield event_to_proto(ns, event)

    async def Tail(
        self, request: episodic_pb2.TailRequest, context: Ctx
    ) -> AsyncIterator[episodic_pb2.Event]:
        tenant, ns, retention = self._scope(request.namespace)
        after = self._cursor(request.after_cursor, "after_cursor")
        if after and request.from_start:
            raise InvalidArgument(
                "pass either after_cursor (resume after it) or from_start (every stored "
                "event), not both"
            )
        flt = EventFilter(
            session_id=self._field(request.session_id, "session_id"),
            types=self._types(list(request.types)),
        )
        if self._closing:
            raise Unavailable("the sidecar is shutting down; open the tail again once it is back")
        # Subscribe before reading what is stored: an event appended meanwhile is
        # in both, and the cursor check below drops the second copy.
        sub = await self.driver.subscribe(tenant, ns, flt, self.settings.tail_buffer)
        self._tails.add(sub)
        try:
            if after or request.from_start:
                position = after
            else:
                position = await self.driver.last_cursor(tenant, ns)
            page = self.settings.max_range_limit
            while True:
                backlog = await self.driver.range(
                    tenant,
                    ns,
                    replace(flt, after_cursor=position),
                    False,
                    page,
                    retention,
                    self._now_us(),
                )
                for event in backlog:
                    yield event_to_proto(ns, event)
                    position = event.cursor
                if len(backlog) < page:
                    break
            while True:
                try:
                    live = await sub.get()
                except TailOverflow:
                    raise ResourceExhausted(
                        f"this tail fell more than {self.settings.tail_buffer} events behind "
                        "(blocks.episodic.tail_buffer) and was ended; read faster or resume with "
                        f"{_resume_hint(position)} to continue without a gap"
                    ) from None
                if live is None:
                    raise Unavailable(
                        "the sidecar is shutting down; resume the tail with "
                        f"{_resume_hint(position)} once it is back"
                    )
                if live.cursor <= position:
                    continue
                yield event_to_proto(ns, live)
                position = live.cursor
        finally:
            self._tails.discard(sub)
            sub.close()

    async def ListSessions(
        self, request: episodic_pb2.ListSessionsRequest, context: Ctx
    ) -> episodic_pb2.ListSessionsResponse:
        tenant, ns, retention = self._scope(request.namespace)
        start_after = self._field(request.start_after, "start_after")
        limit = page_limit(
            request.limit,
            self.settings.default_range_limit,
            self.settings.max_range_limit,
            "blocks.episodic.max_range_limit",
        )
        found = await self.driver.list_sessions(
            tenant, ns, start_after, limit + 1, retention, self._now_us()
        )
        page = found[:limit]
        more = len(found) > limit
        return episodic_pb2.ListSessionsResponse(
            sessions=[session_to_proto(s) for s in page],
            next_start_after=page[-1].session_id if more else "",
        )

    async def Window(
        self, request: episodic_pb2.WindowRequest, context: Ctx
    ) -> episodic_pb2.WindowResponse:
        tenant, ns, retention = self._scope(request.namespace)
        session_id = self._field(request.session_id, "session_id", required=True)
        if not 1 <= request.last_n <= self.settings.max_window:
            raise InvalidArgument(
                f"last_n must be between 1 and {self.settings.max_window} "
                f"(blocks.episodic.max_window), got {request.last_n}"
            )
        newest = await self.driver.range(
            tenant,
            ns,
            EventFilter(session_id=session_id),
            True,
            request.last_n,
            retention,
            self._now_us(),
        )
        return episodic_pb2.WindowResponse(events=[event_to_proto(ns, e) for e in reversed(newest)])

    async def DeleteSession(
        self, request: episodic_pb2.DeleteSessionRequest, context: Ctx
    ) -> episodic_pb2.DeleteSessionResponse:
        tenant, ns, retention = self._scope(request.namespace)
        session_id = self._field(request.session_id, "session_id", required=True)
        deleted = await self.driver.delete_session(
            tenant, ns, session_id, retention, self._now_us()
        )
        return episodic_pb2.DeleteSessionResponse(deleted=deleted)
