"""The JSON access log of a real in-process sidecar: one line per RPC, never values or tokens."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import grpc
import pytest

from memsidecar.client import AsyncMemSidecar, RetryPolicy
from memsidecar.client.errors import (
    InvalidArgumentError,
    MemSidecarError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from memsidecar.kv.v1 import kv_pb2, kv_pb2_grpc
from memsidecar.sidecar.errors import MemError
from memsidecar.sidecar.policy.loader import load_policy_text
from tests.sidecar.observability.support import access_lines, observed_overrides
from tests.support import running_sidecar, token_auth

DENY_SECRETS = """\
defaultEffect: allow
rules:
  - name: no-secrets
    effect: deny
    match: {namespaces: ["secret*"]}
"""
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def keys_override(tmp: Path) -> tuple[dict[str, object], str]:
    env, token = token_auth(tmp / "keys")
    return {"auth.keys": json.loads(env["MEMSIDECAR_AUTH__KEYS"])}, token


async def test_one_line_per_rpc_with_who_what_and_how(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with running_sidecar(observed_overrides(tmp_path)) as (_, client):
        await client.kv.put("notes", "k", 1)
        assert await client.kv.get("notes", "missing") is None
        with pytest.raises(InvalidArgumentError):
            await client.kv.put("notes", "", 1)
    put, get, bad = access_lines(log)
    assert TIME.match(put["time"])
    assert put == {
        "time": put["time"],
        "event": "rpc",
        "peer": "unix",
        "tenant": "default",
        "agent": "local",
        "identity": "ambient",
        "block": "kv",
        "method": "Put",
        "op": "kv.put",
        "namespace": "notes",
        "code": "OK",
        "duration_ms": put["duration_ms"],
        "request_bytes": put["request_bytes"],
        "response_bytes": put["response_bytes"],
    }
    assert 0 < put["duration_ms"] < 5000
    assert put["request_bytes"] > 0 and put["response_bytes"] > 0
    assert get["code"] == "NOT_FOUND" and get["method"] == "Get"
    assert "key 'missing'" in get["error"]
    assert bad["code"] == "INVALID_ARGUMENT"
    assert bad["error"]


async def test_values_and_tokens_never_appear(tmp_path: Path) -> None:
    secret = f"the-secret-{uuid.uuid4().hex}"
    bogus = f"bogus-{uuid.uuid4().hex}"
    auth, token = keys_override(tmp_path)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    overrides = observed_overrides(tmp_path, **auth, **{"listen.tcp": "127.0.0.1:0"})
    async with running_sidecar(overrides) as (sidecar, _):
        tcp = sidecar.addresses[-1]
        retry = RetryPolicy(max_retries=0)
        async with AsyncMemSidecar(target=tcp, token=token, retry=retry) as client:
            await client.kv.put("notes", "k", secret)
            entry = await client.kv.get("notes", "k")
            assert entry is not None and entry.value == secret
            assert (await client.kv.get_many("notes", ["k"]))["k"].value == secret
            with pytest.raises(InvalidArgumentError):
                await client.kv.put("notes", "", secret)
            with pytest.raises(MemSidecarError):
                await client.kv.put("notes", "k", {"nested": secret}, if_version=99)
        for wrong in (forged, bogus):
            async with AsyncMemSidecar(target=tcp, token=wrong, retry=retry) as client:
                with pytest.raises(UnauthenticatedError):
                    await client.kv.put("notes", "k", secret)
    text = (tmp_path / "access.log").read_text()
    lines = access_lines(tmp_path / "access.log")
    assert len(lines) == 7
    assert lines[0]["peer"] == "tcp"
    assert lines[0]["identity"] == "token"
    assert lines[0]["agent"] == "tool"
    assert [line["code"] for line in lines[-2:]] == ["UNAUTHENTICATED"] * 2
    assert "tenant" not in lines[-1]  # nobody was authenticated
    assert token.startswith("v4.public.")
    for needle in (secret, token, forged, bogus, token[-40:], "v4.public."):
        assert needle not in text


async def test_policy_rule_and_effect_are_logged(tmp_path: Path) -> None:
    async with running_sidecar(observed_overrides(tmp_path)) as (sidecar, client):
        sidecar.policy.replace(load_policy_text(DENY_SECRETS, "test"))
        await client.kv.put("notes", "k", 1)
        with pytest.raises(PermissionDeniedError):
            await client.kv.put("secret-stuff", "k", 1)
    allowed, denied = access_lines(tmp_path / "access.log")
    assert "policy_rule" not in allowed  # the default allowed it
    assert denied["code"] == "PERMISSION_DENIED"
    assert denied["namespace"] == "secret-stuff"
    assert denied["policy_effect"] == "deny"
    assert denied["policy_rule"] == "no-secrets"
    assert "no-secrets" in denied["error"]


async def test_stderr_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_sidecar() as (_, client):  # the default: on, to stderr
        await client.kv.put("notes", "k", 1)
        await client.kv.get("notes", "k")
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith('{"time"')]
    assert [line["method"] for line in lines] == ["Put", "Get"]


async def test_stdout_stream(capsys: pytest.CaptureFixture[str]) -> None:
    async with running_sidecar({"observability.access_log.stream": "stdout"}) as (_, client):
        await client.kv.put("notes", "k", 1)
    out = capsys.readouterr().out
    (line,) = [json.loads(x) for x in out.splitlines() if x.startswith('{"time"')]
    assert line["op"] == "kv.put"


async def test_disabled(tmp_path: Path) -> None:
    overrides = observed_overrides(tmp_path, **{"observability.access_log.enabled": False})
    async with running_sidecar(overrides) as (sidecar, client):
        await client.kv.put("notes", "k", 1)
        assert sidecar.observability is not None
        assert sidecar.observability.access_log is None
    assert not (tmp_path / "access.log").exists()


async def test_unwritable_file_is_a_clear_start_error(tmp_path: Path) -> None:
    where = tmp_path / "missing-dir" / "access.log"
    with pytest.raises(MemError, match="cannot open the access log file"):
        async with running_sidecar({"observability.access_log.stream": str(where)}):
            pass


async def test_streaming_calls_are_logged_with_bytes(tmp_path: Path) -> None:
    async with running_sidecar(observed_overrides(tmp_path)) as (_, client):
        await client.artifact.put("files", b"z" * 3000, id="f1")
        await client.artifact.get("files", "f1")
    put, get = access_lines(tmp_path / "access.log")
    assert (put["op"], put["code"], get["op"], get["code"]) == (
        "artifact.put",
        "OK",
        "artifact.get",
        "OK",
    )
    assert put["namespace"] == "files"
    assert put["request_bytes"] >= 3000
    assert get["response_bytes"] >= 3000


async def test_trace_id_when_tracing(tmp_path: Path) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    overrides = observed_overrides(tmp_path, **{"observability.tracing.exporter": "stdout"})
    async with running_sidecar(overrides) as (_, client):
        stub = kv_pb2_grpc.KVStub(client.transport.channel)
        await stub.Put(
            kv_pb2.PutRequest(namespace="notes", key="k", value=kv_pb2.Value(int_value=1)),
            metadata=(("traceparent", f"00-{trace_id}-b7ad6b7169203331-01"),),
        )
    (line,) = access_lines(tmp_path / "access.log")
    assert line["trace_id"] == trace_id


async def test_gateway_calls_are_logged_as_http(tmp_path: Path) -> None:
    gateway = pytest.importorskip("memsidecar.sidecar.gateway.auth")
    from memsidecar.sidecar.observability.observer import GATEWAY_MARK

    assert gateway.GATEWAY_HEADER == GATEWAY_MARK
    auth, token = keys_override(tmp_path)
    async with running_sidecar(observed_overrides(tmp_path, **auth)) as (_, client):
        stub = kv_pb2_grpc.KVStub(client.transport.channel)
        await stub.Put(
            kv_pb2.PutRequest(namespace="notes", key="k", value=kv_pb2.Value(int_value=1)),
            metadata=((GATEWAY_MARK, "1"), ("x-memsidecar-capability", f"Bearer {token}")),
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Get(
                kv_pb2.GetRequest(namespace="notes", key="k"), metadata=((GATEWAY_MARK, "1"),)
            )
    put, get = access_lines(tmp_path / "access.log")
    assert put["peer"] == get["peer"] == "http"
    assert put["code"] == "OK"
    assert token not in (tmp_path / "access.log").read_text()
