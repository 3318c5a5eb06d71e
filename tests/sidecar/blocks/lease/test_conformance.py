"""The lease contract, run against every driver in conftest.LEASE_DRIVERS."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from memsidecar.client.blocks.lease import AsyncLease, LeaseInfo
from memsidecar.client.errors import ConflictError, InvalidArgumentError
from memsidecar.lease.v1 import lease_pb2
from tests.support import ManualClock


def at(clock: ManualClock, offset: float = 0.0) -> datetime:
    return datetime.fromtimestamp(clock.now + offset, UTC)


async def test_acquire_free_key(lease: AsyncLease, clock: ManualClock) -> None:
    got = await lease.acquire("locks", "job", ttl=30)
    assert got.namespace == "locks" and got.key == "job"
    assert got.holder_id == lease.holder_id
    assert got.fencing_token > 0
    assert got.acquired_at == at(clock)
    assert got.expires_at == at(clock, 30)
    assert got.session_id is None
    assert await lease.inspect("locks", "job") == got
    assert await lease.list("locks") == [got]


async def test_held_by_another_is_aborted_and_changes_nothing(lease: AsyncLease) -> None:
    first = await lease.acquire("locks", "job", ttl=30, holder_id="a")
    with pytest.raises(ConflictError) as info:
        await lease.acquire("locks", "job", ttl=30, holder_id="b")
    assert info.value.code == grpc.StatusCode.ABORTED
    assert "held by 'a' until" in info.value.message
    assert "pass wait_for" in info.value.message
    assert await lease.inspect("locks", "job") == first


async def test_fencing_tokens_strictly_increase_across_release_and_expiry(
    lease: AsyncLease, clock: ManualClock
) -> None:
    tokens = []
    a = await lease.acquire("locks", "k", ttl=10, holder_id="a")
    tokens.append(a.fencing_token)
    assert await lease.release("locks", "k", a.fencing_token, holder_id="a")
    b = await lease.acquire("locks", "k", ttl=10, holder_id="b")
    tokens.append(b.fencing_token)
    clock.advance(10)  # b's lease expires without a release
    c = await lease.acquire("locks", "k", ttl=10, holder_id="c")
    tokens.append(c.fencing_token)
    c2 = await lease.acquire("locks", "k", ttl=10, holder_id="c")
    tokens.append(c2.fencing_token)
    assert tokens == sorted(set(tokens)), tokens


async def test_reacquire_by_holder_refreshes_ttl_with_a_new_token(
    lease: AsyncLease, clock: ManualClock
) -> None:
    first = await lease.acquire("locks", "k", ttl=10, holder_id="a")
    clock.advance(5)
    again = await lease.acquire("locks", "k", ttl=20, holder_id="a")
    assert again.fencing_token > first.fencing_token
    assert again.expires_at == at(clock, 20)
    with pytest.raises(ConflictError, match="stale"):
        await lease.renew("locks", "k", first.fencing_token, ttl=10, holder_id="a")
    with pytest.raises(ConflictError, match="stale"):
        await lease.release("locks", "k", first.fencing_token, holder_id="a")
    assert await lease.inspect("locks", "k") == again


async def test_expiry_is_at_expires_at(lease: AsyncLease, clock: ManualClock) -> None:
    await lease.acquire("locks", "k", ttl=10, holder_id="a")
    clock.advance(9.999)
    assert await lease.inspect("locks", "k") is not None
    with pytest.raises(ConflictError):
        await lease.acquire("locks", "k", ttl=10, holder_id="b")
    clock.advance(0.001)
    assert await lease.inspect("locks", "k") is None
    assert await lease.list("locks") == []
    taken = await lease.acquire("locks", "k", ttl=10, holder_id="b")
    assert taken.holder_id == "b"


async def test_renew_extends_the_lease(lease: AsyncLease, clock: ManualClock) -> None:
    got = await lease.acquire("locks", "k", ttl=10, holder_id="a")
    clock.advance(8)
    renewed = await lease.renew("locks", "k", got.fencing_token, ttl=10, holder_id="a")
    assert renewed.fencing_token == got.fencing_token
    assert renewed.acquired_at == got.acquired_at
    assert renewed.expires_at == at(clock, 10)
    clock.advance(8)
    assert await lease.inspect("locks", "k") == renewed


async def test_renew_refusals_say_why(lease: AsyncLease, clock: ManualClock) -> None:
    with pytest.raises(ConflictError, match="not held") as info:
        await lease.renew("locks", "never", 1, ttl=10, holder_id="a")
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION

    got = await lease.acquire("locks", "k", ttl=10, holder_id="a")
    with pytest.raises(ConflictError, match="held by 'a'") as info:
        await lease.renew("locks", "k", got.fencing_token, ttl=10, holder_id="b")
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(ConflictError, match="stale"):
        await lease.renew("locks", "k", got.fencing_token + 1, ttl=10, holder_id="a")
    assert await lease.inspect("locks", "k") == got

    clock.advance(10)
    with pytest.raises(ConflictError, match="expired") as info:
        await lease.renew("locks", "k", got.fencing_token, ttl=10, holder_id="a")
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert await lease.inspect("locks", "k") is None

    other = await lease.acquire("locks", "k", ttl=10, holder_id="b")
    with pytest.raises(ConflictError, match="held by 'b'"):
        await lease.renew("locks", "k", got.fencing_token, ttl=10, holder_id="a")
    await lease.release("locks", "k", other.fencing_token, holder_id="b")
    with pytest.raises(ConflictError, match="not held"):
        await lease.renew("locks", "k", other.fencing_token, ttl=10, holder_id="b")


async def test_release(lease: AsyncLease, clock: ManualClock) -> None:
    got = await lease.acquire("locks", "k", ttl=10, holder_id="a")
    with pytest.raises(ConflictError, match="held by 'a'") as info:
        await lease.release("locks", "k", got.fencing_token, holder_id="b")
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert await lease.inspect("locks", "k") == got
    assert await lease.release("locks", "k", got.fencing_token, holder_id="a") is True
    assert await lease.inspect("locks", "k") is None
    with pytest.raises(ConflictError, match="not held"):
        await lease.release("locks", "k", got.fencing_token, holder_id="a")


async def test_release_after_expiry_fails(lease: AsyncLease, clock: ManualClock) -> None:
    got = await lease.acquire("locks", "k", ttl=10, holder_id="a")
    clock.advance(11)
    with pytest.raises(ConflictError, match="expired at") as info:
        await lease.release("locks", "k", got.fencing_token, holder_id="a")
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_inspect_free_key_is_not_found(lease: AsyncLease) -> None:
    assert await lease.inspect("locks", "nothing") is None
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await lease._stub.Inspect(lease_pb2.InspectRequest(namespace="locks", key="nothing"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "free" in (info.value.details() or "")


async def test_list_by_prefix_in_key_order_with_limit(
    lease: AsyncLease, clock: ManualClock
) -> None:
    for key in ["job/3", "job/1", "job/2", "jobs", "other"]:
        await lease.acquire("list", key, ttl=100)
    short = await lease.acquire("list", "job/0", ttl=5)
    released = await lease.acquire("list", "job/4", ttl=100)
    await lease.release("list", "job/4", released.fencing_token)
    assert [x.key for x in await lease.list("list", "job/")] == ["job/0", "job/1", "job/2", "job/3"]
    assert [x.key for x in await lease.list("list", "job/", limit=2)] == ["job/0", "job/1"]
    clock.advance(5)
    assert short.key not in {x.key for x in await lease.list("list")}
    assert [x.key for x in await lease.list("list")] == ["job/1", "job/2", "job/3", "jobs", "other"]
    assert await lease.list("list", "zzz") == []
    assert await lease.list("empty-namespace") == []


async def test_list_default_limit(lease: AsyncLease) -> None:
    await asyncio.gather(*(lease.acquire("many", f"k{i:03}", ttl=60) for i in range(105)))
    assert len(await lease.list("many")) == 100  # blocks.lease.default_list_limit
    assert len(await lease.list("many", limit=1000)) == 105


async def test_keys_are_scoped_by_namespace(lease: AsyncLease) -> None:
    await lease.acquire("one", "k", ttl=10, holder_id="a")
    got = await lease.acquire("two", "k", ttl=10, holder_id="b")
    assert got.holder_id == "b"
    assert (await lease.inspect("one", "k")).holder_id == "a"  # type: ignore[union-attr]


async def test_wait_for_gets_the_lease_when_released(lease: AsyncLease) -> None:
    first = await lease.acquire("wait", "k", ttl=60, holder_id="a")

    async def release_soon() -> None:
        await asyncio.sleep(0.2)
        await lease.release("wait", "k", first.fencing_token, holder_id="a")

    releaser = asyncio.create_task(release_soon())
    started = time.monotonic()
    got = await lease.acquire("wait", "k", ttl=60, holder_id="b", wait_for=5)
    elapsed = time.monotonic() - started
    await releaser
    assert got.holder_id == "b" and got.fencing_token > first.fencing_token
    assert 0.15 <= elapsed < 2.0, elapsed


async def test_wait_for_times_out_with_aborted(lease: AsyncLease) -> None:
    first = await lease.acquire("wait", "k", ttl=60, holder_id="a")
    started = time.monotonic()
    with pytest.raises(ConflictError, match=r"after waiting 0\.2s") as info:
        await lease.acquire("wait", "k", ttl=60, holder_id="b", wait_for=0.2)
    elapsed = time.monotonic() - started
    assert info.value.code == grpc.StatusCode.ABORTED
    assert 0.18 <= elapsed < 2.0, elapsed
    assert await lease.inspect("wait", "k") == first


async def test_wait_for_gets_the_lease_when_it_expires(realtime_lease: AsyncLease) -> None:
    lease = realtime_lease
    await lease.acquire("wait", "k", ttl=0.3, holder_id="a")
    started = time.monotonic()
    got = await lease.acquire("wait", "k", ttl=60, holder_id="b", wait_for=5)
    elapsed = time.monotonic() - started
    assert got.holder_id == "b"
    assert 0.2 <= elapsed < 2.0, elapsed


async def test_many_waiters_take_turns(lease: AsyncLease) -> None:
    inside = 0
    most_inside = 0
    order: list[int] = []

    async def worker(n: int) -> LeaseInfo:
        nonlocal inside, most_inside
        got = await lease.acquire("contended", "k", ttl=60, holder_id=f"w{n}", wait_for=20)
        inside += 1
        most_inside = max(most_inside, inside)
        order.append(got.fencing_token)
        await asyncio.sleep(0.005)
        inside -= 1
        assert await lease.release("contended", "k", got.fencing_token, holder_id=f"w{n}")
        return got

    results = await asyncio.wait_for(asyncio.gather(*(worker(n) for n in range(25))), 30)
    assert most_inside == 1
    assert sorted(r.holder_id for r in results) == sorted(f"w{n}" for n in range(25))
    # Tokens are issued in the order the lease changed hands, each one larger.
    assert order == sorted(order) and len(set(order)) == 25
    assert await lease.inspect("contended", "k") is None


def _raw(lease: AsyncLease, method: str, **fields: Any) -> Any:
    stub = lease._stub
    request = getattr(lease_pb2, f"{method}Request")(**fields)
    return getattr(stub, method)(request)


TTL = timedelta(seconds=10)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ls: ls.acquire("locks", "", ttl=10), "key is required"),
        (lambda ls: ls.acquire("locks", "k" * 513, ttl=10), "blocks.lease.max_key_bytes"),
        (lambda ls: ls.acquire("locks", "a\x00b", ttl=10), "NUL"),
        (lambda ls: ls.acquire("", "k", ttl=10), "namespace is required"),
        (lambda ls: ls.acquire("bad/ns", "k", ttl=10), "namespace 'bad/ns' is invalid"),
        (
            lambda ls: _raw(ls, "Acquire", namespace="locks", key="k", holder_id="h"),
            "ttl is required",
        ),
        (lambda ls: ls.acquire("locks", "k", ttl=0), "ttl must be positive"),
        (lambda ls: ls.acquire("locks", "k", ttl=-1), "ttl must not be negative"),
        (lambda ls: ls.acquire("locks", "k", ttl=86401), "blocks.lease.max_ttl"),
        (lambda ls: ls.acquire("locks", "k", ttl=10, wait_for=-1), "wait_for must not be"),
        (lambda ls: ls.acquire("locks", "k", ttl=10, wait_for=301), "blocks.lease.max_wait"),
        (
            lambda ls: _raw(ls, "Acquire", namespace="locks", key="k", ttl=TTL),
            "holder_id is required",
        ),
        (
            lambda ls: ls.acquire("locks", "k", ttl=10, holder_id="h" * 257),
            "blocks.lease.max_holder_chars",
        ),
        (lambda ls: ls.acquire("locks", "k", ttl=10, holder_id="a\nb"), "control characters"),
        (lambda ls: ls.renew("locks", "k", 0, ttl=10), "fencing_token must be the positive"),
        (
            lambda ls: _raw(
                ls, "Renew", namespace="locks", key="k", holder_id="h", fencing_token=1
            ),
            "ttl is required",
        ),
        (lambda ls: ls.renew("locks", "k", 1, ttl=86401), "blocks.lease.max_ttl"),
        (lambda ls: ls.renew("locks", "", 1, ttl=10), "key is required"),
        (lambda ls: ls.release("locks", "k", -1), "fencing_token must be the positive"),
        (lambda ls: ls.release("locks", "k", 1, holder_id="a\x7fb"), "control characters"),
        (lambda ls: ls.inspect("locks", ""), "key is required"),
        (lambda ls: ls.list("locks", limit=1001), "blocks.lease.max_list_limit"),
        (lambda ls: ls.list("locks", limit=-1), "limit must not be negative"),
        (lambda ls: ls.list("locks", "p" * 513), "blocks.lease.max_key_bytes"),
        (lambda ls: ls.list("bad/ns"), "is invalid"),
    ],
)
async def test_bad_input_is_rejected_and_changes_nothing(
    lease: AsyncLease, call: Any, message: str
) -> None:
    held = await lease.acquire("locks", "k", ttl=60)
    try:
        await call(lease)
    except grpc.aio.AioRpcError as exc:  # raw stub calls
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (exc.details() or "")
    except InvalidArgumentError as exc:
        assert message in exc.message
    else:
        pytest.fail("the call was accepted")
    assert await lease.list("locks") == [held]
