"""MemSidecarChatMessageHistory against langchain-core and a real sidecar (in-process for
the async client, a `memsidecar serve` process for the sync one)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
)
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

from memsidecar.client import AsyncMemSidecar, InvalidArgumentError, MemSidecar
from memsidecar.integrations.langchain import MemSidecarChatMessageHistory
from tests.integrations import fresh_namespace, on_every_backend
from tests.support import SidecarProcess

# langchain-core 1.x deprecates RunnableWithMessageHistory (docs/integrations/langchain.md).
pytestmark = pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")


def every_kind() -> list[BaseMessage]:
    return [
        SystemMessage("Be brief.", id="sys-1"),
        HumanMessage(
            content=[
                {"type": "text", "text": "What is in this picture? héllo 👋\n\t"},
                {"type": "image", "url": "https://example.com/cat.png"},
            ],
            name="alice",
            additional_kwargs={"score": 0.25, "tags": ["a", "b"], "nothing": None},
        ),
        AIMessage(
            content=[{"type": "text", "text": "Let me look that up."}],
            tool_calls=[
                {
                    "name": "lookup",
                    "args": {"q": "cat", "n": 3, "weight": 0.5, "deep": {"l": [1, "2", None]}},
                    "id": "call-1",
                    "type": "tool_call",
                }
            ],
            invalid_tool_calls=[
                {"name": "broken", "args": "{not json", "id": "call-2", "error": "bad json"}
            ],
            usage_metadata={"input_tokens": 12, "output_tokens": 5, "total_tokens": 17},
            response_metadata={"model_name": "fake-1", "finish_reason": "tool_calls"},
            additional_kwargs={"refusal": None, "custom": {"k": [True, False]}},
            id="ai-1",
        ),
        ToolMessage(
            "a cat", tool_call_id="call-1", artifact={"rows": [1, 2]}, status="success", id="t-1"
        ),
        ToolMessage("failed", tool_call_id="call-2", status="error"),
        ChatMessage(role="critic", content="Looks fine."),
        FunctionMessage(name="legacy_fn", content='{"ok": true}'),
        AIMessageChunk(content="partial answ", id="chunk-1"),
        AIMessage(""),
    ]


# Round trip and the stored form


@on_every_backend()
async def test_every_message_type_round_trips(async_client: AsyncMemSidecar) -> None:
    history = MemSidecarChatMessageHistory("s", client=async_client)
    sent = every_kind()
    await history.aadd_messages(sent)
    got = await history.aget_messages()
    assert got == sent
    assert [type(m) for m in got] == [type(m) for m in sent]
    ai = got[2]
    assert isinstance(ai, AIMessage)
    assert ai.tool_calls[0]["args"] == {
        "q": "cat",
        "n": 3,
        "weight": 0.5,
        "deep": {"l": [1, "2", None]},
    }
    assert ai.usage_metadata == {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17}
    tool = got[3]
    assert isinstance(tool, ToolMessage) and tool.artifact == {"rows": [1, 2]}


async def test_each_message_is_one_readable_episodic_event(async_client: AsyncMemSidecar) -> None:
    history = MemSidecarChatMessageHistory("s", client=async_client, namespace="chat-log")
    sent = [HumanMessage("hi"), AIMessage("hello"), SystemMessage("sys")]
    await history.aadd_messages(sent)
    events = [e async for e in async_client.episodic.range("chat-log", session_id="s")]
    assert [e.type for e in events] == ["message"] * 3
    assert [e.role for e in events] == ["human", "ai", "system"]
    assert [e.payload for e in events] == [message_to_dict(m) for m in sent]
    assert all(e.metadata == {"format": "langchain"} for e in events)
    assert history.namespace == "chat-log" and history.session_id == "s"


# Ordering, sessions, clearing


async def test_order_is_kept_across_calls_and_concurrent_sessions(
    async_client: AsyncMemSidecar,
) -> None:
    sessions = [f"user-{i}" for i in range(12)]

    async def chat(session: str) -> None:
        history = MemSidecarChatMessageHistory(session, client=async_client)
        for turn in range(10):
            await history.aadd_messages(
                [HumanMessage(f"{session} q{turn}"), AIMessage(f"{session} a{turn}")]
            )

    await asyncio.gather(*(chat(s) for s in sessions))
    for session in sessions:
        got = await MemSidecarChatMessageHistory(session, client=async_client).aget_messages()
        expected = [text for t in range(10) for text in (f"{session} q{t}", f"{session} a{t}")]
        assert [m.content for m in got] == expected
    listed = [s.session_id async for s in async_client.episodic.sessions("chat")]
    assert listed == sorted(sessions)


@on_every_backend()
async def test_clear_deletes_only_that_session(async_client: AsyncMemSidecar) -> None:
    a = MemSidecarChatMessageHistory("a", client=async_client)
    b = MemSidecarChatMessageHistory("b", client=async_client)
    await a.aadd_messages([HumanMessage("a1"), AIMessage("a2")])
    await b.aadd_messages([HumanMessage("b1")])
    await a.aclear()
    assert await a.aget_messages() == []
    assert [m.content for m in await b.aget_messages()] == ["b1"]
    # Really deleted from the sidecar, not hidden.
    assert [e async for e in async_client.episodic.range("chat", session_id="a")] == []
    await a.aadd_messages([HumanMessage("again")])
    assert [m.content for m in await a.aget_messages()] == ["again"]
    await MemSidecarChatMessageHistory("never-used", client=async_client).aclear()


async def test_unknown_session_is_empty(async_client: AsyncMemSidecar) -> None:
    assert await MemSidecarChatMessageHistory("nobody", client=async_client).aget_messages() == []


# Windows


@on_every_backend()
async def test_window_returns_the_last_n_in_order(async_client: AsyncMemSidecar) -> None:
    full = MemSidecarChatMessageHistory("long", client=async_client)
    # More than one Range page (100 by default), so the newest-first read pages.
    sent = [HumanMessage(f"m{i}") for i in range(250)]
    for start in range(0, 250, 50):
        await full.aadd_messages(sent[start : start + 50])
    await MemSidecarChatMessageHistory("other", client=async_client).aadd_messages(
        [HumanMessage("x")]
    )

    for n in (1, 7, 100, 120, 250, 1000):
        windowed = MemSidecarChatMessageHistory("long", client=async_client, window=n)
        assert [m.content for m in await windowed.aget_messages()] == [
            f"m{i}" for i in range(max(0, 250 - n), 250)
        ]
    assert len(await full.aget_messages()) == 250
    small = MemSidecarChatMessageHistory("other", client=async_client, window=5)
    assert [m.content for m in await small.aget_messages()] == ["x"]


def test_window_with_the_sync_client(sync_client: MemSidecar) -> None:
    ns = fresh_namespace("lc")
    history = MemSidecarChatMessageHistory("s", client=sync_client, namespace=ns, window=3)
    for i in range(5):
        history.add_user_message(f"q{i}")
        history.add_ai_message(f"a{i}")
    assert [m.content for m in history.messages] == ["a3", "q4", "a4"]
    assert str(history) == "AI: a3\nHuman: q4\nAI: a4"


# Bad input


@pytest.mark.parametrize("session_id", ["", None, 7])
async def test_session_id_must_be_a_non_empty_string(
    async_client: AsyncMemSidecar, session_id: Any
) -> None:
    with pytest.raises(ValueError, match="session_id must be a non-empty string"):
        MemSidecarChatMessageHistory(session_id, client=async_client)


@pytest.mark.parametrize("window", [0, -3, True, 2.5, "5"])
async def test_window_must_be_a_positive_int(async_client: AsyncMemSidecar, window: Any) -> None:
    with pytest.raises(ValueError, match="window must be a positive int"):
        MemSidecarChatMessageHistory("s", client=async_client, window=window)


async def test_client_and_namespace_are_checked(async_client: AsyncMemSidecar) -> None:
    with pytest.raises(TypeError, match="MemSidecar or an AsyncMemSidecar"):
        MemSidecarChatMessageHistory("s", client="unix:/tmp/x.sock")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace"):
        MemSidecarChatMessageHistory("s", client=async_client, namespace="")
    # The sidecar's own rules for names (docs/concepts.md) answer at the first call.
    bad = MemSidecarChatMessageHistory("s", client=async_client, namespace="no/slashes")
    with pytest.raises(InvalidArgumentError):
        await bad.aadd_messages([HumanMessage("hi")])


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ({"raw": b"bytes"}, "bytes is not JSON-serializable"),
        ({"ids": {1, 2}}, "set is not JSON-serializable"),
        ({"seed": 2**60}, "beyond 2"),
        ({"temp": math.nan}, "not a JSON number"),
        ({"nested": {3: "x"}}, "key 3 is not a string"),
    ],
)
async def test_a_message_that_would_not_round_trip_writes_nothing(
    async_client: AsyncMemSidecar, extra: dict[str, Any], complaint: str
) -> None:
    history = MemSidecarChatMessageHistory("s", client=async_client)
    batch = [HumanMessage("fine"), AIMessage("bad", additional_kwargs=extra)]
    with pytest.raises(ValueError, match=complaint):
        await history.aadd_messages(batch)
    assert await history.aget_messages() == []


async def test_only_messages_are_accepted(async_client: AsyncMemSidecar) -> None:
    history = MemSidecarChatMessageHistory("s", client=async_client)
    with pytest.raises(TypeError, match="expected LangChain messages, got a str"):
        await history.aadd_messages([HumanMessage("ok"), "not a message"])  # type: ignore[list-item]
    assert await history.aget_messages() == []


async def test_messages_written_by_another_codec_are_refused(async_client: AsyncMemSidecar) -> None:
    await async_client.episodic.append(
        "chat", "message", {"role": "user"}, session_id="s", metadata={"format": "llamaindex"}
    )
    with pytest.raises(ValueError, match="written by 'llamaindex', not 'langchain'"):
        await MemSidecarChatMessageHistory("s", client=async_client).aget_messages()


async def test_sync_methods_on_the_async_clients_own_loop_are_refused(
    async_client: AsyncMemSidecar,
) -> None:
    history = MemSidecarChatMessageHistory("s", client=async_client)
    with pytest.raises(RuntimeError, match="await the async variant"):
        history.add_messages([HumanMessage("hi")])
    with pytest.raises(RuntimeError, match="await the async variant"):
        _ = history.messages
    # From another thread the sync API reaches the async client's loop.
    await asyncio.to_thread(history.add_messages, [HumanMessage("from a thread")])
    assert [m.content for m in await asyncio.to_thread(lambda: history.messages)] == [
        "from a thread"
    ]


async def test_made_off_the_loop_it_learns_the_loop_from_the_first_async_call(
    async_client: AsyncMemSidecar,
) -> None:
    history = await asyncio.to_thread(MemSidecarChatMessageHistory, "s", client=async_client)
    with pytest.raises(RuntimeError, match="call its async methods first, or pass a MemSidecar"):
        await asyncio.to_thread(history.clear)
    await history.aadd_messages([HumanMessage("hi")])
    assert [m.content for m in await asyncio.to_thread(lambda: history.messages)] == ["hi"]


# Sync client: persistence, async methods on it, from_env


def test_history_persists_across_two_client_objects(process: SidecarProcess) -> None:
    ns = fresh_namespace("lc")
    sent = every_kind()
    with MemSidecar(socket=process.socket) as first:
        MemSidecarChatMessageHistory("kept", client=first, namespace=ns).add_messages(sent)
    with MemSidecar(socket=process.socket) as second:
        history = MemSidecarChatMessageHistory("kept", client=second, namespace=ns)
        assert history.messages == sent
        history.clear()
        assert history.messages == []


async def test_async_methods_work_with_the_sync_client(sync_client: MemSidecar) -> None:
    ns = fresh_namespace("lc")
    history = MemSidecarChatMessageHistory("s", client=sync_client, namespace=ns)
    await history.aadd_messages([HumanMessage("one")])
    history.add_messages([AIMessage("two")])
    assert [m.content for m in await history.aget_messages()] == ["one", "two"]
    await history.aclear()
    assert history.messages == []


def test_from_env_owns_its_client(process: SidecarProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSIDECAR_SOCKET", str(process.socket))
    ns = fresh_namespace("lc")
    with MemSidecarChatMessageHistory.from_env("s", namespace=ns, window=1) as history:
        history.add_messages([HumanMessage("a"), AIMessage("b")])
        assert [m.content for m in history.messages] == ["b"]
    with pytest.raises(RuntimeError, match="closed"):
        _ = history.messages
    with pytest.raises(ValueError, match="window"):
        MemSidecarChatMessageHistory.from_env("s", window=0)


def test_a_passed_in_client_stays_open(sync_client: MemSidecar) -> None:
    ns = fresh_namespace("lc")
    with MemSidecarChatMessageHistory("s", client=sync_client, namespace=ns) as history:
        history.add_messages([HumanMessage("a")])
    assert [m.content for m in history.messages] == ["a"]


# A real RunnableWithMessageHistory over a deterministic fake model


class PromptRecorder:
    """Sits between the prompt and the model and keeps what the model was shown."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def __call__(self, prompt: PromptValue) -> PromptValue:
        self.seen.append([f"{m.type}:{m.content}" for m in prompt.to_messages()])
        return prompt


def chatbot(
    replies: list[str],
    recorder: PromptRecorder,
    get_history: Callable[[str], BaseChatMessageHistory],
) -> RunnableWithMessageHistory:
    """A fake model that answers `replies` in turn, with the history of each session."""
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are terse."), MessagesPlaceholder("history"), ("human", "{input}")]
    )
    model = GenericFakeChatModel(messages=iter(AIMessage(r) for r in replies))
    return RunnableWithMessageHistory(
        prompt | RunnableLambda(recorder) | model,
        get_history,
        input_messages_key="input",
        history_messages_key="history",
    )


def test_runnable_with_message_history_sync(sync_client: MemSidecar) -> None:
    ns = fresh_namespace("lc")
    recorder = PromptRecorder()

    def get_history(session_id: str) -> BaseChatMessageHistory:
        return MemSidecarChatMessageHistory(session_id, client=sync_client, namespace=ns)

    chain = chatbot(["Hi Ana.", "Hi Bo.", "Your name is Ana."], recorder, get_history)
    ana: RunnableConfig = {"configurable": {"session_id": "ana"}}
    bo: RunnableConfig = {"configurable": {"session_id": "bo"}}
    assert chain.invoke({"input": "I am Ana."}, config=ana).content == "Hi Ana."
    assert chain.invoke({"input": "I am Bo."}, config=bo).content == "Hi Bo."
    answer = chain.invoke({"input": "Who am I?"}, config=ana)
    assert answer.content == "Your name is Ana."
    # The third call saw Ana's history and nothing of Bo's.
    assert recorder.seen[2] == [
        "system:You are terse.",
        "human:I am Ana.",
        "ai:Hi Ana.",
        "human:Who am I?",
    ]
    stored = get_history("ana").messages
    assert [(m.type, m.content) for m in stored] == [
        ("human", "I am Ana."),
        ("ai", "Hi Ana."),
        ("human", "Who am I?"),
        ("ai", "Your name is Ana."),
    ]
    assert [m.content for m in get_history("bo").messages] == ["I am Bo.", "Hi Bo."]


async def test_runnable_with_message_history_async_and_windowed(
    async_client: AsyncMemSidecar,
) -> None:
    recorder = PromptRecorder()

    def get_history(session_id: str) -> BaseChatMessageHistory:
        # The model is shown the last two messages; all of them are kept.
        return MemSidecarChatMessageHistory(session_id, client=async_client, window=2)

    chain = chatbot(["r1", "r2", "r3"], recorder, get_history)
    config: RunnableConfig = {"configurable": {"session_id": "w"}}
    for i in range(3):
        assert (await chain.ainvoke({"input": f"q{i + 1}"}, config=config)).content == f"r{i + 1}"
    assert recorder.seen[2] == ["system:You are terse.", "human:q2", "ai:r2", "human:q3"]
    everything = await MemSidecarChatMessageHistory("w", client=async_client).aget_messages()
    assert [m.content for m in everything] == ["q1", "r1", "q2", "r2", "q3", "r3"]
