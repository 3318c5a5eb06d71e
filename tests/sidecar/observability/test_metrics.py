"""Prometheus metrics of a real in-process sidecar, scraped over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from memsidecar.client.errors import InvalidArgumentError, PermissionDeniedError
from memsidecar.lease.v1 import lease_pb2, lease_pb2_grpc
from memsidecar.session.v1 import session_pb2, session_pb2_grpc
from memsidecar.sidecar.policy.loader import load_policy_text
from tests.sidecar.observability.support import (
    metrics_url,
    observed_overrides,
    scrape,
)
from tests.support import ManualClock, eventually, running_sidecar

DENY_SECRETS = """\
defaultEffect: allow
rules:
  - name: no-secrets
    effect: deny
    match: {namespaces: ["secret*"]}
"""


async def test_rpc_counts_and_latency_by_block_method_code(tmp_path: Path) -> None:
    async with running_sidecar(observed_overrides(tmp_path)) as (sidecar, client):
        await client.kv.put("notes", "a", 1)
        await client.kv.put("notes", "b", 2)
        assert await client.kv.get("notes", "missing") is None
        with pytest.raises(InvalidArgumentError):
            await client.kv.put("notes", "", 1)

        m = await scrape(sidecar)
        total = "memsidecar_rpc_requests_total"
        assert m.value(total, block="kv", method="Put", code="OK") == 2
        assert m.value(total, block="kv", method="Get", code="NOT_FOUND") == 1
        assert m.value(total, block="kv", method="Put", code="INVALID_ARGUMENT") == 1
        assert not m.has(total, block="kv", method="Get", code="OK")
        hist = "memsidecar_rpc_duration_seconds"
        assert m.value(f"{hist}_count", block="kv", method="Put", code="OK") == 2
        assert m.value(f"{hist}_count", block="kv", method="Put", code="INVALID_ARGUMENT") == 1
        assert m.value(f"{hist}_bucket", block="kv", method="Put", code="OK", le="+Inf") == 2
        assert 0 < m.value(f"{hist}_sum", block="kv", method="Put", code="OK") < 5
        # Process metrics come along.
        assert m.has("process_cpu_seconds_total")
        assert m.has("python_info")


async def test_policy_decisions_by_effect_and_rule(tmp_path: Path) -> None:
    async with running_sidecar(observed_overrides(tmp_path)) as (sidecar, client):
        sidecar.policy.replace(load_policy_text(DENY_SECRETS, "test"))
        await client.kv.put("notes", "k", 1)
        for _ in range(3):
            with pytest.raises(PermissionDeniedError):
                await client.kv.put("secret-stuff", "k", 1)

        m = await scrape(sidecar)
        decisions = "memsidecar_policy_decisions_total"
        assert m.value(decisions, effect="deny", rule="no-secrets") == 3
        assert m.value(decisions, effect="allow", rule="(default)") == 1
        total = "memsidecar_rpc_requests_total"
        assert m.value(total, block="kv", method="Put", code="PERMISSION_DENIED") == 3
        assert m.value(total, block="kv", method="Put", code="OK") == 1


async def test_handler_crash_counts_as_internal(tmp_path: Path) -> None:
    async with running_sidecar(observed_overrides(tmp_path)) as (sidecar, client):
        kv = sidecar.blocks["kv"]

        async def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("driver bug")

        kv.driver.get = broken  # type: ignore[attr-defined]
        with pytest.raises(Exception, match=r"internal error in kv\.get"):
            await client.kv.get("notes", "k")
        m = await scrape(sidecar)
        assert m.value("memsidecar_rpc_requests_total", method="Get", code="INTERNAL") == 1


async def test_streams_are_counted(tmp_path: Path) -> None:
    async with running_sidecar(observed_overrides(tmp_path)) as (sidecar, client):
        await client.artifact.put("files", b"x" * 5000, id="f1")
        assert await client.artifact.get("files", "f1") == b"x" * 5000
        m = await scrape(sidecar)
        total = "memsidecar_rpc_requests_total"
        assert m.value(total, block="artifact", method="Put", code="OK") == 1
        assert m.value(total, block="artifact", method="Get", code="OK") == 1


async def test_cancelled_call_and_deadline_exceeded_stream(tmp_path: Path) -> None:
    async with running_sidecar(observed_overrides(tmp_path)) as (sidecar, client):
        # A unary call cancelled by its caller while the sidecar waits for a lease.
        await client.lease.acquire("jobs", "busy", ttl=60, holder_id="someone-else")
        wait = lease_pb2.AcquireRequest(namespace="jobs", key="busy", holder_id="me")
        wait.ttl.seconds = 30
        wait.wait_for.seconds = 20
        call = lease_pb2_grpc.LeaseStub(client.transport.channel).Acquire(wait, timeout=30)
        await asyncio.sleep(0.2)
        call.cancel()

        # A request stream whose deadline passes while the sidecar waits for a message.
        session = await client.session.open(heartbeat_interval=10, heartbeat_timeout=30)
        await session.stop_heartbeats()

        async def one_beat() -> AsyncIterator[session_pb2.KeepAliveRequest]:
            yield session_pb2.KeepAliveRequest(session_id=session.session_id)
            await asyncio.sleep(30)

        stub = session_pb2_grpc.SessionStub(client.transport.channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.KeepAlive(one_beat(), timeout=0.5):
                pass
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        total = "memsidecar_rpc_requests_total"

        async def recorded() -> bool:
            m = await scrape(sidecar)
            return (
                m.value(total, method="Acquire", code="CANCELLED") == 1
                and m.value(total, method="KeepAlive", code="DEADLINE_EXCEEDED") == 1
            )

        await eventually(recorded)
        await session.close()


async def test_lease_and_session_gauges_move(tmp_path: Path, clock: ManualClock) -> None:
    async with running_sidecar(observed_overrides(tmp_path), clock=clock) as (sidecar, client):
        m = await scrape(sidecar)
        assert m.value("memsidecar_active_leases") == 0
        assert m.value("memsidecar_active_sessions") == 0
        assert m.has("memsidecar_active_leases") and m.has("memsidecar_active_sessions")

        first = await client.lease.acquire("jobs", "a", ttl=30)
        await client.lease.acquire("jobs", "b", ttl=10)
        session = await client.session.open(heartbeat_interval=1, heartbeat_timeout=30)
        m = await scrape(sidecar)
        assert m.value("memsidecar_active_leases") == 2
        assert m.value("memsidecar_active_sessions") == 1

        await client.lease.release("jobs", "a", first.fencing_token)
        clock.advance(11)  # "b" expires
        await session.close()
        m = await scrape(sidecar)
        assert m.value("memsidecar_active_leases") == 0
        assert m.value("memsidecar_active_sessions") == 0


async def test_failing_gauge_source_is_left_out(tmp_path: Path) -> None:
    async with running_sidecar(observed_overrides(tmp_path)) as (sidecar, _):
        lease = sidecar.blocks["lease"]

        async def down(now: float) -> int:
            raise OSError("backend down")

        lease.driver.count_live = down  # type: ignore[attr-defined]
        m = await scrape(sidecar)
        assert not m.has("memsidecar_active_leases")
        assert m.has("memsidecar_active_sessions")


async def test_backend_latency_by_operation_on_postgres(postgres: str, tmp_path: Path) -> None:
    overrides = observed_overrides(
        tmp_path,
        **{
            "blocks.kv.driver": "postgres",
            "blocks.kv.options": {"dsn": postgres},
            "identity.tenant": "obs-metrics",
        },
    )
    async with running_sidecar(overrides) as (sidecar, client):
        await client.kv.put("notes", "k", 1)
        await client.kv.get("notes", "k")
        await client.kv.get("notes", "k")
        m = await scrape(sidecar)
        hist = "memsidecar_backend_duration_seconds"
        assert m.value(f"{hist}_count", backend="postgres", operation="PostgresKV.put") == 1
        assert m.value(f"{hist}_count", backend="postgres", operation="PostgresKV.get") == 2
        operations = {labels["operation"] for labels in m.labels(f"{hist}_count")}
        # Start-up schema checks run outside any call and are not counted as calls.
        assert operations == {"PostgresKV.put", "PostgresKV.get"}


async def test_background_backend_calls_are_counted(postgres: str, tmp_path: Path) -> None:
    overrides = observed_overrides(
        tmp_path,
        **{
            "blocks.kv.driver": "postgres",
            "blocks.kv.options": {"dsn": postgres},
            "blocks.kv.sweep_interval": "50ms",
            "identity.tenant": "obs-sweep",
        },
    )
    hist = "memsidecar_backend_duration_seconds_count"
    async with running_sidecar(overrides) as (sidecar, _):

        async def swept() -> bool:
            m = await scrape(sidecar)
            return m.value(hist, backend="postgres", operation="PostgresKV.sweep") >= 1

        await eventually(swept)


async def test_openmetrics_on_request_and_404_elsewhere(tmp_path: Path) -> None:
    overrides = observed_overrides(tmp_path, **{"observability.metrics.path": "/m"})
    async with running_sidecar(overrides) as (sidecar, client), aiohttp.ClientSession() as http:
        await client.kv.put("notes", "k", 1)
        url = metrics_url(sidecar)
        assert url.endswith("/m")
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
        async with http.get(url, headers=headers) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            body = await r.text()
        assert body.rstrip().endswith("# EOF")
        assert "memsidecar_rpc_requests_total{" in body
        async with http.get(url.replace("/m", "/metrics")) as r:
            assert r.status == 404


async def test_two_sidecars_keep_their_own_metrics(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        running_sidecar(observed_overrides(tmp_path / "a")) as (a, client_a),
        running_sidecar(observed_overrides(tmp_path / "b")) as (b, _),
    ):
        await client_a.kv.put("notes", "k", 1)
        assert (await scrape(a)).value("memsidecar_rpc_requests_total", code="OK") == 1
        assert (await scrape(b)).value("memsidecar_rpc_requests_total") == 0


async def test_metrics_off_by_default() -> None:
    async with running_sidecar() as (sidecar, _):
        assert sidecar.observability is not None
        assert sidecar.observability.metrics_server is None
