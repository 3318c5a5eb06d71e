"""The kv block client: `m.kv.put("scratch", "k", b"v", ttl=timedelta(minutes=5))`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from memsidecar.client.convert import Seconds, from_timestamp, from_value, to_duration, to_value
from memsidecar.client.errors import NotFoundError
from memsidecar.client.transport import Transport
from memsidecar.kv.v1 import kv_pb2, kv_pb2_grpc


@dataclass(frozen=True)
class Entry:
    namespace: str
    key: str
    # bytes, str, int, float, bool, or a JSON value (dict, list, None)
    value: Any
    version: int
    updated_at: datetime | None
    expires_at: datetime | None


def encode_value(value: Any) -> kv_pb2.Value:
    """Pick the wire type from the Python type (bool before int: bool is an int in Python)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return kv_pb2.Value(bytes_value=bytes(value))
    if isinstance(value, str):
        return kv_pb2.Value(string_value=value)
    if isinstance(value, bool):
        return kv_pb2.Value(bool_value=value)
    if isinstance(value, int):
        return kv_pb2.Value(int_value=value)
    if isinstance(value, float):
        return kv_pb2.Value(double_value=value)
    if value is None or isinstance(value, dict | list):
        return kv_pb2.Value(json_value=to_value(value))
    raise TypeError(
        f"cannot store a {type(value).__name__} in kv; use bytes, str, int, float, bool, "
        "or a JSON value (dict, list, None)"
    )


def decode_value(value: kv_pb2.Value) -> Any:
    which = value.WhichOneof("kind")
    if which is None:
        return None
    if which == "json_value":
        return from_value(value.json_value)
    return getattr(value, which)


def _entry(e: kv_pb2.Entry) -> Entry:
    return Entry(
        namespace=e.namespace,
        key=e.key,
        value=decode_value(e.value),
        version=e.version,
        updated_at=from_timestamp(e, "updated_at"),
        expires_at=from_timestamp(e, "expires_at"),
    )


class AsyncKV:
    def __init__(self, transport: Transport) -> None:
        self._t = transport
        self._stub = kv_pb2_grpc.KVStub(transport.channel)

    async def get(self, namespace: str, key: str) -> Entry | None:
        """The entry, or None when the key is missing or expired."""
        try:
            r = await self._t.unary(self._stub.Get, kv_pb2.GetRequest(namespace=namespace, key=key))
        except NotFoundError:
            return None
        return _entry(r.entry)

    async def get_many(self, namespace: str, keys: list[str]) -> dict[str, Entry]:
        r = await self._t.unary(
            self._stub.MultiGet, kv_pb2.MultiGetRequest(namespace=namespace, keys=keys)
        )
        return {e.key: _entry(e) for e in r.entries}

    async def put(
        self,
        namespace: str,
        key: str,
        value: Any,
        *,
        ttl: Seconds | None = None,
        if_version: int | None = None,
    ) -> Entry:
        """Write a key; `if_version` makes it a compare-and-set (0 = must not exist)."""
        request = kv_pb2.PutRequest(
            namespace=namespace,
            key=key,
            value=encode_value(value),
            ttl=to_duration(ttl),
            if_version=if_version,
        )
        return _entry((await self._t.unary(self._stub.Put, request)).entry)

    async def delete(self, namespace: str, key: str, *, if_version: int | None = None) -> bool:
        request = kv_pb2.DeleteRequest(namespace=namespace, key=key, if_version=if_version)
        return bool((await self._t.unary(self._stub.Delete, request)).deleted)

    async def scan(
        self,
        namespace: str,
        prefix: str = "",
        *,
        start_after: str = "",
        limit: int = 0,
        keys_only: bool = False,
    ) -> AsyncIterator[Entry]:
        """One page of keys with `prefix` in key order; resume with start_after=<last key>."""
        request = kv_pb2.ScanRequest(
            namespace=namespace,
            prefix=prefix,
            start_after=start_after,
            limit=limit,
            keys_only=keys_only,
        )
        async for e in self._t.stream(self._stub.Scan, request):
            yield _entry(e)

    async def scan_all(
        self, namespace: str, prefix: str = "", *, page: int = 0
    ) -> AsyncIterator[Entry]:
        """Every key with `prefix`, paging with the resume cursor."""
        cursor = ""
        while True:
            count = 0
            async for entry in self.scan(namespace, prefix, start_after=cursor, limit=page):
                count += 1
                cursor = entry.key
                yield entry
            if count == 0:
                return

    async def increment(
        self, namespace: str, key: str, delta: int = 1, *, ttl: Seconds | None = None
    ) -> int:
        """Add `delta` atomically and return the new value (missing keys start at 0)."""
        request = kv_pb2.IncrementRequest(
            namespace=namespace, key=key, delta=delta, ttl=to_duration(ttl)
        )
        r = await self._t.unary(self._stub.Increment, request)
        return int(r.entry.value.int_value)
