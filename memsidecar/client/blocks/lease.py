"""The lease block client: TTL locks with fencing tokens.

    lease = await m.lease.acquire("jobs", "nightly-report", ttl=30)
    ... write to storage, passing lease.fencing_token so it can reject stale writers ...
    await m.lease.release("jobs", "nightly-report", lease.fencing_token)

or, renewed in the background until the block ends:

    async with m.lease.hold("jobs", "nightly-report", ttl=30) as held:
        ...
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType

from memsidecar.client.convert import Seconds, from_timestamp, to_duration
from memsidecar.client.errors import ConflictError, MemSidecarError, NotFoundError
from memsidecar.client.sync import Bridged
from memsidecar.client.transport import Transport
from memsidecar.lease.v1 import lease_pb2, lease_pb2_grpc

# Extra gRPC deadline on top of wait_for, so the server answers before the client gives up.
WAIT_MARGIN_SECONDS = 5.0


@dataclass(frozen=True)
class LeaseInfo:
    namespace: str
    key: str
    holder_id: str
    # Strictly increases with every acquisition of the key: pass it to storage so it can
    # reject writes from a holder whose lease has since moved on.
    fencing_token: int
    acquired_at: datetime | None
    expires_at: datetime | None
    # The agent session the lease is attached to, if any.
    session_id: str | None


def _info(lease: lease_pb2.LeaseInfo) -> LeaseInfo:
    return LeaseInfo(
        namespace=lease.namespace,
        key=lease.key,
        holder_id=lease.holder_id,
        fencing_token=lease.fencing_token,
        acquired_at=from_timestamp(lease, "acquired_at"),
        expires_at=from_timestamp(lease, "expires_at"),
        session_id=lease.session_id or None,
    )


def _seconds(value: Seconds) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def default_holder_id() -> str:
    """`<hostname>-<pid>-<8 hex>`: unique per client object."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class AsyncLease:
    def __init__(self, transport: Transport) -> None:
        self._t = transport
        self._stub = lease_pb2_grpc.LeaseStub(transport.channel)
        # The holder this client acquires as unless a call names another.
        self.holder_id = default_holder_id()

    async def acquire(
        self,
        namespace: str,
        key: str,
        *,
        ttl: Seconds,
        wait_for: Seconds | None = None,
        holder_id: str | None = None,
        session_id: str | None = None,
    ) -> LeaseInfo:
        """Take the lease, waiting up to `wait_for` while another holder has it.

        Raises ConflictError (ABORTED) when it stays held. Re-acquiring a lease you hold
        succeeds with a new fencing token and a fresh TTL.
        """
        request = lease_pb2.AcquireRequest(
            namespace=namespace,
            key=key,
            holder_id=holder_id or self.holder_id,
            ttl=to_duration(ttl),
            wait_for=to_duration(wait_for),
            session_id=session_id or "",
        )
        timeout = self._t.timeout
        if timeout is not None and wait_for is not None:
            timeout = max(timeout, _seconds(wait_for) + WAIT_MARGIN_SECONDS)
        r = await self._t.retry.call(
            lambda: self._stub.Acquire(request, timeout=timeout, metadata=self._t.metadata)
        )
        return _info(r.lease)

    async def renew(
        self,
        namespace: str,
        key: str,
        fencing_token: int,
        *,
        ttl: Seconds,
        holder_id: str | None = None,
    ) -> LeaseInfo:
        """Extend a lease you hold to `ttl` from now; ConflictError when you no longer hold it."""
        request = lease_pb2.RenewRequest(
            namespace=namespace,
            key=key,
            holder_id=holder_id or self.holder_id,
            fencing_token=fencing_token,
            ttl=to_duration(ttl),
        )
        return _info((await self._t.unary(self._stub.Renew, request)).lease)

    async def release(
        self, namespace: str, key: str, fencing_token: int, *, holder_id: str | None = None
    ) -> bool:
        """Free a lease you hold; ConflictError when you do not hold it (or it expired)."""
        request = lease_pb2.ReleaseRequest(
            namespace=namespace,
            key=key,
            holder_id=holder_id or self.holder_id,
            fencing_token=fencing_token,
        )
        return bool((await self._t.unary(self._stub.Release, request)).released)

    async def inspect(self, namespace: str, key: str) -> LeaseInfo | None:
        """The current lease on the key, or None when it is free."""
        request = lease_pb2.InspectRequest(namespace=namespace, key=key)
        try:
            r = await self._t.unary(self._stub.Inspect, request)
        except NotFoundError:
            return None
        return _info(r.lease)

    async def list(
        self, namespace: str, prefix: str = "", *, limit: int = 0
    ) -> builtins.list[LeaseInfo]:
        """Live leases whose key starts with `prefix`, in key order (0 = the server's default)."""
        request = lease_pb2.ListRequest(namespace=namespace, prefix=prefix, limit=limit)
        return [_info(x) for x in (await self._t.unary(self._stub.List, request)).leases]

    async def acquire_and_renew(
        self,
        namespace: str,
        key: str,
        *,
        ttl: Seconds,
        wait_for: Seconds | None = None,
        holder_id: str | None = None,
        session_id: str | None = None,
        renew_every: Seconds | None = None,
    ) -> HeldLease:
        """Acquire, then renew in the background every `renew_every` (default ttl/3) until
        `release()`. The blocking client runs the renewals on its loop thread."""
        lease = await self.acquire(
            namespace,
            key,
            ttl=ttl,
            wait_for=wait_for,
            holder_id=holder_id,
            session_id=session_id,
        )
        interval = _seconds(renew_every) if renew_every is not None else _seconds(ttl) / 3
        return HeldLease(self, lease, _seconds(ttl), interval)

    @contextlib.asynccontextmanager
    async def hold(
        self,
        namespace: str,
        key: str,
        *,
        ttl: Seconds,
        wait_for: Seconds | None = None,
        holder_id: str | None = None,
        session_id: str | None = None,
        renew_every: Seconds | None = None,
    ) -> AsyncIterator[HeldLease]:
        """`async with m.lease.hold("ns", "key", ttl=30) as held:` — acquired on entry,
        renewed every ttl/3, released on exit."""
        held = await self.acquire_and_renew(
            namespace,
            key,
            ttl=ttl,
            wait_for=wait_for,
            holder_id=holder_id,
            session_id=session_id,
            renew_every=renew_every,
        )
        try:
            yield held
        finally:
            await held.release()


class HeldLease(Bridged):
    """A lease kept alive by background renewals until `release()`.

    If a renewal is refused (the lease expired or was taken over), `lost` becomes
    True and `error` says why; check `lost` (or call `check()`) before acting on the lock.
    """

    def __init__(self, client: AsyncLease, lease: LeaseInfo, ttl: float, interval: float) -> None:
        if interval <= 0 or interval >= ttl:
            raise ValueError(f"renew_every must be positive and shorter than the ttl ({ttl}s)")
        self._client = client
        self.lease = lease
        self._ttl = ttl
        self._interval = interval
        self.error: MemSidecarError | None = None
        self._released = False
        self._task = asyncio.get_running_loop().create_task(
            self._renew_loop(), name=f"lease-renew-{lease.namespace}/{lease.key}"
        )

    @property
    def fencing_token(self) -> int:
        return self.lease.fencing_token

    @property
    def lost(self) -> bool:
        return self.error is not None

    def check(self) -> None:
        """Raise the renewal error if the lease was lost."""
        if self.error is not None:
            raise self.error

    async def _renew_loop(self) -> None:
        lease = self.lease
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.lease = await self._client.renew(
                    lease.namespace,
                    lease.key,
                    lease.fencing_token,
                    ttl=self._ttl,
                    holder_id=lease.holder_id,
                )
            except ConflictError as exc:
                self.error = exc
                return
            except MemSidecarError:
                # The sidecar was unreachable after the client's retries; try again next
                # round while the lease may still be alive.
                continue

    async def release(self) -> bool:
        """Stop renewing and release; False when the lease was already lost or released."""
        if self._released:
            return False
        self._released = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self.error is not None:
            return False
        lease = self.lease
        try:
            return await self._client.release(
                lease.namespace, lease.key, lease.fencing_token, holder_id=lease.holder_id
            )
        except ConflictError as exc:
            self.error = exc
            return False

    async def __aenter__(self) -> HeldLease:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()
