"""In-memory semantic: exact search over a numpy matrix of unit vectors per namespace.

Each (tenant, namespace) keeps every version of every record, its links, and a
dense float64 matrix holding the unit vector of each searchable record (live,
not deleted), so a search is one matrix-vector product over the rows that pass
the filter. Nothing here awaits, so each method runs atomically on the event loop.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from memsidecar.sidecar.blocks.base import BlockContext
from memsidecar.sidecar.blocks.registry import parse_options
from memsidecar.sidecar.blocks.semantic.driver import (
    Found,
    RecordWrite,
    ScoredRecord,
    SearchFilter,
    StoredLink,
    StoredRecord,
    Vector,
    VectorSpace,
    record_not_found,
    space_mismatch,
    too_many_links,
    version_conflict,
)
from memsidecar.sidecar.blocks.semantic.filters import matches
from memsidecar.sidecar.blocks.settings import NoOptions

Scope = tuple[str, str]
LinkKey = tuple[str, str, str]
Matrix = npt.NDArray[np.float64]


class _Index:
    """Unit vectors of the searchable records, one row each, densely packed."""

    def __init__(self, dimension: int) -> None:
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self.data: Matrix = np.zeros((16, dimension), dtype=np.float64)

    def put(self, id: str, vector: Vector) -> None:
        unit = vector.astype(np.float64)
        unit /= np.linalg.norm(unit)
        row = self.rows.get(id)
        if row is None:
            row = len(self.ids)
            if row == self.data.shape[0]:
                grown = np.zeros((row * 2, self.data.shape[1]), dtype=np.float64)
                grown[:row] = self.data
                self.data = grown
            self.ids.append(id)
            self.rows[id] = row
        self.data[row] = unit

    def remove(self, id: str) -> None:
        row = self.rows.pop(id, None)
        if row is None:
            return
        last = len(self.ids) - 1
        if row != last:
            moved = self.ids[last]
            self.data[row] = self.data[last]
            self.ids[row] = moved
            self.rows[moved] = row
        self.ids.pop()

    def matrix(self) -> Matrix:
        return self.data[: len(self.ids)]


@dataclass
class _Namespace:
    space: VectorSpace
    index: _Index
    # Every version of each record, oldest first.
    records: dict[str, list[StoredRecord]] = field(default_factory=dict)
    links: dict[LinkKey, StoredLink] = field(default_factory=dict)
    links_of: dict[str, set[LinkKey]] = field(default_factory=dict)


class MemorySemantic:
    def __init__(self) -> None:
        self._spaces: dict[Scope, _Namespace] = {}
        self._expiries: list[tuple[float, Scope, str]] = []

    # -- internals -------------------------------------------------------------

    def _purge_expired(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, scope, id = heapq.heappop(self._expiries)
            ns = self._spaces.get(scope)
            versions = ns.records.get(id) if ns is not None else None
            if ns is None or versions is None:
                continue
            expires_at = versions[-1].expires_at
            if expires_at is not None and expires_at <= now:
                self._drop(scope, ns, id)

    def _drop(self, scope: Scope, ns: _Namespace, id: str) -> None:
        """Remove a record with every version and link; unbind an emptied namespace."""
        del ns.records[id]
        ns.index.remove(id)
        for key in ns.links_of.pop(id, set()):
            ns.links.pop(key, None)
            other = key[1] if key[0] == id else key[0]
            peers = ns.links_of.get(other)
            if peers is not None:
                peers.discard(key)
                if not peers:
                    del ns.links_of[other]
        if not ns.records:
            del self._spaces[scope]

    def _current(self, scope: Scope, id: str, now: float) -> StoredRecord | None:
        """The newest version of a stored record (deleted or not), None when missing."""
        self._purge_expired(now)
        ns = self._spaces.get(scope)
        versions = ns.records.get(id) if ns is not None else None
        return versions[-1] if versions else None

    def _live(self, scope: Scope, id: str, now: float) -> StoredRecord | None:
        current = self._current(scope, id, now)
        return current if current is not None and not current.deleted else None

    # -- the driver protocol ---------------------------------------------------

    async def upsert(
        self,
        tenant: str,
        namespace: str,
        space: VectorSpace,
        write: RecordWrite,
        now: float,
        if_version: int | None,
    ) -> StoredRecord:
        scope = (tenant, namespace)
        current = self._current(scope, write.id, now)
        ns = self._spaces.get(scope)
        if ns is not None and ns.space != space:
            raise space_mismatch(namespace, ns.space, space)
        if if_version is not None:
            live = current if current is not None and not current.deleted else None
            if (live.version if live else 0) != if_version:
                raise version_conflict(
                    write.id,
                    if_version,
                    current.version if current else None,
                    current is not None and current.deleted,
                )
        if ns is None:
            ns = self._spaces[scope] = _Namespace(space, _Index(space.dimension))
        vector = write.vector.copy()
        vector.flags.writeable = False
        record = StoredRecord(
            id=write.id,
            content=write.content,
            metadata=write.metadata,
            tags=write.tags,
            category=write.category,
            importance=write.importance,
            vector=vector,
            version=current.version + 1 if current else 1,
            created_at=current.created_at if current else now,
            updated_at=now,
            expires_at=write.expires_at,
        )
        ns.records.setdefault(write.id, []).append(record)
        ns.index.put(write.id, vector)
        if record.expires_at is not None:
            heapq.heappush(self._expiries, (record.expires_at, scope, write.id))
        return record

    async def get(
        self, tenant: str, namespace: str, id: str, now: float, include_deleted: bool
    ) -> Found | None:
        scope = (tenant, namespace)
        current = self._current(scope, id, now)
        if current is None or (current.deleted and not include_deleted):
            return None
        ns = self._spaces[scope]
        links = sorted(
            (ns.links[key] for key in ns.links_of.get(id, ())),
            key=lambda link: (link.created_at, link.from_id, link.to_id, link.type),
        )
        return Found(current, links)

    async def search(
        self,
        tenant: str,
        namespace: str,
        space: VectorSpace,
        query: Vector,
        top_k: int,
        where: SearchFilter,
        min_score: float | None,
        now: float,
    ) -> list[ScoredRecord]:
        self._purge_expired(now)
        ns = self._spaces.get((tenant, namespace))
        if ns is None:
            return []
        if ns.space != space:
            raise space_mismatch(namespace, ns.space, space)
        index, records = ns.index, ns.records
        if not index.ids:
            return []
        unit = query.astype(np.float64)
        unit /= np.linalg.norm(unit)
        # Score the live matrix as it is (a slice, no copy), then filter lazily.
        scores = np.clip(index.matrix() @ unit, -1.0, 1.0)
        if where.empty:
            ranked = self._best(scores, index.ids, top_k, min_score)
        else:
            ranked = self._best_matching(scores, index.ids, records, where, top_k, min_score)
        return [ScoredRecord(records[id][-1], score) for score, id in ranked]

    @staticmethod
    def _best(
        scores: npt.NDArray[np.float64], ids: list[str], top_k: int, min_score: float | None
    ) -> list[tuple[float, str]]:
        rows: npt.NDArray[np.intp] = np.arange(scores.size)
        if min_score is not None:
            keep = scores >= min_score
            rows, scores = rows[keep], scores[keep]
        if scores.size > top_k:
            # Keep everything tied with the k-th best so the id tie-break is exact.
            kth = np.partition(scores, scores.size - top_k)[scores.size - top_k]
            keep = scores >= kth
            rows, scores = rows[keep], scores[keep]
        ranked = sorted(
            zip(scores.tolist(), (ids[row] for row in rows.tolist()), strict=True),
            key=lambda pair: (-pair[0], pair[1]),
        )
        return ranked[:top_k]

    @staticmethod
    def _best_matching(
        scores: npt.NDArray[np.float64],
        ids: list[str],
        records: dict[str, list[StoredRecord]],
        where: SearchFilter,
        top_k: int,
        min_score: float | None,
    ) -> list[tuple[float, str]]:
        """Walk the records best score first and test the filter only until top_k match
        (and the records tied with the k-th): a 10% filter checks ~10·top_k records, not
        every record in the namespace."""
        picked: list[tuple[float, str]] = []
        kth: float | None = None
        for row in np.argsort(-scores, kind="stable").tolist():
            score = float(scores[row])
            if (min_score is not None and score < min_score) or (kth is not None and score < kth):
                break
            id = ids[row]
            if matches(records[id][-1], where):
                picked.append((score, id))
                if len(picked) == top_k:
                    kth = score
        picked.sort(key=lambda pair: (-pair[0], pair[1]))
        return picked[:top_k]

    async def delete(self, tenant: str, namespace: str, id: str, hard: bool, now: float) -> bool:
        scope = (tenant, namespace)
        current = self._current(scope, id, now)
        if current is None:
            return False
        ns = self._spaces[scope]
        if hard:
            self._drop(scope, ns, id)
            return True
        if current.deleted:
            return False
        tombstone = replace(current, version=current.version + 1, updated_at=now, deleted=True)
        ns.records[id].append(tombstone)
        ns.index.remove(id)
        return True

    async def history(
        self, tenant: str, namespace: str, id: str, limit: int, now: float
    ) -> list[StoredRecord] | None:
        scope = (tenant, namespace)
        if self._current(scope, id, now) is None:
            return None
        versions = self._spaces[scope].records[id]
        return versions[::-1][:limit]

    async def link(
        self,
        tenant: str,
        namespace: str,
        link: StoredLink,
        remove: bool,
        max_links: int,
        now: float,
    ) -> tuple[StoredLink, bool]:
        scope = (tenant, namespace)
        key: LinkKey = (link.from_id, link.to_id, link.type)
        self._purge_expired(now)
        ns = self._spaces.get(scope)
        existing = ns.links.get(key) if ns is not None else None
        if remove:
            if ns is None or existing is None:
                return link, False
            del ns.links[key]
            for end in (link.from_id, link.to_id):
                ns.links_of[end].discard(key)
                if not ns.links_of[end]:
                    del ns.links_of[end]
            return existing, True
        for end in (link.from_id, link.to_id):
            if self._live(scope, end, now) is None:
                raise record_not_found(namespace, end)
        assert ns is not None  # both records exist, so the namespace does
        if existing is not None:
            return existing, False
        for end in (link.from_id, link.to_id):
            if len(ns.links_of.get(end, ())) >= max_links:
                raise too_many_links(end, max_links)
        ns.links[key] = link
        for end in (link.from_id, link.to_id):
            ns.links_of.setdefault(end, set()).add(key)
        return link, True

    async def sweep(self, now: float) -> int:
        before = self._count()
        self._purge_expired(now)
        return before - self._count()

    def _count(self) -> int:
        return sum(len(ns.records) for ns in self._spaces.values())

    async def health(self) -> bool:
        return True

    async def close(self) -> None:
        self._spaces.clear()
        self._expiries.clear()


async def create(options: dict[str, Any], ctx: BlockContext) -> MemorySemantic:
    parse_options("semantic", "memory", NoOptions, options)
    return MemorySemantic()
