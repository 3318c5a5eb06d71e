"""The ten MCP tools (`MemoryTools`), with the settings they read and their error mapping.

Every tool is one or two SDK calls on the caller's transport: over HTTP it carries the
bearer token the MCP client presented, so the sidecar decides what each caller may do.
`_sidecar_errors` turns a refused call into an MCP tool error with the sidecar's status
and message. The tools' docstrings and argument descriptions are what the model reads;
their results are the models in `results.py`; `server.build_server` registers them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import inspect
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from memsidecar.client import AsyncMemSidecar, MemSidecarError
from memsidecar.client.blocks.artifact import AsyncArtifact
from memsidecar.client.blocks.episodic import AsyncEpisodic
from memsidecar.client.blocks.kv import AsyncKV
from memsidecar.client.blocks.lease import AsyncLease
from memsidecar.client.blocks.semantic import AsyncSemantic
from memsidecar.client.transport import Transport
from memsidecar.integrations.mcp.http import bearer_token
from memsidecar.integrations.mcp.results import (
    Event,
    Events,
    FetchedArtifact,
    Lock,
    Memory,
    Recalled,
    RecallResult,
    Released,
    Scratch,
    StoredArtifact,
)

DEFAULT_NAMESPACE = "default"
# Tool results land in a model's context window: 1 MiB is already a lot of it.
DEFAULT_MAX_ARTIFACT_BYTES = 1024 * 1024

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    # The namespace a tool uses when the caller names none.
    namespace: str = DEFAULT_NAMESPACE
    # Largest artifact content store_artifact accepts and fetch_artifact returns, in bytes.
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES


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
