"""Helpers shared by the test suites."""

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
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memsidecar.client import AsyncMemSidecar, RetryPolicy
from memsidecar.sidecar.config import load_config
from memsidecar.sidecar.server import Sidecar, build_sidecar

REPO = Path(__file__).resolve().parent.parent

# The test database started by scripts/postgres.sh (override with MEMSIDECAR_PG_TEST_DSN).
PG_TEST_DSN = os.environ.get(
    "MEMSIDECAR_PG_TEST_DSN", "postgresql://memsidecar:memsidecar@127.0.0.1:55432/memsidecar_test"
)
# Database-backed driver names, in order of preference per block.
DATABASE_DRIVERS = ("pgvector", "postgres")


def database_overrides() -> dict[str, Any]:
    """Config overrides putting every block that has a database driver on the test database."""
    from memsidecar.sidecar.blocks import BLOCK_TYPES

    overrides: dict[str, Any] = {}
    for block_type in BLOCK_TYPES:
        registry = block_type.drivers
        for driver in DATABASE_DRIVERS:
            if registry is not None and driver in registry.names:
                overrides[f"blocks.{block_type.name}.driver"] = driver
                overrides[f"blocks.{block_type.name}.options"] = {"dsn": PG_TEST_DSN}
                break
    return overrides


def token_auth(
    key_dir: Path,
    tenant: str = "default",
    namespaces: tuple[str, ...] = ("kv/*",),
    ops: tuple[str, ...] = ("kv.*",),
) -> tuple[dict[str, str], str]:
    """Env that makes a sidecar accept tokens from a fresh key, and one such token."""
    from memsidecar.sidecar.auth.keys import load_private_key, write_key_pair
    from memsidecar.sidecar.auth.tokens import issue_token

    keys = write_key_pair(key_dir, "k1")
    token = issue_token(
        load_private_key(keys.private),
        kid="k1",
        tenant=tenant,
        agent="tool",
        namespaces=list(namespaces),
        ops=list(ops),
        ttl=600,
    )
    keys_json = json.dumps([{"kid": "k1", "public_key_file": str(keys.public)}])
    return {"MEMSIDECAR_AUTH__KEYS": keys_json}, token


def unique_tenant() -> dict[str, Any]:
    """A fresh tenant, so tests sharing one database never see each other's data."""
    return {"identity.tenant": f"t-{uuid.uuid4().hex[:12]}"}


class ManualClock:
    """A wall clock tests move by hand, for TTL and retention without sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def short_tmpdir() -> str:
    """Unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer."""
    return tempfile.mkdtemp(prefix="ms-", dir="/tmp")


@contextlib.asynccontextmanager
async def running_sidecar(
    overrides: dict[str, Any] | None = None, clock: Any = None
) -> AsyncIterator[tuple[Sidecar, AsyncMemSidecar]]:
    """An in-process sidecar on a private socket, and an async client connected to it."""
    tmp = short_tmpdir()
    settings = {
        "listen.socket": f"{tmp}/m.sock",
        "blocks.artifact.options": {"root": f"{tmp}/artifacts"},
        **(overrides or {}),
    }
    config = load_config(None, settings)
    sidecar = await build_sidecar(config, **({"clock": clock} if clock else {}))
    await sidecar.start()
    client = AsyncMemSidecar(socket=config.listen.socket, retry=RetryPolicy(max_retries=0))
    try:
        yield sidecar, client
    finally:
        await client.close()
        await sidecar.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class SidecarProcess:
    proc: subprocess.Popen[str]
    socket: Path
    addresses: list[str]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def sidecar_process(
    args: list[str] | None = None, env: dict[str, str] | None = None, timeout: float = 30.0
) -> Iterator[SidecarProcess]:
    """Start `memsidecar serve` as a real process and wait until it serves."""
    tmp = Path(short_tmpdir())
    socket, ready, log = tmp / "m.sock", tmp / "ready", tmp / "sidecar.log"
    command = [
        sys.executable,
        "-m",
        "memsidecar.cli.main",
        "serve",
        "--socket",
        str(socket),
        "--ready-file",
        str(ready),
        *(args or []),
    ]
    # On the embedded default, keep artifacts in the private temp dir (a --config
    # file decides for itself).
    private_root = (
        {}
        if "--config" in (args or [])
        else {"MEMSIDECAR_BLOCKS__ARTIFACT__OPTIONS": f'{{"root": "{tmp}/artifacts"}}'}
    )
    full_env = {**os.environ, **private_root, **(env or {})}
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, text=True
        )
    handle = SidecarProcess(proc, socket, [], log)
    try:
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sidecar did not start:\n{log.read_text()}")
            time.sleep(0.05)
        handle.addresses = ready.read_text().split()
        yield handle
    finally:
        handle.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def eventually(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    """Poll an (async or sync) predicate until true; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
