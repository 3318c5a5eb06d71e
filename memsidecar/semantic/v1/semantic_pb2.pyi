import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LinkType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINK_TYPE_UNSPECIFIED: _ClassVar[LinkType]
    LINK_TYPE_SUPERSEDES: _ClassVar[LinkType]
    LINK_TYPE_CONTRADICTS: _ClassVar[LinkType]
    LINK_TYPE_EXTENDS: _ClassVar[LinkType]

class PredicateOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PREDICATE_OP_UNSPECIFIED: _ClassVar[PredicateOp]
    PREDICATE_OP_EQ: _ClassVar[PredicateOp]
    PREDICATE_OP_NE: _ClassVar[PredicateOp]
    PREDICATE_OP_GT: _ClassVar[PredicateOp]
    PREDICATE_OP_GTE: _ClassVar[PredicateOp]
    PREDICATE_OP_LT: _ClassVar[PredicateOp]
    PREDICATE_OP_LTE: _ClassVar[PredicateOp]
    PREDICATE_OP_IN: _ClassVar[PredicateOp]
LINK_TYPE_UNSPECIFIED: LinkType
LINK_TYPE_SUPERSEDES: LinkType
LINK_TYPE_CONTRADICTS: LinkType
LINK_TYPE_EXTENDS: LinkType
PREDICATE_OP_UNSPECIFIED: PredicateOp
PREDICATE_OP_EQ: PredicateOp
PREDICATE_OP_NE: PredicateOp
PREDICATE_OP_GT: PredicateOp
PREDICATE_OP_GTE: PredicateOp
PREDICATE_OP_LT: PredicateOp
PREDICATE_OP_LTE: PredicateOp
PREDICATE_OP_IN: PredicateOp

class Record(_message.Message):
    __slots__ = ("namespace", "id", "content", "metadata", "tags", "category", "importance", "vector", "version", "created_at", "updated_at", "expires_at", "deleted")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    id: str
    content: str
    metadata: _struct_pb2.Struct
    tags: _containers.RepeatedScalarFieldContainer[str]
    category: str
    importance: float
    vector: _containers.RepeatedScalarFieldContainer[float]
    version: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    deleted: bool
    def __init__(self, namespace: _Optional[str] = ..., id: _Optional[str] = ..., content: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ..., category: _Optional[str] = ..., importance: _Optional[float] = ..., vector: _Optional[_Iterable[float]] = ..., version: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deleted: _Optional[bool] = ...) -> None: ...

class Link(_message.Message):
    __slots__ = ("from_id", "to_id", "type", "created_at")
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    TO_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    from_id: str
    to_id: str
    type: LinkType
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, from_id: _Optional[str] = ..., to_id: _Optional[str] = ..., type: _Optional[_Union[LinkType, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("namespace", "id", "content", "metadata", "tags", "category", "importance", "vector", "ttl", "if_version")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    id: str
    content: str
    metadata: _struct_pb2.Struct
    tags: _containers.RepeatedScalarFieldContainer[str]
    category: str
    importance: float
    vector: _containers.RepeatedScalarFieldContainer[float]
    ttl: _duration_pb2.Duration
    if_version: int
    def __init__(self, namespace: _Optional[str] = ..., id: _Optional[str] = ..., content: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ..., category: _Optional[str] = ..., importance: _Optional[float] = ..., vector: _Optional[_Iterable[float]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., if_version: _Optional[int] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: Record
    def __init__(self, record: _Optional[_Union[Record, _Mapping]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("namespace", "id", "include_vector", "include_deleted")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTOR_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DELETED_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    id: str
    include_vector: bool
    include_deleted: bool
    def __init__(self, namespace: _Optional[str] = ..., id: _Optional[str] = ..., include_vector: _Optional[bool] = ..., include_deleted: _Optional[bool] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("record", "links")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    record: Record
    links: _containers.RepeatedCompositeFieldContainer[Link]
    def __init__(self, record: _Optional[_Union[Record, _Mapping]] = ..., links: _Optional[_Iterable[_Union[Link, _Mapping]]] = ...) -> None: ...

class Predicate(_message.Message):
    __slots__ = ("field", "op", "value")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    field: str
    op: PredicateOp
    value: _struct_pb2.Value
    def __init__(self, field: _Optional[str] = ..., op: _Optional[_Union[PredicateOp, str]] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("namespace", "query_text", "query_vector", "top_k", "filters", "tags_any", "tags_all", "category", "min_score", "include_vector")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    QUERY_TEXT_FIELD_NUMBER: _ClassVar[int]
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    TAGS_ANY_FIELD_NUMBER: _ClassVar[int]
    TAGS_ALL_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTOR_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    query_text: str
    query_vector: _containers.RepeatedScalarFieldContainer[float]
    top_k: int
    filters: _containers.RepeatedCompositeFieldContainer[Predicate]
    tags_any: _containers.RepeatedScalarFieldContainer[str]
    tags_all: _containers.RepeatedScalarFieldContainer[str]
    category: str
    min_score: float
    include_vector: bool
    def __init__(self, namespace: _Optional[str] = ..., query_text: _Optional[str] = ..., query_vector: _Optional[_Iterable[float]] = ..., top_k: _Optional[int] = ..., filters: _Optional[_Iterable[_Union[Predicate, _Mapping]]] = ..., tags_any: _Optional[_Iterable[str]] = ..., tags_all: _Optional[_Iterable[str]] = ..., category: _Optional[str] = ..., min_score: _Optional[float] = ..., include_vector: _Optional[bool] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("record", "score")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    record: Record
    score: float
    def __init__(self, record: _Optional[_Union[Record, _Mapping]] = ..., score: _Optional[float] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("namespace", "id", "hard")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    HARD_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    id: str
    hard: bool
    def __init__(self, namespace: _Optional[str] = ..., id: _Optional[str] = ..., hard: _Optional[bool] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("namespace", "id", "limit")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    id: str
    limit: int
    def __init__(self, namespace: _Optional[str] = ..., id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[Record]
    def __init__(self, versions: _Optional[_Iterable[_Union[Record, _Mapping]]] = ...) -> None: ...

class LinkRequest(_message.Message):
    __slots__ = ("namespace", "from_id", "to_id", "type", "remove")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    TO_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    from_id: str
    to_id: str
    type: LinkType
    remove: bool
    def __init__(self, namespace: _Optional[str] = ..., from_id: _Optional[str] = ..., to_id: _Optional[str] = ..., type: _Optional[_Union[LinkType, str]] = ..., remove: _Optional[bool] = ...) -> None: ...

class LinkResponse(_message.Message):
    __slots__ = ("link", "changed")
    LINK_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    link: Link
    changed: bool
    def __init__(self, link: _Optional[_Union[Link, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...
