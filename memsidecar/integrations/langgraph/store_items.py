"""An item of `MemSidecarStore` as kept in the kv block: the JSON envelope and its TTL.

The kv value is a JSON string (exact JSON numbers, unlike the Struct-based json type)
holding the item's value, created_at, updated_at when pinned, TTL and the ids of its
semantic records; `_Stored` is one decoded entry with what the store needs besides the
LangGraph `Item`, and `_envelope` writes one. TTLs are LangGraph's minutes: `_check_ttl`
validates one and `_seconds` converts it for the sidecar, which does the expiring.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from langgraph.store.base import Item, SearchItem

from memsidecar.client.blocks.kv import Entry
from memsidecar.integrations.langgraph.store_keys import decode_key


def _timestamp(value: str | None, fallback: datetime) -> datetime:
    return datetime.fromisoformat(value) if value else fallback


@dataclass(frozen=True)
class _Stored:
    """An item as kept in kv, with what the store needs besides the LangGraph Item."""

    kv_key: str
    version: int
    namespace: tuple[str, ...]
    key: str
    value: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    ttl: float | None
    vectors: tuple[str, ...]

    @classmethod
    def decode(cls, entry: Entry) -> _Stored:
        if not isinstance(entry.value, str) or entry.updated_at is None:
            raise ValueError(f"kv key {entry.key!r} does not hold a LangGraph store item")
        data = json.loads(entry.value)
        namespace, key = decode_key(entry.key)
        # A write leaves updated_at (and created_at for a new item) to the sidecar's clock:
        # the kv entry's own updated_at. Re-puts that only refresh a TTL pin them.
        updated_at = _timestamp(data["updated_at"], entry.updated_at)
        return cls(
            kv_key=entry.key,
            version=entry.version,
            namespace=namespace,
            key=key,
            value=data["value"],
            created_at=_timestamp(data["created_at"], updated_at),
            updated_at=updated_at,
            ttl=data["ttl"],
            vectors=tuple(data["vectors"]),
        )

    def envelope(self, *, pinned: bool) -> str:
        return _envelope(
            self.value,
            created_at=self.created_at,
            updated_at=self.updated_at if pinned else None,
            ttl=self.ttl,
            vectors=self.vectors,
        )

    def item(self) -> Item:
        return Item(
            value=self.value,
            key=self.key,
            namespace=self.namespace,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )

    def search_item(self, score: float | None) -> SearchItem:
        return SearchItem(
            self.namespace, self.key, self.value, self.created_at, self.updated_at, score
        )


def _envelope(
    value: Mapping[str, Any],
    *,
    created_at: datetime | None,
    updated_at: datetime | None,
    ttl: float | None,
    vectors: Sequence[str],
) -> str:
    return json.dumps(
        {
            "value": dict(value),
            "created_at": created_at.isoformat() if created_at else None,
            "updated_at": updated_at.isoformat() if updated_at else None,
            "ttl": ttl,
            "vectors": list(vectors),
        },
        ensure_ascii=False,
    )


def _check_ttl(ttl: Any) -> None:
    if ttl is None:
        return
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise ValueError(f"ttl is in minutes and must be a finite number, not {ttl!r}")
    if ttl <= 0:
        raise ValueError(f"ttl must be > 0 minutes (None for no expiry), not {ttl!r}")


def _seconds(ttl_minutes: float | None) -> float | None:
    return None if ttl_minutes is None else ttl_minutes * 60
