"""The sidecar process on a real Postgres: schema versioning, shared state, outages."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from memsidecar import AsyncMemSidecar, MemSidecar, RetryPolicy
from memsidecar.client.errors import ConflictError, UnavailableError
from tests.support import REPO, sidecar_process


def database_env(dsn: str, tenant: str) -> dict[str, str]:
    return {
        "MEMSIDECAR_BLOCKS__KV__DRIVER": "postgres",
        "MEMSIDECAR_BLOCKS__KV__OPTIONS": f'{{"dsn": "{dsn}"}}',
        "MEMSIDECAR_IDENTITY__TENANT": tenant,
    }


@pytest.fixture
def empty_database(postgres: str) -> Iterator[str]:
    """A brand-new database on the test server, dropped afterwards."""
    name = f"ms_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(postgres)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    yield postgres.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(admin(f"DROP DATABASE {name} WITH (FORCE)"))


def memsidecar(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memsidecar.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_sidecar_refuses_unmigrated_schema_and_migrate_fixes_it(empty_database: str) -> None:
    env = database_env(empty_database, "t1")
    refused = memsidecar("serve", "--socket", "/tmp/never.sock", env=env)
    assert refused.returncode != 0
    assert "schema" in refused.stderr and "memsidecar migrate" in refused.stderr

    first = memsidecar("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "kv: postgres schema at version 1 (1 applied)" in first.stdout
    again = memsidecar("migrate", env=env)
    assert "(0 applied)" in again.stdout

    with sidecar_process(env=env) as proc, MemSidecar(socket=proc.socket) as m:
        m.kv.put("pg", "k", "stored")
        assert m.kv.get("pg", "k").value == "stored"


def test_two_sidecars_share_one_database_and_cas_loses_no_update(postgres: str) -> None:
    env = database_env(postgres, f"t-{uuid.uuid4().hex[:8]}")
    with sidecar_process(env=env) as a, sidecar_process(env=env) as b:

        async def writers() -> int:
            clients = [AsyncMemSidecar(socket=p.socket) for p in (a, b)]
            await clients[0].kv.put("shared", "counter", 0)

            async def add_one(m: AsyncMemSidecar) -> None:
                while True:
                    entry = await m.kv.get("shared", "counter")
                    assert entry is not None
                    try:
                        await m.kv.put(
                            "shared", "counter", entry.value + 1, if_version=entry.version
                        )
                        return
                    except ConflictError:
                        await asyncio.sleep(0)

            await asyncio.gather(*(add_one(clients[i % 2]) for i in range(16)))
            final = await clients[1].kv.get("shared", "counter")
            for c in clients:
                await c.close()
            assert final is not None
            return int(final.value)

        assert asyncio.run(writers()) == 16


def run_postgres_script(action: str) -> None:
    subprocess.run(
        ["bash", str(REPO / "scripts/postgres.sh"), action],
        check=True,
        timeout=300,
        stdout=subprocess.DEVNULL,
    )


def test_postgres_outage_is_unavailable_then_recovers_with_acknowledged_writes(
    postgres: str,
) -> None:
    env = database_env(postgres, f"t-{uuid.uuid4().hex[:8]}")
    no_retry = RetryPolicy(max_retries=0)
    with sidecar_process(env=env) as proc, MemSidecar(socket=proc.socket, retry=no_retry) as m:
        acknowledged = [m.kv.put("outage", f"k{i}", i).key for i in range(20)]
        run_postgres_script("down")
        try:
            with pytest.raises(UnavailableError, match=r"postgres at 127\.0\.0\.1"):
                m.kv.put("outage", "during", 1)
            with pytest.raises(UnavailableError):
                m.kv.get("outage", "k1")
        finally:
            run_postgres_script("up")
        # The pool reconnects: the first calls after the outage succeed (with retries).
        with MemSidecar(socket=proc.socket, retry=RetryPolicy(max_retries=5)) as again:
            found = again.kv.get_many("outage", acknowledged)
            assert sorted(found) == sorted(acknowledged)
            again.kv.put("outage", "after", 1)
            assert again.kv.get("outage", "during") is None


def test_lease_mutual_exclusion_across_two_sidecars(postgres: str) -> None:
    """Holders on two sidecar processes contend for one key: never two at once,
    and fencing tokens strictly increase in the order the lease changed hands."""
    env = {
        "MEMSIDECAR_BLOCKS__LEASE__DRIVER": "postgres",
        "MEMSIDECAR_BLOCKS__LEASE__OPTIONS": f'{{"dsn": "{postgres}"}}',
        "MEMSIDECAR_IDENTITY__TENANT": f"t-{uuid.uuid4().hex[:8]}",
    }
    with sidecar_process(env=env) as a, sidecar_process(env=env) as b:

        async def contend() -> list[tuple[int, int, int]]:
            clients = [AsyncMemSidecar(socket=p.socket) for p in (a, b)]
            inside: list[int] = []
            history: list[tuple[int, int, int]] = []

            async def worker(n: int) -> None:
                lease = clients[n % 2].lease
                for _ in range(5):
                    held = await lease.acquire(
                        "locks", "the-key", ttl=10, wait_for=20, holder_id=f"w{n}"
                    )
                    inside.append(n)
                    assert len(inside) == 1, f"two holders at once: {inside}"
                    history.append((n, held.fencing_token, len(history)))
                    await asyncio.sleep(0.005)
                    inside.remove(n)
                    await lease.release(
                        "locks", "the-key", holder_id=f"w{n}", fencing_token=held.fencing_token
                    )

            await asyncio.gather(*(worker(n) for n in range(6)))
            for c in clients:
                await c.close()
            return history

        history = asyncio.run(contend())
    tokens = [token for _, token, _ in history]
    assert len(tokens) == 30
    assert tokens == sorted(tokens) and len(set(tokens)) == 30


def test_example_config_with_every_block_on_postgres_and_minio(postgres: str) -> None:
    """The config in docs/backends.md migrates, serves and stores every block."""
    config = REPO / "examples/sidecar-postgres-minio.yaml"
    env = {
        "MEMSIDECAR_PG_DSN": postgres,
        "MEMSIDECAR_S3_ACCESS_KEY": os.environ.get("MEMSIDECAR_S3_ACCESS_KEY", "memsidecar"),
        "MEMSIDECAR_S3_SECRET_KEY": os.environ.get("MEMSIDECAR_S3_SECRET_KEY", "memsidecar-secret"),
        "MEMSIDECAR_IDENTITY__TENANT": f"t-{uuid.uuid4().hex[:8]}",
    }
    migrated = memsidecar("migrate", "--config", str(config), env=env)
    assert migrated.returncode == 0, migrated.stderr
    for block in ("kv", "episodic", "semantic", "lease"):
        assert f"{block}: " in migrated.stdout
    with sidecar_process(["--config", str(config)], env=env) as proc:
        banner = proc.log.read_text()
        assert "kv=postgres" in banner and "semantic=pgvector" in banner and "artifact=s3" in banner
        with MemSidecar(socket=proc.socket) as m:
            m.kv.put("cfg", "k", 1)
            m.episodic.append("chat", "message", {"text": "hi"}, session_id="s")
            m.semantic.upsert("facts", "the sky is blue", id="sky")
            assert (
                m.semantic.search("facts", "what colour is the sky", top_k=1)[0].record.id == "sky"
            )
            info = m.artifact.put("files", b"payload", id="a.txt")
            assert m.artifact.get("files", "a.txt") == b"payload" and info.size == 7
            session = m.session.open(heartbeat_interval=1, heartbeat_timeout=5)
            m.lease.acquire("locks", "job", ttl=30, session_id=session.session_id)
            assert session.close().released_leases == 1
