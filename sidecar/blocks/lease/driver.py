"""The lease driver protocol: what a storage backend must do for the lease block.

A lease lives in one slot per (tenant, namespace, key). The slot keeps the
key's fencing counter for ever, so every grant — after a release or an
expiry too — gets a token larger than any issued for that key before. In SQL
this is one row per key (`fencing_token`, and a nullable holder with its
expiry), and `acquire` is one conditional UPDATE/INSERT ... RETURNING.

A lease is live while `now < expires_at`; an expired lease behaves like a
free key for `acquire`, `get` and `list`, but `renew` and `release` by its
last holder say it expired rather than that it was never held.

Every driver passes tests/sidecar/blocks/lease/test_conformance.py.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from memsidecar.sidecar.errors import FailedPrecondition


@dataclass(frozen=True)
class LeaseRecord:
    namespace: str
    key: str
    holder_id: str
    fencing_token: int
    acquired_at: float
    expires_at: float
    # The agent session the lease is attached to ("" = none).
    session_id: str = ""

    def live(self, now: float) -> bool:
        return now < self.expires_at


@dataclass(frozen=True)
class AcquireResult:
    """`granted`: `lease` is the caller's new lease; otherwise it is the live lease in the way."""

    granted: bool
    lease: LeaseRecord


class LeaseDriver(Protocol):
    """All methods are scoped by tenant; `now` is the caller's wall-clock reading."""

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
        """Atomically grant the key when it is free, expired, or held by `holder_id` itself
        (a re-acquire: new token, new expiry, the new session), bumping the key's fencing
        counter; otherwise return the live lease without changing anything."""
        ...

    async def wait_change(
        self, tenant: str, namespace: str, key: str, fencing_token: int, timeout: float
    ) -> None:
        """Return once the lease with `fencing_token` may have ended (released or replaced),
        or after `timeout` seconds. May return early; callers re-check with acquire.
        Expiry is the caller's business: it caps `timeout` at the time left on the lease."""
        ...

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
        """Move the expiry of the caller's live lease; raise not_holder() otherwise."""
        ...

    async def release(
        self, tenant: str, namespace: str, key: str, holder_id: str, fencing_token: int, now: float
    ) -> LeaseRecord:
        """Free the caller's live lease (the counter stays); raise not_holder() otherwise."""
        ...

    async def get(self, tenant: str, namespace: str, key: str, now: float) -> LeaseRecord | None:
        """The live lease on the key, or None."""
        ...

    async def list(
        self, tenant: str, namespace: str, prefix: str, limit: int, now: float
    ) -> builtins.list[LeaseRecord]:
        """Up to `limit` live leases whose key starts with `prefix`, in key order."""
        ...

    async def session_leases(
        self, tenant: str, session_id: str, now: float
    ) -> builtins.list[LeaseRecord]:
        """The live leases attached to a session, in every namespace, ordered by
        (namespace, key)."""
        ...

    async def release_session(
        self, tenant: str, session_id: str, now: float
    ) -> builtins.list[LeaseRecord]:
        """Free every live lease attached to the session; return what was freed."""
        ...

    async def health(self) -> bool: ...

    async def close(self) -> None: ...


def iso(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def not_holder(
    op: str,
    key: str,
    holder_id: str,
    fencing_token: int,
    current: LeaseRecord | None,
    now: float,
) -> FailedPrecondition:
    """Why `holder_id` with `fencing_token` may not renew or release the key.

    `current` is the key's latest lease, live or expired (None = never held or released).
    """
    if current is None:
        why = "it is not held (it was released, or never acquired)"
        fix = "Acquire it again"
    elif current.live(now) and current.holder_id != holder_id:
        why = f"it is held by {current.holder_id!r} until {iso(current.expires_at)}"
        fix = "you lost it; Acquire it again (wait_for to queue) before writing"
    elif current.holder_id != holder_id:
        why = "it is not held (the last holder's lease expired)"
        fix = "Acquire it again"
    elif current.fencing_token != fencing_token:
        why = (
            f"fencing token {fencing_token} is stale: {holder_id!r} holds it with token "
            f"{current.fencing_token}"
        )
        fix = "use the token from your latest Acquire"
    else:
        why = f"your lease expired at {iso(current.expires_at)}"
        fix = "Acquire it again and renew sooner (well before the TTL runs out)"
    return FailedPrecondition(f"cannot {op} lease on key {key!r}: {why}; {fix}")
