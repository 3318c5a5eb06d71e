"""MemSidecarSaver against a real sidecar: the published conformance suite
(langgraph-checkpoint-conformance) three ways — async client, sync client driving the
async methods, and the sync methods themselves — plus layout, paging and bad input."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES, Capability
from langgraph.checkpoint.conformance.report import CapabilityReport
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)

from memsidecar import AsyncMemSidecar, MemSidecar
from memsidecar.client import InvalidArgumentError
from memsidecar.integrations.langgraph import checkpoint_storage
from memsidecar.integrations.langgraph.checkpoint import MemSidecarSaver
from tests.integrations import fresh_namespace, on_every_backend
from tests.support import SidecarProcess

# What the saver implements; the suite skips the optional copy_thread/delete_for_runs.
IMPLEMENTED = {c.value for c in BASE_CAPABILITIES} | {Capability.PRUNE.value}


class SyncDriven(BaseCheckpointSaver[str]):
    """Runs the conformance suite through the saver's *sync* methods: each async
    method the suite calls runs the sync one in a worker thread."""

    def __init__(self, inner: MemSidecarSaver) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.inner.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await asyncio.to_thread(
            lambda: list(self.inner.list(config, filter=filter, before=before, limit=limit))
        )
        for item in found:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.inner.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.inner.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.inner.delete_thread, thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.inner.prune, thread_ids, strategy=strategy)


async def run_conformance(name: str, make: Any) -> CapabilityReport:
    async def factory() -> AsyncGenerator[BaseCheckpointSaver[str], None]:
        yield make()  # a fresh kv namespace per capability suite

    report = await validate(checkpointer_test(name=name)(factory))
    report.print_report()
    return report


def assert_conformant(report: CapabilityReport) -> None:
    failures = {n: r.failures for n, r in report.results.items() if r.failures}
    assert not failures, failures
    tested = {n for n, r in report.results.items() if r.detected}
    assert tested == IMPLEMENTED
    for name in IMPLEMENTED:
        result = report.results[name]
        assert result.passed is True and result.tests_passed > 0, (name, result)
    assert report.conformance_level() == "FULL"


@on_every_backend()
async def test_conformance_with_async_client(async_client: AsyncMemSidecar) -> None:
    report = await run_conformance(
        "MemSidecarSaver(AsyncMemSidecar)",
        lambda: MemSidecarSaver(async_client, namespace=fresh_namespace("lg")),
    )
    assert_conformant(report)
    # 17 put, 10 put_writes, 10 get_tuple, 16 list, 5 delete_thread, 8 prune.
    assert sum(r.tests_passed for r in report.results.values()) == 66


async def test_conformance_with_sync_client(sync_client: MemSidecar) -> None:
    report = await run_conformance(
        "MemSidecarSaver(MemSidecar)",
        lambda: MemSidecarSaver(sync_client, namespace=fresh_namespace("lg")),
    )
    assert_conformant(report)


async def test_conformance_through_the_sync_methods(sync_client: MemSidecar) -> None:
    report = await run_conformance(
        "MemSidecarSaver sync API",
        lambda: SyncDriven(MemSidecarSaver(sync_client, namespace=fresh_namespace("lg"))),
    )
    assert_conformant(report)


# --- layout and behaviour beyond the suite ----------------------------------------------


def put_chain(
    saver: MemSidecarSaver, thread_id: str, n: int, ns: str = "", **metadata: Any
) -> list[RunnableConfig]:
    stored: list[RunnableConfig] = []
    for step in range(n):
        config = generate_config(thread_id, checkpoint_ns=ns)
        if stored:
            config["configurable"]["checkpoint_id"] = stored[-1]["configurable"]["checkpoint_id"]
        checkpoint = generate_checkpoint(channel_values={"step": step}, channel_versions={})
        version = saver.get_next_version(None, None)
        checkpoint["channel_versions"] = {"step": version}
        stored.append(
            saver.put(
                config, checkpoint, generate_metadata(step=step, **metadata), {"step": version}
            )
        )
    return stored


def ids(found: Any) -> list[str]:
    return [t.config["configurable"]["checkpoint_id"] for t in found]


def checkpoint_id(config: RunnableConfig) -> str:
    return str(config["configurable"]["checkpoint_id"])


def test_thread_ids_that_look_like_paths_never_collide(sync_client: MemSidecar) -> None:
    saver = MemSidecarSaver(sync_client, namespace=fresh_namespace("lg"))
    threads = ["a", "a/b", "a%2Fb", "ä/ü", "a/", "/"]
    for thread in threads:
        put_chain(saver, thread, 2, ns="child:1|x/y")
    for thread in threads:
        found = list(saver.list({"configurable": {"thread_id": thread}}))
        assert len(found) == 2
        assert {t.config["configurable"]["thread_id"] for t in found} == {thread}
        assert {t.config["configurable"]["checkpoint_ns"] for t in found} == {"child:1|x/y"}
    saver.delete_thread("a")
    assert list(saver.list({"configurable": {"thread_id": "a"}})) == []
    assert len(list(saver.list({"configurable": {"thread_id": "a/b"}}))) == 2
    # No config: every thread's checkpoints.
    assert len(list(saver.list(None))) == 2 * (len(threads) - 1)


def test_list_pages_through_many_checkpoints_newest_first(
    sync_client: MemSidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_storage, "_PAGE", 3)  # page boundaries without 1000 checkpoints
    saver = MemSidecarSaver(sync_client, namespace=fresh_namespace("lg"))
    stored = [checkpoint_id(c) for c in put_chain(saver, "t", 10)]
    newest_first = list(reversed(stored))
    config = generate_config("t")
    assert ids(saver.list(config)) == newest_first
    assert ids(saver.list(config, limit=4)) == newest_first[:4]
    before = generate_config("t", checkpoint_id=stored[6])
    assert ids(saver.list(config, before=before, limit=5)) == newest_first[4:9]
    assert ids(saver.list(config, filter={"step": 2})) == [stored[2]]
    assert ids(saver.list(config, limit=0)) == []
    # Without checkpoint_ns in the config, `before` is compared per checkpoint.
    put_chain(saver, "t", 2, ns="child:1")
    assert len(list(saver.list({"configurable": {"thread_id": "t"}}))) == 12
    assert ids(saver.list({"configurable": {"thread_id": "t"}}, before=before)) == list(
        reversed(stored[:6])
    )
    # A config naming one checkpoint lists just that one.
    assert ids(saver.list(generate_config("t", checkpoint_id=stored[3]))) == [stored[3]]


def test_pending_writes_come_back_in_task_order(sync_client: MemSidecar) -> None:
    saver = MemSidecarSaver(sync_client, namespace=fresh_namespace("lg"))
    [config] = put_chain(saver, "t", 1)
    saver.put_writes(config, [("b", 2), ("a", 1)], "task-z", task_path="~1")
    saver.put_writes(config, [("c", 3)], "task-a", task_path="~0")
    # A retried task does not duplicate its writes; special writes replace.
    saver.put_writes(config, [("b", "again"), ("a", "again")], "task-z", task_path="~1")
    saver.put_writes(config, [("__error__", "first")], "task-a", task_path="~0")
    saver.put_writes(config, [("__error__", "second")], "task-a", task_path="~0")
    found = saver.get_tuple(config)
    assert found is not None
    assert found.pending_writes == [
        ("task-a", "__error__", "second"),
        ("task-a", "c", 3),
        ("task-z", "b", 2),
        ("task-z", "a", 1),
    ]


def test_values_of_every_serializable_type_round_trip(sync_client: MemSidecar) -> None:
    saver = MemSidecarSaver(sync_client, namespace=fresh_namespace("lg"))
    values: dict[str, Any] = {
        "bytes": b"\x00\xff\n",
        "text": "line\nbreak",
        "set": {1, 2},
        "when": datetime(2030, 1, 2, tzinfo=UTC),
        "uuid": uuid.UUID(int=7),
        "none": None,
    }
    versions: ChannelVersions = {k: saver.get_next_version(None, None) for k in values}
    checkpoint = generate_checkpoint(channel_values=values, channel_versions=versions)
    stored = saver.put(generate_config("t"), checkpoint, generate_metadata(), versions)
    found = saver.get_tuple(stored)
    assert found is not None and found.checkpoint["channel_values"] == values


def test_next_version_sorts_and_never_repeats() -> None:
    saver = MemSidecarSaver.__new__(MemSidecarSaver)
    first = saver.get_next_version(None, None)
    second = saver.get_next_version(first, None)
    assert first < second and first.startswith("0" * 31 + "1.")
    assert saver.get_next_version(first, None) != second  # forks get distinct blob keys
    assert saver.get_next_version(5, None).startswith(f"{6:032}.")  # type: ignore[arg-type]


def test_from_env_owns_and_closes_its_client(
    process: SidecarProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMSIDECAR_SOCKET", str(process.socket))
    namespace = fresh_namespace("lg")
    with MemSidecarSaver.from_env(namespace=namespace) as saver:
        put_chain(saver, "t", 1)
    with pytest.raises(RuntimeError, match="closed"):
        saver.get_tuple(generate_config("t"))
    saver.close()  # closing again is a no-op
    with MemSidecarSaver.from_env(namespace=namespace) as again:
        assert again.get_tuple(generate_config("t")) is not None


async def test_async_client_sync_calls_work_from_other_threads_only(
    async_client: AsyncMemSidecar,
) -> None:
    saver = MemSidecarSaver(async_client, namespace=fresh_namespace("lg"))
    stored = await saver.aput(generate_config("t"), generate_checkpoint(), generate_metadata(), {})
    with pytest.raises(RuntimeError, match="await the async variant"):
        saver.get_tuple(stored)
    found = await asyncio.to_thread(saver.get_tuple, stored)
    assert found is not None
    assert await asyncio.to_thread(lambda: len(list(saver.list(stored)))) == 1


def test_sync_client_async_methods_run_from_any_thread(sync_client: MemSidecar) -> None:
    saver = MemSidecarSaver(sync_client, namespace=fresh_namespace("lg"))
    results: list[int] = []

    def worker() -> None:
        async def go() -> int:
            await saver.aput(generate_config("t"), generate_checkpoint(), generate_metadata(), {})
            return len([t async for t in saver.alist(generate_config("t"))])

        results.append(asyncio.run(go()))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results)[-1] == 3


# --- bad input ------------------------------------------------------------------------------


def test_bad_input_configs_are_rejected_clearly(sync_client: MemSidecar) -> None:
    saver = MemSidecarSaver(sync_client, namespace=fresh_namespace("lg"))
    checkpoint, metadata = generate_checkpoint(), generate_metadata()
    with pytest.raises(ValueError, match=r"configurable.thread_id"):
        saver.get_tuple({})
    with pytest.raises(ValueError, match=r"configurable.thread_id"):
        saver.put({"configurable": {}}, checkpoint, metadata, {})
    with pytest.raises(ValueError, match="must not be empty"):
        saver.get_tuple({"configurable": {"thread_id": ""}})
    with pytest.raises(TypeError, match="thread_id must be a str, int or UUID"):
        saver.get_tuple({"configurable": {"thread_id": 1.5}})
    with pytest.raises(TypeError, match="checkpoint_ns must be a str"):
        saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": 3}})
    with pytest.raises(ValueError, match=r"needs configurable.checkpoint_id"):
        saver.put_writes(generate_config("t"), [("ch", 1)], "task")
    with pytest.raises(ValueError, match="unknown prune strategy 'oldest'"):
        saver.prune(["t"], strategy="oldest")
    # An int or UUID thread id is the same thread as its string.
    saver.put({"configurable": {"thread_id": 42, "checkpoint_ns": ""}}, checkpoint, metadata, {})
    assert saver.get_tuple(generate_config("42")) is not None


def test_bad_input_client_and_namespace(sync_client: MemSidecar) -> None:
    with pytest.raises(TypeError, match="MemSidecar or an AsyncMemSidecar"):
        MemSidecarSaver("unix:/tmp/m.sock")  # type: ignore[arg-type]
    saver = MemSidecarSaver(sync_client, namespace="no/slashes")
    with pytest.raises(InvalidArgumentError, match="namespace 'no/slashes' is invalid"):
        saver.get_tuple(generate_config("t"))


def test_bad_input_over_the_size_limits_says_what_was_stored(sync_client: MemSidecar) -> None:
    saver = MemSidecarSaver(sync_client, namespace=fresh_namespace("lg"))
    big = "x" * (1024 * 1024 + 1)
    checkpoint = generate_checkpoint(channel_values={"doc": big}, channel_versions={"doc": 1})
    with pytest.raises(InvalidArgumentError, match=r"storing channel 'doc'.*max_value_bytes"):
        saver.put(generate_config("t"), checkpoint, generate_metadata(), {"doc": 1})
    assert saver.get_tuple(generate_config("t")) is None  # no checkpoint without its values
    with pytest.raises(InvalidArgumentError, match=r"storing the checkpoint.*max_key_bytes"):
        saver.put(generate_config("t" * 600), generate_checkpoint(), generate_metadata(), {})
