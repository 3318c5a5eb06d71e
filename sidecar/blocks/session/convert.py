"""session wire messages ↔ driver values."""

from __future__ import annotations

from memsidecar.session.v1 import session_pb2
from memsidecar.sidecar.blocks.session.driver import OnOrphan, SessionRecord, State
from memsidecar.sidecar.errors import InvalidArgument
from memsidecar.sidecar.protoconv import dict_to_struct, duration, timestamp

_STATES: dict[State, session_pb2.SessionState] = {
    "open": session_pb2.SESSION_STATE_OPEN,
    "closed": session_pb2.SESSION_STATE_CLOSED,
    "orphaned": session_pb2.SESSION_STATE_ORPHANED,
}
_ON_ORPHAN: dict[OnOrphan, session_pb2.OnOrphan] = {
    "checkpoint_and_close": session_pb2.ON_ORPHAN_CHECKPOINT_AND_CLOSE,
    "abort_quietly": session_pb2.ON_ORPHAN_ABORT_QUIETLY,
}
_ON_ORPHAN_OF = {v: k for k, v in _ON_ORPHAN.items()}

# What ON_ORPHAN_UNSPECIFIED means.
DEFAULT_ON_ORPHAN: OnOrphan = "checkpoint_and_close"


def on_orphan_from_proto(value: int) -> OnOrphan:
    if value == session_pb2.ON_ORPHAN_UNSPECIFIED:
        return DEFAULT_ON_ORPHAN
    found: OnOrphan | None = _ON_ORPHAN_OF.get(value)  # type: ignore[call-overload]
    if found is None:
        raise InvalidArgument(
            f"on_orphan {value} is not a known value; use ON_ORPHAN_CHECKPOINT_AND_CLOSE (1) "
            "or ON_ORPHAN_ABORT_QUIETLY (2)"
        )
    return found


def session_to_proto(record: SessionRecord) -> session_pb2.SessionInfo:
    return session_pb2.SessionInfo(
        session_id=record.session_id,
        state=_STATES[record.state],
        heartbeat_interval=duration(record.heartbeat_interval),
        heartbeat_timeout=duration(record.heartbeat_timeout),
        on_orphan=_ON_ORPHAN[record.on_orphan],
        opened_at=timestamp(record.opened_at),
        last_heartbeat_at=timestamp(record.last_heartbeat_at),
        checkpoint_namespace=record.checkpoint_namespace,
        metadata=dict_to_struct(record.metadata),
    )
