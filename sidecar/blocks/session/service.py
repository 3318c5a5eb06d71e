"""The session gRPC service: Open, KeepAlive, Close, and what happens when a session ends.

Ending a session — by Close or by missing its heartbeat deadline — first
moves it out of "open" in the driver (so exactly one ender wins), then,
when asked for, appends a checkpoint event to the session's episodic
namespace, then releases every lease attached to it. The checkpoint comes
first so whoever takes a released lease next can find it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

from memsidecar.session.v1 import session_pb2, session_pb2_grpc
from memsidecar.sidecar.blocks.episodic.settings import EpisodicSettings
from memsidecar.sidecar.blocks.lease.driver import LeaseRecord
from memsidecar.sidecar.blocks.session.convert import on_orphan_from_proto, session_to_proto
from memsidecar.sidecar.blocks.session.driver import (
    SessionDriver,
    SessionRecord,
    iso,
    not_found,
    not_open,
)
from memsidecar.sidecar.blocks.session.monitor import HeartbeatMonitor
from memsidecar.sidecar.blocks.session.settings import SessionSettings
from memsidecar.sidecar.clock import Clock
from memsidecar.sidecar.errors import (
    FailedPrecondition,
    InvalidArgument,
    MemError,
    NotFound,
)
from memsidecar.sidecar.identity import current_identity
from memsidecar.sidecar.protoconv import duration_seconds, json_size, struct_to_dict, timestamp
from memsidecar.sidecar.rpc import Ctx

log = logging.getLogger("memsidecar.session")

ORPHANED_EVENT = "session.orphaned"
CLOSED_EVENT = "session.closed"
# How long to wait before retrying to end an orphaned session whose backend failed.
END_RETRY_SECONDS = 1.0


class SessionLeases(Protocol):
    """What sessions need from the lease block."""

    async def session_leases(self, tenant: str, session_id: str) -> list[LeaseRecord]: ...

    async def release_session(self, tenant: str, session_id: str) -> list[LeaseRecord]: ...


class CheckpointLog(Protocol):
    """What sessions need from the episodic block."""

    async def append_system_event(
        self, tenant: str, namespace: str, type: str, session_id: str, payload: dict[str, Any]
    ) -> int: ...


class SessionService(session_pb2_grpc.SessionServicer):
    def __init__(
        self,
        driver: SessionDriver,
        settings: SessionSettings,
        episodic_settings: EpisodicSettings,
        leases: SessionLeases,
        checkpoints: CheckpointLog,
        clock: Clock,
    ) -> None:
        self.driver = driver
        self.settings = settings
        self.episodic_settings = episodic_settings
        self.leases = leases
        self.checkpoints = checkpoints
        self.clock = clock
        self.monitor = HeartbeatMonitor(self._orphan)

    # --- validation ---------------------------------------------------------

    def _session_id(self, session_id: str) -> str:
        if not session_id:
            raise InvalidArgument("session_id is required: the id Open returned")
        limit = self.settings.max_session_id_chars
        if len(session_id) > limit:
            raise InvalidArgument(
                f"session_id is {len(session_id)} characters, over the limit of {limit} "
                "(blocks.session.max_session_id_chars)"
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in session_id):
            raise InvalidArgument("session_id must not contain control characters")
        return session_id

    def _timing(self, request: session_pb2.OpenRequest) -> tuple[float, float]:
        s = self.settings
        interval = duration_seconds(request, "heartbeat_interval")
        if interval is None:
            interval = s.default_heartbeat_interval.total_seconds()
        low = s.min_heartbeat_interval.total_seconds()
        if interval < low:
            raise InvalidArgument(
                f"heartbeat_interval of {interval}s is under this sidecar's minimum of {low}s "
                "(blocks.session.min_heartbeat_interval)"
            )
        timeout = duration_seconds(request, "heartbeat_timeout")
        if timeout is None:
            timeout = max(s.default_heartbeat_timeout.total_seconds(), 3 * interval)
        if timeout <= interval:
            raise InvalidArgument(
                f"heartbeat_timeout ({timeout}s) must be longer than heartbeat_interval "
                f"({interval}s); about 3 intervals lets a heartbeat or two be late"
            )
        high = s.max_heartbeat_timeout.total_seconds()
        if timeout > high:
            raise InvalidArgument(
                f"heartbeat_timeout of {timeout}s is over this sidecar's limit of {high}s "
                "(blocks.session.max_heartbeat_timeout)"
            )
        return interval, timeout

    def _checkpoint_namespace(self, namespace: str) -> str:
        namespace = namespace or self.settings.checkpoint_namespace
        try:
            self.episodic_settings.namespace("episodic", namespace)
        except NotFound as exc:
            raise NotFound(f"checkpoint_namespace: {exc.message}") from None
        except InvalidArgument as exc:
            raise InvalidArgument(f"checkpoint_namespace: {exc.message}") from None
        return namespace

    def _metadata(self, request: session_pb2.OpenRequest) -> dict[str, Any]:
        metadata = struct_to_dict(request, "metadata")
        size = json_size(metadata)
        limit = self.settings.max_metadata_bytes
        if size > limit:
            raise InvalidArgument(
                f"metadata is {size} bytes as JSON, over the limit of {limit} bytes "
                "(blocks.session.max_metadata_bytes)"
            )
        return metadata

    # --- RPCs ---------------------------------------------------------------

    async def Open(
        self, request: session_pb2.OpenRequest, context: Ctx
    ) -> session_pb2.OpenResponse:
        tenant = current_identity().tenant
        session_id = self._session_id(request.session_id or uuid.uuid4().hex)
        interval, timeout = self._timing(request)
        on_orphan = on_orphan_from_proto(request.on_orphan)
        checkpoint_namespace = self._checkpoint_namespace(request.checkpoint_namespace)
        metadata = self._metadata(request)
        now = self.clock()
        await self.driver.forget_ended(now - self.settings.ended_retention.total_seconds())
        record = SessionRecord(
            session_id=session_id,
            state="open",
            heartbeat_interval=interval,
            heartbeat_timeout=timeout,
            on_orphan=on_orphan,
            opened_at=now,
            last_heartbeat_at=now,
            checkpoint_namespace=checkpoint_namespace,
            metadata=metadata,
        )
        await self.driver.create(tenant, record, self.settings.max_open_sessions)
        self.monitor.arm(tenant, session_id, timeout)
        return session_pb2.OpenResponse(session=session_to_proto(record))

    async def KeepAlive(
        self, request_iterator: AsyncIterator[session_pb2.KeepAliveRequest], context: Ctx
    ) -> AsyncIterator[session_pb2.KeepAliveResponse]:
        tenant = current_identity().tenant
        async for request in request_iterator:
            record = await self.heartbeat(tenant, self._session_id(request.session_id))
            deadline = record.last_heartbeat_at + record.heartbeat_timeout
            yield session_pb2.KeepAliveResponse(
                session_id=record.session_id, deadline=timestamp(deadline)
            )

    async def Close(
        self, request: session_pb2.CloseRequest, context: Ctx
    ) -> session_pb2.CloseResponse:
        tenant = current_identity().tenant
        session_id = self._session_id(request.session_id)
        if self.monitor.overdue(tenant, session_id):
            raise self._missed(session_id)
        record = await self.driver.end(tenant, session_id, "closed", self.clock())
        self.monitor.forget(tenant, session_id)
        released = await self._wind_up(
            tenant, record, checkpoint=request.checkpoint, event_type=CLOSED_EVENT, reason="closed"
        )
        return session_pb2.CloseResponse(session=session_to_proto(record), released_leases=released)

    # --- used by the block and the lease hook -------------------------------

    async def heartbeat(self, tenant: str, session_id: str) -> SessionRecord:
        if self.monitor.overdue(tenant, session_id):
            raise self._missed(session_id)
        record = await self.driver.heartbeat(tenant, session_id, self.clock())
        if not self.monitor.arm(tenant, session_id, record.heartbeat_timeout):
            raise self._missed(session_id)
        return record

    async def check_open(self, tenant: str, session_id: str) -> None:
        """Raise unless the session can take a lease (the lease block's session hook)."""
        self._session_id(session_id)
        record = await self.driver.get(tenant, session_id)
        if record is None:
            raise not_found(session_id)
        if record.state != "open":
            raise not_open(record)
        if self.monitor.overdue(tenant, session_id):
            raise self._missed(session_id)

    async def resume(self) -> None:
        """Arm timers for sessions the driver has open (after a restart): each gets a full
        heartbeat_timeout from now to send its next heartbeat."""
        for tenant, record in await self.driver.list_open():
            self.monitor.arm(tenant, record.session_id, record.heartbeat_timeout)

    # --- ending -------------------------------------------------------------

    @staticmethod
    def _missed(session_id: str) -> FailedPrecondition:
        return FailedPrecondition(
            f"session {session_id!r} missed its heartbeat deadline and is being orphaned "
            "(its leases are released); Open a new session"
        )

    async def _orphan(self, tenant: str, session_id: str, lag: float) -> None:
        while True:
            try:
                record = await self.driver.end(tenant, session_id, "orphaned", self.clock())
                break
            except (NotFound, FailedPrecondition):
                # Closed (or gone) meanwhile: nothing to do.
                self.monitor.forget(tenant, session_id)
                return
            except Exception:
                log.exception("cannot mark session %s orphaned; retrying", session_id)
                await asyncio.sleep(END_RETRY_SECONDS)
        self.monitor.forget(tenant, session_id)
        log.warning(
            "session %s (tenant %s) orphaned: no heartbeat for %.3fs since %s "
            "(detected %.1fms after its deadline); on_orphan=%s",
            session_id,
            tenant,
            record.heartbeat_timeout,
            iso(record.last_heartbeat_at),
            lag * 1000,
            record.on_orphan,
        )
        await self._wind_up(
            tenant,
            record,
            checkpoint=record.on_orphan == "checkpoint_and_close",
            event_type=ORPHANED_EVENT,
            reason="heartbeat_timeout",
        )

    async def _wind_up(
        self, tenant: str, record: SessionRecord, *, checkpoint: bool, event_type: str, reason: str
    ) -> int:
        """Checkpoint (if asked), then release the session's leases; return how many.

        The leases are released even when the checkpoint fails; the failure is raised after.
        """
        failure: Exception | None = None
        if checkpoint:
            held = await self.leases.session_leases(tenant, record.session_id)
            try:
                await self.checkpoints.append_system_event(
                    tenant,
                    record.checkpoint_namespace,
                    event_type,
                    record.session_id,
                    self._payload(record, reason, held),
                )
            except Exception as exc:
                log.error(
                    "checkpoint of session %s to episodic namespace %r failed",
                    record.session_id,
                    record.checkpoint_namespace,
                    exc_info=exc,
                )
                failure = exc
        released = await self.leases.release_session(tenant, record.session_id)
        if failure is not None:
            if isinstance(failure, MemError):
                raise type(failure)(
                    f"session {record.session_id!r} is {record.state} and its "
                    f"{len(released)} leases were released, but its checkpoint event was not "
                    f"written: {failure.message}"
                ) from failure
            raise failure
        return len(released)

    def _payload(
        self, record: SessionRecord, reason: str, leases: list[LeaseRecord]
    ) -> dict[str, Any]:
        shown = leases[: self.settings.checkpoint_max_leases]
        return {
            "session_id": record.session_id,
            "reason": reason,
            "state": record.state,
            "opened_at": iso(record.opened_at),
            "last_heartbeat_at": iso(record.last_heartbeat_at),
            "ended_at": iso(record.ended_at if record.ended_at is not None else self.clock()),
            "heartbeat_timeout_seconds": record.heartbeat_timeout,
            "on_orphan": record.on_orphan,
            "released_lease_count": len(leases),
            "released_leases": [
                {
                    "namespace": lease.namespace,
                    "key": lease.key,
                    "holder_id": lease.holder_id,
                    "fencing_token": lease.fencing_token,
                }
                for lease in shown
            ],
            "released_leases_truncated": len(shown) < len(leases),
            "metadata": record.metadata,
        }
