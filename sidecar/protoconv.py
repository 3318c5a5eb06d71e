"""Conversions between protobuf well-known types and plain Python values."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from memsidecar.sidecar.errors import InvalidArgument

JSON = Any


def timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


def seconds_of(ts: Timestamp) -> float:
    return ts.ToNanoseconds() / 1e9


def optional_seconds(message: Any, field: str) -> float | None:
    """The seconds of a Timestamp field, or None when it is unset."""
    return seconds_of(getattr(message, field)) if message.HasField(field) else None


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def duration_seconds(
    message: Any, field: str, *, required: bool = False, maximum: timedelta | None = None
) -> float | None:
    """Validate a Duration field: never negative, within `maximum`; None when unset or 0."""
    if not message.HasField(field):
        if required:
            raise InvalidArgument(f"{field} is required and must be positive, e.g. {field}=30s")
        return None
    value: float = getattr(message, field).ToNanoseconds() / 1e9
    if value < 0:
        raise InvalidArgument(f"{field} must not be negative (got {value}s)")
    if value == 0:
        if required:
            raise InvalidArgument(f"{field} must be positive (got 0s)")
        return None
    if maximum is not None and value > maximum.total_seconds():
        raise InvalidArgument(
            f"{field} of {value}s is over this sidecar's limit of {maximum.total_seconds()}s"
        )
    return value


def struct_to_dict(message: Any, field: str) -> dict[str, JSON]:
    if not message.HasField(field):
        return {}
    return json_format.MessageToDict(getattr(message, field))  # type: ignore[no-any-return]


def dict_to_struct(data: dict[str, JSON] | None) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if data:
        s.update(data)
    return s


def value_to_python(value: struct_pb2.Value) -> JSON:
    return json_format.MessageToDict(value)


def python_to_value(data: JSON) -> struct_pb2.Value:
    v = struct_pb2.Value()
    json_format.ParseDict(data, v)
    return v


def json_size(data: JSON) -> int:
    """Size of the JSON encoding, for enforcing byte limits."""
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
