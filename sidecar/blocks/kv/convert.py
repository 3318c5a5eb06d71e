"""kv wire messages ↔ driver values."""

from __future__ import annotations

from memsidecar.kv.v1 import kv_pb2
from memsidecar.sidecar.blocks.kv.driver import KVEntry, KVValue
from memsidecar.sidecar.errors import InvalidArgument
from memsidecar.sidecar.protoconv import json_size, python_to_value, timestamp, value_to_python

_FIELD_KIND = {
    "bytes_value": "bytes",
    "string_value": "string",
    "int_value": "int",
    "double_value": "double",
    "bool_value": "bool",
    "json_value": "json",
}
_KIND_FIELD = {v: k for k, v in _FIELD_KIND.items()}


def value_from_proto(value: kv_pb2.Value, max_bytes: int) -> KVValue:
    which = value.WhichOneof("kind")
    if which is None:
        raise InvalidArgument(
            "value is required: set exactly one of bytes_value, string_value, int_value, "
            "double_value, bool_value or json_value"
        )
    kind = _FIELD_KIND[which]
    data = value_to_python(value.json_value) if kind == "json" else getattr(value, which)
    size = (
        len(data)
        if kind == "bytes"
        else len(data.encode())
        if kind == "string"
        else json_size(data)
        if kind == "json"
        else 8
    )
    if size > max_bytes:
        raise InvalidArgument(
            f"value is {size} bytes, over this sidecar's limit of {max_bytes} bytes "
            "(blocks.kv.max_value_bytes); store large blobs in the artifact block"
        )
    return KVValue(kind, data)  # type: ignore[arg-type]


def value_to_proto(value: KVValue) -> kv_pb2.Value:
    field = _KIND_FIELD[value.kind]
    if value.kind == "json":
        return kv_pb2.Value(json_value=python_to_value(value.data))
    return kv_pb2.Value(**{field: value.data})


def entry_to_proto(namespace: str, entry: KVEntry, with_value: bool = True) -> kv_pb2.Entry:
    return kv_pb2.Entry(
        namespace=namespace,
        key=entry.key,
        value=value_to_proto(entry.value) if with_value else None,
        version=entry.version,
        updated_at=timestamp(entry.updated_at),
        expires_at=timestamp(entry.expires_at),
    )
