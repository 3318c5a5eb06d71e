"""The MCP server against a real sidecar process, driven by the mcp package's own clients:
stdio (spawning `python -m memsidecar.integrations.mcp`) and streamable HTTP (a server
process on a free loopback port)."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from memsidecar.client import AsyncMemSidecar, RetryPolicy
from memsidecar.sidecar.auth.keys import key_pair_paths, load_private_key
from memsidecar.sidecar.auth.tokens import issue_token
from tests.support import REPO, sidecar_process, token_auth

pytestmark = pytest.mark.integration

TOOLS = {
    "remember",
    "recall",
    "log_event",
    "read_events",
    "get_scratch",
    "set_scratch",
    "store_artifact",
    "fetch_artifact",
    "acquire_lock",
    "release_lock",
}
SERVER = [sys.executable, "-m", "memsidecar.integrations.mcp"]
# Every wait in this module is bounded by this.
DEADLINE = 60.0


@dataclass(frozen=True)
class Sidecar:
    socket: Path
    # A token for everything, and one for the kv block only (same tenant, "default").
    full: str
    kv_only: str


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    keys = tmp_path_factory.mktemp("keys")
    env, full = token_auth(keys, namespaces=("*",), ops=("*",))
    kv_only = issue_token(
        load_private_key(key_pair_paths(keys, "k1").private),
        kid="k1",
        tenant="default",
        agent="kv-only",
        namespaces=["kv/*"],
        ops=["kv.*"],
        ttl=600,
    )
    with sidecar_process(env=env) as proc:
        yield Sidecar(proc.socket, full, kv_only)


def fresh_ns() -> str:
    return f"mcp-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def ambient(sidecar: Sidecar) -> AsyncIterator[AsyncMemSidecar]:
    """A direct SDK client on the socket's ambient identity, to check what really changed."""
    client = AsyncMemSidecar(socket=sidecar.socket, retry=RetryPolicy(max_retries=0))
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def stdio_session(
    sidecar: Sidecar, token: str | None, *args: str, socket: Path | None = None
) -> AsyncIterator[ClientSession]:
    env = {"MEMSIDECAR_SOCKET": str(socket or sidecar.socket)}
    if token is not None:
        env["MEMSIDECAR_TOKEN"] = token
    params = StdioServerParameters(
        command=SERVER[0], args=[*SERVER[1:], *args], env=env, cwd=str(REPO)
    )
    with tempfile.TemporaryFile("w+") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


@contextlib.contextmanager
def http_server(sidecar: Sidecar, *args: str, token: str | None = None) -> Iterator[str]:
    """A streamable HTTP server process on a free loopback port; yields its URL."""
    env = {**os.environ, "MEMSIDECAR_SOCKET": str(sidecar.socket)}
    env.pop("MEMSIDECAR_TOKEN", None)
    if token is not None:
        env["MEMSIDECAR_TOKEN"] = token
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        proc = subprocess.Popen(
            [*SERVER, "--transport", "streamable-http", "--port", "0", *args],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
            cwd=REPO,
        )
        try:
            deadline = time.monotonic() + DEADLINE
            marker = "streamable HTTP on "
            while marker not in (text := Path(log.name).read_text()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the MCP server did not start:\n{text}")
                time.sleep(0.05)
            yield text.split(marker, 1)[1].split()[0]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.asynccontextmanager
async def http_session(url: str, token: str | None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=DEADLINE) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool call that must succeed; its structured result."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert not result.is_error, f"{tool} failed: {text_of(result)}"
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def refused(session: ClientSession, tool: str, **arguments: Any) -> str:
    """A tool call that must come back as a tool error; its message."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert result.is_error, f"{tool} unexpectedly succeeded: {result.structured_content}"
    return text_of(result)


def text_of(result: CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


# ---- stdio -------------------------------------------------------------------------------


async def test_lists_every_tool_with_described_schemas(sidecar: Sidecar) -> None:
    with anyio.fail_after(DEADLINE):
        async with stdio_session(sidecar, sidecar.full) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == TOOLS
    required = {
        "remember": ["content"],
        "recall": ["query"],
        "log_event": ["type"],
        "read_events": [],
        "get_scratch": ["key"],
        "set_scratch": ["key", "value"],
        "store_artifact": ["content"],
        "fetch_artifact": ["id"],
        "acquire_lock": ["key", "ttl_seconds"],
        "release_lock": ["key", "holder_id", "fencing_token"],
    }
    for name, tool in tools.items():
        assert tool.description and len(tool.description) > 60, name
        assert not tool.description.startswith(" ") and "\n    " not in tool.description
        schema = tool.input_schema
        assert schema["type"] == "object"
        assert sorted(schema.get("required", [])) == sorted(required[name]), name
        assert "namespace" in schema["properties"], name
        # No context parameter leaks into the schema, and every argument is explained.
        assert "ctx" not in schema["properties"]
        for prop, spec in schema["properties"].items():
            assert spec.get("description"), f"{name}.{prop} has no description"
        assert tool.output_schema is not None, name
        assert tool.annotations is not None
    assert tools["recall"].annotations and tools["recall"].annotations.read_only_hint
    assert tools["store_artifact"].input_schema["properties"]["encoding"]["enum"] == [
        "text",
        "base64",
    ]


async def test_every_tool_round_trips_through_the_sidecar(sidecar: Sidecar) -> None:
    ns = fresh_ns()
    with anyio.fail_after(DEADLINE):
        async with stdio_session(sidecar, sidecar.full) as s, ambient(sidecar) as m:
            # semantic
            tea = await call(
                s,
                "remember",
                namespace=ns,
                content="Ann prefers green tea",
                tags=["prefs"],
                metadata={"user": "ann", "priority": 3},
            )
            await call(
                s,
                "remember",
                namespace=ns,
                content="Bob drinks espresso",
                tags=["prefs", "coffee"],
                metadata={"user": "bob", "priority": 1},
            )
            assert tea["version"] == 1 and tea["tags"] == ["prefs"]
            found = await call(s, "recall", namespace=ns, query="Ann prefers green tea", top_k=5)
            assert found["hits"][0]["memory"]["id"] == tea["id"]
            assert found["hits"][0]["score"] > 0.99
            bob = await call(s, "recall", namespace=ns, query="tea", where={"user": "bob"})
            assert [h["memory"]["metadata"]["user"] for h in bob["hits"]] == ["bob"]
            ranged = await call(
                s, "recall", namespace=ns, query="x", where={"priority": {"gte": 2}}
            )
            assert [h["memory"]["id"] for h in ranged["hits"]] == [tea["id"]]
            tagged = await call(s, "recall", namespace=ns, query="drinks", tags_all=["coffee"])
            assert [h["memory"]["content"] for h in tagged["hits"]] == ["Bob drinks espresso"]
            close = await call(
                s, "recall", namespace=ns, query="Ann prefers green tea", min_score=0.99
            )
            assert [h["memory"]["id"] for h in close["hits"]] == [tea["id"]]
            replaced = await call(
                s, "remember", namespace=ns, id=tea["id"], content="Ann now prefers oolong"
            )
            assert replaced["version"] == 2
            record = await m.semantic.get(ns, tea["id"])
            assert record is not None and record.content == "Ann now prefers oolong"

            # episodic
            logged = [
                await call(
                    s,
                    "log_event",
                    namespace=ns,
                    type="message",
                    payload={"text": f"hello {i}"},
                    role="user",
                    session_id="s1",
                )
                for i in range(3)
            ]
            await call(s, "log_event", namespace=ns, type="decision", payload="ok", session_id="s2")
            assert logged[0]["cursor"] < logged[1]["cursor"] < logged[2]["cursor"]
            again = await call(
                s, "log_event", namespace=ns, type="x", idempotency_key="k1", session_id="s3"
            )
            dup = await call(
                s, "log_event", namespace=ns, type="x", idempotency_key="k1", session_id="s3"
            )
            assert dup["duplicate"] and dup["cursor"] == again["cursor"]
            s1 = await call(s, "read_events", namespace=ns, session_id="s1")
            assert [e["payload"]["text"] for e in s1["events"]] == ["hello 0", "hello 1", "hello 2"]
            assert s1["next_cursor"] is None
            window = await call(s, "read_events", namespace=ns, session_id="s1", last_n=2)
            assert [e["cursor"] for e in window["events"]] == [e["cursor"] for e in logged[1:]]
            page = await call(s, "read_events", namespace=ns, limit=2)
            assert page["next_cursor"] == logged[1]["cursor"]
            rest = await call(s, "read_events", namespace=ns, after_cursor=page["next_cursor"])
            assert [e["type"] for e in rest["events"]] == ["message", "decision", "x"]
            newest = await call(s, "read_events", namespace=ns, types=["decision"], reverse=True)
            assert [e["session_id"] for e in newest["events"]] == ["s2"]
            assert len([e async for e in m.episodic.range(ns)]) == 5

            # kv
            missing = await call(s, "get_scratch", namespace=ns, key="plan")
            assert missing["found"] is False and missing["value"] is None
            written = await call(
                s, "set_scratch", namespace=ns, key="plan", value={"step": 2}, ttl_seconds=300
            )
            read = await call(s, "get_scratch", namespace=ns, key="plan")
            assert read["value"] == {"step": 2} and read["expires_at"] is not None
            assert read["version"] == written["version"]
            await call(s, "set_scratch", namespace=ns, key="count", value=7, if_version=0)
            conflict = await refused(
                s, "set_scratch", namespace=ns, key="count", value=8, if_version=0
            )
            assert "FAILED_PRECONDITION" in conflict
            entry = await m.kv.get(ns, "count")
            assert entry is not None and entry.value == 7

            # artifact
            text = "# Report\nAll good. ✓\n"
            stored = await call(s, "store_artifact", namespace=ns, id="report.md", content=text)
            assert stored["size"] == len(text.encode()) and stored["content_type"].startswith(
                "text/"
            )
            fetched = await call(s, "fetch_artifact", namespace=ns, id="report.md")
            assert fetched["encoding"] == "text" and fetched["content"] == text
            blob = bytes(range(256))
            await call(
                s,
                "store_artifact",
                namespace=ns,
                id="blob.bin",
                content=base64.b64encode(blob).decode(),
                encoding="base64",
                metadata={"kind": "test"},
            )
            binary = await call(s, "fetch_artifact", namespace=ns, id="blob.bin")
            assert binary["encoding"] == "base64" and binary["metadata"] == {"kind": "test"}
            assert base64.b64decode(binary["content"]) == blob
            part = await call(
                s,
                "fetch_artifact",
                namespace=ns,
                id="blob.bin",
                offset=10,
                length=5,
                encoding="base64",
            )
            assert base64.b64decode(part["content"]) == blob[10:15] and part["size"] == 256
            assert await m.artifact.get(ns, "blob.bin") == blob

            # lease
            lock = await call(s, "acquire_lock", namespace=ns, key="ticket-42", ttl_seconds=30)
            assert lock["fencing_token"] >= 1 and lock["holder_id"]
            busy = await refused(s, "acquire_lock", namespace=ns, key="ticket-42", ttl_seconds=30)
            assert "ABORTED" in busy and "held by" in busy
            held = await m.lease.inspect(ns, "ticket-42")
            assert held is not None and held.holder_id == lock["holder_id"]
            release = {
                "namespace": ns,
                "key": "ticket-42",
                "holder_id": lock["holder_id"],
                "fencing_token": lock["fencing_token"],
            }
            assert (await call(s, "release_lock", **release))["released"] is True
            # Released once: the same holder and token no longer hold it.
            assert "FAILED_PRECONDITION" in await refused(s, "release_lock", **release)
            assert await m.lease.inspect(ns, "ticket-42") is None


async def test_the_default_namespace_is_configurable(sidecar: Sidecar) -> None:
    ns = fresh_ns()
    with anyio.fail_after(DEADLINE):
        async with (
            stdio_session(sidecar, sidecar.full, "--namespace", ns) as s,
            ambient(sidecar) as m,
        ):
            await call(s, "set_scratch", key="k", value="v")
            entry = await m.kv.get(ns, "k")
            assert entry is not None and entry.value == "v"


async def test_a_token_without_the_scope_is_denied_and_nothing_changes(sidecar: Sidecar) -> None:
    ns = fresh_ns()
    with anyio.fail_after(DEADLINE):
        async with stdio_session(sidecar, sidecar.kv_only) as s, ambient(sidecar) as m:
            cases: list[tuple[str, dict[str, Any]]] = [
                ("remember", {"content": "secret plan"}),
                ("recall", {"query": "plan"}),
                ("log_event", {"type": "message", "payload": "hi"}),
                ("read_events", {}),
                ("store_artifact", {"id": "a.txt", "content": "data"}),
                ("fetch_artifact", {"id": "a.txt"}),
                ("acquire_lock", {"key": "k", "ttl_seconds": 30}),
            ]
            for tool, arguments in cases:
                message = await refused(s, tool, namespace=ns, **arguments)
                # The sidecar's own message, naming what the token allows.
                assert "PERMISSION_DENIED" in message and "kv/*" in message, (tool, message)
            # The token's own scope still works: it is the same server and session.
            await call(s, "set_scratch", namespace=ns, key="k", value=1)

            assert await m.semantic.search(ns, "secret plan") == []
            assert [e async for e in m.episodic.range(ns)] == []
            assert await m.artifact.stat(ns, "a.txt") is None
            assert await m.lease.inspect(ns, "k") is None


async def test_errors_are_tool_errors_and_the_server_keeps_serving(sidecar: Sidecar) -> None:
    ns = fresh_ns()
    with anyio.fail_after(DEADLINE):
        async with (
            stdio_session(sidecar, sidecar.full, "--max-artifact-bytes", "16") as s,
            ambient(sidecar) as m,
        ):
            bad = await refused(s, "get_scratch", namespace="no/slash", key="k")
            assert "INVALID_ARGUMENT" in bad and "namespace" in bad
            missing = await refused(s, "fetch_artifact", namespace=ns, id="nope")
            assert "NOT_FOUND" in missing
            big = await refused(s, "store_artifact", namespace=ns, id="big", content="x" * 17)
            assert "RESOURCE_EXHAUSTED" in big and "16-byte" in big
            big64 = base64.b64encode(b"y" * 64).decode()
            too = await refused(
                s, "store_artifact", namespace=ns, id="big", content=big64, encoding="base64"
            )
            assert "RESOURCE_EXHAUSTED" in too
            assert await m.artifact.stat(ns, "big") is None
            junk = await refused(
                s, "store_artifact", namespace=ns, id="j", content="not base64!", encoding="base64"
            )
            assert "INVALID_ARGUMENT" in junk and "base64" in junk
            # An artifact stored around the limit can still be read in parts.
            await m.artifact.put(ns, b"z" * 40, id="large")
            whole = await refused(s, "fetch_artifact", namespace=ns, id="large")
            assert "RESOURCE_EXHAUSTED" in whole and "offset and length" in whole
            part = await call(s, "fetch_artifact", namespace=ns, id="large", offset=30, length=16)
            assert part["content"] == "z" * 10 and part["length"] == 10
            await m.artifact.put(ns, b"\xff\xfe", id="bin")
            not_text = await refused(s, "fetch_artifact", namespace=ns, id="bin", encoding="text")
            assert "base64" in not_text
            window = await refused(s, "read_events", namespace=ns, last_n=3)
            assert "session_id" in window
            schema = await refused(s, "acquire_lock", namespace=ns, key="k", ttl_seconds=-1)
            assert "ttl_seconds" in schema
            # Still serving after all of that.
            assert {t.name for t in (await s.list_tools()).tools} == TOOLS
            await call(s, "set_scratch", namespace=ns, key="alive", value=True)


async def test_a_sidecar_that_is_down_is_a_tool_error(sidecar: Sidecar, tmp_path: Path) -> None:
    with anyio.fail_after(DEADLINE):
        async with stdio_session(sidecar, None, socket=tmp_path / "absent.sock") as s:
            message = await refused(s, "get_scratch", key="k")
            assert "UNAVAILABLE" in message


# ---- streamable HTTP ---------------------------------------------------------------------


async def test_http_acts_with_each_clients_own_token(sidecar: Sidecar) -> None:
    ns = fresh_ns()
    with http_server(sidecar) as url, anyio.fail_after(DEADLINE):
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
        async with ambient(sidecar) as m:
            async with http_session(url, sidecar.full) as s:
                assert {t.name for t in (await s.list_tools()).tools} == TOOLS
                memory = await call(s, "remember", namespace=ns, content="shared fact")
                hits = await call(s, "recall", namespace=ns, query="shared fact")
                assert hits["hits"][0]["memory"]["id"] == memory["id"]
            async with http_session(url, sidecar.kv_only) as s:
                denied = await refused(s, "remember", namespace=ns, content="kv token write")
                assert "PERMISSION_DENIED" in denied and "kv-only" in denied
                await call(s, "set_scratch", namespace=ns, key="k", value="from kv token")
            [hit] = await m.semantic.search(ns, "kv token write", top_k=10)
            assert hit.record.id == memory["id"]
            entry = await m.kv.get(ns, "k")
            assert entry is not None and entry.value == "from kv token"

        # Without a bearer (or with another scheme) the request never reaches a tool.
        async with httpx2.AsyncClient(timeout=DEADLINE) as http:
            body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
            accept = {"Accept": "application/json, text/event-stream"}
            anonymous = await http.post(url, json=body, headers=accept)
            assert anonymous.status_code == 401
            assert "Authorization: Bearer" in anonymous.json()["error_description"]
            basic = await http.post(
                url, json=body, headers={**accept, "Authorization": "Basic dTpw"}
            )
            assert basic.status_code == 401


async def test_http_anonymous_requests_use_the_servers_identity(sidecar: Sidecar) -> None:
    ns = fresh_ns()
    with (
        http_server(sidecar, "--allow-anonymous", token=sidecar.kv_only) as url,
        anyio.fail_after(DEADLINE),
    ):
        async with ambient(sidecar) as m:
            async with http_session(url, None) as s:
                denied = await refused(s, "log_event", namespace=ns, type="message")
                assert "PERMISSION_DENIED" in denied
                await call(s, "set_scratch", namespace=ns, key="k", value=1)
            # A client's own token replaces the server's (it is never added to it).
            async with http_session(url, sidecar.full) as s:
                await call(s, "log_event", namespace=ns, type="message")
            assert [e.type async for e in m.episodic.range(ns)] == ["message"]


def test_memsidecar_mcp_subcommand_runs_the_server() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "memsidecar.cli.main", "mcp", "--help"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        cwd=REPO,
        check=True,
    ).stdout
    assert "Usage: memsidecar mcp" in out and "--transport" in out and "--allow-anonymous" in out
