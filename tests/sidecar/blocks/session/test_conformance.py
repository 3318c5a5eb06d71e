"""The session contract: heartbeats, orphan detection and its on_orphan policy, Close,
leases attached to sessions, and every bad input. Runs against every driver in
conftest.SESSION_DRIVERS, through the SDK and the wire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from memsidecar.client import AsyncMemSidecar, MemSidecar
from memsidecar.client.blocks.episodic import Event
from memsidecar.client.blocks.session import SessionHandle
from memsidecar.client.errors import (
    ConflictError,
    InvalidArgumentError,
    MemSidecarError,
    NotFoundError,
    ResourceExhaustedError,
)
from memsidecar.session.v1 import session_pb2
from memsidecar.sidecar.blocks.session import SessionBlock
from memsidecar.sidecar.blocks.session.driver import SessionRecord
from memsidecar.sidecar.server import Sidecar
from tests.sidecar.blocks.session.conftest import Started
from tests.support import ManualClock, eventually

INTERVAL = 0.05
TIMEOUT = 0.3


async def fast_session(client: AsyncMemSidecar, **kwargs: Any) -> SessionHandle:
    return await client.session.open(
        heartbeat_interval=INTERVAL, heartbeat_timeout=TIMEOUT, **kwargs
    )


async def events(client: AsyncMemSidecar, namespace: str, session_id: str = "") -> list[Event]:
    return [e async for e in client.episodic.range(namespace, session_id=session_id)]


async def keep_alive_once(client: AsyncMemSidecar, session_id: str) -> Any:
    async def one() -> AsyncIterator[session_pb2.KeepAliveRequest]:
        yield session_pb2.KeepAliveRequest(session_id=session_id)

    return [r async for r in client.session._stub.KeepAlive(one())]


async def test_open_applies_server_defaults(client: AsyncMemSidecar) -> None:
    r = await client.session._stub.Open(session_pb2.OpenRequest())
    s = r.session
    assert len(s.session_id) == 32
    assert s.state == session_pb2.SESSION_STATE_OPEN
    assert s.heartbeat_interval.ToTimedelta() == timedelta(seconds=5)
    assert s.heartbeat_timeout.ToTimedelta() == timedelta(seconds=15)
    assert s.on_orphan == session_pb2.ON_ORPHAN_CHECKPOINT_AND_CLOSE
    assert s.checkpoint_namespace == "sessions"
    assert s.opened_at == s.last_heartbeat_at
    # A long interval with no timeout gets three intervals.
    r = await client.session._stub.Open(
        session_pb2.OpenRequest(heartbeat_interval=timedelta(seconds=20))
    )
    assert r.session.heartbeat_timeout.ToTimedelta() == timedelta(seconds=60)


async def test_open_with_everything_and_duplicate_id(client: AsyncMemSidecar) -> None:
    s = await client.session.open(
        session_id="agent-7",
        heartbeat_interval=1,
        heartbeat_timeout=4,
        on_orphan="abort_quietly",
        checkpoint_namespace="sess-open",
        metadata={"task": "triage", "n": 3},
    )
    info = s.info
    assert info.session_id == s.session_id == "agent-7"
    assert info.state == "open"
    assert info.heartbeat_interval == timedelta(seconds=1)
    assert info.heartbeat_timeout == timedelta(seconds=4)
    assert info.on_orphan == "abort_quietly"
    assert info.checkpoint_namespace == "sess-open"
    assert info.metadata == {"task": "triage", "n": 3}
    with pytest.raises(MemSidecarError) as exc:
        await client.session.open(session_id="agent-7")
    assert exc.value.code == grpc.StatusCode.ALREADY_EXISTS
    result = await s.close()
    assert result.session.state == "closed" and result.released_leases == 0
    # A closed session's id stays taken while it is remembered.
    with pytest.raises(MemSidecarError) as exc:
        await client.session.open(session_id="agent-7")
    assert exc.value.code == grpc.StatusCode.ALREADY_EXISTS


async def test_heartbeats_keep_the_session_alive(client: AsyncMemSidecar) -> None:
    s = await fast_session(client)
    lease = await client.lease.acquire("sess-alive", "k", ttl=60, session_id=s.session_id)
    assert lease.session_id == s.session_id
    await asyncio.sleep(TIMEOUT * 4)
    assert s.error is None and s.heartbeating
    assert s.heartbeats >= 8
    assert s.deadline is not None and s.deadline > datetime.now(UTC)
    assert await client.lease.inspect("sess-alive", "k") == lease
    result = await s.close()
    assert result.released_leases == 1
    assert await client.lease.inspect("sess-alive", "k") is None


async def test_keep_alive_returns_the_new_deadline(client: AsyncMemSidecar) -> None:
    s = await client.session.open(heartbeat_interval=1, heartbeat_timeout=10)
    await s.stop_heartbeats()
    before = datetime.now(UTC)
    [response] = await keep_alive_once(client, s.session_id)
    assert response.session_id == s.session_id
    deadline = response.deadline.ToDatetime(tzinfo=UTC)
    assert before + timedelta(seconds=9) < deadline < datetime.now(UTC) + timedelta(seconds=11)
    await s.close()


async def test_stopped_heartbeats_orphan_within_half_the_timeout(
    client: AsyncMemSidecar,
) -> None:
    ns = "sess-orphan"
    s = await fast_session(client, checkpoint_namespace=ns, metadata={"agent": "a1"})
    held = [
        await client.lease.acquire("sess-locks", key, ttl=60, session_id=s.session_id)
        for key in ("a", "b")
    ]
    other = await client.lease.acquire("sess-locks", "unattached", ttl=60)
    await asyncio.sleep(INTERVAL * 2)
    await s.stop_heartbeats()
    assert s.deadline is not None
    deadline = s.deadline.timestamp()
    assert await client.lease.inspect("sess-locks", "a") is not None  # not before the deadline

    async def released() -> bool:
        return await client.lease.inspect("sess-locks", "a") is None

    await eventually(released, timeout=TIMEOUT * 10, interval=0.005)
    observed_lag = time.time() - deadline
    assert observed_lag <= TIMEOUT / 2, observed_lag
    assert await client.lease.inspect("sess-locks", "b") is None
    assert await client.lease.inspect("sess-locks", "unattached") == other

    [event] = await events(client, ns, s.session_id)
    assert event.type == "session.orphaned"
    assert event.role == "system"
    assert event.session_id == s.session_id
    # The sidecar's own clock: detected at the deadline, well within half the timeout.
    lag = event.time.timestamp() - deadline
    assert -0.01 <= lag <= TIMEOUT / 2, lag
    payload = event.payload
    assert payload["session_id"] == s.session_id
    assert payload["reason"] == "heartbeat_timeout"
    assert payload["state"] == "orphaned"
    assert payload["released_lease_count"] == 2
    assert [(x["key"], x["fencing_token"]) for x in payload["released_leases"]] == [
        (h.key, h.fencing_token) for h in held
    ]
    assert payload["released_leases_truncated"] is False
    assert payload["metadata"] == {"agent": "a1"}

    # Everything about the session now says it is orphaned.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await keep_alive_once(client, s.session_id)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "orphaned" in (info.value.details() or "")
    with pytest.raises(ConflictError, match="orphaned"):
        await s.close()
    with pytest.raises(ConflictError, match="orphaned"):
        await client.lease.acquire("sess-locks", "c", ttl=60, session_id=s.session_id)
    assert await client.lease.inspect("sess-locks", "c") is None


async def test_handle_reports_an_orphaned_session(client: AsyncMemSidecar) -> None:
    s = await fast_session(client, on_orphan="abort_quietly")
    # Simulate a stall longer than the timeout: pause the handle's heartbeats, let the
    # sidecar orphan the session, then have heartbeats resume from a second handle.
    await s.stop_heartbeats()
    await asyncio.sleep(TIMEOUT * 1.5)
    revived = SessionHandle(client.session, s.info)
    await eventually(lambda: revived.error is not None, timeout=2)
    assert revived.error is not None
    assert revived.error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert not revived.heartbeating


async def test_abort_quietly_releases_leases_and_writes_nothing(
    client: AsyncMemSidecar,
) -> None:
    ns = "sess-quiet"
    s = await fast_session(client, on_orphan="abort_quietly", checkpoint_namespace=ns)
    await client.lease.acquire("sess-quiet-locks", "k", ttl=60, session_id=s.session_id)
    await s.stop_heartbeats()
    assert s.deadline is not None
    deadline = s.deadline.timestamp()

    async def released() -> bool:
        return await client.lease.inspect("sess-quiet-locks", "k") is None

    await eventually(released, timeout=TIMEOUT * 10, interval=0.005)
    assert time.time() - deadline <= TIMEOUT / 2
    await asyncio.sleep(0.05)
    assert await events(client, ns) == []
    with pytest.raises(ConflictError, match="orphaned"):
        await s.close()


async def test_close_releases_attached_leases(client: AsyncMemSidecar) -> None:
    ns = "sess-close"
    s = await client.session.open(checkpoint_namespace=ns)
    for key in ("x", "y"):
        await client.lease.acquire("sess-close-locks", key, ttl=60, session_id=s.session_id)
    free = await client.lease.acquire("sess-close-locks", "free", ttl=60)
    result = await s.close()
    assert result.released_leases == 2
    assert result.session.state == "closed"
    assert await client.lease.list("sess-close-locks") == [free]
    assert await events(client, ns) == []
    with pytest.raises(ConflictError, match="closed"):
        await client.session.close(s.session_id)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await keep_alive_once(client, s.session_id)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(ConflictError, match="closed"):
        await client.lease.acquire("sess-close-locks", "z", ttl=60, session_id=s.session_id)


async def test_close_with_checkpoint_appends_an_event(client: AsyncMemSidecar) -> None:
    ns = "sess-close-cp"
    s = await client.session.open(checkpoint_namespace=ns, on_orphan="abort_quietly")
    lease = await client.lease.acquire("sess-cp-locks", "k", ttl=60, session_id=s.session_id)
    result = await s.close(checkpoint=True)
    assert result.released_leases == 1
    [event] = await events(client, ns)
    assert event.type == "session.closed"
    assert event.session_id == s.session_id
    assert event.payload["reason"] == "closed"
    assert event.payload["released_leases"] == [
        {
            "namespace": "sess-cp-locks",
            "key": "k",
            "holder_id": lease.holder_id,
            "fencing_token": lease.fencing_token,
        }
    ]


async def test_released_leases_can_be_taken_at_once(client: AsyncMemSidecar) -> None:
    s = await client.session.open()
    first = await client.lease.acquire(
        "sess-handoff", "k", ttl=600, session_id=s.session_id, holder_id="a"
    )
    waiter = asyncio.create_task(
        client.lease.acquire("sess-handoff", "k", ttl=60, holder_id="b", wait_for=5)
    )
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await s.close()
    got = await asyncio.wait_for(waiter, 2)
    assert got.holder_id == "b" and got.fencing_token > first.fencing_token


async def test_async_context_manager_closes(client: AsyncMemSidecar) -> None:
    async with await client.session.open() as s:
        await client.lease.acquire("sess-cm", "k", ttl=60, session_id=s.session_id)
        assert s.heartbeating
    assert not s.heartbeating
    assert await client.lease.inspect("sess-cm", "k") is None
    with pytest.raises(ConflictError, match="closed"):
        await client.session.close(s.session_id)


async def test_lease_needs_an_open_session(client: AsyncMemSidecar) -> None:
    with pytest.raises(NotFoundError, match="session 'nope' not found"):
        await client.lease.acquire("sess-locks", "k", ttl=10, session_id="nope")
    assert await client.lease.inspect("sess-locks", "k") is None


async def test_keep_alive_errors(client: AsyncMemSidecar) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await keep_alive_once(client, "never-opened")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await keep_alive_once(client, "")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_blocking_client_keeps_the_session_alive(
    sidecar_and_client: tuple[Sidecar, AsyncMemSidecar],
) -> None:
    sidecar, _ = sidecar_and_client
    socket = sidecar.config.listen.socket

    def agent() -> tuple[bool, int, str | None]:
        with MemSidecar(socket=socket) as m:
            s = m.session.open(heartbeat_interval=INTERVAL, heartbeat_timeout=TIMEOUT)
            m.lease.acquire("sess-sync", "k", ttl=60, session_id=s.session_id)
            time.sleep(TIMEOUT * 3)  # the loop thread keeps heartbeating meanwhile
            alive = s.heartbeating and s.error is None
            result = s.close()
            return alive, result.released_leases, m.lease.inspect("sess-sync", "k")

    alive, released, after = await asyncio.wait_for(asyncio.to_thread(agent), 20)
    assert alive and released == 1 and after is None


async def test_sessions_are_scoped_by_tenant(
    sidecar_and_client: tuple[Sidecar, AsyncMemSidecar],
) -> None:
    sidecar, client = sidecar_and_client
    s = await client.session.open()
    block = sidecar.blocks["session"]
    assert isinstance(block, SessionBlock)
    await block.service.check_open(sidecar.config.identity.tenant, s.session_id)
    with pytest.raises(Exception, match="not found"):
        await block.service.check_open("other-tenant", s.session_id)
    await s.close()


async def test_ended_sessions_are_forgotten_after_retention(
    start_sidecar: Callable[..., Started], clock: ManualClock
) -> None:
    async with start_sidecar({"blocks.session.ended_retention": "10m"}, clock=clock) as (
        _,
        client,
    ):
        s = await client.session.open(session_id="short-lived")
        await s.close()
        clock.advance(599)
        with pytest.raises(MemSidecarError) as info:
            await client.session.open(session_id="short-lived")
        assert info.value.code == grpc.StatusCode.ALREADY_EXISTS
        clock.advance(2)
        again = await client.session.open(session_id="short-lived")
        await again.close()


async def test_open_session_limit(start_sidecar: Callable[..., Started]) -> None:
    async with start_sidecar({"blocks.session.max_open_sessions": 2}) as (_, client):
        a = await client.session.open()
        b = await client.session.open()
        with pytest.raises(ResourceExhaustedError, match="max_open_sessions"):
            await client.session.open(session_id="third")
        await a.close()
        c = await client.session.open(session_id="third")
        await b.close()
        await c.close()


async def test_checkpoint_lists_at_most_the_configured_leases(
    start_sidecar: Callable[..., Started],
) -> None:
    async with start_sidecar({"blocks.session.checkpoint_max_leases": 1}) as (_, client):
        s = await client.session.open(checkpoint_namespace="sess-trunc")
        for key in ("a", "b", "c"):
            await client.lease.acquire("sess-trunc", key, ttl=60, session_id=s.session_id)
        assert (await s.close(checkpoint=True)).released_leases == 3
        [event] = await events(client, "sess-trunc")
        assert event.payload["released_lease_count"] == 3
        assert [x["key"] for x in event.payload["released_leases"]] == ["a"]
        assert event.payload["released_leases_truncated"] is True


async def test_open_sessions_found_at_start_are_watched(
    sidecar_and_client: tuple[Sidecar, AsyncMemSidecar],
) -> None:
    """After a restart on a persistent driver, open sessions get a fresh deadline."""
    sidecar, client = sidecar_and_client
    block = sidecar.blocks["session"]
    assert isinstance(block, SessionBlock)
    now = time.time()
    record = SessionRecord(
        session_id="from-before",
        state="open",
        heartbeat_interval=INTERVAL,
        heartbeat_timeout=TIMEOUT,
        on_orphan="abort_quietly",
        opened_at=now - 100,
        last_heartbeat_at=now - 50,
        checkpoint_namespace="sessions",
    )
    await block.driver.create(sidecar.config.identity.tenant, record, 10)
    await block.start()
    assert block.service.monitor.overdue(sidecar.config.identity.tenant, "from-before") is False
    [response] = await keep_alive_once(client, "from-before")
    assert response.session_id == "from-before"

    async def orphaned() -> bool:
        record = await block.driver.get(sidecar.config.identity.tenant, "from-before")
        return record is not None and record.state == "orphaned"

    await eventually(orphaned, timeout=3)
    assert not block.service.monitor.watching(sidecar.config.identity.tenant, "from-before")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await keep_alive_once(client, "from-before")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def _open(**fields: Any) -> session_pb2.OpenRequest:
    return session_pb2.OpenRequest(session_id="bad-input", **fields)


MS = timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (_open(heartbeat_interval=10 * MS), "INVALID_ARGUMENT", "min_heartbeat_interval"),
        (
            _open(heartbeat_interval=timedelta(seconds=-1)),
            "INVALID_ARGUMENT",
            "must not be negative",
        ),
        (
            _open(heartbeat_interval=timedelta(seconds=2), heartbeat_timeout=2000 * MS),
            "INVALID_ARGUMENT",
            "longer than heartbeat_interval",
        ),
        (
            _open(heartbeat_interval=timedelta(seconds=2), heartbeat_timeout=timedelta(seconds=1)),
            "INVALID_ARGUMENT",
            "longer than heartbeat_interval",
        ),
        (_open(heartbeat_timeout=timedelta(hours=2)), "INVALID_ARGUMENT", "max_heartbeat_timeout"),
        (_open(on_orphan=7), "INVALID_ARGUMENT", "on_orphan 7"),  # type: ignore[arg-type]
        (_open(checkpoint_namespace="bad/ns"), "INVALID_ARGUMENT", "checkpoint_namespace"),
        (
            session_pb2.OpenRequest(session_id="s" * 129),
            "INVALID_ARGUMENT",
            "max_session_id_chars",
        ),
        (session_pb2.OpenRequest(session_id="a\tb"), "INVALID_ARGUMENT", "control characters"),
        (
            _open(metadata={"blob": "x" * 17000}),
            "INVALID_ARGUMENT",
            "max_metadata_bytes",
        ),
    ],
)
async def test_bad_open_is_rejected_and_changes_nothing(
    client: AsyncMemSidecar, request_: session_pb2.OpenRequest, code: str, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.session._stub.Open(request_)
    assert info.value.code() == getattr(grpc.StatusCode, code)
    assert message in (info.value.details() or "")
    # Nothing was created: the id is still free.
    s = await client.session.open(session_id="bad-input")
    await s.close()


async def test_unconfigured_checkpoint_namespace_is_not_found(
    start_sidecar: Callable[..., Started],
) -> None:
    overrides = {
        "blocks.episodic.namespaces": {"chat": {}},
        "blocks.session.checkpoint_namespace": "chat",
    }
    async with start_sidecar(overrides) as (_, client):
        with pytest.raises(NotFoundError, match="checkpoint_namespace: unknown episodic"):
            await client.session.open(checkpoint_namespace="elsewhere")
        s = await client.session.open()
        assert s.info.checkpoint_namespace == "chat"
        await s.close()


async def test_bad_close(client: AsyncMemSidecar) -> None:
    with pytest.raises(InvalidArgumentError, match="session_id is required"):
        await client.session.close("")
    with pytest.raises(NotFoundError):
        await client.session.close("never-opened")


async def test_sdk_rejects_unknown_on_orphan(client: AsyncMemSidecar) -> None:
    with pytest.raises(ValueError, match="on_orphan"):
        await client.session.open(on_orphan="explode")  # type: ignore[arg-type]


async def test_lease_granted_after_its_session_ended_is_undone(client: AsyncMemSidecar) -> None:
    s = await client.session.open()
    first = await client.lease.acquire("sess-race", "k", ttl=60, holder_id="a")
    waiter = asyncio.create_task(
        client.lease.acquire(
            "sess-race", "k", ttl=60, holder_id="b", wait_for=5, session_id=s.session_id
        )
    )
    await asyncio.sleep(0.05)
    await s.close()  # the session ends while its lease request waits
    await client.lease.release("sess-race", "k", first.fencing_token, holder_id="a")
    with pytest.raises(ConflictError, match="closed"):
        await asyncio.wait_for(waiter, 2)
    assert await client.lease.inspect("sess-race", "k") is None


async def test_leases_are_released_even_when_the_checkpoint_fails(
    start_sidecar: Callable[..., Started],
) -> None:
    async with start_sidecar({"blocks.episodic.max_event_bytes": 600}) as (_, client):
        big = {"notes": "n" * 1000}
        s = await client.session.open(checkpoint_namespace="sess-cp-fail", metadata=big)
        await client.lease.acquire("sess-cp-fail", "a", ttl=60, session_id=s.session_id)
        with pytest.raises(InvalidArgumentError, match="checkpoint event was not written"):
            await s.close(checkpoint=True)
        assert await client.lease.inspect("sess-cp-fail", "a") is None
        with pytest.raises(ConflictError, match="closed"):
            await client.session.close(s.session_id)

        orphan = await fast_session(client, checkpoint_namespace="sess-cp-fail", metadata=big)
        await client.lease.acquire("sess-cp-fail", "b", ttl=60, session_id=orphan.session_id)
        await orphan.stop_heartbeats()

        async def released() -> bool:
            return await client.lease.inspect("sess-cp-fail", "b") is None

        await eventually(released, timeout=TIMEOUT * 10)
        assert await events(client, "sess-cp-fail") == []
