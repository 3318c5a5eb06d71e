"""The kv layout of `MemSidecarSaver`: key names, value framing, and what a config names.

Storage layout, in one kv namespace (default ``langgraph``); ``{t}``, ``{ns}``,
``{ch}``, ``{ver}``, ``{id}`` and ``{task}`` are percent-encoded so none contains
``/``, which keeps every prefix scan exact:

- ``c/{t}/{ns}/{inv(id)}`` — a checkpoint without its channel values, its metadata
  and its parent id. ``inv`` hex-encodes the bytes of the id complemented and ends
  with ``~``, so a forward scan of ``c/{t}/{ns}/`` returns the newest checkpoint
  first (ids are monotonic uuid6) and ``start_after`` an id's key lists the older ones.
- ``b/{t}/{ns}/{ch}/{ver}`` — one channel value at one version, shared by every
  checkpoint whose ``channel_versions`` names it (as in langgraph-checkpoint-postgres).
- ``w/{t}/{ns}/{id}/{task}/{idx}`` — one pending write of a task against a checkpoint.

Every value is bytes: a one-line JSON header, a newline, then the serializer's bytes
(`_pack` / `_unpack`). `_Target` is where a RunnableConfig points and `_Record` a stored
checkpoint read back, still serialized. Kept apart from the storage logic so the layout
can be read on its own; see docs/integrations/langgraph-checkpoint.md.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import get_checkpoint_id


def _enc(part: str) -> str:
    return quote(part, safe="")


def _inv(checkpoint_id: str) -> str:
    """Sorts in reverse order of the id; `~` sorts after every hex digit, so a longer id
    comes before its own prefix, as it must in descending order."""
    return "".join(f"{255 - b:02x}" for b in checkpoint_id.encode()) + "~"


def _checkpoint_key(thread: str, ns: str, checkpoint_id: str) -> str:
    return f"c/{_enc(thread)}/{_enc(ns)}/{_inv(checkpoint_id)}"


def _blob_key(thread: str, ns: str, channel: str, version: str | int | float) -> str:
    return f"b/{_enc(thread)}/{_enc(ns)}/{_enc(channel)}/{_enc(str(version))}"


def _writes_prefix(thread: str, ns: str, checkpoint_id: str) -> str:
    return f"w/{_enc(thread)}/{_enc(ns)}/{_enc(checkpoint_id)}/"


def _pack(header: dict[str, Any], payload: bytes = b"") -> bytes:
    # json.dumps escapes newlines inside strings, so the first b"\n" ends the header.
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload


def _unpack(data: bytes) -> tuple[dict[str, Any], bytes]:
    head, _, payload = data.partition(b"\n")
    header: dict[str, Any] = json.loads(head)
    return header, payload


@dataclass(frozen=True)
class _Target:
    """Where a config points: a thread, a checkpoint namespace, maybe one checkpoint."""

    thread: str
    ns: str
    checkpoint_id: str | None

    @classmethod
    def of(cls, config: RunnableConfig) -> _Target:
        configurable = config.get("configurable")
        if not isinstance(configurable, dict) or "thread_id" not in configurable:
            raise ValueError(
                "the config needs configurable.thread_id, e.g. "
                '{"configurable": {"thread_id": "my-thread"}}'
            )
        ns = configurable.get("checkpoint_ns") or ""
        if not isinstance(ns, str):
            raise TypeError(f"checkpoint_ns must be a str, not {type(ns).__name__}")
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id is not None and not isinstance(checkpoint_id, str):
            raise TypeError(f"checkpoint_id must be a str, not {type(checkpoint_id).__name__}")
        return cls(_thread_id(configurable["thread_id"]), ns, checkpoint_id or None)

    def config(self, checkpoint_id: str) -> RunnableConfig:
        return {
            "configurable": {
                "thread_id": self.thread,
                "checkpoint_ns": self.ns,
                "checkpoint_id": checkpoint_id,
            }
        }


def _thread_id(value: object) -> str:
    # LangGraph accepts any thread id the user passes; ints and UUIDs are common.
    if isinstance(value, int | uuid.UUID) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(f"thread_id must be a str, int or UUID, not {type(value).__name__}")
    if not value:
        raise ValueError("thread_id must not be empty")
    return value


@dataclass(frozen=True)
class _Record:
    """A stored checkpoint, still serialized."""

    key: str
    target: _Target
    checkpoint_id: str
    parent_id: str | None
    checkpoint: tuple[str, bytes]
    metadata: tuple[str, bytes]

    @classmethod
    def load(cls, key: str, data: bytes) -> _Record:
        _, thread, ns, _ = key.split("/")
        header, payload = _unpack(data)
        size = header["checkpoint_len"]
        return cls(
            key=key,
            target=_Target(unquote(thread), unquote(ns), header["id"]),
            checkpoint_id=header["id"],
            parent_id=header["parent"],
            checkpoint=(header["checkpoint"], payload[:size]),
            metadata=(header["metadata"], payload[size:]),
        )
