"""MemSidecarChatStore against llama-index-core and a real sidecar (in-process for the
async client, a `memsidecar serve` process for the sync one)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from llama_index.core.base.llms.types import ThinkingBlock, ToolCallBlock
from llama_index.core.llms import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.storage.chat_store import SimpleChatStore
from llama_index.core.storage.chat_store.base import BaseChatStore

from memsidecar.client import AsyncMemSidecar, InvalidArgumentError, MemSidecar
from memsidecar.integrations.llamaindex import MemSidecarChatStore
from tests.integrations import fresh_namespace, on_every_backend
from tests.support import SidecarProcess


def msg(text: str, role: MessageRole = MessageRole.USER) -> ChatMessage:
    return ChatMessage(role=role, content=text)


def texts(messages: list[ChatMessage] | None) -> list[str | None]:
    assert messages is not None
    return [m.content for m in messages]


def words(text: str) -> list[str]:
    # A tokenizer for ChatMemoryBuffer that needs no tiktoken data.
    return text.split()


def every_kind() -> list[ChatMessage]:
    return [
        ChatMessage(role=MessageRole.SYSTEM, content="Be brief."),
        ChatMessage(role=MessageRole.DEVELOPER, content="Never say never."),
        ChatMessage(
            role=MessageRole.USER,
            blocks=[
                TextBlock(text="What is this? héllo 👋\n\t"),
                ImageBlock(image=b"\x89PNG\r\n\x1a\n fake", image_mimetype="image/png"),
                ImageBlock(url="https://example.com/cat.png"),
            ],
            additional_kwargs={"score": 0.25, "tags": ["a", "b"], "nothing": None},
        ),
        ChatMessage(
            role=MessageRole.ASSISTANT,
            blocks=[
                ThinkingBlock(content="look it up", num_tokens=3),
                TextBlock(text="Checking."),
                ToolCallBlock(tool_call_id="c1", tool_name="lookup", tool_kwargs={"q": "cat"}),
            ],
            additional_kwargs={
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "lookup", "n": 2}}
                ]
            },
        ),
        ChatMessage(
            role=MessageRole.TOOL, content="a cat", additional_kwargs={"tool_call_id": "c1"}
        ),
        ChatMessage(role=MessageRole.FUNCTION, content='{"ok": true}'),
        ChatMessage(role=MessageRole.CHATBOT, content="hi"),
        ChatMessage(role=MessageRole.MODEL, content=""),
        ChatMessage(role=MessageRole.ASSISTANT, blocks=[]),
    ]


# Round trip and the stored form


@on_every_backend()
async def test_every_message_kind_round_trips(async_client: AsyncMemSidecar) -> None:
    store = MemSidecarChatStore(client=async_client)
    sent = every_kind()
    for message in sent:
        await store.async_add_message("k", message)
    assert await store.aget_messages("k") == sent
    await store.aset_messages("k2", sent)
    assert await store.aget_messages("k2") == sent


async def test_messages_are_readable_episodic_events(async_client: AsyncMemSidecar) -> None:
    store = MemSidecarChatStore(client=async_client, namespace="li-log")
    await store.async_add_message("k", msg("hi"))
    await store.async_add_message("k", msg("hello", MessageRole.ASSISTANT))
    events = [e async for e in async_client.episodic.range("li-log", session_id="k")]
    assert [(e.type, e.role) for e in events] == [("message", "user"), ("message", "assistant")]
    assert events[0].payload == msg("hi").model_dump(mode="json")
    assert all(e.metadata == {"format": "llamaindex"} for e in events)
    assert store.namespace == "li-log"
    # What ChatMemoryBuffer.to_dict() keeps of the store: the client is not serializable.
    assert store.model_dump() == {"namespace": "li-log", "class_name": "MemSidecarChatStore"}
    assert MemSidecarChatStore.class_name() == "MemSidecarChatStore"


# The same semantics as SimpleChatStore, operation by operation


def script() -> list[tuple[str, Callable[[BaseChatStore], Any]]]:
    def snapshot(store: BaseChatStore) -> Any:
        return {k: store.get_messages(k) for k in sorted(store.get_keys())}

    return [
        ("get unknown", lambda s: s.get_messages("a")),
        ("delete_messages unknown", lambda s: s.delete_messages("a")),
        ("delete_message unknown", lambda s: s.delete_message("a", 0)),
        ("delete_last_message unknown", lambda s: s.delete_last_message("a")),
        ("keys empty", lambda s: s.get_keys()),
        ("set", lambda s: s.set_messages("a", [msg("a0"), msg("a1"), msg("a2")])),
        ("add", lambda s: s.add_message("a", msg("a3", MessageRole.ASSISTANT))),
        ("add other", lambda s: s.add_message("b", msg("b0"))),
        ("get", lambda s: s.get_messages("a")),
        ("delete_message 1", lambda s: s.delete_message("a", 1)),
        ("delete_message past end", lambda s: s.delete_message("a", 3)),
        ("delete_message -1", lambda s: s.delete_message("a", -1)),
        ("after deletes", snapshot),
        ("delete_last_message", lambda s: s.delete_last_message("a")),
        ("add after delete", lambda s: s.add_message("a", msg("a4"))),
        ("set again", lambda s: s.set_messages("a", [msg("x0"), msg("x1")])),
        ("delete_message 0 of set", lambda s: s.delete_message("a", 0)),
        ("after set", snapshot),
        ("set empty", lambda s: s.set_messages("b", [])),
        ("empty key still listed", lambda s: sorted(s.get_keys())),
        ("get empty", lambda s: s.get_messages("b")),
        ("delete_message on empty", lambda s: s.delete_message("b", 0)),
        ("delete_messages empty", lambda s: s.delete_messages("b")),
        ("delete_messages", lambda s: s.delete_messages("a")),
        ("keys after delete", lambda s: s.get_keys()),
        ("get deleted", lambda s: s.get_messages("a")),
        ("add after delete_messages", lambda s: s.add_message("a", msg("new"))),
        ("final", snapshot),
    ]


def test_behaves_like_simple_chat_store(sync_client: MemSidecar) -> None:
    ours = MemSidecarChatStore(client=sync_client, namespace=fresh_namespace("li"))
    reference = SimpleChatStore()
    for step, operation in script():
        assert operation(ours) == operation(reference), step


# Replacing and deleting on the append-only log


@on_every_backend()
async def test_set_replaces_and_later_adds_follow(async_client: AsyncMemSidecar) -> None:
    store = MemSidecarChatStore(client=async_client)
    await store.async_add_message("k", msg("old"))
    # Longer than a Range page (100), so the newest-first read pages back to the marker.
    long = [msg(f"s{i}") for i in range(130)]
    await store.aset_messages("k", long)
    await store.async_add_message("k", msg("after"))
    assert texts(await store.aget_messages("k")) == [f"s{i}" for i in range(130)] + ["after"]
    assert await store.adelete_message("k", 0) == msg("s0")
    assert await store.adelete_message("k", 129) == msg("after")
    assert texts(await store.aget_messages("k")) == [f"s{i}" for i in range(1, 130)]
    # A newer set makes older deletes irrelevant.
    await store.aset_messages("k", [msg("s0"), msg("s1")])
    assert texts(await store.aget_messages("k")) == ["s0", "s1"]


@on_every_backend()
async def test_an_uncommitted_set_is_invisible(async_client: AsyncMemSidecar) -> None:
    """A set interrupted before its marker (crash, lost connection) changes nothing."""
    store = MemSidecarChatStore(client=async_client)
    await store.aset_messages("k", [msg("kept0"), msg("kept1")])
    for text in ("half", "written"):
        await async_client.episodic.append(
            "chat",
            "message",
            msg(text).model_dump(mode="json"),
            role="user",
            session_id="k",
            metadata={"format": "llamaindex", "generation": "interrupted"},
        )
    assert texts(await store.aget_messages("k")) == ["kept0", "kept1"]
    await store.async_add_message("k", msg("next"))
    assert texts(await store.aget_messages("k")) == ["kept0", "kept1", "next"]


@on_every_backend()
async def test_delete_targets_the_message_not_the_position(async_client: AsyncMemSidecar) -> None:
    store = MemSidecarChatStore(client=async_client)
    await store.aset_messages("k", [msg("a"), msg("b"), msg("c")])
    assert await store.adelete_last_message("k") == msg("c")
    assert await store.adelete_message("k", 0) == msg("a")
    events = [e async for e in async_client.episodic.range("chat", session_id="k")]
    markers = [e.payload for e in events if e.type == "chat.delete"]
    stored = {e.payload["blocks"][0]["text"]: e.cursor for e in events if e.type == "message"}
    assert markers == [{"cursor": stored["c"]}, {"cursor": stored["a"]}]
    assert texts(await store.aget_messages("k")) == ["b"]
    assert await store.adelete_last_message("k") == msg("b")
    assert await store.adelete_last_message("k") is None
    assert await store.aget_messages("k") == []


@pytest.mark.parametrize("idx", [3, 100, -4, -100])
async def test_an_index_out_of_range_deletes_nothing(
    async_client: AsyncMemSidecar, idx: int
) -> None:
    # SimpleChatStore raises IndexError for a negative index past the start; None here too.
    store = MemSidecarChatStore(client=async_client)
    await store.aset_messages("k", [msg("a"), msg("b"), msg("c")])
    assert await store.adelete_message("k", idx) is None
    assert texts(await store.aget_messages("k")) == ["a", "b", "c"]


@on_every_backend()
async def test_delete_messages_removes_the_session(async_client: AsyncMemSidecar) -> None:
    store = MemSidecarChatStore(client=async_client)
    await store.aset_messages("k", [msg("a")])
    await store.async_add_message("k", msg("b"))
    await store.adelete_message("k", 0)
    assert texts(await store.adelete_messages("k")) == ["b"]
    assert [e async for e in async_client.episodic.range("chat", session_id="k")] == []
    assert await store.aget_keys() == []
    assert await store.adelete_messages("k") is None


# Many keys, order


async def test_many_keys_keep_their_own_order(async_client: AsyncMemSidecar) -> None:
    store = MemSidecarChatStore(client=async_client)
    keys = [f"user-{i:02d}" for i in range(15)]

    async def chat(key: str) -> None:
        for turn in range(8):
            await store.async_add_message(key, msg(f"{key} q{turn}"))
            await store.async_add_message(key, msg(f"{key} a{turn}", MessageRole.ASSISTANT))

    await asyncio.gather(*(chat(k) for k in keys))
    assert await store.aget_keys() == keys
    for key in keys:
        expected = [t for i in range(8) for t in (f"{key} q{i}", f"{key} a{i}")]
        assert texts(await store.aget_messages(key)) == expected


# Bad input


@pytest.mark.parametrize("key", ["", None, 3])
async def test_key_must_be_a_non_empty_string(async_client: AsyncMemSidecar, key: Any) -> None:
    store = MemSidecarChatStore(client=async_client)
    with pytest.raises(ValueError, match="key must be a non-empty string"):
        await store.async_add_message(key, msg("hi"))
    with pytest.raises(ValueError, match="key must be a non-empty string"):
        await store.aget_messages(key)
    with pytest.raises(ValueError, match="key must be a non-empty string"):
        await store.aset_messages(key, [])


async def test_bad_messages_and_indexes_are_refused(async_client: AsyncMemSidecar) -> None:
    store = MemSidecarChatStore(client=async_client)
    with pytest.raises(TypeError, match="expected a LlamaIndex ChatMessage, got a str"):
        await store.aset_messages("k", [msg("ok"), "nope"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="beyond 2"):
        await store.aset_messages("k", [msg("ok"), ChatMessage(additional_kwargs={"n": 2**60})])
    assert await store.aget_keys() == []
    await store.async_add_message("k", msg("a"))
    for idx in ("0", 0.0, True, None):
        with pytest.raises(TypeError, match="idx must be an int"):
            await store.adelete_message("k", idx)  # type: ignore[arg-type]
    assert texts(await store.aget_messages("k")) == ["a"]


async def test_client_and_namespace_are_checked(async_client: AsyncMemSidecar) -> None:
    with pytest.raises(TypeError, match="MemSidecar or an AsyncMemSidecar"):
        MemSidecarChatStore(client=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace"):
        MemSidecarChatStore(client=async_client, namespace="")
    bad = MemSidecarChatStore(client=async_client, namespace="no/slashes")
    with pytest.raises(InvalidArgumentError):
        await bad.async_add_message("k", msg("hi"))


async def test_events_written_by_another_codec_are_refused(async_client: AsyncMemSidecar) -> None:
    await async_client.episodic.append(
        "chat", "message", {"type": "human"}, session_id="k", metadata={"format": "langchain"}
    )
    with pytest.raises(ValueError, match="written by 'langchain', not 'llamaindex'"):
        await MemSidecarChatStore(client=async_client).aget_messages("k")


async def test_sync_methods_on_the_async_clients_own_loop_are_refused(
    async_client: AsyncMemSidecar,
) -> None:
    store = MemSidecarChatStore(client=async_client)
    with pytest.raises(RuntimeError, match="await the async variant"):
        store.get_messages("k")


# A real LlamaIndex memory on the store


def test_chat_memory_buffer_with_the_sync_client(sync_client: MemSidecar) -> None:
    store = MemSidecarChatStore(client=sync_client, namespace=fresh_namespace("li"))
    memory = ChatMemoryBuffer.from_defaults(
        chat_history=[msg("You are terse.", MessageRole.SYSTEM)],
        chat_store=store,
        chat_store_key="user-1",
        token_limit=10,
        tokenizer_fn=words,
    )
    memory.put(msg("one two three four"))
    memory.put(msg("five six", MessageRole.ASSISTANT))
    memory.put(msg("seven eight nine"))
    assert len(memory.get_all()) == 4
    # 12 words in all, over the limit of 10: the buffer drops the oldest from what it
    # hands to the LLM, and the store keeps everything.
    assert texts(memory.get()) == ["one two three four", "five six", "seven eight nine"]
    memory.set([msg("replaced")])
    assert texts(memory.get_all()) == ["replaced"]
    assert memory.to_dict()["chat_store"]["namespace"] == store.namespace
    memory.reset()
    assert memory.get_all() == [] and store.get_keys() == []


@on_every_backend()
async def test_chat_memory_buffer_with_the_async_client(async_client: AsyncMemSidecar) -> None:
    store = MemSidecarChatStore(client=async_client)
    memory = ChatMemoryBuffer.from_defaults(
        chat_store=store, chat_store_key="user-2", token_limit=1000, tokenizer_fn=words
    )
    await memory.aput(msg("hello"))
    await memory.aput_messages([msg("hi", MessageRole.ASSISTANT), msg("bye")])
    # aget runs the sync get in a worker thread, which reaches the client's loop.
    assert texts(await memory.aget()) == ["hello", "hi", "bye"]
    assert texts(await memory.aget_all()) == ["hello", "hi", "bye"]
    await memory.aset([msg("fresh")])
    assert texts(await memory.aget_all()) == ["fresh"]
    await memory.areset()
    assert await memory.aget_all() == []


def test_chat_memory_buffer_default_tokenizer_works_offline(sync_client: MemSidecar) -> None:
    # llama-index-core ships the tiktoken data it uses by default: nothing is downloaded.
    store = MemSidecarChatStore(client=sync_client, namespace=fresh_namespace("li"))
    memory = ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="k")
    memory.put(msg("hello there"))
    assert texts(memory.get()) == ["hello there"]


# Sync client: persistence, async methods on it, from_env


def test_store_persists_across_two_client_objects(process: SidecarProcess) -> None:
    ns = fresh_namespace("li")
    sent = every_kind()
    with MemSidecar(socket=process.socket) as first:
        store = MemSidecarChatStore(client=first, namespace=ns)
        store.set_messages("kept", sent[:4])
        for message in sent[4:]:
            store.add_message("kept", message)
        store.delete_message("kept", 0)
    with MemSidecar(socket=process.socket) as second:
        store = MemSidecarChatStore(client=second, namespace=ns)
        assert store.get_messages("kept") == sent[1:]
        assert store.get_keys() == ["kept"]


async def test_async_methods_work_with_the_sync_client(sync_client: MemSidecar) -> None:
    store = MemSidecarChatStore(client=sync_client, namespace=fresh_namespace("li"))
    await store.aset_messages("k", [msg("a"), msg("b")])
    store.add_message("k", msg("c"))
    assert await store.adelete_last_message("k") == msg("c")
    assert texts(await store.aget_messages("k")) == ["a", "b"]
    assert await store.aget_keys() == ["k"]
    assert texts(await store.adelete_messages("k")) == ["a", "b"]


def test_from_env_owns_its_client(process: SidecarProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSIDECAR_SOCKET", str(process.socket))
    store = MemSidecarChatStore.from_env(namespace=fresh_namespace("li"))
    store.add_message("k", msg("hi"))
    assert texts(store.get_messages("k")) == ["hi"]
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.get_messages("k")
