"""How the gateway frames what a gRPC server does, against a scripted server: errors in the
middle of a stream, what metadata is forwarded, limits, cancellation, an unreachable server."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import pytest

from memsidecar.defaults import CAPABILITY_HEADER
from memsidecar.kv.v1 import kv_pb2
from memsidecar.sidecar.gateway import GATEWAY_HEADER
from memsidecar.sidecar.gateway.auth import HTTP_PEER_HEADER
from memsidecar.sidecar.gateway.methods import method_table
from memsidecar.sidecar.gateway.server import STREAM_FIRST_MESSAGE_WAIT_SECONDS, HttpGateway
from tests.support import eventually, short_tmpdir

SERVICE = "memsidecar.kv.v1.KV"


@dataclass
class Script:
    """What the scripted KV server does and what it saw."""

    metadata: list[dict[str, str]] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


def _entry(key: str) -> kv_pb2.Entry:
    return kv_pb2.Entry(namespace="ns", key=key, version=1)


def scripted_kv(script: Script) -> grpc.GenericRpcHandler[Any, Any]:
    async def get(request: kv_pb2.GetRequest, context: Any) -> kv_pb2.GetResponse:
        script.metadata.append({k: v for k, v in context.invocation_metadata()})
        if request.key == "deadline":
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "too slow")
        if request.key == "aborted":
            await context.abort(grpc.StatusCode.ABORTED, "contention; retry")
        return kv_pb2.GetResponse(entry=_entry(request.key))

    async def scan(request: kv_pb2.ScanRequest, context: Any) -> AsyncIterator[kv_pb2.Entry]:
        if request.prefix == "then-fail":
            yield _entry("a")
            yield _entry("b")
            await context.abort(grpc.StatusCode.UNAVAILABLE, "backend went away")
        if request.prefix == "slow-fail":
            await asyncio.sleep(STREAM_FIRST_MESSAGE_WAIT_SECONDS * 2)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many scans")
        if request.prefix == "forever":
            try:
                yield _entry("first")
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                script.cancelled.set()
                raise
        return

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Get": grpc.unary_unary_rpc_method_handler(
                get,
                request_deserializer=kv_pb2.GetRequest.FromString,
                response_serializer=kv_pb2.GetResponse.SerializeToString,
            ),
            "Scan": grpc.unary_stream_rpc_method_handler(
                scan,
                request_deserializer=kv_pb2.ScanRequest.FromString,
                response_serializer=kv_pb2.Entry.SerializeToString,
            ),
        },
    )


@dataclass
class Scripted:
    url: str
    script: Script
    http: aiohttp.ClientSession

    async def post(self, method: str, body: Any, **headers: str) -> tuple[int, bytes]:
        async with self.http.post(
            f"{self.url}/{SERVICE}/{method}", data=json.dumps(body), headers=headers
        ) as r:
            return r.status, await r.read()


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    tmp = short_tmpdir()
    script = Script()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([scripted_kv(script)])
    server.add_insecure_port(f"unix:{tmp}/s.sock")
    await server.start()
    gateway = HttpGateway("127.0.0.1:0", f"unix:{tmp}/s.sock", method_table([SERVICE]), 1024, 64)
    url = await gateway.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            yield Scripted(url, script, http)
    finally:
        await gateway.stop()
        await server.stop(None)
        shutil.rmtree(tmp, ignore_errors=True)


async def test_error_mid_stream_is_the_last_ndjson_line(scripted: Scripted) -> None:
    status, body = await scripted.post("Scan", {"namespace": "ns", "prefix": "then-fail"})
    assert status == 200
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert [line.get("key") for line in lines[:2]] == ["a", "b"]
    assert lines[2] == {"error": {"code": "UNAVAILABLE", "message": "backend went away"}}


async def test_error_after_the_first_message_wait_is_a_line_too(scripted: Scripted) -> None:
    status, body = await scripted.post("Scan", {"namespace": "ns", "prefix": "slow-fail"})
    assert status == 200
    assert json.loads(body) == {
        "error": {"code": "RESOURCE_EXHAUSTED", "message": "too many scans"}
    }


@pytest.mark.parametrize(
    ("key", "status", "code"), [("deadline", 500, "DEADLINE_EXCEEDED"), ("aborted", 409, "ABORTED")]
)
async def test_codes_without_their_own_status(
    scripted: Scripted, key: str, status: int, code: str
) -> None:
    got, body = await scripted.post("Get", {"namespace": "ns", "key": key})
    assert got == status and json.loads(body)["code"] == code


async def test_only_the_token_and_the_gateway_mark_are_forwarded(scripted: Scripted) -> None:
    status, _ = await scripted.post(
        "Get",
        {"namespace": "ns", "key": "k"},
        Authorization="Bearer abc",
        **{"X-Memsidecar-Tenant": "evil", "X-Forwarded-For": "10.0.0.1", GATEWAY_HEADER: "no"},
    )
    assert status == 200
    seen = scripted.script.metadata[-1]
    assert seen[CAPABILITY_HEADER] == "Bearer abc"
    assert seen[GATEWAY_HEADER] == "http"
    assert seen[HTTP_PEER_HEADER] == "127.0.0.1"
    assert "x-memsidecar-tenant" not in seen and "x-forwarded-for" not in seen


async def test_no_token_no_capability_metadata(scripted: Scripted) -> None:
    await scripted.post("Get", {"namespace": "ns", "key": "k"})
    assert CAPABILITY_HEADER not in scripted.script.metadata[-1]


async def test_body_over_max_message_bytes_is_413(scripted: Scripted) -> None:
    status, body = await scripted.post("Get", {"namespace": "ns", "key": "k" * 2000})
    assert status == 413
    assert json.loads(body)["code"] == "RESOURCE_EXHAUSTED"
    assert "listen.max_message_bytes" in json.loads(body)["message"]


async def test_caller_leaving_cancels_the_stream(scripted: Scripted) -> None:
    url = f"{scripted.url}/{SERVICE}/Scan"
    async with scripted.http.post(url, json={"namespace": "ns", "prefix": "forever"}) as r:
        assert r.status == 200
        assert json.loads(await r.content.readline())["key"] == "first"
    # Leaving the block closed the connection mid-stream.
    await asyncio.wait_for(scripted.script.cancelled.wait(), 5)


async def test_unreachable_sidecar_is_503() -> None:
    tmp = short_tmpdir()
    gateway = HttpGateway("127.0.0.1:0", f"unix:{tmp}/none.sock", method_table([SERVICE]), 1024, 64)
    url = await gateway.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{url}/{SERVICE}/Get", json={"namespace": "ns", "key": "k"}) as r,
        ):
            assert r.status == 503
            assert (await r.json())["code"] == "UNAVAILABLE"
    finally:
        await gateway.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def test_stop_closes_the_port() -> None:
    gateway = HttpGateway("127.0.0.1:0", "unix:/nonexistent", method_table([SERVICE]), 1024, 64)
    url = await gateway.start()
    await gateway.stop()
    host, _, port = url.removeprefix("http://").rpartition(":")

    async def refused() -> bool:
        try:
            _, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            return True
        writer.close()
        return False

    await eventually(refused, timeout=5)
