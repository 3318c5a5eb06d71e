"""The kv driver protocol: what a storage backend must do for the kv block.

Drivers deal in plain Python values; the service owns validation and the wire.
Every driver passes tests/sidecar/blocks/kv/test_conformance.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from memsidecar.sidecar.errors import FailedPrecondition

ValueKind = Literal["bytes", "string", "int", "double", "bool", "json"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class KVValue:
    kind: ValueKind
    data: Any


@dataclass(frozen=True)
class KVEntry:
    key: str
    value: KVValue
    version: int
    updated_at: float
    expires_at: float | None = None


class KVDriver(Protocol):
    """All methods are scoped by tenant and namespace; `now` is the caller's clock reading.

    Expired keys behave exactly like missing ones in every method.
    """

    async def get(self, tenant: str, namespace: str, key: str, now: float) -> KVEntry | None: ...

    async def multi_get(
        self, tenant: str, namespace: str, keys: list[str], now: float
    ) -> dict[str, KVEntry]: ...

    async def put(
        self,
        tenant: str,
        namespace: str,
        key: str,
        value: KVValue,
        now: float,
        expires_at: float | None,
        if_version: int | None,
    ) -> KVEntry:
        """Write; with if_version, raise version_conflict() unless it matches (0 = absent)."""
        ...

    async def delete(
        self, tenant: str, namespace: str, key: str, now: float, if_version: int | None
    ) -> bool: ...

    async def scan(
        self, tenant: str, namespace: str, prefix: str, start_after: str, limit: int, now: float
    ) -> list[KVEntry]:
        """Up to `limit` live entries with `prefix`, keys > start_after, in key order."""
        ...

    async def increment(
        self,
        tenant: str,
        namespace: str,
        key: str,
        delta: int,
        now: float,
        expires_at: float | None,
    ) -> KVEntry:
        """Add delta atomically; create at `delta` when missing (with expires_at)."""
        ...

    async def sweep(self, now: float) -> int:
        """Physically remove expired keys (they are already invisible); return how many."""
        ...

    async def health(self) -> bool: ...

    async def close(self) -> None: ...


def version_conflict(key: str, expected: int, current: int | None) -> FailedPrecondition:
    have = "the key does not exist" if current is None else f"its version is {current}"
    want = "must not exist" if expected == 0 else f"version {expected}"
    return FailedPrecondition(
        f"version conflict on key {key!r}: the write required {want} but {have}; "
        "read the key again and retry with its current version"
    )


def increment_result(key: str, current: KVEntry | None, delta: int) -> int:
    """The new counter value, or an error when the key is not an int or would overflow."""
    base = 0
    if current is not None:
        if current.value.kind != "int":
            raise FailedPrecondition(
                f"key {key!r} holds a {current.value.kind} value; Increment needs an int "
                "(delete the key or use another one)"
            )
        base = int(current.value.data)
    result = base + delta
    if not INT64_MIN <= result <= INT64_MAX:
        raise FailedPrecondition(f"incrementing key {key!r} by {delta} would overflow int64")
    return result
