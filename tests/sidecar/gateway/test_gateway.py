"""The HTTP/JSON gateway against a real sidecar: every kind of RPC, tokens, scopes, policy and
errors exactly as gRPC callers get them (the gateway forwards to the one call pipeline)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import aiohttp
import grpc
import pytest

from memsidecar.client.errors import PermissionDeniedError
from memsidecar.defaults import CAPABILITY_HEADER
from memsidecar.sidecar.auth.keys import AuthConfigError
from memsidecar.sidecar.config import load_config
from memsidecar.sidecar.gateway import GATEWAY_HEADER
from memsidecar.sidecar.gateway.errors import HTTP_STATUS, http_status
from memsidecar.sidecar.server import build_sidecar
from tests.sidecar.gateway.conftest import Gateway
from tests.support import short_tmpdir

KV = "/memsidecar.kv.v1.KV"
EPISODIC = "/memsidecar.episodic.v1.Episodic"
ARTIFACT = "/memsidecar.artifact.v1.Artifact"
SESSION = "/memsidecar.session.v1.Session"
LEASE = "/memsidecar.lease.v1.Lease"


# --- unary RPCs ---------------------------------------------------------------------


async def test_kv_put_and_get_as_json(gateway: Gateway) -> None:
    put = await gateway.post(
        f"{KV}/Put", {"namespace": "scratch", "key": "plan", "value": {"stringValue": "step 1"}}
    )
    assert put.status == 200, put.body
    assert put.headers["Content-Type"].startswith("application/json")
    entry = put.json()["entry"]
    # Output: camelCase proto JSON; int64 as strings; default-valued fields present.
    assert entry["namespace"] == "scratch" and entry["value"] == {"stringValue": "step 1"}
    assert entry["version"] == "1" and "updatedAt" in entry
    got = await gateway.post(f"{KV}/Get", {"namespace": "scratch", "key": "plan"})
    assert got.status == 200 and got.json()["entry"]["value"] == {"stringValue": "step 1"}


async def test_proto_field_names_are_accepted_on_input(gateway: Gateway) -> None:
    r = await gateway.post(
        f"{KV}/Put",
        {"namespace": "scratch", "key": "n", "value": {"int_value": "41"}, "if_version": "0"},
    )
    assert r.status == 200, r.body
    r = await gateway.post(f"{KV}/Increment", {"namespace": "scratch", "key": "n", "delta": 1})
    assert r.status == 200 and r.json()["entry"]["value"] == {"intValue": "42"}


async def test_http_and_grpc_callers_share_the_tenant_of_their_token(gateway: Gateway) -> None:
    await gateway.post(
        f"{KV}/Put", {"namespace": "shared", "key": "k", "value": {"boolValue": True}}
    )
    async with gateway.remote(gateway.token) as remote:
        entry = await remote.kv.get("shared", "k")
        assert entry is not None and entry.value is True
    # Another tenant's token sees nothing of it.
    other = gateway.issue(tenant="other")
    r = await gateway.post(f"{KV}/Get", {"namespace": "shared", "key": "k"}, token=other)
    assert r.status == 404 and r.json()["code"] == "NOT_FOUND"


async def test_well_known_types_in_json(gateway: Gateway) -> None:
    r = await gateway.post(
        f"{LEASE}/Acquire", {"namespace": "locks", "key": "job", "holderId": "a", "ttl": "30s"}
    )
    assert r.status == 200, r.body
    lease = r.json()["lease"]
    assert lease["holderId"] == "a" and int(lease["fencingToken"]) > 0


async def test_health_check_is_mirrored(gateway: Gateway) -> None:
    r = await gateway.post("/grpc.health.v1.Health/Check", {})
    assert r.status == 200 and r.json() == {"status": "SERVING"}


# --- server streams as NDJSON -------------------------------------------------------------


async def test_kv_scan_is_ndjson(gateway: Gateway) -> None:
    for key in ("b", "a", "c"):
        await gateway.local.kv.put("scan", key, key.upper())
    r = await gateway.post(f"{KV}/Scan", {"namespace": "scan"})
    assert r.status == 200
    assert r.headers["Content-Type"] == "application/x-ndjson"
    lines = r.lines()
    assert [line["key"] for line in lines] == ["a", "b", "c"]
    assert lines[0]["value"] == {"stringValue": "A"}
    r = await gateway.post(f"{KV}/Scan", {"namespace": "scan", "startAfter": "b"})
    assert [line["key"] for line in r.lines()] == ["c"]


async def test_empty_stream_is_an_empty_200(gateway: Gateway) -> None:
    r = await gateway.post(f"{KV}/Scan", {"namespace": "nothing-here"})
    assert r.status == 200 and r.body == b""


async def test_episodic_append_and_range(gateway: Gateway) -> None:
    for i in range(3):
        r = await gateway.post(
            f"{EPISODIC}/Append",
            {"namespace": "chat", "type": "msg", "role": "user", "payload": {"n": i}},
        )
        assert r.status == 200, r.body
    r = await gateway.post(f"{EPISODIC}/Range", {"namespace": "chat"})
    assert r.status == 200
    events = r.lines()
    assert [e["payload"] for e in events] == [{"n": 0}, {"n": 1}, {"n": 2}]
    cursors = [int(e["cursor"]) for e in events]
    assert cursors == sorted(cursors)
    r = await gateway.post(f"{EPISODIC}/Range", {"namespace": "chat", "reverse": True, "limit": 2})
    assert [e["payload"]["n"] for e in r.lines()] == [2, 1]


async def test_episodic_tail_streams_live_events(gateway: Gateway) -> None:
    url = gateway.url + f"{EPISODIC}/Tail"
    headers = {"Authorization": f"Bearer {gateway.token}"}
    async with gateway.http.post(url, json={"namespace": "live"}, headers=headers) as r:
        # Nothing to send yet: the 200 comes anyway, after the first-message wait.
        assert r.status == 200
        for i in range(2):
            await gateway.local.episodic.append("live", "tick", {"i": i})
            line = await asyncio.wait_for(r.content.readline(), 5)
            assert json.loads(line)["payload"] == {"i": i}


async def test_stream_errors_before_the_first_message_get_their_status(gateway: Gateway) -> None:
    r = await gateway.post(f"{KV}/Scan", {"namespace": "bad/name"})
    assert r.status == 400 and r.json()["code"] == "INVALID_ARGUMENT"
    r = await gateway.post(f"{EPISODIC}/Tail", {"namespace": "live"}, token=None)
    assert r.status == 401


# --- artifact: raw upload, NDJSON download --------------------------------------------------


async def test_artifact_put_and_get(gateway: Gateway) -> None:
    content = bytes(range(256)) * 4000  # ~1 MB: several chunks each way
    r = await gateway.post(
        f"{ARTIFACT}/Put",
        data=content,
        headers={
            "Content-Type": "application/x-test",
            "X-Memsidecar-Namespace": "files",
            "X-Memsidecar-Id": "reports/q1.bin",
            "X-Memsidecar-Metadata": json.dumps({"owner": "planner", "pages": 3}),
        },
    )
    assert r.status == 200, r.body
    info = r.json()["info"]
    assert info["id"] == "reports/q1.bin" and info["size"] == str(len(content))
    assert info["sha256"] == hashlib.sha256(content).hexdigest()
    assert info["contentType"] == "application/x-test"
    assert info["metadata"] == {"owner": "planner", "pages": 3}
    # The same artifact through the SDK.
    assert await gateway.local.artifact.get("files", "reports/q1.bin") == content
    r = await gateway.post(f"{ARTIFACT}/Get", {"namespace": "files", "id": "reports/q1.bin"})
    assert r.status == 200
    lines = r.lines()
    assert lines[0]["info"]["sha256"] == info["sha256"]
    chunks = [base64.b64decode(line["chunk"]) for line in lines[1:]]
    assert len(chunks) > 1 and b"".join(chunks) == content
    r = await gateway.post(
        f"{ARTIFACT}/Get", {"namespace": "files", "id": "reports/q1.bin", "offset": 10, "length": 5}
    )
    assert base64.b64decode(r.lines()[1]["chunk"]) == content[10:15]


async def test_artifact_put_without_namespace_is_the_sidecars_error(gateway: Gateway) -> None:
    r = await gateway.post(f"{ARTIFACT}/Put", data=b"x")
    assert r.status == 400 and r.json()["code"] == "INVALID_ARGUMENT"
    assert "namespace" in r.json()["message"]


async def test_artifact_metadata_header_must_be_a_json_object(gateway: Gateway) -> None:
    r = await gateway.post(
        f"{ARTIFACT}/Put",
        data=b"x",
        headers={"X-Memsidecar-Namespace": "files", "X-Memsidecar-Metadata": "[1]"},
    )
    assert r.status == 400 and "must be a JSON object" in r.json()["message"]


async def test_a_broken_upload_stores_nothing(gateway: Gateway) -> None:
    host, _, port = gateway.url.removeprefix("http://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            f"POST {ARTIFACT}/Put HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {gateway.token}\r\n"
            "X-Memsidecar-Namespace: files\r\nX-Memsidecar-Id: torn\r\n"
            "Content-Length: 1000000\r\n\r\n"
        ).encode()
        + b"x" * 300_000
    )
    await writer.drain()
    # Let the gateway forward what it got; then the caller goes away mid-body.
    await asyncio.sleep(0.3)
    writer.close()
    await writer.wait_closed()
    del reader
    # The call the gateway had open is cancelled without the commit marker.
    await asyncio.sleep(0.3)
    assert await gateway.local.artifact.stat("files", "torn") is None


# --- session KeepAlive as one heartbeat per call ---------------------------------------------


async def test_session_open_heartbeat_close(gateway: Gateway) -> None:
    r = await gateway.post(
        f"{SESSION}/Open", {"heartbeatInterval": "5s", "heartbeatTimeout": "30s"}
    )
    assert r.status == 200, r.body
    session_id = r.json()["session"]["sessionId"]
    r = await gateway.post(f"{SESSION}/KeepAlive", {"sessionId": session_id})
    assert r.status == 200, r.body
    assert r.json()["sessionId"] == session_id and "deadline" in r.json()
    r = await gateway.post(f"{SESSION}/KeepAlive", {"sessionId": "no-such-session"})
    assert r.status == 404 and r.json()["code"] == "NOT_FOUND"
    r = await gateway.post(f"{SESSION}/Close", {"sessionId": session_id})
    assert r.status == 200 and r.json()["session"]["state"] == "SESSION_STATE_CLOSED"


# --- auth: HTTP callers are TCP callers ------------------------------------------------------


async def test_http_needs_a_token_although_the_socket_is_ambient(gateway: Gateway) -> None:
    # The gateway forwards over the ambient socket, yet a caller without a token is refused...
    r = await gateway.post(f"{KV}/Put", {"namespace": "s", "key": "k"}, token=None)
    assert r.status == 401
    assert r.json()["code"] == "UNAUTHENTICATED"
    assert "Authorization: Bearer <token>" in r.json()["message"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    # ...and nothing was written, while the same call on the socket itself is ambient.
    assert await gateway.local.kv.get("s", "k") is None
    await gateway.local.kv.put("s", "k", "ambient")


async def test_the_gateway_mark_cannot_be_sent_or_stripped_by_http_callers(
    gateway: Gateway,
) -> None:
    for value in ("", "none", "0"):
        r = await gateway.post(
            f"{KV}/Get", {"namespace": "s", "key": "k"}, token=None, headers={GATEWAY_HEADER: value}
        )
        assert r.status == 401


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": "Bearer not-a-token"}, 401),
        ({"Authorization": "Basic dXNlcjpwdw=="}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Bearer a", CAPABILITY_HEADER: "Bearer b"}, 401),
    ],
)
async def test_bad_credentials_are_401(
    gateway: Gateway, headers: dict[str, str], status: int
) -> None:
    r = await gateway.post(f"{KV}/Get", {"namespace": "s", "key": "k"}, token=None, headers=headers)
    assert r.status == status and r.json()["code"] == "UNAUTHENTICATED"


async def test_capability_header_works_like_authorization(gateway: Gateway) -> None:
    await gateway.local.kv.put("s", "cap", "yes")
    r = await gateway.post(
        f"{KV}/Get",
        {"namespace": "s", "key": "cap"},
        token=None,
        headers={CAPABILITY_HEADER: f"Bearer {gateway.token}"},
    )
    assert r.status == 200 and r.json()["entry"]["value"] == {"stringValue": "yes"}


async def test_token_scope_applies_as_on_grpc(gateway: Gateway) -> None:
    token = gateway.issue(namespaces=["kv/scratch*"], ops=["kv.get"])
    r = await gateway.post(f"{KV}/Put", {"namespace": "scratch-1", "key": "k"}, token=token)
    assert r.status == 403 and r.json()["code"] == "PERMISSION_DENIED"
    r2 = await gateway.post(f"{KV}/Get", {"namespace": "other", "key": "k"}, token=token)
    assert r2.status == 403
    async with gateway.remote(token) as remote:
        with pytest.raises(PermissionDeniedError) as info:
            await remote.kv.get("other", "k")
    assert info.value.message == r2.json()["message"]


async def test_policy_applies_identically(gateway: Gateway) -> None:
    r = await gateway.post(f"{KV}/Get", {"namespace": "locked", "key": "k"})
    assert r.status == 403 and r.json()["code"] == "PERMISSION_DENIED"
    assert "locked is closed for the test" in r.json()["message"]
    async with gateway.remote(gateway.token) as remote:
        with pytest.raises(PermissionDeniedError) as info:
            await remote.kv.get("locked", "k")
    assert info.value.message == r.json()["message"]


# --- errors -------------------------------------------------------------------------------


async def test_error_mapping_from_real_calls(gateway: Gateway) -> None:
    await gateway.local.kv.put("errors", "k", "v")
    cases = [
        (f"{KV}/Put", {"namespace": "bad/ns", "key": "k"}, 400, "INVALID_ARGUMENT"),
        (f"{KV}/Get", {"namespace": "errors", "key": "missing"}, 404, "NOT_FOUND"),
        (
            f"{KV}/Put",
            {"namespace": "errors", "key": "k", "value": {"stringValue": "x"}, "ifVersion": "99"},
            409,
            "FAILED_PRECONDITION",
        ),
        (f"{KV}/Get", {"namespace": "locked", "key": "k"}, 403, "PERMISSION_DENIED"),
        (f"{KV}/Get", {"namespace": "limited", "key": "k"}, 404, "NOT_FOUND"),
        (f"{KV}/Get", {"namespace": "limited", "key": "k"}, 429, "RESOURCE_EXHAUSTED"),
    ]
    for path, body, status, code in cases:
        r = await gateway.post(path, body)
        assert (r.status, r.json()["code"]) == (status, code), (path, body, r.body)
        assert r.json()["message"]


def test_status_table() -> None:
    expected = {
        "INVALID_ARGUMENT": 400,
        "UNAUTHENTICATED": 401,
        "PERMISSION_DENIED": 403,
        "NOT_FOUND": 404,
        "FAILED_PRECONDITION": 409,
        "ABORTED": 409,
        "ALREADY_EXISTS": 409,
        "RESOURCE_EXHAUSTED": 429,
        "UNAVAILABLE": 503,
    }
    for code in grpc.StatusCode:
        if code.name in expected:
            assert http_status(code) == expected[code.name], code
        elif code not in HTTP_STATUS:
            assert http_status(code) == 500, code


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{bad", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object with the fields of memsidecar.kv.v1.GetRequest"),
        (b'{"nope": 1}', 'has no field named "nope"'),
        (b'{"namespace": 5}', "does not fit memsidecar.kv.v1.GetRequest"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
async def test_bad_json_is_400_saying_what_is_wrong(
    gateway: Gateway, data: bytes, message: str
) -> None:
    r = await gateway.post(f"{KV}/Get", data=data)
    assert r.status == 400 and r.json()["code"] == "INVALID_ARGUMENT"
    assert message in r.json()["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/memsidecar.kv.v1.KV/Nope",
        "/memsidecar.nope.v1.Nope/Get",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/memsidecar.kv.v1.KV/Get/extra",
    ],
)
async def test_unknown_method_is_404_without_listing_anything(gateway: Gateway, path: str) -> None:
    r = await gateway.post(path, {})
    assert r.status == 404 and r.json()["code"] == "NOT_FOUND"
    assert "KV/Put" not in r.json()["message"] and "Artifact" not in r.json()["message"]


async def test_only_post_is_served(gateway: Gateway) -> None:
    r = await gateway.post(f"{KV}/Get", method="GET")
    assert r.status == 405 and r.headers["Allow"] == "POST"


async def test_unknown_method_needs_no_token_to_be_404(gateway: Gateway) -> None:
    r = await gateway.post("/memsidecar.kv.v1.KV/Nope", {}, token=None)
    assert r.status == 404


async def test_http_listener_without_keys_is_refused() -> None:
    tmp = short_tmpdir()
    config = load_config(
        None,
        {
            "listen.socket": f"{tmp}/m.sock",
            "listen.http": "127.0.0.1:0",
            "blocks.artifact.options": {"root": f"{tmp}/a"},
        },
    )
    with pytest.raises(AuthConfigError, match=r"listen\.http is set but auth\.keys is empty"):
        await build_sidecar(config)


async def test_gateway_address_is_in_the_ready_addresses(gateway: Gateway) -> None:
    host_port = gateway.url.removeprefix("http://")
    assert host_port.startswith("127.0.0.1:") and int(host_port.rpartition(":")[2]) > 0
    async with aiohttp.ClientSession() as s, s.post(gateway.url + "/x/y") as r:
        assert r.status == 404
