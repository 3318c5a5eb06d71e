"""The kv gRPC service: validates requests, scopes them to the caller's tenant, calls the driver."""

from __future__ import annotations

from collections.abc import AsyncIterator

from memsidecar.kv.v1 import kv_pb2, kv_pb2_grpc
from memsidecar.sidecar.blocks.kv.convert import entry_to_proto, value_from_proto
from memsidecar.sidecar.blocks.kv.driver import KVDriver
from memsidecar.sidecar.blocks.kv.settings import KVSettings
from memsidecar.sidecar.clock import Clock
from memsidecar.sidecar.errors import InvalidArgument, NotFound
from memsidecar.sidecar.identity import current_identity
from memsidecar.sidecar.protoconv import duration_seconds
from memsidecar.sidecar.rpc import Ctx
from memsidecar.sidecar.validation import check_key, page_limit


class KVService(kv_pb2_grpc.KVServicer):
    def __init__(self, driver: KVDriver, settings: KVSettings, clock: Clock) -> None:
        self.driver = driver
        self.settings = settings
        self.clock = clock

    def _scope(self, namespace: str) -> tuple[str, str]:
        self.settings.namespace("kv", namespace)
        return current_identity().tenant, namespace

    def _key(self, key: str, field: str = "key") -> str:
        return check_key(key, self.settings.max_key_bytes, field, "blocks.kv.max_key_bytes")

    async def Get(self, request: kv_pb2.GetRequest, context: Ctx) -> kv_pb2.GetResponse:
        tenant, ns = self._scope(request.namespace)
        key = self._key(request.key)
        entry = await self.driver.get(tenant, ns, key, self.clock())
        if entry is None:
            raise NotFound(f"key {key!r} not found in kv namespace {ns!r} (or it expired)")
        return kv_pb2.GetResponse(entry=entry_to_proto(ns, entry))

    async def MultiGet(
        self, request: kv_pb2.MultiGetRequest, context: Ctx
    ) -> kv_pb2.MultiGetResponse:
        tenant, ns = self._scope(request.namespace)
        if len(request.keys) > self.settings.max_multiget_keys:
            raise InvalidArgument(
                f"MultiGet asked for {len(request.keys)} keys; the limit is "
                f"{self.settings.max_multiget_keys} (blocks.kv.max_multiget_keys): split the call"
            )
        keys = [self._key(k, "keys[]") for k in request.keys]
        found = await self.driver.multi_get(tenant, ns, keys, self.clock())
        return kv_pb2.MultiGetResponse(
            entries=[entry_to_proto(ns, found[k]) for k in keys if k in found],
            missing=[k for k in keys if k not in found],
        )

    async def Put(self, request: kv_pb2.PutRequest, context: Ctx) -> kv_pb2.PutResponse:
        tenant, ns = self._scope(request.namespace)
        key = self._key(request.key)
        value = value_from_proto(request.value, self.settings.max_value_bytes)
        ttl = duration_seconds(request, "ttl")
        if_version = request.if_version if request.HasField("if_version") else None
        if if_version is not None and if_version < 0:
            raise InvalidArgument(
                f"if_version must be 0 (must not exist) or a version, got {if_version}"
            )
        now = self.clock()
        entry = await self.driver.put(
            tenant, ns, key, value, now, now + ttl if ttl else None, if_version
        )
        return kv_pb2.PutResponse(entry=entry_to_proto(ns, entry))

    async def Delete(self, request: kv_pb2.DeleteRequest, context: Ctx) -> kv_pb2.DeleteResponse:
        tenant, ns = self._scope(request.namespace)
        key = self._key(request.key)
        if_version = request.if_version if request.HasField("if_version") else None
        if if_version is not None and if_version < 0:
            raise InvalidArgument(f"if_version must be 0 or a version, got {if_version}")
        deleted = await self.driver.delete(tenant, ns, key, self.clock(), if_version)
        return kv_pb2.DeleteResponse(deleted=deleted)

    async def Scan(self, request: kv_pb2.ScanRequest, context: Ctx) -> AsyncIterator[kv_pb2.Entry]:
        tenant, ns = self._scope(request.namespace)
        limit = page_limit(
            request.limit,
            self.settings.default_scan_limit,
            self.settings.max_scan_limit,
            "blocks.kv.max_scan_limit",
        )
        if request.prefix:
            self._key(request.prefix, "prefix")
        if request.start_after:
            self._key(request.start_after, "start_after")
        entries = await self.driver.scan(
            tenant, ns, request.prefix, request.start_after, limit, self.clock()
        )
        for entry in entries:
            yield entry_to_proto(ns, entry, with_value=not request.keys_only)

    async def Increment(
        self, request: kv_pb2.IncrementRequest, context: Ctx
    ) -> kv_pb2.IncrementResponse:
        tenant, ns = self._scope(request.namespace)
        key = self._key(request.key)
        ttl = duration_seconds(request, "ttl")
        now = self.clock()
        entry = await self.driver.increment(
            tenant, ns, key, request.delta, now, now + ttl if ttl else None
        )
        return kv_pb2.IncrementResponse(entry=entry_to_proto(ns, entry))
