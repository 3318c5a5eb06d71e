from __future__ import annotations

import os
import threading
import time
from typing import Any

import grpc
import pytest

from memsidecar.client import MemSidecar, RetryPolicy
from memsidecar.client.errors import InvalidArgumentError, UnavailableError
from tests.support import short_tmpdir, sidecar_process


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "boom", None)


def test_defaults() -> None:
    p = RetryPolicy()
    assert (p.max_retries, p.base_delay, p.max_delay, p.jitter) == (3, 0.2, 30.0, 0.25)
    assert p.retry_codes == frozenset({grpc.StatusCode.UNAVAILABLE})


def test_max_retries_clamped_at_five() -> None:
    assert RetryPolicy(max_retries=50).max_retries == 5


@pytest.mark.parametrize("bad", [{"max_retries": -1}, {"jitter": 1.5}, {"base_delay": -1}])
def test_invalid_policy_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**bad)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    p = RetryPolicy(base_delay=0.2, max_delay=1.0, jitter=0.25, seed=7)
    for attempt, nominal in enumerate([0.2, 0.4, 0.8, 1.0, 1.0]):
        d = p.delay(attempt)
        assert nominal * 0.75 <= d <= nominal * 1.25


def test_jitter_seeded_per_session() -> None:
    a = [RetryPolicy(seed=1).delay(2) for _ in range(2)]
    assert a[0] == a[1]
    unseeded = {RetryPolicy().delay(2) for _ in range(20)}
    assert len(unseeded) > 1


async def test_retries_only_retryable_codes() -> None:
    calls = 0

    async def unavailable() -> None:
        nonlocal calls
        calls += 1
        raise rpc_error(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(UnavailableError):
        await RetryPolicy(max_retries=2, base_delay=0.001).call(unavailable)
    assert calls == 3

    calls = 0

    async def invalid() -> None:
        nonlocal calls
        calls += 1
        raise rpc_error(grpc.StatusCode.INVALID_ARGUMENT)

    with pytest.raises(InvalidArgumentError):
        await RetryPolicy(base_delay=0.001).call(invalid)
    assert calls == 1


async def test_stream_not_retried_after_first_item() -> None:
    opened = 0

    async def stream() -> Any:
        nonlocal opened
        opened += 1
        yield 1
        raise rpc_error(grpc.StatusCode.UNAVAILABLE)

    got = []
    with pytest.raises(UnavailableError):
        async for item in RetryPolicy(base_delay=0.001).stream(stream):
            got.append(item)
    assert (opened, got) == (1, [1])


def test_client_rides_out_a_sidecar_that_starts_late() -> None:
    """UNAVAILABLE while nothing listens is retried with backoff until the sidecar is up."""
    path = f"{short_tmpdir()}/late.sock"
    started, done = threading.Event(), threading.Event()

    def start_later() -> None:
        time.sleep(0.6)
        with sidecar_process() as proc:
            os.symlink(proc.socket, path)
            started.set()
            done.wait(30)

    thread = threading.Thread(target=start_later, daemon=True)
    thread.start()
    policy = RetryPolicy(max_retries=5, base_delay=0.5, max_delay=4.0)
    try:
        with MemSidecar(socket=path, retry=policy, timeout=5) as m:
            t0 = time.monotonic()
            m.kv.put("late", "k", 1)
            assert started.is_set()
            assert time.monotonic() - t0 >= 0.5
    finally:
        done.set()
        thread.join(30)
