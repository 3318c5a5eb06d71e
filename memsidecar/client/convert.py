"""Python values ↔ protobuf well-known types, for the SDK."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

Seconds = float | int | timedelta


def to_duration(value: Seconds | None) -> Duration | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def from_duration(d: Duration) -> timedelta:
    return timedelta(microseconds=d.ToNanoseconds() / 1000)


def to_timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return ts


def from_timestamp(message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    return getattr(message, field).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


def to_struct(data: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if data is None:
        return None
    s = struct_pb2.Struct()
    s.update(data)
    return s


def integral(data: Any) -> Any:
    """JSON numbers travel as doubles in protobuf Struct; give whole numbers back as int."""
    if isinstance(data, float) and data.is_integer() and abs(data) <= 2**53:
        return int(data)
    if isinstance(data, dict):
        return {k: integral(v) for k, v in data.items()}
    if isinstance(data, list):
        return [integral(v) for v in data]
    return data


def from_struct(message: Any, field: str) -> dict[str, Any]:
    if not message.HasField(field):
        return {}
    return integral(json_format.MessageToDict(getattr(message, field)))  # type: ignore[no-any-return]


def to_value(data: Any) -> struct_pb2.Value:
    v = struct_pb2.Value()
    json_format.ParseDict(data, v)
    return v


def from_value(v: struct_pb2.Value) -> Any:
    return integral(json_format.MessageToDict(v))
