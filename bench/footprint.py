"""Row 5: what a sidecar costs per agent pod — resident memory idle and under the
64-client kv load (sampled by bench.kv), and cold start to the first served request —
against redis-server, the process a user would run instead."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import time
from pathlib import Path

import redis.asyncio

from bench.env import Bench, short_tmpdir, sidecar_process
from bench.load import rss_kib
from memsidecar.client import AsyncMemSidecar, MemSidecarError, RetryPolicy

SECTION = "footprint"
REFERENCE = "redis-server 7 (Debian), fresh process"
START_TIMEOUT = 60.0


async def _first_get(socket: Path, started: float) -> float:
    """Seconds from `started` until a kv get is served (a fresh channel per attempt,
    so gRPC's reconnect backoff never adds to the figure)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if socket.exists():  # noqa: ASYNC240
            client = AsyncMemSidecar(socket=socket, retry=RetryPolicy(max_retries=0), timeout=2)
            try:
                await client.kv.get("bench-cold", "k")
                return time.perf_counter() - started
            except MemSidecarError:
                pass
            finally:
                await client.close()
        await asyncio.sleep(0.005)
    raise RuntimeError("the sidecar did not serve within 60 s")


async def sidecar_cold_start(settle: float) -> tuple[float, float]:
    """(seconds to the first served kv get, idle RSS in MiB) of the embedded default."""
    async with sidecar_process({}, wait_ready_file=False) as proc:
        seconds = await _first_get(proc.socket, proc.started)
        await asyncio.sleep(settle)
        rss = rss_kib(proc.pid)
        if rss is None:
            raise RuntimeError(f"sidecar exited:\n{proc.log.read_text()[-3000:]}")
        return seconds, rss / 1024


async def redis_cold_start(settle: float) -> tuple[float, float]:
    """(seconds to the first PONG, idle RSS in MiB) of a fresh redis-server on a socket."""
    tmp = short_tmpdir("msb-redis-")
    socket = tmp / "redis.sock"
    command = [
        "redis-server",
        "--port",
        "0",
        "--unixsocket",
        str(socket),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp),
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(  # noqa: ASYNC220
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        seconds: float | None = None
        while time.monotonic() < deadline and seconds is None:
            if socket.exists():
                r = redis.asyncio.Redis(unix_socket_path=str(socket))
                try:
                    if await r.ping():
                        seconds = time.perf_counter() - started
                except redis.RedisError:
                    pass
                finally:
                    await r.aclose()
            if seconds is None:
                await asyncio.sleep(0.005)
        if seconds is None:
            raise RuntimeError("redis-server did not answer within 60 s")
        await asyncio.sleep(settle)
        rss = rss_kib(proc.pid)
        if rss is None:
            raise RuntimeError("redis-server exited")
        return seconds, rss / 1024
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for path in tmp.iterdir():
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            tmp.rmdir()


async def run(bench: Bench) -> None:
    s = bench.settings
    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    for _ in range(s.cold_starts):
        ours.append(await sidecar_cold_start(s.settle_seconds))
        theirs.append(await redis_cold_start(s.settle_seconds))
    runs = f"median of {s.cold_starts}"
    bench.row(
        SECTION,
        "cold start to first served request (embedded default)",
        "ms",
        statistics.median(x[0] for x in ours) * 1e3,
        statistics.median(x[0] for x in theirs) * 1e3,
        REFERENCE,
        False,
        note=runs,
    )
    bench.row(
        SECTION,
        "RSS idle, fresh process (embedded default)",
        "MiB",
        statistics.median(x[1] for x in ours),
        statistics.median(x[1] for x in theirs),
        REFERENCE,
        False,
        note=runs,
    )
    load = bench.footprint.get("sidecar_rss_load")
    ref_load = bench.footprint.get("redis_rss_load")
    if load is not None:
        bench.row(
            SECTION,
            f"RSS peak under {max(s.clients)}-client kv load [memory]",
            "MiB",
            load,
            ref_load,
            "redis-server (scripts/redis.sh) under the same load",
            False,
        )
