"""The semantic driver protocol: what a storage backend must do for the semantic block.

The service owns validation, embedding and the wire: a driver receives vectors
that are already computed (float32, finite, non-zero, of the namespace's
dimension) and a structured filter (SearchFilter), and returns records and
cosine scores. The filter semantics are defined once, in filters.py, as plain
Python; an SQL driver translates them (jsonb paths, typed comparisons) and must
agree with that reference. Every driver passes
tests/sidecar/blocks/semantic/test_conformance.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from memsidecar.sidecar.errors import FailedPrecondition, NotFound, ResourceExhausted

Vector = npt.NDArray[np.float32]
LinkType = Literal["supersedes", "contradicts", "extends"]
PredicateOp = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in"]

LINK_TYPES: tuple[LinkType, ...] = ("supersedes", "contradicts", "extends")


@dataclass(frozen=True)
class VectorSpace:
    """What a namespace's vectors mean: the embedder that makes them and their length.

    A (tenant, namespace) is bound to the space of its first write for as long
    as it holds any record (soft-deleted ones included); writes and searches in
    another space fail with space_mismatch().
    """

    embedder: str
    dimension: int


@dataclass(frozen=True)
class RecordWrite:
    """One Upsert, validated: `vector` has the space's dimension and is finite and non-zero."""

    id: str
    content: str
    metadata: dict[str, Any]
    tags: tuple[str, ...]
    category: str
    importance: float
    vector: Vector
    expires_at: float | None


@dataclass(frozen=True)
class StoredRecord:
    """One version of a record. `deleted` marks the version a soft delete wrote."""

    id: str
    content: str
    metadata: dict[str, Any]
    tags: tuple[str, ...]
    category: str
    importance: float
    vector: Vector
    version: int
    created_at: float
    updated_at: float
    expires_at: float | None
    deleted: bool = False


@dataclass(frozen=True)
class StoredLink:
    from_id: str
    to_id: str
    type: LinkType
    created_at: float


@dataclass(frozen=True)
class Found:
    record: StoredRecord
    # Links from and to the record, oldest first.
    links: list[StoredLink]


@dataclass(frozen=True)
class Predicate:
    """A condition on the metadata value at `path` (see filters.matches for the rules)."""

    path: tuple[str, ...]
    op: PredicateOp
    # A JSON value; a list for "in"; a number or string for gt/gte/lt/lte.
    value: Any


@dataclass(frozen=True)
class SearchFilter:
    """All parts must hold (AND); empty parts hold for every record."""

    predicates: tuple[Predicate, ...] = ()
    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()
    category: str = ""

    @property
    def empty(self) -> bool:
        return not (self.predicates or self.tags_any or self.tags_all or self.category)


@dataclass(frozen=True)
class ScoredRecord:
    record: StoredRecord
    # Cosine similarity in [-1, 1].
    score: float


class SemanticDriver(Protocol):
    """All methods are scoped by tenant and namespace; `now` is the caller's clock reading.

    A record whose current version has expired behaves exactly like a missing
    one in every method (its versions and links are gone). A soft-deleted
    record is hidden from get (unless include_deleted) and search, counts as
    absent for if_version, and keeps its history and links.
    """

    async def upsert(
        self,
        tenant: str,
        namespace: str,
        space: VectorSpace,
        write: RecordWrite,
        now: float,
        if_version: int | None,
    ) -> StoredRecord:
        """Write the next version of `write.id` (version 1 for a new record).

        Raise space_mismatch() when the namespace is bound to another space (bind it
        when it holds no record); with if_version, raise version_conflict() unless it
        matches the live version (0 = no live record).
        """
        ...

    async def get(
        self, tenant: str, namespace: str, id: str, now: float, include_deleted: bool
    ) -> Found | None: ...

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
        """The top_k live records matching `where`, by cosine similarity to `query`.

        Exact with respect to the filter: when at least top_k records match (and
        reach min_score), exactly top_k are returned. Ordered by score descending,
        then id ascending. Raise space_mismatch() when the namespace is bound to
        another space; an unbound namespace has no records and returns [].
        """
        ...

    async def delete(self, tenant: str, namespace: str, id: str, hard: bool, now: float) -> bool:
        """Soft: write a deleted version of a live record. Hard: remove every version and
        every link of a live or soft-deleted record. False when there was nothing to do."""
        ...

    async def history(
        self, tenant: str, namespace: str, id: str, limit: int, now: float
    ) -> list[StoredRecord] | None:
        """Up to `limit` versions, newest first; None when the record is missing or expired."""
        ...

    async def link(
        self,
        tenant: str,
        namespace: str,
        link: StoredLink,
        remove: bool,
        max_links: int,
        now: float,
    ) -> tuple[StoredLink, bool]:
        """Add (or remove) a link; return the stored link and whether anything changed.

        Adding needs both records live and not deleted (else record_not_found()) and
        at most `max_links` links on each of them (else too_many_links()); adding an
        existing link returns it unchanged. Removing an absent link changes nothing.
        """
        ...

    async def sweep(self, now: float) -> int:
        """Physically remove expired records (they are already invisible); return how many."""
        ...

    async def health(self) -> bool: ...

    async def close(self) -> None: ...


def version_conflict(
    id: str, expected: int, current: int | None, deleted: bool
) -> FailedPrecondition:
    if current is None:
        have = "the record does not exist"
    elif deleted:
        have = f"the record is deleted (its last version is {current})"
    else:
        have = f"its version is {current}"
    want = "must not exist" if expected == 0 else f"version {expected}"
    return FailedPrecondition(
        f"version conflict on record {id!r}: the write required {want} but {have}; "
        "read the record again and retry with its current version"
    )


def space_mismatch(namespace: str, bound: VectorSpace, wanted: VectorSpace) -> FailedPrecondition:
    return FailedPrecondition(
        f"semantic namespace {namespace!r} holds vectors of dimension {bound.dimension} from "
        f"embedder {bound.embedder!r}, but it is now configured for embedder {wanted.embedder!r} "
        f"with dimension {wanted.dimension}; vectors from different embedders cannot be compared. "
        "Restore the namespace's embedder in blocks.semantic, use a new namespace, or hard-delete "
        "every record of this one and write them again"
    )


def record_not_found(namespace: str, id: str) -> NotFound:
    return NotFound(
        f"record {id!r} not found in semantic namespace {namespace!r} "
        "(it may be deleted or expired)"
    )


def too_many_links(id: str, max_links: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"record {id!r} already has {max_links} links, the limit "
        "(blocks.semantic.max_links_per_record); remove some links first"
    )
