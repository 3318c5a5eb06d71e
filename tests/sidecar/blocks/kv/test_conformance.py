"""The kv contract, run against every driver in conftest.KV_DRIVERS."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from memsidecar.client.blocks.kv import AsyncKV
from memsidecar.client.errors import (
    ConflictError,
    InvalidArgumentError,
    MemSidecarError,
)
from tests.support import ManualClock


async def test_typed_values_round_trip(kv: AsyncKV) -> None:
    values = {
        "b": b"\x00\xffbytes",
        "s": "text ✓",
        "i": -(2**63),
        "d": 3.25,
        "t": True,
        "f": False,
        "j": {"nested": [1, "two", None, {"x": 1.5}]},
        "l": [1, 2, 3],
        "n": None,
    }
    for key, value in values.items():
        await kv.put("types", key, value)
    for key, value in values.items():
        entry = await kv.get("types", key)
        assert entry is not None
        assert entry.value == value
        assert type(entry.value) is type(value) or key in {"j", "l"}


async def test_missing_key_is_none(kv: AsyncKV) -> None:
    assert await kv.get("ns", "absent") is None


async def test_versions_grow_and_are_never_reused(kv: AsyncKV) -> None:
    first = await kv.put("ns", "k", "a")
    second = await kv.put("ns", "k", "b")
    assert second.version > first.version
    assert await kv.delete("ns", "k")
    recreated = await kv.put("ns", "k", "c")
    assert recreated.version > second.version


async def test_compare_and_set(kv: AsyncKV) -> None:
    created = await kv.put("ns", "cas", 1, if_version=0)
    with pytest.raises(ConflictError, match="must not exist"):
        await kv.put("ns", "cas", 2, if_version=0)
    with pytest.raises(ConflictError, match="version"):
        await kv.put("ns", "cas", 2, if_version=created.version + 100)
    updated = await kv.put("ns", "cas", 2, if_version=created.version)
    assert (await kv.get("ns", "cas")).value == 2  # type: ignore[union-attr]
    with pytest.raises(ConflictError):
        await kv.delete("ns", "cas", if_version=created.version)
    assert (await kv.get("ns", "cas")).value == 2  # type: ignore[union-attr]
    assert await kv.delete("ns", "cas", if_version=updated.version)
    with pytest.raises(ConflictError, match="does not exist"):
        await kv.put("ns", "cas", 3, if_version=updated.version)


async def test_concurrent_cas_writers_lose_no_update(kv: AsyncKV) -> None:
    await kv.put("ns", "counter", 0)

    async def add_one() -> None:
        while True:
            entry = await kv.get("ns", "counter")
            assert entry is not None
            try:
                await kv.put("ns", "counter", entry.value + 1, if_version=entry.version)
                return
            except ConflictError:
                await asyncio.sleep(0)

    await asyncio.gather(*(add_one() for _ in range(16)))
    assert (await kv.get("ns", "counter")).value == 16  # type: ignore[union-attr]


async def test_ttl_expiry(kv: AsyncKV, clock: ManualClock) -> None:
    entry = await kv.put("ns", "temp", "x", ttl=60)
    assert entry.expires_at is not None
    clock.advance(59)
    assert await kv.get("ns", "temp") is not None
    clock.advance(2)
    assert await kv.get("ns", "temp") is None
    assert [e.key async for e in kv.scan("ns")] == []
    # An expired key counts as absent for compare-and-set.
    await kv.put("ns", "temp", "y", if_version=0)


async def test_put_without_ttl_clears_expiry(kv: AsyncKV, clock: ManualClock) -> None:
    await kv.put("ns", "k", "x", ttl=10)
    entry = await kv.put("ns", "k", "y")
    assert entry.expires_at is None
    clock.advance(20)
    assert (await kv.get("ns", "k")).value == "y"  # type: ignore[union-attr]


async def test_scan_prefix_order_and_cursor(kv: AsyncKV) -> None:
    for key in ["user/3", "user/1", "user/2", "users", "other/1", "user/10"]:
        await kv.put("scan", key, key)
    keys = [e.key async for e in kv.scan("scan", "user/")]
    assert keys == ["user/1", "user/10", "user/2", "user/3"]
    page1 = [e.key async for e in kv.scan("scan", "user/", limit=2)]
    page2 = [e.key async for e in kv.scan("scan", "user/", start_after=page1[-1], limit=2)]
    page3 = [e.key async for e in kv.scan("scan", "user/", start_after=page2[-1], limit=2)]
    assert page1 + page2 == keys and page3 == []
    assert [e.key async for e in kv.scan_all("scan", "user/", page=1)] == keys
    keys_only = [e async for e in kv.scan("scan", "other/", keys_only=True)]
    assert [e.value for e in keys_only] == [None]


async def test_multi_get(kv: AsyncKV) -> None:
    await kv.put("ns", "a", 1)
    await kv.put("ns", "b", 2)
    found = await kv.get_many("ns", ["a", "b", "c"])
    assert {k: e.value for k, e in found.items()} == {"a": 1, "b": 2}


async def test_increment(kv: AsyncKV, clock: ManualClock) -> None:
    assert await kv.increment("ns", "n") == 1
    assert await kv.increment("ns", "n", 41) == 42
    assert await kv.increment("ns", "n", -50) == -8
    await asyncio.gather(*(kv.increment("ns", "par") for _ in range(50)))
    assert (await kv.get("ns", "par")).value == 50  # type: ignore[union-attr]
    await kv.put("ns", "text", "x")
    with pytest.raises(ConflictError, match="Increment needs an int"):
        await kv.increment("ns", "text")
    await kv.put("ns", "big", 2**63 - 1)
    with pytest.raises(ConflictError, match="overflow"):
        await kv.increment("ns", "big")
    assert (await kv.get("ns", "big")).value == 2**63 - 1  # type: ignore[union-attr]
    await kv.increment("ns", "ttl", ttl=5)
    clock.advance(6)
    assert await kv.get("ns", "ttl") is None


async def test_tenants_share_nothing_by_namespace(kv: AsyncKV) -> None:
    await kv.put("one", "k", "1")
    assert await kv.get("two", "k") is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda kv: kv.put("ns", "", "v"), "key is required"),
        (lambda kv: kv.put("ns", "k" * 600, "v"), "over the limit"),
        (lambda kv: kv.put("ns", "a\x00b", "v"), "NUL"),
        (lambda kv: kv.put("", "k", "v"), "namespace is required"),
        (lambda kv: kv.put("bad/ns", "k", "v"), "namespace 'bad/ns' is invalid"),
        (lambda kv: kv.put("ns", "k", "v", ttl=-1), "must not be negative"),
        (lambda kv: kv.put("ns", "k", b"x" * (1024 * 1024 + 1)), "max_value_bytes"),
        (lambda kv: kv.put("ns", "k", "v", if_version=-2), "if_version"),
        (lambda kv: kv.get_many("ns", ["k"] * 1001), "max_multiget_keys"),
    ],
)
async def test_bad_input_is_rejected_and_changes_nothing(
    kv: AsyncKV, call: object, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        await call(kv)  # type: ignore[operator]
    assert [e async for e in kv.scan("ns")] == []


async def test_scan_limit_over_maximum(kv: AsyncKV) -> None:
    with pytest.raises(InvalidArgumentError, match="max_scan_limit"):
        _ = [e async for e in kv.scan("ns", limit=5000)]


async def test_wrong_type_value_on_the_wire(kv: AsyncKV) -> None:
    from memsidecar.kv.v1 import kv_pb2

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await kv._stub.Put(kv_pb2.PutRequest(namespace="ns", key="k"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "value is required" in (info.value.details() or "")
    assert isinstance(MemSidecarError, type)
