"""The session driver protocol: where agent sessions are stored.

A session is one row per (tenant, session_id) moving one way through
open → closed | orphaned. The driver only stores; the block owns the
heartbeat timers and what happens when a session ends. Sessions use the
lease block's driver name and options (sessions hold leases, so both live in
the same backend).

Every driver passes tests/sidecar/blocks/session/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from memsidecar.sidecar.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
)

State = Literal["open", "closed", "orphaned"]
OnOrphan = Literal["checkpoint_and_close", "abort_quietly"]
Ended = Literal["closed", "orphaned"]


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    state: State
    heartbeat_interval: float
    heartbeat_timeout: float
    on_orphan: OnOrphan
    opened_at: float
    # Wall-clock time of the last heartbeat (the open counts as the first).
    last_heartbeat_at: float
    checkpoint_namespace: str
    metadata: dict[str, Any] = field(default_factory=dict)
    ended_at: float | None = None


class SessionDriver(Protocol):
    """All methods but the sweeping ones are scoped by tenant."""

    async def create(self, tenant: str, record: SessionRecord, max_open: int) -> None:
        """Store a new open session; raise AlreadyExists when the id is taken (open or
        ended but still remembered), ResourceExhausted when the tenant has `max_open`
        open sessions."""
        ...

    async def get(self, tenant: str, session_id: str) -> SessionRecord | None: ...

    async def heartbeat(self, tenant: str, session_id: str, now: float) -> SessionRecord:
        """Record a heartbeat of an open session; raise not_found() / not_open() otherwise."""
        ...

    async def end(self, tenant: str, session_id: str, state: Ended, now: float) -> SessionRecord:
        """Atomically move an open session to `state`; raise not_found() / not_open()
        otherwise, so of two racing enders exactly one wins."""
        ...

    async def list_open(self) -> list[tuple[str, SessionRecord]]:
        """Every open session of every tenant, as (tenant, record): timers are re-armed
        from this when the sidecar starts."""
        ...

    async def forget_ended(self, before: float) -> int:
        """Drop sessions that ended before `before`; return how many."""
        ...

    async def health(self) -> bool: ...

    async def close(self) -> None: ...


def iso(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def not_found(session_id: str) -> NotFound:
    return NotFound(
        f"session {session_id!r} not found (never opened, or it ended long ago); "
        "Open a session first"
    )


def not_open(record: SessionRecord) -> FailedPrecondition:
    at = iso(record.ended_at) if record.ended_at is not None else "an unknown time"
    if record.state == "orphaned":
        why = (
            f"was orphaned at {at}: no heartbeat arrived within its "
            f"{record.heartbeat_timeout}s heartbeat_timeout after {iso(record.last_heartbeat_at)}"
        )
    else:
        why = f"was closed at {at}"
    return FailedPrecondition(
        f"session {record.session_id!r} {why}; Open a new session (its leases were released)"
    )


def already_exists(session_id: str, state: str) -> AlreadyExists:
    return AlreadyExists(
        f"session {session_id!r} already exists ({state}); "
        "pick another session_id or leave it empty for a generated one"
    )


def too_many_open(max_open: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"this tenant already has {max_open} open sessions, the limit "
        "(blocks.session.max_open_sessions); close sessions you no longer use"
    )
