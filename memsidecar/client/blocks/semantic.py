"""The semantic block client: embed-and-search memory.

rec = await m.semantic.upsert("notes", "Ann prefers tea", metadata={"user": "ann"})
hits = await m.semantic.search("notes", "what does Ann drink?", where={"user": "ann"})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from memsidecar.client.convert import (
    Seconds,
    from_struct,
    from_timestamp,
    to_duration,
    to_struct,
    to_value,
)
from memsidecar.client.errors import NotFoundError
from memsidecar.client.transport import Transport
from memsidecar.semantic.v1 import semantic_pb2, semantic_pb2_grpc

LinkType = Literal["supersedes", "contradicts", "extends"]

_LINK_TO_PROTO: dict[str, int] = {
    "supersedes": semantic_pb2.LINK_TYPE_SUPERSEDES,
    "contradicts": semantic_pb2.LINK_TYPE_CONTRADICTS,
    "extends": semantic_pb2.LINK_TYPE_EXTENDS,
}
_LINK_FROM_PROTO = {number: name for name, number in _LINK_TO_PROTO.items()}

OPERATORS: dict[str, int] = {
    "eq": semantic_pb2.PREDICATE_OP_EQ,
    "ne": semantic_pb2.PREDICATE_OP_NE,
    "gt": semantic_pb2.PREDICATE_OP_GT,
    "gte": semantic_pb2.PREDICATE_OP_GTE,
    "lt": semantic_pb2.PREDICATE_OP_LT,
    "lte": semantic_pb2.PREDICATE_OP_LTE,
    "in": semantic_pb2.PREDICATE_OP_IN,
}


@dataclass(frozen=True)
class Link:
    from_id: str
    to_id: str
    type: LinkType
    created_at: datetime | None


@dataclass(frozen=True)
class Record:
    namespace: str
    id: str
    content: str
    metadata: dict[str, Any]
    tags: tuple[str, ...]
    category: str
    importance: float
    version: int
    created_at: datetime | None
    updated_at: datetime | None
    expires_at: datetime | None
    deleted: bool
    # Only when asked for (include_vector=True).
    vector: list[float] | None = None
    # Links from and to this record (filled by get()).
    links: tuple[Link, ...] = field(default=())


@dataclass(frozen=True)
class Hit:
    record: Record
    # Cosine similarity in [-1, 1]; higher is closer.
    score: float


def _link(link: semantic_pb2.Link) -> Link:
    return Link(
        from_id=link.from_id,
        to_id=link.to_id,
        type=_LINK_FROM_PROTO[link.type],  # type: ignore[arg-type]
        created_at=from_timestamp(link, "created_at"),
    )


def _record(r: semantic_pb2.Record, links: Iterable[semantic_pb2.Link] = ()) -> Record:
    return Record(
        namespace=r.namespace,
        id=r.id,
        content=r.content,
        metadata=from_struct(r, "metadata"),
        tags=tuple(r.tags),
        category=r.category,
        importance=r.importance,
        version=r.version,
        created_at=from_timestamp(r, "created_at"),
        updated_at=from_timestamp(r, "updated_at"),
        expires_at=from_timestamp(r, "expires_at"),
        deleted=r.deleted,
        vector=list(r.vector) if len(r.vector) else None,
        links=tuple(_link(link) for link in links),
    )


def _vector(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values]


def where_predicates(where: Mapping[str, Any] | None) -> list[semantic_pb2.Predicate]:
    """Turn {"user": "ann", "score": {"gte": 3}, "kind": {"in": ["a", "b"]}} into predicates.

    Keys are metadata fields (dots for nested ones: "profile.city"). A plain value
    means eq; a dict of operators (eq, ne, gt, gte, lt, lte, in) applies each of
    them. To compare a whole object, write {"field": {"eq": {...}}}.
    """
    predicates: list[semantic_pb2.Predicate] = []
    for name, condition in (where or {}).items():
        if isinstance(condition, Mapping):
            unknown = [op for op in condition if op not in OPERATORS]
            if unknown or not condition:
                raise ValueError(
                    f"where[{name!r}]: {dict(condition)!r} is not a set of operators "
                    f"({', '.join(OPERATORS)}); use {{'eq': {{...}}}} to compare a whole "
                    "object, or a dotted field such as 'profile.city' for a nested key"
                )
            pairs = list(condition.items())
        else:
            pairs = [("eq", condition)]
        for op, value in pairs:
            if isinstance(value, tuple | set | frozenset):
                value = list(value)
            predicates.append(
                semantic_pb2.Predicate(field=name, op=OPERATORS[op], value=to_value(value))  # type: ignore[arg-type]
            )
    return predicates


class AsyncSemantic:
    def __init__(self, transport: Transport) -> None:
        self._t = transport
        self._stub = semantic_pb2_grpc.SemanticStub(transport.channel)  # type: ignore[no-untyped-call]

    async def upsert(
        self,
        namespace: str,
        content: str,
        *,
        id: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: Iterable[str] = (),
        category: str = "",
        importance: float = 0.0,
        vector: Iterable[float] | None = None,
        ttl: Seconds | None = None,
        if_version: int | None = None,
    ) -> Record:
        """Create or replace a record (every field is replaced; the old version stays in history).

        The sidecar embeds `content` unless `vector` is given. No id = a new record with
        a server-assigned id. if_version=0 means "must not exist yet".
        """
        request = semantic_pb2.UpsertRequest(
            namespace=namespace,
            id=id or "",
            content=content,
            metadata=to_struct(metadata),
            tags=list(tags),
            category=category,
            importance=importance,
            vector=_vector(vector) if vector is not None else (),
            ttl=to_duration(ttl),
            if_version=if_version,
        )
        return _record((await self._t.unary(self._stub.Upsert, request)).record)

    async def get(
        self,
        namespace: str,
        id: str,
        *,
        include_vector: bool = False,
        include_deleted: bool = False,
    ) -> Record | None:
        """The record with its links, or None when it is missing, expired or deleted."""
        request = semantic_pb2.GetRequest(
            namespace=namespace,
            id=id,
            include_vector=include_vector,
            include_deleted=include_deleted,
        )
        try:
            r = await self._t.unary(self._stub.Get, request)
        except NotFoundError:
            return None
        return _record(r.record, r.links)

    async def search(
        self,
        namespace: str,
        query: str | Iterable[float],
        *,
        top_k: int = 0,
        where: Mapping[str, Any] | None = None,
        tags_any: Iterable[str] = (),
        tags_all: Iterable[str] = (),
        category: str = "",
        min_score: float | None = None,
        include_vector: bool = False,
    ) -> list[Hit]:
        """The top_k closest records (text is embedded; a sequence of floats is a vector).

        top_k=0 uses the sidecar's default. `where` filters metadata (see
        where_predicates); all conditions must hold.
        """
        request = semantic_pb2.SearchRequest(
            namespace=namespace,
            query_text=query if isinstance(query, str) else "",
            query_vector=() if isinstance(query, str) else _vector(query),
            top_k=top_k,
            filters=where_predicates(where),
            tags_any=list(tags_any),
            tags_all=list(tags_all),
            category=category,
            min_score=min_score,
            include_vector=include_vector,
        )
        r = await self._t.unary(self._stub.Search, request)
        return [Hit(_record(h.record), h.score) for h in r.hits]

    async def delete(self, namespace: str, id: str, *, hard: bool = False) -> bool:
        """Soft delete (kept in history) or, with hard=True, remove every version and link.

        False when there was nothing to delete.
        """
        request = semantic_pb2.DeleteRequest(namespace=namespace, id=id, hard=hard)
        return bool((await self._t.unary(self._stub.Delete, request)).deleted)

    async def history(self, namespace: str, id: str, *, limit: int = 0) -> list[Record]:
        """Every stored version of a record, newest first (raises NotFoundError when missing)."""
        request = semantic_pb2.HistoryRequest(namespace=namespace, id=id, limit=limit)
        r = await self._t.unary(self._stub.History, request)
        return [_record(v) for v in r.versions]

    async def link(
        self,
        namespace: str,
        from_id: str,
        to_id: str,
        type: LinkType,
        *,
        remove: bool = False,
    ) -> bool:
        """Add (or with remove=True, remove) a typed link; True when something changed."""
        if type not in _LINK_TO_PROTO:
            raise ValueError(
                f"link type must be one of {', '.join(get_args(LinkType))}, not {type!r}"
            )
        request = semantic_pb2.LinkRequest(
            namespace=namespace,
            from_id=from_id,
            to_id=to_id,
            type=_LINK_TO_PROTO[type],  # type: ignore[arg-type]
            remove=remove,
        )
        return bool((await self._t.unary(self._stub.Link, request)).changed)


__all__ = ["AsyncSemantic", "Hit", "Link", "LinkType", "Record", "where_predicates"]
