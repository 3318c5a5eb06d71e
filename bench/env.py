"""What a run needs around it: its settings, the test-ground servers (started with the
project's scripts), sidecar processes with config overrides, and the shared context."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results import Row, Table

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"

PG_DSN = os.environ.get(
    "MEMSIDECAR_BENCH_PG_DSN", "postgresql://memsidecar:memsidecar@127.0.0.1:55432/memsidecar"
)
S3_BUCKET = "memsidecar-bench"


@dataclass(frozen=True)
class Settings:
    """Sizes and durations of one run. `quick()` is the smoke-test mode (seconds)."""

    # Seconds measured per throughput point, after `warmup` unmeasured seconds.
    seconds: float = 2.0
    warmup: float = 0.5
    # Sequential calls per latency point (after a tenth as many warm-up calls).
    latency_calls: int = 2000
    # ... but no longer than this many seconds per point (at least 200 calls).
    latency_seconds: float = 3.0
    clients: tuple[int, ...] = (1, 16, 64)
    kv_keys: int = 1000
    kv_sizes: tuple[int, ...] = (100, 10 * 1024)
    # Records per semantic data set (each size is loaded and searched separately).
    semantic_sizes: tuple[int, ...] = (10_000,)
    semantic_dim: int = 384
    semantic_queries: int = 200
    semantic_load_clients: int = 16
    # Events appended before the range test reads them back.
    episodic_events: int = 20_000
    artifact_sizes: tuple[int, ...] = (1024 * 1024, 64 * 1024 * 1024)
    # Repetitions per artifact size: (for sizes <= 8 MiB, for larger ones).
    artifact_reps: tuple[int, int] = (20, 3)
    cold_starts: int = 3
    # Idle memory is read this long after the first served request.
    settle_seconds: float = 1.0
    webhook_calls: int = 2000
    quick: bool = False

    @classmethod
    def quick_mode(cls) -> Settings:
        return cls(
            seconds=0.1,
            warmup=0.02,
            latency_calls=20,
            latency_seconds=1.0,
            clients=(1, 4),
            kv_keys=20,
            kv_sizes=(100,),
            semantic_sizes=(200,),
            semantic_dim=384,
            semantic_queries=5,
            semantic_load_clients=8,
            episodic_events=100,
            artifact_sizes=(64 * 1024,),
            artifact_reps=(1, 1),
            cold_starts=1,
            settle_seconds=0.1,
            webhook_calls=20,
            quick=True,
        )

    def as_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@dataclass
class Services:
    pg_dsn: str
    redis_socket: Path
    redis_pid: int
    s3_endpoint: str
    s3_env: dict[str, str]


def _script_env(output: str) -> dict[str, str]:
    """`export NAME=value` lines → a dict."""
    env: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("export ") and "=" in line:
            name, value = line[len("export ") :].split("=", 1)
            env[name] = value
    return env


def start_services(log: Any, start: bool = True) -> Services:
    """`scripts/{postgres,minio,redis}.sh up` (idempotent), or just `env` when start=False."""
    env: dict[str, str] = {}
    for name in ("postgres", "minio", "redis"):
        action = "up" if start else "env"
        log(f"scripts/{name}.sh {action}")
        result = subprocess.run(
            [str(SCRIPTS / f"{name}.sh"), action],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if result.returncode != 0:
            raise RuntimeError(f"scripts/{name}.sh {action} failed:\n{result.stderr[-3000:]}")
        env.update(_script_env(result.stdout))
    socket = Path(env["MEMSIDECAR_REDIS_SOCKET"])
    pid_file = socket.parent / "redis.pid"
    return Services(
        pg_dsn=PG_DSN,
        redis_socket=socket,
        redis_pid=int(pid_file.read_text().strip()),
        s3_endpoint=env["MEMSIDECAR_S3_ENDPOINT"],
        s3_env={k: v for k, v in env.items() if k.startswith("MEMSIDECAR_S3_")},
    )


def short_tmpdir(prefix: str = "msb-") -> Path:
    """Unix socket paths are limited to ~107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def config_env(overrides: Mapping[str, Any]) -> dict[str, str]:
    """{"blocks.kv.driver": "postgres", ...} → MEMSIDECAR_BLOCKS__KV__DRIVER=postgres, ..."""
    env: dict[str, str] = {}
    for dotted, value in overrides.items():
        name = "MEMSIDECAR_" + "__".join(part.upper() for part in dotted.split("."))
        env[name] = value if isinstance(value, str) else json.dumps(value)
    return env


def _child_env(extra: Mapping[str, str]) -> dict[str, str]:
    # A MEMSIDECAR_* setting from the caller's shell must not leak into a measured config.
    base = {k: v for k, v in os.environ.items() if not k.startswith("MEMSIDECAR_BLOCKS__")}
    return {**base, **extra}


def migrate(overrides: Mapping[str, Any], env: Mapping[str, str] | None = None) -> str:
    """`memsidecar migrate` with the same env as the sidecar that will use the database."""
    result = subprocess.run(
        [sys.executable, "-m", "memsidecar.cli.main", "migrate"],
        capture_output=True,
        text=True,
        env=_child_env({**(env or {}), **config_env(overrides)}),
        cwd=REPO,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"memsidecar migrate failed:\n{result.stdout}{result.stderr}")
    return result.stdout.strip()


@dataclass
class SidecarProcess:
    proc: subprocess.Popen[bytes]
    socket: Path
    log: Path
    tmp: Path
    started: float
    ready_at: float = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.asynccontextmanager
async def sidecar_process(
    overrides: Mapping[str, Any] | None = None,
    timeout: float = 60.0,
    wait_ready_file: bool = True,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[SidecarProcess]:
    """`memsidecar serve` as a process on a private socket, with config overrides as env.

    With wait_ready_file=False it returns as soon as the process is started (for
    cold-start measurements, which poll the socket themselves)."""
    tmp = short_tmpdir()
    socket, ready, log = tmp / "m.sock", tmp / "ready", tmp / "sidecar.log"
    settings = {"blocks.artifact.options": {"root": str(tmp / "artifacts")}, **(overrides or {})}
    command = [
        sys.executable,
        "-m",
        "memsidecar.cli.main",
        "serve",
        "--socket",
        str(socket),
        "--ready-file",
        str(ready),
    ]
    # Blocking for a moment is fine here: nothing else runs while a sidecar starts.
    with open(log, "wb") as log_file:  # noqa: ASYNC230
        started = time.perf_counter()
        proc = subprocess.Popen(  # noqa: ASYNC220
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=_child_env({**(env or {}), **config_env(settings)}),
            cwd=REPO,
        )
    handle = SidecarProcess(proc, socket, log, tmp, started)
    try:
        if wait_ready_file:
            deadline = time.monotonic() + timeout
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sidecar did not start:\n{log.read_text()[-4000:]}")
                await asyncio.sleep(0.02)
            handle.ready_at = time.perf_counter()
        yield handle
    finally:
        handle.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Bench:
    settings: Settings
    services: Services
    table: Table
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    # Measurements one section takes that another reports (e.g. RSS under load).
    footprint: dict[str, float] = field(default_factory=dict)
    verbose: bool = True
    started: float = field(default_factory=time.monotonic)
    # Run at the end of the run, last added first (drop reference tables, delete rows).
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Parts of the run that failed (their rows are missing); the run exits non-zero.
    failures: list[str] = field(default_factory=list)
    # Results shared between configurations (e.g. a reference measured once per size).
    cache: dict[str, Any] = field(default_factory=dict)

    def log(self, message: str) -> None:
        if self.verbose:
            elapsed = time.monotonic() - self.started
            print(f"[bench {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)

    def row(
        self,
        section: str,
        what: str,
        unit: str,
        ours: float | None,
        reference: float | None,
        reference_name: str,
        higher_is_better: bool,
        note: str = "",
    ) -> Row:
        row = self.table.add(
            Row(section, what, unit, ours, reference, reference_name, higher_is_better, note)
        )
        self.log(
            f"  {section}: {what}: ours {ours if ours is None else round(ours, 3)} {unit}, "
            f"reference {reference if reference is None else round(reference, 3)}"
        )
        return row

    @property
    def tenant(self) -> str:
        """The ambient tenant of this run's sidecars: its rows never mix with another run's."""
        return f"bench-{self.run_id}"
