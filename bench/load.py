"""Measurement primitives: sequential latency, closed-loop throughput with N concurrent
callers, percentiles, and a resident-memory sampler for a process id."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

# An operation under test: called with the caller's index and its iteration number.
Op = Callable[[int, int], Awaitable[object]]


def percentile(samples: list[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation between closest ranks."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Latency:
    samples: list[float]

    @property
    def p50_us(self) -> float:
        return percentile(self.samples, 50) * 1e6

    @property
    def p99_us(self) -> float:
        return percentile(self.samples, 99) * 1e6


MIN_LATENCY_SAMPLES = 200


async def latency(op: Op, count: int, warmup: int, budget: float | None = None) -> Latency:
    """`count` calls one after another (after `warmup` unmeasured ones); seconds each.

    With a `budget` (seconds), stops early once it is spent and at least
    MIN_LATENCY_SAMPLES calls are measured (slow backends keep the run short)."""
    for i in range(warmup):
        await op(0, i)
    samples: list[float] = []
    clock = time.perf_counter
    deadline = clock() + budget if budget is not None else None
    for i in range(count):
        start = clock()
        await op(0, i)
        end = clock()
        samples.append(end - start)
        if deadline is not None and end > deadline and len(samples) >= MIN_LATENCY_SAMPLES:
            break
    return Latency(samples)


async def throughput(op: Op, clients: int, seconds: float, warmup: float) -> float:
    """Operations per second of `clients` callers, each calling `op` back to back.

    All callers run through the warm-up; completions are counted between the end of the
    warm-up and `seconds` later. Calls in flight at the end finish but do not count."""
    completed = 0
    stop = False

    async def caller(index: int) -> None:
        nonlocal completed
        i = 0
        while not stop:
            await op(index, i)
            completed += 1
            i += 1

    tasks = [asyncio.create_task(caller(c)) for c in range(clients)]
    try:
        await asyncio.sleep(warmup)
        start_count, start = completed, time.perf_counter()
        await asyncio.sleep(seconds)
        end_count, end = completed, time.perf_counter()
        stop = True
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return (end_count - start_count) / (end - start)


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB, from /proc/<pid>/status (None when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


@dataclass
class RssSampler:
    pid: int
    interval: float = 0.1
    samples: list[int] = field(default_factory=list)

    @property
    def peak_mib(self) -> float | None:
        return max(self.samples) / 1024 if self.samples else None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RssSampler]:
        """Sample while the block runs (in this event loop, every `interval` seconds)."""

        async def sample() -> None:
            while True:
                value = rss_kib(self.pid)
                if value is not None:
                    self.samples.append(value)
                await asyncio.sleep(self.interval)

        task = asyncio.create_task(sample())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            value = rss_kib(self.pid)
            if value is not None:
                self.samples.append(value)
