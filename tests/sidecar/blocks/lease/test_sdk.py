"""The lease SDK's conveniences: default holder ids, hold() with background renewal,
and the same through the blocking client."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from memsidecar.client import AsyncMemSidecar, ConflictError, MemSidecar
from memsidecar.client.blocks.lease import AsyncLease
from memsidecar.sidecar.server import Sidecar
from tests.support import eventually


async def test_default_holder_id_names_host_and_process(lease: AsyncLease) -> None:
    host, pid, suffix = lease.holder_id.rsplit("-", 2)
    assert host == socket.gethostname() and pid == str(os.getpid()) and len(suffix) == 8
    got = await lease.acquire("sdk", "k", ttl=10)
    assert got.holder_id == lease.holder_id


async def test_hold_renews_in_the_background_and_releases(realtime_lease: AsyncLease) -> None:
    lease = realtime_lease
    async with lease.hold("sdk", "held", ttl=0.3) as held:
        first_expiry = held.lease.expires_at
        await asyncio.sleep(1.0)  # over three TTLs
        current = await lease.inspect("sdk", "held")
        assert current is not None
        assert current.fencing_token == held.fencing_token
        assert not held.lost
        assert held.lease.expires_at is not None and first_expiry is not None
        assert held.lease.expires_at > first_expiry
        held.check()
    assert await lease.inspect("sdk", "held") is None
    assert await held.release() is False  # already released


async def test_hold_releases_on_error(realtime_lease: AsyncLease) -> None:
    lease = realtime_lease
    with pytest.raises(RuntimeError):
        async with lease.hold("sdk", "err", ttl=5):
            raise RuntimeError("boom")
    assert await lease.inspect("sdk", "err") is None


async def test_hold_notices_a_lost_lease(realtime_lease: AsyncLease) -> None:
    lease = realtime_lease
    held = await lease.acquire_and_renew("sdk", "lost", ttl=0.3)
    # Someone with the holder's token releases it behind the background renewer's back.
    await lease.release("sdk", "lost", held.fencing_token, holder_id=held.lease.holder_id)
    await eventually(lambda: held.lost, timeout=3)
    with pytest.raises(ConflictError, match="not held"):
        held.check()
    assert await held.release() is False


async def test_hold_waits_like_acquire(realtime_lease: AsyncLease) -> None:
    lease = realtime_lease
    first = await lease.acquire("sdk", "queue", ttl=0.3, holder_id="other")
    async with lease.hold("sdk", "queue", ttl=5, wait_for=3) as held:
        assert held.fencing_token > first.fencing_token


async def test_renew_every_must_be_shorter_than_ttl(lease: AsyncLease) -> None:
    with pytest.raises(ValueError, match="renew_every"):
        await lease.acquire_and_renew("sdk", "bad", ttl=5, renew_every=5)


async def test_blocking_client(realtime_sidecar: tuple[Sidecar, AsyncMemSidecar]) -> None:
    sidecar, client = realtime_sidecar
    path = sidecar.config.listen.socket

    def agent() -> tuple[int, int, bool, bool]:
        with MemSidecar(socket=path) as m:
            got = m.lease.acquire("sdk-sync", "k", ttl=10)
            renewed = m.lease.renew("sdk-sync", "k", got.fencing_token, ttl=20)
            released = m.lease.release("sdk-sync", "k", got.fencing_token)
            held = m.lease.acquire_and_renew("sdk-sync", "bg", ttl=0.3)
            time.sleep(0.8)  # renewals run on the client's loop thread
            still = m.lease.inspect("sdk-sync", "bg")
            kept = still is not None and still.fencing_token == held.fencing_token
            held.release()
            return got.fencing_token, renewed.fencing_token, released, kept

    token, renewed_token, released, kept = await asyncio.wait_for(asyncio.to_thread(agent), 20)
    assert token == renewed_token and released and kept
    assert await client.lease.list("sdk-sync") == []
