"""Real LangGraph graphs (deterministic nodes, no LLM) checkpointed on a real sidecar:
interrupted, then resumed by another client or another process, so the state can only
have come from the sidecar."""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.channels import DeltaChannel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt

from memsidecar import AsyncMemSidecar, MemSidecar
from memsidecar.integrations.langgraph.checkpoint import MemSidecarSaver
from tests.integrations import fresh_namespace
from tests.support import REPO, SidecarProcess, running_sidecar


class Review(TypedDict, total=False):
    topic: str
    log: Annotated[list[str], operator.add]
    verdict: str


def draft(state: Review) -> dict[str, Any]:
    return {"log": [f"draft:{state['topic']}"]}


def review(state: Review) -> dict[str, Any]:
    # Runs again on resume; interrupt() then returns the resume value.
    verdict = interrupt({"question": f"publish {state['topic']}?"})
    return {"verdict": verdict, "log": [f"review:{verdict}"]}


def publish(state: Review) -> dict[str, Any]:
    return {"log": ["published" if state["verdict"] == "yes" else "dropped"]}


def review_graph(saver: MemSidecarSaver, **compile_options: Any) -> CompiledStateGraph[Any]:
    """Also imported by the resuming process in test_resume_in_another_process."""
    builder = StateGraph(Review)
    builder.add_node("draft", draft)
    builder.add_node("review", review)
    builder.add_node("publish", publish)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "review")
    builder.add_edge("review", "publish")
    builder.add_edge("publish", END)
    return builder.compile(checkpointer=saver, **compile_options)


def thread() -> RunnableConfig:
    return {"configurable": {"thread_id": f"th-{uuid.uuid4().hex[:8]}"}}


RESUME = textwrap.dedent(
    """
    import json, sys
    from langgraph.types import Command
    from memsidecar.integrations.langgraph.checkpoint import MemSidecarSaver
    from tests.integrations.langgraph.test_graph import review_graph

    namespace, config = sys.argv[1], json.loads(sys.argv[2])
    with MemSidecarSaver.from_env(namespace=namespace) as saver:
        graph = review_graph(saver)
        print(json.dumps(graph.invoke(Command(resume="yes"), config)))
    """
)


def test_resume_in_another_process(process: SidecarProcess) -> None:
    ns, config = fresh_namespace("lg"), thread()
    with MemSidecar(socket=process.socket) as client:
        graph = review_graph(MemSidecarSaver(client, namespace=ns))
        first = graph.invoke({"topic": "kv", "log": []}, config)
        [pending] = first["__interrupt__"]
        assert pending.value == {"question": "publish kv?"}
        assert graph.get_state(config).next == ("review",)

    result = subprocess.run(
        [sys.executable, "-c", RESUME, ns, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MEMSIDECAR_SOCKET": str(process.socket)},
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout.strip().splitlines()[-1])
    assert final == {
        "topic": "kv",
        "log": ["draft:kv", "review:yes", "published"],
        "verdict": "yes",
    }

    # And a third client sees what the other process finished.
    with MemSidecar(socket=process.socket) as client:
        graph = review_graph(MemSidecarSaver(client, namespace=ns))
        state = graph.get_state(config)
        assert state.next == () and state.values == final
        history = list(graph.get_state_history(config))
        assert [h.metadata["step"] for h in history if h.metadata] == [3, 2, 1, 0, -1]
        # Replaying from the interrupted checkpoint asks again, as with InMemorySaver.
        interrupted = next(h for h in history if h.next == ("review",))
        replayed = graph.invoke(None, interrupted.config)
        assert replayed["__interrupt__"][0].value == {"question": "publish kv?"}
        assert replayed["log"] == ["draft:kv"]


async def test_interrupt_before_resumes_on_a_second_async_client() -> None:
    ns, config = fresh_namespace("lg"), thread()
    async with running_sidecar() as (sidecar, client):
        graph = review_graph(MemSidecarSaver(client, namespace=ns), interrupt_before=["publish"])
        await graph.ainvoke({"topic": "lease", "log": []}, config)
        await graph.ainvoke(Command(resume="yes"), config)  # answers review, stops again
        assert (await graph.aget_state(config)).next == ("publish",)

        async with AsyncMemSidecar(socket=sidecar.config.listen.socket) as other:
            resumed = review_graph(MemSidecarSaver(other, namespace=ns))
            final = await resumed.ainvoke(None, config)
            assert final["log"] == ["draft:lease", "review:yes", "published"]
            # The update is a checkpoint too, and visible to the first client.
            await resumed.aupdate_state(config, {"log": ["annotated"]})
        state = await graph.aget_state(config)
        assert state.values["log"][-1] == "annotated"
        assert state.metadata is not None and state.metadata["source"] == "update"


# --- a subgraph (checkpoint_ns) and parallel tasks (pending writes) ------------------------


class Inner(TypedDict, total=False):
    answer: str


class Fan(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    answer: str


def inner_graph() -> Any:
    def ask(state: Inner) -> dict[str, Any]:
        return {"answer": f"inner:{interrupt('inner?')}"}

    builder = StateGraph(Inner)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    return builder.compile()


RUNS: dict[str, int] = {}


def fan_graph(saver: MemSidecarSaver, fail: dict[str, bool]) -> CompiledStateGraph[Any]:
    def steady(state: Fan) -> dict[str, Any]:
        RUNS["steady"] = RUNS.get("steady", 0) + 1
        return {"log": ["steady"]}

    def flaky(state: Fan) -> dict[str, Any]:
        RUNS["flaky"] = RUNS.get("flaky", 0) + 1
        if fail["flaky"]:
            raise RuntimeError("flaky failed")
        return {"log": ["flaky"]}

    builder = StateGraph(Fan)
    builder.add_node("steady", steady)
    builder.add_node("flaky", flaky)
    builder.add_node("sub", inner_graph())
    builder.add_edge(START, "steady")
    builder.add_edge(START, "flaky")
    builder.add_edge(["steady", "flaky"], "sub")
    return builder.compile(checkpointer=saver)


def test_subgraph_interrupt_and_failed_parallel_task_resume(process: SidecarProcess) -> None:
    ns, config = fresh_namespace("lg"), thread()
    RUNS.clear()
    fail = {"flaky": True}
    with MemSidecar(socket=process.socket) as client:
        graph = fan_graph(MemSidecarSaver(client, namespace=ns), fail)
        with pytest.raises(RuntimeError, match="flaky failed"):
            graph.invoke({"log": []}, config)
        # The successful sibling's writes were stored as pending writes.
        saver = MemSidecarSaver(client, namespace=ns)
        latest = saver.get_tuple(config)
        assert latest is not None and latest.pending_writes
        assert {w[1] for w in latest.pending_writes} >= {"log", "__error__"}

    fail["flaky"] = False
    with MemSidecar(socket=process.socket) as client:
        saver = MemSidecarSaver(client, namespace=ns)
        graph = fan_graph(saver, fail)
        paused = graph.invoke(None, config)
        assert RUNS == {"steady": 1, "flaky": 2}  # steady was not run again
        assert paused["__interrupt__"][0].value == "inner?"
        # The subgraph checkpointed in its own checkpoint namespace.
        state = graph.get_state(config, subgraphs=True)
        [task] = [t for t in state.tasks if t.name == "sub"]
        assert task.state is not None
        sub_ns = task.state.config["configurable"]["checkpoint_ns"]  # type: ignore[union-attr]
        assert sub_ns.startswith("sub:")
        thread_id = config["configurable"]["thread_id"]
        assert list(saver.list({"configurable": {"thread_id": thread_id, "checkpoint_ns": sub_ns}}))
        final = graph.invoke(Command(resume="ok"), config)
        assert sorted(final["log"]) == ["flaky", "steady"] and final["answer"] == "inner:ok"


# --- prune on a graph with a DeltaChannel ---------------------------------------------------


def extend(state: list[str], writes: Sequence[list[str]]) -> list[str]:
    return state + [item for batch in writes for item in batch]


class Notes(TypedDict, total=False):
    notes: Annotated[list[str], DeltaChannel(extend, snapshot_frequency=2)]
    turn: int


def notes_graph(saver: MemSidecarSaver) -> CompiledStateGraph[Any]:
    def take_note(state: Notes) -> dict[str, Any]:
        return {"notes": [f"note-{state.get('turn', 0)}"]}

    builder = StateGraph(Notes)
    builder.add_node("take_note", take_note)
    builder.add_edge(START, "take_note")
    return builder.compile(checkpointer=saver)


async def test_prune_keeps_what_a_delta_channel_needs_and_drops_the_rest() -> None:
    ns, config = fresh_namespace("lg"), thread()
    thread_id = config["configurable"]["thread_id"]
    async with running_sidecar() as (_, client):
        saver = MemSidecarSaver(client, namespace=ns)
        graph = notes_graph(saver)
        for turn in range(5):
            await graph.ainvoke({"turn": turn}, config)
        expected = [f"note-{turn}" for turn in range(5)]
        assert (await graph.aget_state(config)).values["notes"] == expected
        before = [t async for t in saver.alist(config)]

        await saver.aprune([thread_id], strategy="keep_latest")
        after = [t async for t in saver.alist(config)]
        # The newest checkpoint stores no notes (only writes do), so the ancestors back
        # to the last snapshot of the channel stay, and only those.
        assert 1 < len(after) < len(before)
        assert "notes" not in after[0].checkpoint["channel_values"]
        assert "notes" in after[-1].checkpoint["channel_values"]
        assert all("notes" not in t.checkpoint["channel_values"] for t in after[:-1])
        assert (await graph.aget_state(config)).values["notes"] == expected
        await graph.ainvoke({"turn": 5}, config)
        assert (await graph.aget_state(config)).values["notes"] == [*expected, "note-5"]

        # A thread of plain channels drops to one checkpoint.
        plain = thread()
        review = review_graph(saver)
        await review.ainvoke({"topic": "x", "log": []}, plain)
        await review.ainvoke(Command(resume="yes"), plain)
        await saver.aprune([plain["configurable"]["thread_id"]])
        assert len([t async for t in saver.alist(plain)]) == 1
        state = await review.aget_state(plain)
        assert state.values["log"] == ["draft:x", "review:yes", "published"]

        await saver.aprune([thread_id], strategy="delete")
        assert [t async for t in saver.alist(config)] == []
