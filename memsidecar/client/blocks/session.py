"""The session block client: agent sessions kept alive by heartbeats.

    async with await m.session.open(heartbeat_interval=5, heartbeat_timeout=15) as s:
        lease = await m.lease.acquire("jobs", "report", ttl=60, session_id=s.session_id)
        ...

The handle sends heartbeats from a background task (in the blocking client,
on its loop thread) until it is closed. If the process dies the heartbeats
stop, and the sidecar applies the session's on_orphan policy: it appends a
checkpoint event to episodic memory (checkpoint_and_close) and releases
every lease attached to the session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal

import grpc

from memsidecar.client.convert import (
    Seconds,
    from_duration,
    from_struct,
    from_timestamp,
    to_duration,
    to_struct,
)
from memsidecar.client.errors import MemSidecarError, from_rpc_error
from memsidecar.client.sync import Bridged
from memsidecar.client.transport import Transport
from memsidecar.session.v1 import session_pb2, session_pb2_grpc

OnOrphan = Literal["checkpoint_and_close", "abort_quietly"]

_ON_ORPHAN: dict[str, session_pb2.OnOrphan] = {
    "checkpoint_and_close": session_pb2.ON_ORPHAN_CHECKPOINT_AND_CLOSE,
    "abort_quietly": session_pb2.ON_ORPHAN_ABORT_QUIETLY,
}
_ON_ORPHAN_NAME = {v: k for k, v in _ON_ORPHAN.items()}
_STATE_NAME = {
    session_pb2.SESSION_STATE_OPEN: "open",
    session_pb2.SESSION_STATE_CLOSED: "closed",
    session_pb2.SESSION_STATE_ORPHANED: "orphaned",
}
# Heartbeat failures that retrying cannot fix: the session is gone or the call is refused.
_FATAL = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    # "open", "closed" or "orphaned"
    state: str
    heartbeat_interval: timedelta
    heartbeat_timeout: timedelta
    # "checkpoint_and_close" or "abort_quietly"
    on_orphan: str
    opened_at: datetime | None
    last_heartbeat_at: datetime | None
    # The episodic namespace that receives the checkpoint event.
    checkpoint_namespace: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class CloseResult:
    session: SessionInfo
    # Leases released because the session ended.
    released_leases: int


def _info(s: session_pb2.SessionInfo) -> SessionInfo:
    return SessionInfo(
        session_id=s.session_id,
        state=_STATE_NAME.get(s.state, "unspecified"),
        heartbeat_interval=from_duration(s.heartbeat_interval),
        heartbeat_timeout=from_duration(s.heartbeat_timeout),
        on_orphan=_ON_ORPHAN_NAME.get(s.on_orphan, "unspecified"),
        opened_at=from_timestamp(s, "opened_at"),
        last_heartbeat_at=from_timestamp(s, "last_heartbeat_at"),
        checkpoint_namespace=s.checkpoint_namespace,
        metadata=from_struct(s, "metadata"),
    )


class AsyncSession:
    def __init__(self, transport: Transport) -> None:
        self._t = transport
        self._stub = session_pb2_grpc.SessionStub(transport.channel)

    async def open(
        self,
        *,
        heartbeat_interval: Seconds = 5,
        heartbeat_timeout: Seconds = 15,
        on_orphan: OnOrphan = "checkpoint_and_close",
        checkpoint_namespace: str | None = None,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> SessionHandle:
        """Open a session and start heartbeating every `heartbeat_interval`.

        If no heartbeat reaches the sidecar for `heartbeat_timeout`, the session is
        orphaned: `checkpoint_and_close` appends a "session.orphaned" event to
        `checkpoint_namespace` (the sidecar's default when None) and releases the
        session's leases; `abort_quietly` only releases them.
        """
        if on_orphan not in _ON_ORPHAN:
            raise ValueError(f"on_orphan must be one of {sorted(_ON_ORPHAN)}, not {on_orphan!r}")
        request = session_pb2.OpenRequest(
            session_id=session_id or "",
            heartbeat_interval=to_duration(heartbeat_interval),
            heartbeat_timeout=to_duration(heartbeat_timeout),
            on_orphan=_ON_ORPHAN[on_orphan],
            checkpoint_namespace=checkpoint_namespace or "",
            metadata=to_struct(metadata),
        )
        r = await self._t.unary(self._stub.Open, request)
        return SessionHandle(self, _info(r.session))

    async def close(self, session_id: str, *, checkpoint: bool = False) -> CloseResult:
        """Close a session by id (a handle's close() also stops its heartbeats)."""
        request = session_pb2.CloseRequest(session_id=session_id, checkpoint=checkpoint)
        r = await self._t.unary(self._stub.Close, request)
        return CloseResult(_info(r.session), r.released_leases)

    def _keep_alive(
        self, requests: AsyncIterator[session_pb2.KeepAliveRequest]
    ) -> grpc.aio.StreamStreamCall[session_pb2.KeepAliveRequest, session_pb2.KeepAliveResponse]:
        call: grpc.aio.StreamStreamCall[
            session_pb2.KeepAliveRequest, session_pb2.KeepAliveResponse
        ] = self._stub.KeepAlive(requests, metadata=self._t.metadata)
        return call


class SessionHandle(Bridged):
    """An open session whose heartbeats run in the background until close().

    `deadline` is the latest deadline the sidecar confirmed; `error` is set (and
    heartbeats stop) when the sidecar refuses a heartbeat, e.g. because the
    session was orphaned.
    """

    def __init__(self, client: AsyncSession, info: SessionInfo) -> None:
        self._client = client
        self.info = info
        self.session_id = info.session_id
        self.deadline: datetime | None = (
            info.last_heartbeat_at + info.heartbeat_timeout if info.last_heartbeat_at else None
        )
        self.heartbeats = 0
        self.error: MemSidecarError | None = None
        self._closed = False
        self._task: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            self._run(), name=f"session-heartbeat-{info.session_id}"
        )

    @property
    def heartbeating(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _requests(self, interval: float) -> AsyncIterator[session_pb2.KeepAliveRequest]:
        while True:
            yield session_pb2.KeepAliveRequest(session_id=self.session_id)
            await asyncio.sleep(interval)

    async def _run(self) -> None:
        interval = self.info.heartbeat_interval.total_seconds()
        while True:
            call = self._client._keep_alive(self._requests(interval))
            try:
                async for response in call:
                    self.deadline = from_timestamp(response, "deadline")
                    self.heartbeats += 1
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _FATAL:
                    self.error = from_rpc_error(exc)
                    return
            finally:
                # grpc sends requests from a task of its own: only cancelling the call
                # stops it (and with it the heartbeats).
                call.cancel()
            # The stream broke (sidecar restarting?): reconnect after one interval; the
            # session survives as long as a heartbeat lands before its deadline.
            await asyncio.sleep(interval)

    async def stop_heartbeats(self) -> None:
        """Stop sending heartbeats without closing: the sidecar will orphan the session
        after heartbeat_timeout (simulates a crashed agent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self, checkpoint: bool = False) -> CloseResult:
        """Stop heartbeats and close the session, releasing its leases; with
        `checkpoint`, a "session.closed" event is appended to its checkpoint namespace."""
        await self.stop_heartbeats()
        self._closed = True
        return await self._client.close(self.session_id, checkpoint=checkpoint)

    async def __aenter__(self) -> SessionHandle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._closed:
            return
        if exc is None:
            await self.close()
            return
        # Leaving on an error: close, but never hide the original exception.
        with contextlib.suppress(MemSidecarError):
            await self.close()
