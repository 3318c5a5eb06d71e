"""The MCP server: the sidecar's memory blocks as MCP tools, over stdio or streamable HTTP.

Every tool is one or two SDK calls. Scope and policy are the sidecar's: the server
sends a capability token with each call (its own, or over HTTP the one the MCP
client presented), so the sidecar's call pipeline decides what a caller may do and
this module keeps no rules of its own. Sidecar errors become MCP tool errors
carrying the sidecar's status and message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import functools
import inspect
import ipaddress
import logging
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec, Self, TypeVar

import anyio
import click
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from memsidecar.client import AsyncMemSidecar, MemSidecarError
from memsidecar.client.blocks.artifact import AsyncArtifact
from memsidecar.client.blocks.episodic import AsyncEpisodic
from memsidecar.client.blocks.kv import AsyncKV
from memsidecar.client.blocks.kv import Entry as SdkEntry
from memsidecar.client.blocks.lease import AsyncLease
from memsidecar.client.blocks.semantic import AsyncSemantic
from memsidecar.client.transport import Transport

log = logging.getLogger("memsidecar.mcp")

DEFAULT_NAMESPACE = "default"
# Tool results land in a model's context window: 1 MiB is already a lot of it.
DEFAULT_MAX_ARTIFACT_BYTES = 1024 * 1024
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_PATH = "/mcp"
# How long start-up waits to see the sidecar before serving anyway (with a warning).
CONNECT_CHECK_SECONDS = 3.0

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    # The namespace a tool uses when the caller names none.
    namespace: str = DEFAULT_NAMESPACE
    # Largest artifact content store_artifact accepts and fetch_artifact returns, in bytes.
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value (None when absent)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ValueError("the Authorization header must be 'Bearer <memsidecar capability token>'")
    return token.strip()


def _sidecar_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Report a refused call as a tool error with the sidecar's status and message.

    Without this the MCP SDK would treat it as a crash and hide the message, and the
    model could not tell a missing key from a missing permission.
    """

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except MemSidecarError as exc:
            raise ToolError(str(exc)) from exc
        except ValueError as exc:  # bad input caught on this side (SDK filters, base64, UTF-8)
            raise ToolError(f"INVALID_ARGUMENT: {exc}") from exc

    return call


# ---- results -----------------------------------------------------------------------------


class FromSdk(BaseModel):
    """A tool result whose fields are the same-named attributes of an SDK object."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, obj: object) -> Self:
        return cls.model_validate(obj)


class Memory(FromSdk):
    id: str = Field(description="Pass to remember as id to replace this memory")
    content: str
    tags: list[str]
    metadata: dict[str, Any]
    category: str
    importance: float
    version: int = Field(description="Increases with every replacement")
    updated_at: datetime | None
    expires_at: datetime | None


class Recalled(BaseModel):
    score: float = Field(description="Cosine similarity in [-1, 1]; higher is closer")
    memory: Memory


class RecallResult(BaseModel):
    namespace: str
    hits: list[Recalled] = Field(description="Closest first")


class Event(FromSdk):
    cursor: int = Field(description="Strictly increasing position in the namespace's log")
    id: str
    time: datetime
    type: str
    role: str
    session_id: str
    payload: Any
    metadata: dict[str, Any]
    duplicate: bool = Field(
        description="True when the idempotency key was already used: nothing new was logged"
    )


class Events(BaseModel):
    namespace: str
    events: list[Event]
    next_cursor: int | None = Field(
        description="When the page was full: pass as after_cursor (before_cursor when reverse) "
        "to read on; null when there is nothing more"
    )


class Scratch(BaseModel):
    namespace: str
    key: str
    found: bool
    value: Any = Field(
        description="The stored JSON value (bytes written by other clients come back as "
        "base64 text); null when not found"
    )
    version: int | None = Field(description="Pass as if_version to set_scratch for compare-and-set")
    expires_at: datetime | None

    @classmethod
    def of(cls, namespace: str, key: str, e: SdkEntry | None) -> Scratch:
        if e is None:
            return cls(
                namespace=namespace, key=key, found=False, value=None, version=None, expires_at=None
            )
        value = base64.b64encode(e.value).decode() if isinstance(e.value, bytes) else e.value
        return cls(
            namespace=namespace,
            key=key,
            found=True,
            value=value,
            version=e.version,
            expires_at=e.expires_at,
        )


class StoredArtifact(FromSdk):
    namespace: str
    id: str
    size: int = Field(description="Bytes")
    sha256: str
    content_type: str
    metadata: dict[str, Any]
    created_at: datetime | None


class FetchedArtifact(StoredArtifact):
    offset: int = Field(description="Where the returned bytes start")
    length: int = Field(description="How many bytes were returned")
    encoding: Literal["text", "base64"]
    content: str


class Lock(FromSdk):
    namespace: str
    key: str
    holder_id: str = Field(description="Pass to release_lock (and to acquire_lock to extend)")
    fencing_token: int = Field(
        description="Strictly increases with every acquisition of the key; pass to release_lock "
        "and with writes to storage that rejects stale holders"
    )
    acquired_at: datetime | None
    expires_at: datetime | None


class Released(BaseModel):
    namespace: str
    key: str
    released: bool


# ---- arguments ---------------------------------------------------------------------------

Namespace = Annotated[
    str | None,
    Field(
        description="Memory namespace (1-128 letters, digits, '.', '_', '-'); "
        "omit to use the server's default namespace"
    ),
]
JsonObject = Annotated[
    dict[str, Any] | None, Field(description="Arbitrary JSON object stored alongside")
]
TtlSeconds = Annotated[
    float | None, Field(gt=0, description="Forget it after this many seconds; omit to keep it")
]


class MemoryTools:
    """The tools, bound to one sidecar client and the server's settings."""

    def __init__(self, client: AsyncMemSidecar, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    def _transport(self, ctx: Context) -> Transport:
        """The client's channel with the caller's capability: over HTTP, the token the MCP
        client sent as a bearer; otherwise (stdio, or HTTP without one when allowed) the
        server's own."""
        token = bearer_token(ctx.headers.get("authorization")) if ctx.headers else None
        base = self._client.transport
        return base if token is None else dataclasses.replace(base, token=token)

    def _ns(self, namespace: str | None) -> str:
        return namespace or self._settings.namespace

    def register(self, server: MCPServer[Any]) -> None:
        read = ToolAnnotations(read_only_hint=True, open_world_hint=False)
        write = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
        replace = ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
        )
        tools: dict[Callable[..., Awaitable[BaseModel]], ToolAnnotations] = {
            self.remember: replace,
            self.recall: read,
            self.log_event: write,
            self.read_events: read,
            self.get_scratch: read,
            self.set_scratch: replace,
            self.store_artifact: replace,
            self.fetch_artifact: read,
            self.acquire_lock: write,
            self.release_lock: write,
        }
        for tool, hints in tools.items():
            # Dedented: the docstring is what the model reads.
            description = inspect.cleandoc(tool.__doc__ or "")
            server.add_tool(tool, description=description, annotations=hints)

    # -- semantic ------------------------------------------------------------------------

    @_sidecar_errors
    async def remember(
        self,
        ctx: Context,
        content: Annotated[
            str, Field(min_length=1, description="The fact, note or preference to remember")
        ],
        tags: Annotated[
            Sequence[str],
            Field(description="Labels to filter recall by, e.g. ['user', 'billing']"),
        ] = (),
        metadata: JsonObject = None,
        category: Annotated[str, Field(description="One optional category label")] = "",
        importance: Annotated[
            float, Field(description="How much it matters, by your own scale (e.g. 0 to 1)")
        ] = 0.0,
        id: Annotated[
            str | None,
            Field(description="Replace the memory with this id (its old version is kept)"),
        ] = None,
        ttl_seconds: TtlSeconds = None,
        namespace: Namespace = None,
    ) -> Memory:
        """Store a fact, note or preference in long-term semantic memory, for recall by meaning.

        The content is embedded by the memory sidecar, so later `recall` calls find it with
        differently worded questions. Without `id` a new memory is created and its id is
        returned; with the id of an existing memory, that memory is replaced.
        """
        semantic = AsyncSemantic(self._transport(ctx))
        record = await semantic.upsert(
            self._ns(namespace),
            content,
            id=id,
            metadata=metadata,
            tags=tags,
            category=category,
            importance=importance,
            ttl=ttl_seconds,
        )
        return Memory.of(record)

    @_sidecar_errors
    async def recall(
        self,
        ctx: Context,
        query: Annotated[
            str, Field(min_length=1, description="What to look for, as a question or phrase")
        ],
        top_k: Annotated[int, Field(ge=1, description="How many memories at most")] = 5,
        tags_any: Annotated[
            Sequence[str], Field(description="Only memories with at least one of these tags")
        ] = (),
        tags_all: Annotated[
            Sequence[str], Field(description="Only memories with every one of these tags")
        ] = (),
        where: Annotated[
            dict[str, Any] | None,
            Field(
                description="Metadata filter; every condition must hold. A plain value means "
                'equals; an object applies operators eq, ne, gt, gte, lt, lte, in: {"user": '
                '"ann", "priority": {"gte": 3}, "kind": {"in": ["a", "b"]}}. Dots reach '
                'nested fields: "profile.city"'
            ),
        ] = None,
        category: Annotated[str, Field(description="Only memories with this category")] = "",
        min_score: Annotated[
            float | None,
            Field(ge=-1, le=1, description="Drop matches scoring below this (cosine, -1 to 1)"),
        ] = None,
        namespace: Namespace = None,
    ) -> RecallResult:
        """Search long-term semantic memory by meaning: the memories closest to `query`.

        Filters (tags, metadata `where`, category) narrow the candidates before ranking,
        so a filtered search still returns up to `top_k` results when that many match.
        """
        ns = self._ns(namespace)
        hits = await AsyncSemantic(self._transport(ctx)).search(
            ns,
            query,
            top_k=top_k,
            where=where,
            tags_any=tags_any,
            tags_all=tags_all,
            category=category,
            min_score=min_score,
        )
        return RecallResult(
            namespace=ns, hits=[Recalled(score=h.score, memory=Memory.of(h.record)) for h in hits]
        )

    # -- episodic ------------------------------------------------------------------------

    @_sidecar_errors
    async def log_event(
        self,
        ctx: Context,
        type: Annotated[
            str,
            Field(
                min_length=1, description="What happened, e.g. 'message', 'tool_call', 'decision'"
            ),
        ],
        payload: Annotated[Any, Field(description="Any JSON value describing the event")] = None,
        session_id: Annotated[
            str, Field(description="Groups events of one conversation or task run")
        ] = "",
        role: Annotated[str, Field(description="Who acted, e.g. 'user', 'assistant', 'tool'")] = "",
        metadata: JsonObject = None,
        idempotency_key: Annotated[
            str | None,
            Field(description="Logging twice with the same key stores the event once"),
        ] = None,
        namespace: Namespace = None,
    ) -> Event:
        """Append an event to the episodic log (an append-only history of what happened).

        Returns the stored event with its `cursor`, its position in the namespace's log.
        """
        event = await AsyncEpisodic(self._transport(ctx)).append(
            self._ns(namespace),
            type,
            payload,
            role=role,
            session_id=session_id,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )
        return Event.of(event)

    @_sidecar_errors
    async def read_events(
        self,
        ctx: Context,
        session_id: Annotated[str, Field(description="Only events of this session")] = "",
        last_n: Annotated[
            int | None,
            Field(
                ge=1,
                description="Return the last N events of session_id, oldest first (needs "
                "session_id; the cursor, types and reverse filters do not apply)",
            ),
        ] = None,
        after_cursor: Annotated[
            int, Field(ge=0, description="Only events after this cursor (exclusive)")
        ] = 0,
        before_cursor: Annotated[
            int, Field(ge=0, description="Only events before this cursor (exclusive); 0 = no bound")
        ] = 0,
        types: Annotated[Sequence[str], Field(description="Only events of these types")] = (),
        reverse: Annotated[bool, Field(description="Newest first")] = False,
        limit: Annotated[int, Field(ge=1, description="Page size")] = 50,
        namespace: Namespace = None,
    ) -> Events:
        """Read the episodic log: a page of events oldest first (newest first with reverse),
        filtered by session, cursor range and type; or, with last_n, a session's latest
        events. Page on with the returned next_cursor."""
        ns = self._ns(namespace)
        episodic = AsyncEpisodic(self._transport(ctx))
        if last_n is not None:
            if not session_id or after_cursor or before_cursor or types or reverse:
                raise ToolError(
                    "INVALID_ARGUMENT: last_n reads the latest events of one session: give "
                    "session_id, and no after_cursor, before_cursor, types or reverse"
                )
            window = await episodic.window(ns, session_id, last_n)
            return Events(namespace=ns, events=[Event.of(e) for e in window], next_cursor=None)
        events = [
            Event.of(e)
            async for e in episodic.range(
                ns,
                after_cursor=after_cursor,
                before_cursor=before_cursor,
                session_id=session_id,
                types=types,
                reverse=reverse,
                limit=limit,
            )
        ]
        full = len(events) == limit
        return Events(namespace=ns, events=events, next_cursor=events[-1].cursor if full else None)

    # -- kv ------------------------------------------------------------------------------

    @_sidecar_errors
    async def get_scratch(
        self,
        ctx: Context,
        key: Annotated[str, Field(min_length=1, description="The key to read")],
        namespace: Namespace = None,
    ) -> Scratch:
        """Read a value from scratch key-value memory (working state, counters, flags).

        A missing or expired key is not an error: the result has found=false.
        """
        ns = self._ns(namespace)
        return Scratch.of(ns, key, await AsyncKV(self._transport(ctx)).get(ns, key))

    @_sidecar_errors
    async def set_scratch(
        self,
        ctx: Context,
        key: Annotated[str, Field(min_length=1, description="The key to write")],
        value: Annotated[
            Any, Field(description="Any JSON value: string, number, boolean, object, array, null")
        ],
        ttl_seconds: TtlSeconds = None,
        if_version: Annotated[
            int | None,
            Field(
                ge=0,
                description="Write only if the key is at this version (from get_scratch); "
                "0 = only if the key does not exist yet",
            ),
        ] = None,
        namespace: Namespace = None,
    ) -> Scratch:
        """Write a value to scratch key-value memory, replacing what the key held.

        Use ttl_seconds for state that should disappear on its own, and if_version for a
        compare-and-set that fails instead of overwriting someone else's update.
        """
        ns = self._ns(namespace)
        entry = await AsyncKV(self._transport(ctx)).put(
            ns, key, value, ttl=ttl_seconds, if_version=if_version
        )
        return Scratch.of(ns, key, entry)

    # -- artifact ------------------------------------------------------------------------

    @_sidecar_errors
    async def store_artifact(
        self,
        ctx: Context,
        content: Annotated[
            str, Field(description="The content: plain text, or base64 when encoding is base64")
        ],
        encoding: Annotated[
            Literal["text", "base64"],
            Field(description="'text' stores the UTF-8 text; 'base64' stores the decoded bytes"),
        ] = "text",
        id: Annotated[
            str | None,
            Field(
                description="Artifact id (any name, e.g. 'report.md'); an existing one is "
                "replaced. Omit to get a new id"
            ),
        ] = None,
        content_type: Annotated[
            str | None,
            Field(
                description="MIME type; default text/plain for text, "
                "application/octet-stream for base64"
            ),
        ] = None,
        metadata: JsonObject = None,
        namespace: Namespace = None,
    ) -> StoredArtifact:
        """Store a document or file (report, code, image, data) as an artifact, by id.

        Returns its id, size and sha256. Content larger than this server's limit is refused.
        """
        limit = self._settings.max_artifact_bytes
        if encoding == "text":
            data = content.encode()
            default_type = "text/plain; charset=utf-8"
        else:
            # Refuse oversized input before decoding it (4 base64 characters per 3 bytes).
            if len(content) > (limit + 2) // 3 * 4 + 4:
                raise ToolError(self._too_large(len(content) * 3 // 4))
            try:
                data = base64.b64decode(content, validate=True)
            except binascii.Error as exc:
                raise ToolError(f"INVALID_ARGUMENT: content is not valid base64 ({exc})") from exc
            default_type = "application/octet-stream"
        if len(data) > limit:
            raise ToolError(self._too_large(len(data)))
        info = await AsyncArtifact(self._transport(ctx)).put(
            self._ns(namespace),
            data,
            id=id,
            content_type=content_type or default_type,
            metadata=metadata,
        )
        return StoredArtifact.of(info)

    def _too_large(self, size: int) -> str:
        return (
            f"RESOURCE_EXHAUSTED: about {size} bytes is more than this MCP server's "
            f"{self._settings.max_artifact_bytes}-byte artifact limit (--max-artifact-bytes); "
            "split the content or read it in parts with offset and length"
        )

    @_sidecar_errors
    async def fetch_artifact(
        self,
        ctx: Context,
        id: Annotated[str, Field(min_length=1, description="The artifact id")],
        offset: Annotated[int, Field(ge=0, description="First byte to return")] = 0,
        length: Annotated[int, Field(ge=0, description="Bytes to return; 0 = to the end")] = 0,
        encoding: Annotated[
            Literal["auto", "text", "base64"],
            Field(description="'auto': text when the bytes are valid UTF-8, base64 otherwise"),
        ] = "auto",
        namespace: Namespace = None,
    ) -> FetchedArtifact:
        """Fetch a stored artifact's content (or the byte range offset/length of it) with its
        size, type and sha256. Ranges longer than this server's limit are refused: read a
        large artifact in parts."""
        ns = self._ns(namespace)
        artifacts = AsyncArtifact(self._transport(ctx))
        info = await artifacts.stat(ns, id)
        if info is None:
            raise ToolError(f"NOT_FOUND: no artifact {id!r} in namespace {ns!r}")
        available = max(info.size - offset, 0)
        wanted = available if length == 0 else min(length, available)
        if wanted > self._settings.max_artifact_bytes:
            raise ToolError(self._too_large(wanted))
        # An explicit length bounds the read even if the artifact grew since the stat.
        data = await artifacts.get(ns, id, offset=offset, length=wanted) if wanted else b""
        text: str | None = None
        if encoding != "base64":
            try:
                text = data.decode()
            except UnicodeDecodeError:
                if encoding == "text":
                    raise ValueError(
                        "the content is not valid UTF-8 text; fetch it with encoding 'base64'"
                    ) from None
        return FetchedArtifact(
            **StoredArtifact.of(info).model_dump(),
            offset=offset,
            length=len(data),
            encoding="base64" if text is None else "text",
            content=base64.b64encode(data).decode() if text is None else text,
        )

    # -- lease ---------------------------------------------------------------------------

    @_sidecar_errors
    async def acquire_lock(
        self,
        ctx: Context,
        key: Annotated[str, Field(min_length=1, description="What to lock, e.g. 'ticket-42'")],
        ttl_seconds: Annotated[
            float, Field(gt=0, description="The lock expires on its own after this many seconds")
        ],
        wait_seconds: Annotated[
            float, Field(ge=0, description="Wait up to this long while someone else holds it")
        ] = 0,
        holder_id: Annotated[
            str | None,
            Field(
                description="Who holds it; omit for a new holder id. Acquiring again with "
                "the holder_id you hold it with extends it (with a new fencing token)"
            ),
        ] = None,
        namespace: Namespace = None,
    ) -> Lock:
        """Take an exclusive lock (a lease with a time-to-live) so only one agent works on
        something at a time.

        Fails when another holder has it (after wait_seconds). Keep the returned holder_id
        and fencing_token: release_lock needs both.
        """
        lease = await AsyncLease(self._transport(ctx)).acquire(
            self._ns(namespace),
            key,
            ttl=ttl_seconds,
            wait_for=wait_seconds or None,
            holder_id=holder_id or f"mcp-{uuid.uuid4().hex[:16]}",
        )
        return Lock.of(lease)

    @_sidecar_errors
    async def release_lock(
        self,
        ctx: Context,
        key: Annotated[str, Field(min_length=1, description="The locked key")],
        holder_id: Annotated[str, Field(min_length=1, description="From acquire_lock")],
        fencing_token: Annotated[int, Field(ge=1, description="From acquire_lock")],
        namespace: Namespace = None,
    ) -> Released:
        """Release a lock taken with acquire_lock.

        Fails when the lock is no longer yours (it expired, or was taken over): then work
        done under it may have overlapped with another holder's.
        """
        ns = self._ns(namespace)
        released = await AsyncLease(self._transport(ctx)).release(
            ns, key, fencing_token, holder_id=holder_id
        )
        return Released(namespace=ns, key=key, released=released)


def instructions(settings: Settings) -> str:
    return (
        "Memory for this agent, kept by a memsidecar: remember/recall (long-term semantic "
        "memory searched by meaning), log_event/read_events (an append-only history), "
        "get_scratch/set_scratch (working key-value state, optionally expiring), "
        "store_artifact/fetch_artifact (documents and files), acquire_lock/release_lock "
        "(exclusive locks with fencing tokens). Every tool takes an optional namespace; "
        f"the default is {settings.namespace!r}. A refused call returns an error with the "
        "sidecar's reason (e.g. PERMISSION_DENIED names what the caller's token allows)."
    )


def build_server(client: AsyncMemSidecar, settings: Settings | None = None) -> MCPServer[Any]:
    """An MCP server whose tools act on the sidecar behind `client`."""
    settings = settings or Settings()
    server: MCPServer[Any] = MCPServer(
        "memsidecar",
        title="memsidecar memory",
        instructions=instructions(settings),
    )
    MemoryTools(client, settings).register(server)
    return server


# ---- HTTP --------------------------------------------------------------------------------


class BearerGate:
    """ASGI middleware in front of the streamable HTTP app.

    Refuses (401) a malformed Authorization header and, unless anonymous callers are
    allowed, a request without a bearer token. It does not judge the token: the sidecar
    verifies it on every tool call.
    """

    def __init__(self, app: ASGIApp, allow_anonymous: bool) -> None:
        self.app = app
        self.allow_anonymous = allow_anonymous

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem: str | None = None
            try:
                token = bearer_token(Headers(scope=scope).get("authorization"))
            except ValueError as exc:
                problem = str(exc)
            else:
                if token is None and not self.allow_anonymous:
                    problem = (
                        "this MCP server acts with each client's own memsidecar capability "
                        "token: send it as 'Authorization: Bearer <token>'"
                    )
            if problem is not None:
                response = JSONResponse(
                    {"error": "invalid_token", "error_description": problem},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="memsidecar"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen_socket(host: str, port: int) -> socket.socket:
    """Bind before serving, so the real port is known (and printed) even for port 0."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class HttpOptions:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    path: str = DEFAULT_PATH
    # Let requests without a bearer act with the server's own identity.
    allow_anonymous: bool = False


@contextlib.asynccontextmanager
async def connected(
    socket_path: Path | None, target: str | None, token: str | None
) -> AsyncIterator[AsyncMemSidecar]:
    """The sidecar client (created on the running loop, as grpc.aio requires)."""
    client = AsyncMemSidecar(socket=socket_path, target=target, token=token)
    try:
        try:
            await client.wait_ready(CONNECT_CHECK_SECONDS)
        except TimeoutError:
            log.warning(
                "the sidecar at %s is not reachable yet; tool calls fail with UNAVAILABLE "
                "until it is",
                client.target,
            )
        yield client
    finally:
        await client.close()


async def serve_stdio(client: AsyncMemSidecar, settings: Settings) -> None:
    await build_server(client, settings).run_stdio_async()


async def serve_http(client: AsyncMemSidecar, settings: Settings, http: HttpOptions) -> None:
    import uvicorn

    server = build_server(client, settings)
    app = server.streamable_http_app(
        streamable_http_path=http.path,
        host=http.host,
        # Room for a base64 artifact at the size limit plus the JSON-RPC envelope.
        max_request_body_size=max(
            DEFAULT_MAX_REQUEST_BODY_SIZE, settings.max_artifact_bytes * 4 // 3 + 64 * 1024
        ),
    )
    sock = listen_socket(http.host, http.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"memsidecar mcp: streamable HTTP on http://{shown}:{port}{http.path} "
        f"(sidecar {client.target}; "
        f"{'anonymous requests allowed' if http.allow_anonymous else 'bearer token required'})",
        err=True,
    )
    config = uvicorn.Config(
        BearerGate(app, http.allow_anonymous), log_level="warning", lifespan="on"
    )
    with sock:
        await uvicorn.Server(config).serve(sockets=[sock])


# ---- command line ------------------------------------------------------------------------


@click.command("mcp")
@click.option(
    "--transport",
    type=click.Choice(["stdio", "streamable-http"]),
    default="stdio",
    show_default=True,
    help="stdio for a desktop client that spawns the server; streamable-http to serve a URL",
)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="HTTP bind address")
@click.option("--port", default=DEFAULT_PORT, show_default=True, help="HTTP port (0: any free)")
@click.option("--path", default=DEFAULT_PATH, show_default=True, help="HTTP endpoint path")
@click.option(
    "--allow-anonymous",
    is_flag=True,
    help="HTTP: let requests without 'Authorization: Bearer <token>' act with the server's "
    "own identity instead of refusing them",
)
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path),
    help="the sidecar's Unix socket (default: MEMSIDECAR_SOCKET, else the default path)",
)
@click.option("--target", help="the sidecar as host:port instead of a socket (MEMSIDECAR_TARGET)")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="file holding the server's own capability token (default: MEMSIDECAR_TOKEN; none: "
    "the socket's ambient identity)",
)
@click.option(
    "--namespace",
    envvar="MEMSIDECAR_MCP_NAMESPACE",
    default=DEFAULT_NAMESPACE,
    show_default=True,
    help="namespace a tool uses when the caller names none (MEMSIDECAR_MCP_NAMESPACE)",
)
@click.option(
    "--max-artifact-bytes",
    envvar="MEMSIDECAR_MCP_MAX_ARTIFACT_BYTES",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_ARTIFACT_BYTES,
    show_default=True,
    help="largest artifact content a tool call stores or returns",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="WARNING",
    show_default=True,
)
def command(
    transport: str,
    host: str,
    port: int,
    path: str,
    allow_anonymous: bool,
    socket_path: Path | None,
    target: str | None,
    token_file: Path | None,
    namespace: str,
    max_artifact_bytes: int,
    log_level: str,
) -> None:
    """Serve the sidecar's memory to MCP clients as tools (docs/integrations/mcp.md)."""
    # Logs go to stderr: on stdio, stdout carries the protocol.
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if socket_path is not None and target is not None:
        raise click.UsageError("pass either --socket or --target, not both")
    if not path.startswith("/"):
        raise click.UsageError("--path must start with '/'")
    token = token_file.read_text().strip() if token_file is not None else None
    settings = Settings(namespace=namespace, max_artifact_bytes=max_artifact_bytes)
    http = HttpOptions(host=host, port=port, path=path, allow_anonymous=allow_anonymous)
    if transport == "streamable-http" and allow_anonymous and not is_loopback(host):
        log.warning(
            "--allow-anonymous on %s: anyone who reaches this address acts with the "
            "server's own identity",
            host,
        )

    async def run() -> None:
        async with connected(socket_path, target, token) as client:
            if transport == "stdio":
                await serve_stdio(client, settings)
            else:
                await serve_http(client, settings, http)

    try:
        anyio.run(run)
    except OSError as exc:
        raise click.ClickException(f"cannot serve: {exc}") from exc
    except KeyboardInterrupt:
        pass


__all__ = [
    "BearerGate",
    "HttpOptions",
    "MemoryTools",
    "Settings",
    "bearer_token",
    "build_server",
    "command",
]
