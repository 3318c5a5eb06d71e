"""episodic wire messages ↔ driver values."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from memsidecar.episodic.v1 import episodic_pb2
from memsidecar.sidecar.blocks.episodic.driver import SessionInfo, StoredEvent
from memsidecar.sidecar.errors import InvalidArgument
from memsidecar.sidecar.protoconv import python_to_value

# The range a google.protobuf.Timestamp may hold (years 0001 to 9999).
_MIN_SECONDS = -62135596800
_MAX_SECONDS = 253402300799


def timestamp_us(micros: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMicroseconds(micros)
    return ts


def micros_of(message: Any, field: str) -> int | None:
    """A Timestamp field in whole microseconds (finer digits are dropped); None when unset."""
    if not message.HasField(field):
        return None
    ts: Timestamp = getattr(message, field)
    if not _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument(
            f"{field} is not a valid timestamp (seconds={ts.seconds}, nanos={ts.nanos}); "
            "use a time between years 1 and 9999"
        )
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def check_json(value: Any, field: str) -> None:
    """Reject what JSON (and every driver's storage) cannot hold: NaN/infinity,
    NUL characters, non-string keys and non-JSON types."""
    stack: list[tuple[Any, str]] = [(value, field)]
    while stack:
        item, path = stack.pop()
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidArgument(f"{path} is {item}; JSON numbers must be finite")
        elif isinstance(item, str):
            if "\x00" in item:
                raise InvalidArgument(f"{path} contains a NUL character, which cannot be stored")
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise InvalidArgument(
                        f"{path} has a non-string key {k!r}; JSON keys are strings"
                    )
                if "\x00" in k:
                    raise InvalidArgument(f"{path} has a key with a NUL character")
                stack.append((v, f"{path}.{k}"))
        else:
            raise InvalidArgument(
                f"{path} holds a {type(item).__name__}, which is not JSON; use dict, list, str, "
                "int, float, bool or None"
            )


def value_from_proto(message: Any, field: str) -> Any:
    """A google.protobuf.Value field as a JSON value (None when unset)."""
    if not message.HasField(field):
        return None
    try:
        data = json_format.MessageToDict(getattr(message, field))
    except (ValueError, json_format.Error) as exc:
        raise InvalidArgument(f"{field} is not valid JSON: {exc}") from None
    check_json(data, field)
    return data


def struct_from_proto(message: Any, field: str) -> dict[str, Any]:
    """A google.protobuf.Struct field as a dict ({} when unset)."""
    data = value_from_proto(message, field)
    return data if isinstance(data, dict) else {}


def json_to_value(data: Any, field: str) -> struct_pb2.Value:
    """A Python JSON value as a google.protobuf.Value, rejecting what is not JSON."""
    check_json(data, field)
    value = struct_pb2.Value()
    try:
        json_format.ParseDict(data, value)
    except (ValueError, json_format.Error) as exc:
        raise InvalidArgument(f"{field} is not valid JSON: {exc}") from None
    return value


def dict_to_struct(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    if data:
        struct.update(data)
    return struct


def event_to_proto(namespace: str, event: StoredEvent) -> episodic_pb2.Event:
    return episodic_pb2.Event(
        id=event.id,
        cursor=event.cursor,
        time=timestamp_us(event.time_us),
        type=event.type,
        role=event.role,
        session_id=event.session_id,
        payload=python_to_value(event.payload),
        metadata=dict_to_struct(event.metadata),
        namespace=namespace,
    )


def session_to_proto(info: SessionInfo) -> episodic_pb2.SessionSummary:
    return episodic_pb2.SessionSummary(
        session_id=info.session_id,
        event_count=info.event_count,
        first_cursor=info.first_cursor,
        last_cursor=info.last_cursor,
        first_time=timestamp_us(info.first_time_us),
        last_time=timestamp_us(info.last_time_us),
    )
