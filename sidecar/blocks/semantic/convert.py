"""semantic wire messages ↔ driver values, with the checks that belong to each field."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from google.protobuf import json_format

from memsidecar.semantic.v1 import semantic_pb2
from memsidecar.sidecar.blocks.semantic.driver import (
    LinkType,
    Predicate,
    PredicateOp,
    StoredLink,
    StoredRecord,
    Vector,
    VectorSpace,
)
from memsidecar.sidecar.errors import InvalidArgument
from memsidecar.sidecar.protoconv import dict_to_struct, timestamp

LINK_TYPE_FROM_PROTO: dict[int, LinkType] = {
    semantic_pb2.LINK_TYPE_SUPERSEDES: "supersedes",
    semantic_pb2.LINK_TYPE_CONTRADICTS: "contradicts",
    semantic_pb2.LINK_TYPE_EXTENDS: "extends",
}
LINK_TYPE_TO_PROTO: dict[LinkType, semantic_pb2.LinkType] = {
    "supersedes": semantic_pb2.LINK_TYPE_SUPERSEDES,
    "contradicts": semantic_pb2.LINK_TYPE_CONTRADICTS,
    "extends": semantic_pb2.LINK_TYPE_EXTENDS,
}

OP_FROM_PROTO: dict[int, PredicateOp] = {
    semantic_pb2.PREDICATE_OP_EQ: "eq",
    semantic_pb2.PREDICATE_OP_NE: "ne",
    semantic_pb2.PREDICATE_OP_GT: "gt",
    semantic_pb2.PREDICATE_OP_GTE: "gte",
    semantic_pb2.PREDICATE_OP_LT: "lt",
    semantic_pb2.PREDICATE_OP_LTE: "lte",
    semantic_pb2.PREDICATE_OP_IN: "in",
}
_OP_NAMES = ", ".join(f"PREDICATE_OP_{op.upper()}" for op in OP_FROM_PROTO.values())


def _json(message: Any, what: str) -> Any:
    """A Struct or Value as plain JSON; NaN and infinities are not JSON and are rejected."""
    try:
        return json_format.MessageToDict(message)
    except ValueError as exc:
        raise InvalidArgument(f"{what} must be JSON: numbers must be finite ({exc})") from None


def metadata_from_proto(request: Any, max_bytes: int) -> dict[str, Any]:
    if not request.HasField("metadata"):
        return {}
    data: dict[str, Any] = _json(request.metadata, "metadata")
    size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
    if size > max_bytes:
        raise InvalidArgument(
            f"metadata is {size} bytes as JSON, over this sidecar's limit of {max_bytes} bytes "
            "(blocks.semantic.max_metadata_bytes); keep large data in content or the artifact block"
        )
    return data


def vector_from_proto(values: Iterable[float], space: VectorSpace, field: str, ns: str) -> Vector:
    """A caller's vector, checked: the namespace's dimension, finite, not all zeros."""
    vector = np.asarray(list(values), dtype=np.float32)
    if vector.size != space.dimension:
        raise InvalidArgument(
            f"{field} has {vector.size} dimensions but semantic namespace {ns!r} uses embedder "
            f"{space.embedder!r} with {space.dimension} dimensions; pass a {space.dimension}-"
            "dimensional vector (or text, to let the sidecar embed it)"
        )
    if not np.all(np.isfinite(vector)):
        raise InvalidArgument(f"{field} must hold finite numbers (no NaN or infinity)")
    if not np.any(vector):
        raise InvalidArgument(f"{field} must not be all zeros: cosine similarity needs a direction")
    return vector


def predicate_from_proto(p: semantic_pb2.Predicate, position: int, max_in_values: int) -> Predicate:
    where = f"filters[{position}]"
    if not p.field:
        raise InvalidArgument(f"{where}.field is required: a metadata key, dots for nested keys")
    path = tuple(p.field.split("."))
    if not all(path):
        raise InvalidArgument(
            f"{where}.field {p.field!r} has an empty key; write nested keys as 'a.b.c'"
        )
    op = OP_FROM_PROTO.get(p.op)
    if op is None:
        raise InvalidArgument(f"{where}.op must be one of {_OP_NAMES} (got {p.op})")
    if not p.HasField("value") or p.value.WhichOneof("kind") is None:
        raise InvalidArgument(f"{where}.value is required (use null_value to compare with null)")
    value = _json(p.value, f"{where}.value")
    if op == "in":
        if not isinstance(value, list):
            raise InvalidArgument(f'{where}: op in needs a list value, e.g. ["a", "b"]')
        if len(value) > max_in_values:
            raise InvalidArgument(
                f"{where}: op in has {len(value)} values, over the limit of {max_in_values} "
                "(blocks.semantic.max_in_values)"
            )
    elif op in ("gt", "gte", "lt", "lte"):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise InvalidArgument(f"{where}: op {op} needs a number or a string value")
    return Predicate(path, op, value)


def check_min_score(value: float) -> float:
    if not (math.isfinite(value) and -1.0 <= value <= 1.0):
        raise InvalidArgument(
            f"min_score must be a cosine similarity between -1 and 1 (got {value})"
        )
    return value


def record_to_proto(ns: str, record: StoredRecord, include_vector: bool) -> semantic_pb2.Record:
    return semantic_pb2.Record(
        namespace=ns,
        id=record.id,
        content=record.content,
        metadata=dict_to_struct(record.metadata),
        tags=record.tags,
        category=record.category,
        importance=record.importance,
        vector=record.vector.tolist() if include_vector else (),
        version=record.version,
        created_at=timestamp(record.created_at),
        updated_at=timestamp(record.updated_at),
        expires_at=timestamp(record.expires_at),
        deleted=record.deleted,
    )


def link_to_proto(link: StoredLink) -> semantic_pb2.Link:
    return semantic_pb2.Link(
        from_id=link.from_id,
        to_id=link.to_id,
        type=LINK_TYPE_TO_PROTO[link.type],
        created_at=timestamp(link.created_at),
    )
