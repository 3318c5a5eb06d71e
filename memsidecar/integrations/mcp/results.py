"""The MCP tools' results: the pydantic models whose JSON schema MCP clients see.

Each tool returns one of these, so a model reading a result gets named, described
fields rather than the SDK's objects. The `FromSdk` ones are built from the same-named
attributes of an SDK object; `Scratch.of` also turns a kv entry's bytes into base64 text.
They hold no logic beyond that conversion, which is why they live apart from the tools.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from memsidecar.client.blocks.kv import Entry as SdkEntry


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
