"""The lease gRPC service: validation, tenant scoping, waiting for busy keys, the driver."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from memsidecar.lease.v1 import lease_pb2, lease_pb2_grpc
from memsidecar.sidecar.blocks.lease.convert import lease_to_proto
from memsidecar.sidecar.blocks.lease.driver import LeaseDriver, LeaseRecord, iso
from memsidecar.sidecar.blocks.lease.settings import LeaseSettings
from memsidecar.sidecar.clock import Clock
from memsidecar.sidecar.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    MemError,
    NotFound,
)
from memsidecar.sidecar.identity import current_identity
from memsidecar.sidecar.protoconv import duration_seconds
from memsidecar.sidecar.rpc import Ctx
from memsidecar.sidecar.validation import check_key, page_limit

# (tenant, session_id) -> None, or raise NotFound / FailedPrecondition when the
# session cannot take leases. Registered by the session block.
SessionCheck = Callable[[str, str], Awaitable[None]]

# A waiter stops this long before the caller's gRPC deadline so it can still answer ABORTED.
DEADLINE_MARGIN_SECONDS = 0.05


class LeaseService(lease_pb2_grpc.LeaseServicer):
    def __init__(self, driver: LeaseDriver, settings: LeaseSettings, clock: Clock) -> None:
        self.driver = driver
        self.settings = settings
        self.clock = clock
        self.session_check: SessionCheck | None = None

    def _scope(self, namespace: str) -> tuple[str, str]:
        self.settings.namespace("lease", namespace)
        return current_identity().tenant, namespace

    def _key(self, key: str, field: str = "key") -> str:
        return check_key(key, self.settings.max_key_bytes, field, "blocks.lease.max_key_bytes")

    def _holder(self, holder_id: str) -> str:
        if not holder_id:
            raise InvalidArgument(
                "holder_id is required: a name for the caller that holds the lease, "
                "e.g. '<hostname>-<pid>'"
            )
        limit = self.settings.max_holder_chars
        if len(holder_id) > limit:
            raise InvalidArgument(
                f"holder_id is {len(holder_id)} characters, over the limit of {limit} "
                "(blocks.lease.max_holder_chars)"
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in holder_id):
            raise InvalidArgument("holder_id must not contain control characters")
        return holder_id

    def _ttl(self, message: lease_pb2.AcquireRequest | lease_pb2.RenewRequest) -> float:
        ttl = duration_seconds(message, "ttl", required=True)
        assert ttl is not None
        limit = self.settings.max_ttl.total_seconds()
        if ttl > limit:
            raise InvalidArgument(
                f"ttl of {ttl}s is over this sidecar's limit of {limit}s (blocks.lease.max_ttl); "
                "take a shorter lease and renew it"
            )
        return ttl

    def _wait_for(self, request: lease_pb2.AcquireRequest) -> float:
        wait_for = duration_seconds(request, "wait_for") or 0.0
        limit = self.settings.max_wait.total_seconds()
        if wait_for > limit:
            raise InvalidArgument(
                f"wait_for of {wait_for}s is over this sidecar's limit of {limit}s "
                "(blocks.lease.max_wait); wait less and retry"
            )
        return wait_for

    @staticmethod
    def _token(fencing_token: int) -> int:
        if fencing_token <= 0:
            raise InvalidArgument(
                f"fencing_token must be the positive token Acquire returned (got {fencing_token})"
            )
        return fencing_token

    async def _check_session(self, tenant: str, session_id: str) -> None:
        if self.session_check is None:
            raise FailedPrecondition(
                f"cannot attach the lease to session {session_id!r}: this sidecar serves no "
                "session block; leave session_id empty"
            )
        await self.session_check(tenant, session_id)

    async def Acquire(
        self, request: lease_pb2.AcquireRequest, context: Ctx
    ) -> lease_pb2.AcquireResponse:
        tenant, ns = self._scope(request.namespace)
        key = self._key(request.key)
        holder = self._holder(request.holder_id)
        ttl = self._ttl(request)
        wait_for = self._wait_for(request)
        session_id = request.session_id
        if session_id:
            await self._check_session(tenant, session_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_for
        rpc_left = context.time_remaining() if context is not None else None
        if rpc_left is not None:
            deadline = min(deadline, loop.time() + rpc_left - DEADLINE_MARGIN_SECONDS)
        while True:
            now = self.clock()
            result = await self.driver.acquire(tenant, ns, key, holder, session_id, now, now + ttl)
            if result.granted:
                break
            left = deadline - loop.time()
            if left <= 0:
                raise self._busy(key, result.lease, wait_for)
            until_expiry = result.lease.expires_at - now
            await self.driver.wait_change(
                tenant, ns, key, result.lease.fencing_token, min(left, until_expiry)
            )
        lease = result.lease
        if session_id:
            # The session may have ended while we waited; its end released what it held
            # before this grant, so undo the grant rather than leave it attached to nothing.
            try:
                await self._check_session(tenant, session_id)
            except MemError:
                with contextlib.suppress(FailedPrecondition):
                    await self.driver.release(
                        tenant, ns, key, holder, lease.fencing_token, self.clock()
                    )
                raise
        return lease_pb2.AcquireResponse(lease=lease_to_proto(lease))

    @staticmethod
    def _busy(key: str, current: LeaseRecord, waited: float) -> Aborted:
        held = (
            f"lease on key {key!r} is held by {current.holder_id!r} until {iso(current.expires_at)}"
        )
        if waited > 0:
            return Aborted(
                f"{held}, still, after waiting {waited}s; retry later or pass a longer wait_for"
            )
        return Aborted(f"{held}; retry later or pass wait_for to wait for it")

    async def Renew(self, request: lease_pb2.RenewRequest, context: Ctx) -> lease_pb2.RenewResponse:
        tenant, ns = self._scope(request.namespace)
        key = self._key(request.key)
        holder = self._holder(request.holder_id)
        token = self._token(request.fencing_token)
        ttl = self._ttl(request)
        now = self.clock()
        lease = await self.driver.renew(tenant, ns, key, holder, token, now, now + ttl)
        return lease_pb2.RenewResponse(lease=lease_to_proto(lease))

    async def Release(
        self, request: lease_pb2.ReleaseRequest, context: Ctx
    ) -> lease_pb2.ReleaseResponse:
        tenant, ns = self._scope(request.namespace)
        key = self._key(request.key)
        holder = self._holder(request.holder_id)
        token = self._token(request.fencing_token)
        await self.driver.release(tenant, ns, key, holder, token, self.clock())
        return lease_pb2.ReleaseResponse(released=True)

    async def Inspect(
        self, request: lease_pb2.InspectRequest, context: Ctx
    ) -> lease_pb2.InspectResponse:
        tenant, ns = self._scope(request.namespace)
        key = self._key(request.key)
        lease = await self.driver.get(tenant, ns, key, self.clock())
        if lease is None:
            raise NotFound(
                f"key {key!r} in lease namespace {ns!r} is free (never held, released, or expired)"
            )
        return lease_pb2.InspectResponse(lease=lease_to_proto(lease))

    async def List(self, request: lease_pb2.ListRequest, context: Ctx) -> lease_pb2.ListResponse:
        tenant, ns = self._scope(request.namespace)
        limit = page_limit(
            request.limit,
            self.settings.default_list_limit,
            self.settings.max_list_limit,
            "blocks.lease.max_list_limit",
        )
        if request.prefix:
            self._key(request.prefix, "prefix")
        leases = await self.driver.list(tenant, ns, request.prefix, limit, self.clock())
        return lease_pb2.ListResponse(leases=[lease_to_proto(lease) for lease in leases])
