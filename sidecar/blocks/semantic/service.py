"""The semantic gRPC service: validates requests, embeds text, scopes calls to the caller's
tenant, and calls the driver."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from memsidecar.semantic.v1 import semantic_pb2, semantic_pb2_grpc
from memsidecar.sidecar.blocks.semantic.convert import (
    LINK_TYPE_FROM_PROTO,
    check_min_score,
    link_to_proto,
    metadata_from_proto,
    predicate_from_proto,
    record_to_proto,
    vector_from_proto,
)
from memsidecar.sidecar.blocks.semantic.driver import (
    RecordWrite,
    SearchFilter,
    SemanticDriver,
    StoredLink,
    Vector,
    VectorSpace,
    record_not_found,
)
from memsidecar.sidecar.blocks.semantic.embedders import Embedder
from memsidecar.sidecar.blocks.semantic.settings import SemanticSettings
from memsidecar.sidecar.clock import Clock
from memsidecar.sidecar.errors import FailedPrecondition, InvalidArgument
from memsidecar.sidecar.identity import current_identity
from memsidecar.sidecar.protoconv import duration_seconds
from memsidecar.sidecar.validation import check_key, page_limit

if TYPE_CHECKING:
    Ctx = grpc.aio.ServicerContext[Any, Any]


class SemanticService(semantic_pb2_grpc.SemanticServicer):  # type: ignore[misc]
    def __init__(
        self,
        driver: SemanticDriver,
        settings: SemanticSettings,
        embedders: Mapping[str, Embedder],
        clock: Clock,
    ) -> None:
        self.driver = driver
        self.settings = settings
        self.embedders = embedders
        self.clock = clock

    # -- request checks ----------------------------------------------------------

    def _scope(self, namespace: str) -> tuple[str, str, Embedder, VectorSpace]:
        """The caller's tenant, the namespace, and the embedder and space it is bound to."""
        ns_settings = self.settings.namespace("semantic", namespace)
        embedder = self.embedders[ns_settings.embedder]
        space = VectorSpace(embedder.name, embedder.dimension)
        return current_identity().tenant, namespace, embedder, space

    def _id(self, id: str, field: str = "id") -> str:
        return check_key(id, self.settings.max_id_bytes, field, "blocks.semantic.max_id_bytes")

    def _label(self, label: str, field: str) -> str:
        if not label:
            raise InvalidArgument(f"{field} must not be empty")
        size = len(label.encode())
        if size > self.settings.max_label_bytes:
            raise InvalidArgument(
                f"{field} is {size} bytes, over the limit of {self.settings.max_label_bytes} "
                "bytes (blocks.semantic.max_label_bytes)"
            )
        return label

    def _tags(self, tags: Iterable[str], field: str) -> tuple[str, ...]:
        unique = tuple(dict.fromkeys(tags))
        if len(unique) > self.settings.max_tags:
            raise InvalidArgument(
                f"{field} has {len(unique)} tags, over the limit of {self.settings.max_tags} "
                "(blocks.semantic.max_tags)"
            )
        return tuple(self._label(tag, f"{field}[]") for tag in unique)

    def _text(self, text: str, field: str) -> str:
        size = len(text.encode())
        if size > self.settings.max_content_bytes:
            raise InvalidArgument(
                f"{field} is {size} bytes, over this sidecar's limit of "
                f"{self.settings.max_content_bytes} bytes (blocks.semantic.max_content_bytes); "
                "split it into several records or keep the full text in the artifact block"
            )
        return text

    async def _embed(self, embedder: Embedder, space: VectorSpace, text: str) -> Vector:
        [raw] = await embedder.embed([text])
        vector = np.asarray(raw, dtype=np.float32)
        if vector.size != space.dimension:
            raise FailedPrecondition(
                f"embedder {embedder.name!r} returned {vector.size} dimensions but is configured "
                f"for {space.dimension}; fix its dimension in blocks.semantic.embedders"
            )
        if not np.all(np.isfinite(vector)) or not np.any(vector):
            raise InvalidArgument(
                f"embedder {embedder.name!r} made no usable vector of this text (all zeros or not "
                "finite); pass different text or a vector"
            )
        return vector

    # -- RPCs ----------------------------------------------------------------------

    async def Upsert(
        self, request: semantic_pb2.UpsertRequest, context: Ctx
    ) -> semantic_pb2.UpsertResponse:
        tenant, ns, embedder, space = self._scope(request.namespace)
        id = self._id(request.id) if request.id else str(uuid.uuid4())
        content = self._text(request.content, "content")
        metadata = metadata_from_proto(request, self.settings.max_metadata_bytes)
        tags = self._tags(request.tags, "tags")
        if request.category:
            self._label(request.category, "category")
        importance = request.importance
        if not (math.isfinite(importance) and 0.0 <= importance <= 1.0):
            raise InvalidArgument(f"importance must be between 0 and 1 (got {importance})")
        ttl = duration_seconds(request, "ttl")
        if_version = request.if_version if request.HasField("if_version") else None
        if if_version is not None and if_version < 0:
            raise InvalidArgument(
                f"if_version must be 0 (must not exist) or a version, got {if_version}"
            )
        if request.vector:
            vector = vector_from_proto(request.vector, space, "vector", ns)
        elif not content:
            raise InvalidArgument(
                "content is required (the sidecar embeds it); or pass a vector of your own"
            )
        else:
            vector = await self._embed(embedder, space, content)
        now = self.clock()
        write = RecordWrite(
            id=id,
            content=content,
            metadata=metadata,
            tags=tags,
            category=request.category,
            importance=importance,
            vector=vector,
            expires_at=now + ttl if ttl else None,
        )
        record = await self.driver.upsert(tenant, ns, space, write, now, if_version)
        return semantic_pb2.UpsertResponse(record=record_to_proto(ns, record, False))

    async def Get(self, request: semantic_pb2.GetRequest, context: Ctx) -> semantic_pb2.GetResponse:
        tenant, ns, _, _ = self._scope(request.namespace)
        id = self._id(request.id)
        found = await self.driver.get(tenant, ns, id, self.clock(), request.include_deleted)
        if found is None:
            raise record_not_found(ns, id)
        return semantic_pb2.GetResponse(
            record=record_to_proto(ns, found.record, request.include_vector),
            links=[link_to_proto(link) for link in found.links],
        )

    def _filter(self, request: semantic_pb2.SearchRequest) -> SearchFilter:
        if len(request.filters) > self.settings.max_filters:
            raise InvalidArgument(
                f"Search has {len(request.filters)} filters, over the limit of "
                f"{self.settings.max_filters} (blocks.semantic.max_filters)"
            )
        predicates = tuple(
            predicate_from_proto(p, i, self.settings.max_in_values)
            for i, p in enumerate(request.filters)
        )
        return SearchFilter(
            predicates=predicates,
            tags_any=self._tags(request.tags_any, "tags_any"),
            tags_all=self._tags(request.tags_all, "tags_all"),
            category=self._label(request.category, "category") if request.category else "",
        )

    async def Search(
        self, request: semantic_pb2.SearchRequest, context: Ctx
    ) -> semantic_pb2.SearchResponse:
        tenant, ns, embedder, space = self._scope(request.namespace)
        if bool(request.query_text) == bool(request.query_vector):
            raise InvalidArgument(
                "set exactly one of query_text (text to embed) or query_vector (a vector)"
            )
        if request.top_k < 0:
            raise InvalidArgument(f"top_k must not be negative (got {request.top_k})")
        if request.top_k > self.settings.max_top_k:
            raise InvalidArgument(
                f"top_k {request.top_k} is over this sidecar's maximum of "
                f"{self.settings.max_top_k} (blocks.semantic.max_top_k)"
            )
        top_k = request.top_k or self.settings.default_top_k
        min_score = check_min_score(request.min_score) if request.HasField("min_score") else None
        where = self._filter(request)
        if request.query_vector:
            query = vector_from_proto(request.query_vector, space, "query_vector", ns)
        else:
            query = await self._embed(embedder, space, self._text(request.query_text, "query_text"))
        hits = await self.driver.search(
            tenant, ns, space, query, top_k, where, min_score, self.clock()
        )
        return semantic_pb2.SearchResponse(
            hits=[
                semantic_pb2.Hit(
                    record=record_to_proto(ns, hit.record, request.include_vector),
                    score=hit.score,
                )
                for hit in hits
            ]
        )

    async def Delete(
        self, request: semantic_pb2.DeleteRequest, context: Ctx
    ) -> semantic_pb2.DeleteResponse:
        tenant, ns, _, _ = self._scope(request.namespace)
        id = self._id(request.id)
        deleted = await self.driver.delete(tenant, ns, id, request.hard, self.clock())
        return semantic_pb2.DeleteResponse(deleted=deleted)

    async def History(
        self, request: semantic_pb2.HistoryRequest, context: Ctx
    ) -> semantic_pb2.HistoryResponse:
        tenant, ns, _, _ = self._scope(request.namespace)
        id = self._id(request.id)
        limit = page_limit(
            request.limit,
            self.settings.max_history,
            self.settings.max_history,
            "blocks.semantic.max_history",
        )
        versions = await self.driver.history(tenant, ns, id, limit, self.clock())
        if versions is None:
            raise record_not_found(ns, id)
        return semantic_pb2.HistoryResponse(
            versions=[record_to_proto(ns, v, False) for v in versions]
        )

    async def Link(
        self, request: semantic_pb2.LinkRequest, context: Ctx
    ) -> semantic_pb2.LinkResponse:
        tenant, ns, _, _ = self._scope(request.namespace)
        from_id = self._id(request.from_id, "from_id")
        to_id = self._id(request.to_id, "to_id")
        link_type = LINK_TYPE_FROM_PROTO.get(request.type)
        if link_type is None:
            raise InvalidArgument(
                "type must be LINK_TYPE_SUPERSEDES, LINK_TYPE_CONTRADICTS or LINK_TYPE_EXTENDS "
                f"(got {request.type})"
            )
        if from_id == to_id:
            raise InvalidArgument(f"a record cannot link to itself (from_id = to_id = {from_id!r})")
        now = self.clock()
        link, changed = await self.driver.link(
            tenant,
            ns,
            StoredLink(from_id, to_id, link_type, now),
            request.remove,
            self.settings.max_links_per_record,
            now,
        )
        return semantic_pb2.LinkResponse(link=link_to_proto(link), changed=changed)
