"""MemSidecarStore against real sidecars: in-process with the async client (and a manual
clock for TTLs), and a `memsidecar serve` process with the sync client."""

from __future__ import annotations

import asyncio
import operator
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)

from memsidecar import AsyncMemSidecar, MemSidecar
from memsidecar.integrations.langgraph import store as store_module
from memsidecar.integrations.langgraph.store import MemSidecarStore
from tests.integrations import backend_overrides, fresh_namespace, on_every_backend
from tests.support import ManualClock, SidecarProcess, running_sidecar

INDEX: Any = {"dims": 256, "fields": ["text"]}


@pytest.fixture
async def sidecar(
    clock: ManualClock, request: pytest.FixtureRequest
) -> AsyncIterator[AsyncMemSidecar]:
    async with running_sidecar(backend_overrides(request), clock=clock) as (_, client):
        yield client


# Built inside the test's event loop, as an AsyncMemSidecar's store should be.
@pytest.fixture
async def store(sidecar: AsyncMemSidecar) -> MemSidecarStore:
    return MemSidecarStore(sidecar)


@pytest.fixture
async def indexed(sidecar: AsyncMemSidecar) -> MemSidecarStore:
    return MemSidecarStore(sidecar, namespace="lg-indexed", index=INDEX)


@pytest.fixture
def sync_store(sync_client: MemSidecar) -> MemSidecarStore:
    return MemSidecarStore(sync_client, namespace=fresh_namespace("lg"), index=INDEX)


# -- get / put / delete


@on_every_backend("sidecar")
async def test_put_get_update_delete_with_sidecar_timestamps(
    store: MemSidecarStore, clock: ManualClock
) -> None:
    ns = ("users", "ann/b", "prefs ✓")
    await store.aput(ns, "lang", {"lang": "de", "big": 2**60, "f": 1.0})
    first = await store.aget(ns, "lang")
    assert first is not None
    assert first.value == {"lang": "de", "big": 2**60, "f": 1.0}
    assert isinstance(first.value["f"], float) and isinstance(first.value["big"], int)
    assert first.namespace == ns and first.key == "lang"
    # Timestamps are the sidecar's clock (here the manual one).
    assert first.created_at == first.updated_at == datetime.fromtimestamp(clock.now, UTC)

    clock.advance(90)
    await store.aput(ns, "lang", {"lang": "fr"})
    second = await store.aget(ns, "lang")
    assert second is not None and second.value == {"lang": "fr"}
    assert second.created_at == first.created_at
    assert (second.updated_at - first.updated_at).total_seconds() == 90

    await store.adelete(ns, "lang")
    assert await store.aget(ns, "lang") is None
    await store.adelete(ns, "lang")  # deleting a missing item is fine
    assert await store.aget(("nobody",), "x") is None


async def test_batch_reads_see_the_state_before_its_writes_and_last_put_wins(
    store: MemSidecarStore,
) -> None:
    ns = ("b",)
    await store.aput(ns, "k", {"v": 0})
    results = await store.abatch(
        [
            PutOp(ns, "k", {"v": 1}),
            GetOp(ns, "k"),
            PutOp(ns, "k", {"v": 2}),
            SearchOp(ns),
            ListNamespacesOp(),
            PutOp(ns, "new", {"v": 3}),
            GetOp(ns, "new"),
        ]
    )
    assert results[0] is None and results[2] is None and results[5] is None
    assert results[1].value == {"v": 0}  # type: ignore[union-attr]
    assert [i.value for i in results[3]] == [{"v": 0}]  # type: ignore[union-attr]
    assert results[4] == [ns]
    assert results[6] is None
    after = await store.abatch([GetOp(ns, "k"), GetOp(ns, "new")])
    assert [i.value for i in after] == [{"v": 2}, {"v": 3}]  # type: ignore[union-attr]


async def test_a_write_racing_another_is_retried_not_lost(store: MemSidecarStore) -> None:
    ns = ("race",)
    await asyncio.gather(*(store.aput(ns, "k", {"n": n}) for n in range(20)))
    item = await store.aget(ns, "k")
    assert item is not None and item.value["n"] in range(20)


# -- search without a query


async def _fill(store: MemSidecarStore) -> None:
    rows = [
        (("docs", "a"), "1", {"status": "active", "score": 5, "tags": ["x"], "meta": {"o": 1}}),
        (("docs", "a"), "2", {"status": "draft", "score": 3.5, "meta": {"o": 2}}),
        (("docs", "b"), "3", {"status": "active", "score": 1, "flag": True}),
        (("docs", "b", "deep"), "4", {"status": "active", "score": 9, "name": "zed"}),
        (("docsx",), "5", {"status": "active", "score": 7}),
        (("other",), "6", {"status": "active", "score": 4, "flag": 1}),
    ]
    await store.abatch([PutOp(ns, k, v) for ns, k, v in rows])


async def test_search_by_prefix_in_key_order(store: MemSidecarStore) -> None:
    await _fill(store)
    keys = [i.key for i in await store.asearch(("docs",))]
    assert keys == ["1", "2", "3", "4"]  # not ("docsx",): labels match whole
    assert [i.key for i in await store.asearch(("docs", "b"))] == ["3", "4"]
    assert [i.key for i in await store.asearch(())] == ["1", "2", "3", "4", "5", "6"]
    assert await store.asearch(("nothing",)) == []
    assert all(i.score is None for i in await store.asearch(()))


@pytest.mark.parametrize(
    ("filter", "keys"),
    [
        ({"status": "active"}, ["1", "3", "4", "5", "6"]),
        ({"status": {"$eq": "draft"}}, ["2"]),
        ({"status": {"$ne": "active"}}, ["2"]),
        ({"score": {"$gt": 4}}, ["1", "4", "5"]),
        ({"score": {"$gte": 4, "$lt": 9}}, ["1", "5", "6"]),
        ({"score": {"$lte": 3.5}}, ["2", "3"]),
        ({"status": "active", "score": {"$lt": 5}}, ["3", "6"]),
        ({"name": {"$gt": "a"}}, ["4"]),  # strings compare with strings only
        ({"score": {"$gt": "a"}}, []),
        ({"name": {"$ne": "zed"}}, ["1", "2", "3", "5", "6"]),  # missing counts as not equal
        ({"meta": {"o": 2}}, ["2"]),  # a sub-document
        ({"tags": ["x"]}, ["1"]),
        ({"flag": True}, ["3"]),  # JSON types kept apart: 1 is not true
        ({"flag": 1}, ["6"]),
        ({"missing": "x"}, []),
    ],
)
@on_every_backend("sidecar")
async def test_search_filters(store: MemSidecarStore, filter: Any, keys: list[str]) -> None:
    await _fill(store)
    assert [i.key for i in await store.asearch((), filter=filter)] == keys


async def test_search_pagination(store: MemSidecarStore) -> None:
    await store.abatch([PutOp(("p",), f"{i:03}", {"i": i, "even": i % 2 == 0}) for i in range(25)])
    pages = [
        [i.value["i"] for i in await store.asearch(("p",), limit=10, offset=o)] for o in (0, 10, 20)
    ]
    assert pages == [list(range(10)), list(range(10, 20)), list(range(20, 25))]
    evens = await store.asearch(("p",), filter={"even": True}, limit=3, offset=2)
    assert [i.value["i"] for i in evens] == [4, 6, 8]
    assert await store.asearch(("p",), limit=0) == []
    assert await store.asearch(("p",), offset=30) == []


# -- list_namespaces


async def _namespaces(store: MemSidecarStore) -> None:
    spaces = [
        ("a",),
        ("a", "b"),
        ("a", "b", "c"),
        ("a", "c", "draft"),
        ("b", "x", "draft"),
        ("a-b",),
        ("a/b",),
        ("-x", "y"),
    ]
    await store.abatch([PutOp(ns, k, {"k": k}) for ns in spaces for k in ("1", "2")])


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {},
            [
                ("-x", "y"),
                ("a",),
                ("a", "b"),
                ("a", "b", "c"),
                ("a", "c", "draft"),
                ("a-b",),
                ("a/b",),
                ("b", "x", "draft"),
            ],
        ),
        ({"prefix": ("a",)}, [("a",), ("a", "b"), ("a", "b", "c"), ("a", "c", "draft")]),
        ({"prefix": ("a", "*")}, [("a", "b"), ("a", "b", "c"), ("a", "c", "draft")]),
        ({"prefix": ("*", "b")}, [("a", "b"), ("a", "b", "c")]),
        ({"suffix": ("draft",)}, [("a", "c", "draft"), ("b", "x", "draft")]),
        ({"suffix": ("*", "draft")}, [("a", "c", "draft"), ("b", "x", "draft")]),
        ({"prefix": ("a",), "suffix": ("draft",)}, [("a", "c", "draft")]),
        ({"max_depth": 1}, [("-x",), ("a",), ("a-b",), ("a/b",), ("b",)]),
        ({"prefix": ("a",), "max_depth": 2}, [("a",), ("a", "b"), ("a", "c")]),
        ({"suffix": ("draft",), "max_depth": 2}, [("a", "c"), ("b", "x")]),
        ({"limit": 2, "offset": 1}, [("a",), ("a", "b")]),
        ({"prefix": ("a/b",)}, [("a/b",)]),
        ({"prefix": ("zzz",)}, []),
    ],
)
async def test_list_namespaces(
    store: MemSidecarStore, kwargs: dict[str, Any], expected: list[tuple[str, ...]]
) -> None:
    await _namespaces(store)
    assert await store.alist_namespaces(**kwargs) == expected


@on_every_backend("sidecar")
async def test_list_namespaces_skips_ahead_across_pages(
    store: MemSidecarStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small scan pages, so the per-namespace skip and the page cursor are both exercised.
    monkeypatch.setattr(store_module, "_PAGE", 3)
    spaces = [(f"n{i}", sub) for i in range(6) for sub in ("s", "t")]
    await store.abatch([PutOp(ns, str(k), {}) for ns in spaces for k in range(4)])
    assert await store.alist_namespaces() == sorted(spaces)
    assert await store.alist_namespaces(max_depth=1) == [(f"n{i}",) for i in range(6)]
    assert await store.alist_namespaces(suffix=("t",), limit=2, offset=3) == [
        ("n3", "t"),
        ("n4", "t"),
    ]
    assert len(await store.asearch((), limit=100)) == 48


async def test_deleted_items_leave_no_namespace(store: MemSidecarStore) -> None:
    await store.aput(("gone",), "k", {})
    await store.aput(("kept",), "k", {})
    await store.adelete(("gone",), "k")
    assert await store.alist_namespaces() == [("kept",)]


# -- TTL (minutes, on the sidecar's clock)


@on_every_backend("sidecar")
async def test_ttl_expires_and_reads_refresh_it(store: MemSidecarStore, clock: ManualClock) -> None:
    ns = ("ttl",)
    assert store.supports_ttl
    await store.aput(ns, "k", {"v": 1}, ttl=1)
    await store.aput(ns, "forever", {"v": 2})
    clock.advance(45)
    assert await store.aget(ns, "k") is not None  # refreshes: a minute from now
    clock.advance(45)
    assert [i.key for i in await store.asearch(ns)] == ["forever", "k"]  # refreshes too
    clock.advance(45)
    item = await store.aget(ns, "k", refresh_ttl=False)
    assert item is not None and item.updated_at < datetime.fromtimestamp(clock.now, UTC)
    clock.advance(16)
    assert await store.aget(ns, "k") is None
    assert [i.key for i in await store.asearch(ns)] == ["forever"]
    clock.advance(3600)
    assert await store.aget(ns, "forever") is not None


async def test_ttl_config_default_and_no_refresh_on_read(
    sidecar: AsyncMemSidecar, clock: ManualClock
) -> None:
    store = MemSidecarStore(sidecar, ttl={"default_ttl": 2, "refresh_on_read": False})
    await store.aput(("d",), "k", {})
    await store.aput(("d",), "keep", {}, ttl=None)
    clock.advance(100)
    assert await store.aget(("d",), "k") is not None  # no refresh
    clock.advance(30)
    assert await store.aget(("d",), "k") is None
    assert await store.alist_namespaces() == [("d",)]
    await store.adelete(("d",), "keep")
    assert await store.alist_namespaces() == []  # expired items list no namespace


# -- semantic search


async def _notes(store: MemSidecarStore) -> None:
    await store.abatch(
        [
            PutOp(("mem", "ann"), "tea", {"text": "Ann prefers green tea", "kind": "pref"}),
            PutOp(("mem", "ann"), "job", {"text": "Ann works as a pilot", "kind": "fact"}),
            PutOp(("mem", "bob"), "coffee", {"text": "Bob drinks black coffee", "kind": "pref"}),
            PutOp(("mem", "bob"), "raw", {"text": "green tea and coffee"}, index=False),
            PutOp(("other",), "tea", {"text": "green tea green tea", "kind": "pref"}),
        ]
    )


@on_every_backend("sidecar")
async def test_semantic_search_ranks_by_meaning(indexed: MemSidecarStore) -> None:
    await _notes(indexed)
    hits = await indexed.asearch(("mem",), query="green tea")
    # Equal scores (no shared word) in key order; the unindexed item last, unscored, as in
    # langgraph's InMemoryStore.
    assert [(h.namespace, h.key) for h in hits] == [
        (("mem", "ann"), "tea"),
        (("mem", "ann"), "job"),
        (("mem", "bob"), "coffee"),
        (("mem", "bob"), "raw"),
    ]
    assert hits[0].score is not None and hits[0].score > 0.5
    assert [h.score for h in hits[1:]] == [0.0, 0.0, None]

    everywhere = await indexed.asearch((), query="green tea", limit=2)
    assert [(h.namespace, h.key) for h in everywhere] == [
        (("other",), "tea"),
        (("mem", "ann"), "tea"),
    ]
    prefs = await indexed.asearch(("mem",), query="coffee", filter={"kind": "pref"})
    assert [h.key for h in prefs] == ["coffee", "tea"]
    second = await indexed.asearch(("mem",), query="green tea", limit=1, offset=1)
    assert [h.key for h in second] == [hits[1].key]


async def test_index_fields_per_put_and_max_pooling(indexed: MemSidecarStore) -> None:
    await indexed.aput(
        ("f",), "multi", {"text": "unrelated words", "alt": ["quantum physics", "tea"]}, ["alt[*]"]
    )
    await indexed.aput(("f",), "plain", {"text": "quantum"})
    hits = await indexed.asearch(("f",), query="quantum physics")
    assert hits[0].key == "multi" and hits[0].score == pytest.approx(1.0)
    assert [h.key for h in hits] == ["multi", "plain"]


@on_every_backend("sidecar")
async def test_updates_and_deletes_replace_the_vectors(
    indexed: MemSidecarStore, sidecar: AsyncMemSidecar, clock: ManualClock
) -> None:
    await indexed.aput(("u",), "k", {"text": "alpha beta"})
    await indexed.aput(("u",), "other", {"text": "gamma"})
    await indexed.aput(("u",), "k", {"text": "gamma delta"})
    hits = await indexed.asearch(("u",), query="alpha beta")
    assert {h.key for h in hits} == {"k", "other"}
    # Only the record of the current text is left in the semantic namespace.
    records = await sidecar.semantic.search("lg-indexed", "alpha beta", top_k=100)
    assert len(records) == 2
    assert {r.record.content for r in records} == {"gamma", "gamma delta"}

    await indexed.adelete(("u",), "k")
    assert [h.key for h in await indexed.asearch(("u",), query="gamma")] == ["other"]
    assert len(await sidecar.semantic.search("lg-indexed", "gamma", top_k=100)) == 1

    # An expired item's records are dropped when a search meets them.
    await indexed.aput(("u",), "brief", {"text": "gamma"}, ttl=1)
    clock.advance(61)
    assert [h.key for h in await indexed.asearch(("u",), query="gamma")] == ["other"]
    assert len(await sidecar.semantic.search("lg-indexed", "gamma", top_k=100)) == 1


@on_every_backend("sidecar")
async def test_filtered_query_search_widens_its_candidates(indexed: MemSidecarStore) -> None:
    await indexed.abatch(
        [PutOp(("w",), f"{i:02}", {"text": "tea time", "rare": i == 37}) for i in range(40)]
    )
    hits = await indexed.asearch(("w",), query="tea time", filter={"rare": True}, limit=1)
    assert [h.key for h in hits] == ["37"]


async def test_query_without_an_index_is_a_plain_search(store: MemSidecarStore) -> None:
    await store.aput(("q",), "k", {"text": "tea"})
    hits = await store.asearch(("q",), query="coffee")
    assert [(h.key, h.score) for h in hits] == [("k", None)]


async def test_index_dims_must_match_the_sidecar_embedder(sidecar: AsyncMemSidecar) -> None:
    store = MemSidecarStore(sidecar, namespace="lg-dims", index={"dims": 8})
    with pytest.raises(ValueError, match=r"index\['dims'\] is 8.*256"):
        await store.aput(("x",), "k", {"text": "t"})
    assert await sidecar.semantic.get("lg-dims", store_module._PROBE_ID) is None


# -- bad input


@pytest.mark.parametrize(
    ("op", "error", "match"),
    [
        (PutOp((), "k", {}), InvalidNamespaceError, "empty"),
        (PutOp(("a.b",), "k", {}), InvalidNamespaceError, "periods"),
        (PutOp(("",), "k", {}), InvalidNamespaceError, "empty"),
        (GetOp(("a", 1), "k"), InvalidNamespaceError, "strings"),  # type: ignore[arg-type]
        (PutOp(("a",), "k", ["x"]), TypeError, "dicts"),  # type: ignore[arg-type]
        (PutOp(("a",), "k", {"t": object()}), TypeError, "JSON"),
        (PutOp(("a",), "k", {}, ttl=-1), ValueError, "> 0 minutes"),
        (PutOp(("a",), "k", {}, ttl=float("nan")), ValueError, "finite"),
        (PutOp(("a",), "x" * 600, {}), ValueError, "max_key_bytes"),
        (PutOp(("a",), "k", {}, index="text"), ValueError, "index"),  # type: ignore[arg-type]
        (SearchOp(("a",), filter={"s": {"$in": [1]}}), ValueError, r"\$eq, \$ne"),
        (SearchOp(("a",), filter={"s": {"$gt": 1, "x": 2}}), ValueError, "mixes"),
        (SearchOp(("a",), filter=["s"]), ValueError, "dict"),  # type: ignore[arg-type]
        (SearchOp(("a",), limit=-1), ValueError, "limit"),
        (ListNamespacesOp(offset=-1), ValueError, "offset"),
        (ListNamespacesOp(max_depth=0), ValueError, "max_depth"),
        (
            ListNamespacesOp((MatchCondition("middle", ("a",)),)),  # type: ignore[arg-type]
            ValueError,
            "match_type",
        ),
        ("get", ValueError, "unknown store operation"),
    ],
)
async def test_bad_ops_are_refused_before_anything_is_written(
    store: MemSidecarStore, op: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        await store.abatch([PutOp(("first",), "k", {}), op])
    assert await store.alist_namespaces() == []


async def test_bad_construction(sidecar: AsyncMemSidecar) -> None:
    with pytest.raises(ValueError, match="sidecar embeds"):
        MemSidecarStore(sidecar, index={"dims": 4, "embed": "openai:x"})
    with pytest.raises(ValueError, match="positive int"):
        MemSidecarStore(sidecar, index={"fields": ["t"]})  # type: ignore[typeddict-item]
    with pytest.raises(TypeError, match="MemSidecar"):
        MemSidecarStore("unix:/tmp/x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        MemSidecarStore(sidecar, ttl={"default_ttl": 0})


async def test_sync_calls_on_the_async_clients_loop_are_refused(store: MemSidecarStore) -> None:
    with pytest.raises(RuntimeError, match="await the async variant"):
        store.put(("a",), "k", {})
    # From another thread (as LangGraph runs sync nodes) they run on the client's loop.
    await asyncio.to_thread(store.put, ("a",), "k", {"v": 1})
    item = await asyncio.to_thread(store.get, ("a",), "k")
    assert item is not None and item.value == {"v": 1}


# -- the sync client, on a real sidecar process


def test_sync_client_on_a_sidecar_process(sync_store: MemSidecarStore) -> None:
    s = sync_store
    s.put(("users", "ann"), "tea", {"text": "Ann prefers green tea", "n": 1}, ttl=5)
    s.put(("users", "bob"), "coffee", {"text": "Bob drinks coffee", "n": 2})
    item = s.get(("users", "ann"), "tea")
    assert item is not None and item.value["n"] == 1 and item.created_at.tzinfo is not None
    assert [h.key for h in s.search(("users",), query="green tea")] == ["tea", "coffee"]
    assert [h.key for h in s.search(("users",), filter={"n": {"$gt": 1}})] == ["coffee"]
    assert s.list_namespaces(prefix=("users",)) == [("users", "ann"), ("users", "bob")]
    s.delete(("users", "bob"), "coffee")
    assert s.list_namespaces() == [("users", "ann")]
    # The async API works on a sync client too (run on its loop thread).
    assert asyncio.run(s.aget(("users", "ann"), "tea")) == s.get(("users", "ann"), "tea")


def test_from_env_owns_its_client(process: SidecarProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSIDECAR_SOCKET", str(process.socket))
    with MemSidecarStore.from_env(namespace="lg-env") as store:
        store.put(("e",), "k", {"ok": True})
        assert store.get(("e",), "k").value == {"ok": True}  # type: ignore[union-attr]


# -- a real LangGraph graph using the store


class Turn(TypedDict):
    user: str
    text: str
    seen: Annotated[list[str], operator.add]


def remember(state: Turn, *, store: BaseStore) -> dict[str, Any]:
    count = store.get(("memories", state["user"]), "count")
    n = (count.value["n"] if count else 0) + 1
    store.put(("memories", state["user"]), "count", {"n": n})
    store.put(("memories", state["user"]), f"note-{n}", {"text": state["text"]})
    return {"seen": [f"remembered {n}"]}


def recall(state: Turn, *, store: BaseStore) -> dict[str, Any]:
    hits = store.search(("memories", state["user"]), query=state["text"], limit=1)
    return {"seen": [f"recalled {hits[0].value['text']}"]}


def build() -> Any:
    graph = StateGraph(Turn)
    graph.add_node("remember", remember)
    graph.add_node("recall", recall)
    graph.add_edge(START, "remember")
    graph.add_edge("remember", "recall")
    graph.add_edge("recall", END)
    return graph


def test_graph_with_the_store_sync(sync_store: MemSidecarStore) -> None:
    app = build().compile(store=sync_store)
    app.invoke({"user": "ann", "text": "Ann likes tea", "seen": []})
    out = app.invoke({"user": "ann", "text": "Ann flies planes", "seen": []})
    assert out["seen"] == ["remembered 2", "recalled Ann flies planes"]
    assert sync_store.get(("memories", "ann"), "count").value == {"n": 2}  # type: ignore[union-attr]
    assert sync_store.list_namespaces() == [("memories", "ann")]


async def test_graph_with_the_store_async(indexed: MemSidecarStore) -> None:
    # ainvoke runs these sync nodes in threads: they reach the async client's loop.
    app = build().compile(store=indexed)
    await app.ainvoke({"user": "bob", "text": "Bob drinks coffee", "seen": []})
    out = await app.ainvoke({"user": "bob", "text": "Bob likes tea", "seen": []})
    assert out["seen"] == ["remembered 2", "recalled Bob likes tea"]
    notes = await indexed.asearch(("memories", "bob"), query="coffee", limit=1)
    assert [n.value for n in notes] == [{"text": "Bob drinks coffee"}]
