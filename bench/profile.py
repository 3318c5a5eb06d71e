"""`python -m bench profile`: where a kv get spends its time.

The sidecar (embedded default, kv in memory) is sampled with py-spy while this process
drives kv gets of 100-byte values with N concurrent callers; this process (the SDK side)
is profiled with pyinstrument at the same time. Writes the raw samples and both reports
to bench-results/ and prints the top functions by own time and by inclusive time."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import resource
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench.env import short_tmpdir, sidecar_process
from bench.load import Op, throughput
from memsidecar.client import AsyncMemSidecar, RetryPolicy
from memsidecar.kv.v1 import kv_pb2, kv_pb2_grpc

KEYS = 1000
VALUE = bytes(100)
NAMESPACE = "bench-profile"
_LINE = re.compile(r":\d+\)$")


def _function(frame: str) -> str:
    """'get (memsidecar/client/blocks/kv.py:71)' → 'get (memsidecar/client/blocks/kv.py)'."""
    return _LINE.sub(")", frame.strip())


def _short(frame: str) -> str:
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in frame:
            name, _, path = frame.partition(" (")
            return f"{name} ({path.split(marker, 1)[1]}"
    return frame


# Coarse areas of the stack, first match wins (checked from the leaf up). Time in gRPC's
# Cython core shows as the asyncio callback that runs it (Handle._run) unless --native.
AREAS = (
    ("access log / logging", ("access_log.py", "logging/")),
    (
        "metrics / tracing",
        ("observability/metrics", "observability/tracing", "prometheus_client", "opentelemetry"),
    ),
    ("observer (call records)", ("observability/",)),
    ("policy + auth", ("sidecar/policy/", "sidecar/auth/", "identity.py")),
    ("call pipeline", ("sidecar/pipeline.py", "sidecar/calls.py")),
    ("kv service + driver", ("sidecar/blocks/kv/",)),
    ("protobuf", ("google/protobuf",)),
    ("grpc (python + cython)", ("grpc/",)),
    ("asyncio event loop", ("asyncio/",)),
)


# Leaves that mean "waiting", which py-spy cannot tell from running for these: the event
# loop's epoll, idle thread-pool workers, and gRPC's poller thread (Cython, no frames).
IDLE_LEAVES = (
    "EpollSelector.select (selectors.py)",
    "_worker (concurrent/futures/thread.py)",
    "Thread.run (threading.py)",
)


@dataclass
class Samples:
    total: int = 0
    idle: int = 0
    own: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    areas: Counter[str] = field(default_factory=Counter)


def parse_collapsed(text: str) -> Samples:
    """py-spy's raw (collapsed) format: 'frame;frame;...;leaf count' per line."""
    samples = Samples()
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";") if f.strip()]
        # The first frame names the process/thread, e.g. "process 123:"python -m ..."".
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        if frames[-1] in IDLE_LEAVES:
            samples.idle += count
            continue
        samples.total += count
        samples.own[frames[-1]] += count
        for name in set(frames):
            samples.inclusive[name] += count
        area = "other"
        for frame in reversed(frames):
            hit = next((a for a, marks in AREAS if any(m in frame for m in marks)), None)
            if hit is not None:
                area = hit
                break
        samples.areas[area] += count
    return samples


def report(samples: Samples, top: int) -> str:
    if samples.total == 0:
        return "no samples (is py-spy allowed to ptrace? run as root or set ptrace_scope 0)"
    out = [
        f"{samples.total} busy samples (and {samples.idle} waiting in epoll / idle threads, "
        "left out); percentages are of the busy ones"
    ]
    out.append("\nby area (own time of the innermost recognised frame):")
    for area, count in samples.areas.most_common():
        out.append(f"  {100 * count / samples.total:5.1f}%  {area}")
    out.append(f"\ntop {top} by own time:")
    for name, count in samples.own.most_common(top):
        out.append(f"  {100 * count / samples.total:5.1f}%  {_short(name)}")
    out.append(f"\ntop {top} by inclusive time (memsidecar frames):")
    ours = [
        (n, c) for n, c in samples.inclusive.most_common() if "memsidecar" in n or "/sidecar/" in n
    ]
    for name, count in ours[:top]:
        out.append(f"  {100 * count / samples.total:5.1f}%  {_short(name)}")
    return "\n".join(out)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuCost:
    label: str
    ops_per_second: float
    server_us: float
    client_us: float


async def cpu_cost(label: str, pid: int, op: Op, clients: int, seconds: float) -> CpuCost:
    """Throughput and CPU per call of the server process and of this (client) process."""
    await throughput(op, clients, 0.5, 0.2)
    server, client, start = cpu_seconds(pid), own_cpu_seconds(), time.perf_counter()
    rate = await throughput(op, clients, seconds, 0.0)
    calls = rate * (time.perf_counter() - start)
    return CpuCost(
        label,
        rate,
        1e6 * (cpu_seconds(pid) - server) / calls,
        1e6 * (own_cpu_seconds() - client) / calls,
    )


class _BareKV(kv_pb2_grpc.KVServicer):
    """The kv Get of a gRPC server with nothing else in it: the floor of any Python
    gRPC sidecar (grpc.aio, protobuf, the Unix socket)."""

    async def Get(self, request: kv_pb2.GetRequest, context: object) -> kv_pb2.GetResponse:
        entry = kv_pb2.Entry(
            namespace=request.namespace,
            key=request.key,
            value=kv_pb2.Value(bytes_value=VALUE),
            version=1,
        )
        return kv_pb2.GetResponse(entry=entry)


def serve_bare(path: str) -> None:
    async def main() -> None:
        server = grpc.aio.server()
        kv_pb2_grpc.add_KVServicer_to_server(_BareKV(), server)
        server.add_insecure_port(f"unix:{path}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


async def bare_floor(clients: int, seconds: float) -> CpuCost:
    tmp = short_tmpdir("msb-bare-")
    path = tmp / "bare.sock"
    process = multiprocessing.get_context("spawn").Process(target=serve_bare, args=(str(path),))
    process.start()
    try:
        client = AsyncMemSidecar(socket=path, retry=RetryPolicy(max_retries=0))
        try:
            await client.wait_ready(30)

            async def get(c: int, i: int) -> object:
                return await client.kv.get(NAMESPACE, "k")

            if process.pid is None:
                raise RuntimeError("the bare gRPC server did not start")
            return await cpu_cost(
                "bare grpc.aio server, same proto (floor)", process.pid, get, clients, seconds
            )
        finally:
            await client.close()
    finally:
        process.terminate()
        process.join(10)
        shutil.rmtree(tmp, ignore_errors=True)


async def _costs(args: argparse.Namespace) -> list[CpuCost]:
    """CPU per kv get: the sidecar as configured by default, without its access log,
    and a bare gRPC server."""
    seconds = min(5.0, args.seconds)
    costs: list[CpuCost] = []
    for label, overrides in (
        ("sidecar, embedded default", {}),
        ("sidecar, access log off", {"observability.access_log.enabled": False}),
    ):
        async with sidecar_process(overrides) as proc:
            client = AsyncMemSidecar(socket=proc.socket, retry=RetryPolicy(max_retries=0))
            try:
                await client.wait_ready()
                for k in range(KEYS):
                    await client.kv.put(NAMESPACE, f"k{k}", VALUE)

                async def get(c: int, i: int, client: AsyncMemSidecar = client) -> object:
                    return await client.kv.get(NAMESPACE, f"k{(c * 7919 + i * 104729) % KEYS}")

                costs.append(await cpu_cost(label, proc.pid, get, args.clients, seconds))
            finally:
                await client.close()
    costs.append(await bare_floor(args.clients, seconds))
    return costs


def render_costs(costs: list[CpuCost]) -> str:
    out = ["CPU per kv get (server process / this client process):"]
    for c in costs:
        out.append(
            f"  {c.label:42s} {c.ops_per_second:8,.0f} ops/s  server {c.server_us:6.0f} µs  "
            f"client {c.client_us:6.0f} µs"
        )
    return "\n".join(out)


async def _drive(args: argparse.Namespace, out: Path) -> tuple[str, float, float]:
    from pyinstrument import Profiler

    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    async with sidecar_process({}) as proc:
        client = AsyncMemSidecar(socket=proc.socket, retry=RetryPolicy(max_retries=0))
        try:
            await client.wait_ready()
            for k in range(KEYS):
                await client.kv.put(NAMESPACE, f"k{k}", VALUE)

            async def get(c: int, i: int) -> object:
                return await client.kv.get(NAMESPACE, f"k{(c * 7919 + i * 104729) % KEYS}")

            # Unprofiled first, for the figure the profile is read against.
            baseline = await throughput(get, args.clients, min(5.0, args.seconds), 0.5)
            raw = out / "profile-sidecar.collapsed.txt"
            sampler = await asyncio.create_subprocess_exec(
                py_spy,
                "record",
                "--pid",
                str(proc.pid),
                "--duration",
                str(int(args.seconds)),
                "--rate",
                "200",
                *(["--native"] if args.native else []),
                "--format",
                "raw",
                "--output",
                str(raw),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            await asyncio.sleep(1.0)  # py-spy attaches
            profiler = Profiler(async_mode="enabled")
            profiler.start()
            profiled = await throughput(get, args.clients, max(1.0, args.seconds - 2.0), 0.2)
            profiler.stop()
            _, err = await sampler.communicate()
            if sampler.returncode != 0 or not raw.exists():
                raise RuntimeError(f"py-spy failed: {err.decode()[-2000:]}")
            client_report = profiler.output_text(unicode=True, color=False)
            (out / "profile-client.txt").write_text(client_report)
            return raw.read_text(), baseline, profiled
        finally:
            await client.close()


def profile(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    costs = asyncio.run(_costs(args))
    collapsed, baseline, profiled = asyncio.run(_drive(args, out))
    text = (
        f"kv get, 100 B values, {args.clients} concurrent callers, embedded default sidecar\n"
        f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the end\n\n"
        + render_costs(costs)
        + f"\n\nthroughput unprofiled {baseline:,.0f} ops/s; "
        f"while sampled {profiled:,.0f} ops/s\n\n"
        "SIDECAR (py-spy, wall-clock samples of busy threads)\n"
        + report(parse_collapsed(collapsed), args.top)
    )
    (out / "profile-sidecar.txt").write_text(text + "\n")
    print(text)
    print(
        f"\nclient side (pyinstrument): {out / 'profile-client.txt'}; raw samples: "
        f"{out / 'profile-sidecar.collapsed.txt'} ({time.monotonic() - start:.0f} s)"
    )
    return 0
