"""The semantic contract, run through the SDK against every driver in conftest.SEMANTIC_DRIVERS."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from memsidecar.client.blocks.semantic import AsyncSemantic
from memsidecar.client.errors import (
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from memsidecar.semantic.v1 import semantic_pb2
from tests.support import ManualClock

DIM = 256


def unit(*values: float) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


async def snapshot(semantic: AsyncSemantic, ns: str) -> list[tuple[Any, ...]]:
    """Everything observable in a namespace: every live record and the history of each."""
    hits = await semantic.search(ns, "anything at all", top_k=1000)
    state: list[tuple[Any, ...]] = []
    for hit in sorted(hits, key=lambda h: h.record.id):
        versions = await semantic.history(ns, hit.record.id)
        record = await semantic.get(ns, hit.record.id, include_vector=True)
        assert record is not None
        state.append((record, tuple(versions)))
    return state


# -- upsert and get ----------------------------------------------------------------------


async def test_upsert_and_get_round_trip(semantic: AsyncSemantic, clock: ManualClock) -> None:
    written = await semantic.upsert(
        "notes",
        "Ann prefers green tea in the morning",
        id="pref-1",
        metadata={"user": "ann", "score": 3, "profile": {"city": "Oslo"}, "ok": True},
        tags=["pref", "drink", "pref"],
        category="preference",
        importance=0.75,
        ttl=timedelta(hours=1),
    )
    now = datetime.fromtimestamp(clock.now, UTC)
    assert written.id == "pref-1"
    assert written.version == 1
    assert written.created_at == written.updated_at == now
    assert written.expires_at == now + timedelta(hours=1)
    assert written.vector is None and not written.deleted
    got = await semantic.get("notes", "pref-1")
    assert got is not None
    assert got.content == "Ann prefers green tea in the morning"
    assert got.metadata == {"user": "ann", "score": 3, "profile": {"city": "Oslo"}, "ok": True}
    assert got.tags == ("pref", "drink")
    assert got.category == "preference"
    assert got.importance == 0.75
    assert got.version == 1 and got.links == () and got.vector is None
    with_vector = await semantic.get("notes", "pref-1", include_vector=True)
    assert with_vector is not None and with_vector.vector is not None
    assert len(with_vector.vector) == DIM
    assert math.isclose(sum(v * v for v in with_vector.vector), 1.0, rel_tol=1e-5)


async def test_server_assigns_ids(semantic: AsyncSemantic) -> None:
    a = await semantic.upsert("notes", "first")
    b = await semantic.upsert("notes", "second")
    assert a.id != b.id
    assert uuid.UUID(a.id) and uuid.UUID(b.id)
    assert (await semantic.get("notes", a.id)) is not None


async def test_caller_vector_is_stored_and_content_is_optional(semantic: AsyncSemantic) -> None:
    rec = await semantic.upsert("vec-a", "", id="v", vector=[0.5, -1.0, 0.25, 2.0])
    got = await semantic.get("vec-a", rec.id, include_vector=True)
    assert got is not None and got.content == "" and got.vector == [0.5, -1.0, 0.25, 2.0]
    # A caller vector wins over embedding the content.
    await semantic.upsert("vec-a", "some words", id="w", vector=[0.0, 0.0, 0.0, 1.0])
    got = await semantic.get("vec-a", "w", include_vector=True)
    assert got is not None and got.vector == [0.0, 0.0, 0.0, 1.0]
    assert got.content == "some words"


async def test_missing_record_is_none(semantic: AsyncSemantic) -> None:
    assert await semantic.get("notes", "absent") is None
    assert await semantic.get("notes", "absent", include_deleted=True) is None


async def test_update_keeps_every_version(semantic: AsyncSemantic, clock: ManualClock) -> None:
    first = await semantic.upsert("notes", "v1 text", id="r", metadata={"n": 1}, tags=["a"])
    clock.advance(10)
    second = await semantic.upsert("notes", "v2 text", id="r", category="c")
    clock.advance(10)
    third = await semantic.upsert("notes", "v3 text", id="r", importance=1.0)
    assert [first.version, second.version, third.version] == [1, 2, 3]
    assert third.created_at == first.created_at
    assert third.updated_at == first.created_at + timedelta(seconds=20)  # type: ignore[operator]
    got = await semantic.get("notes", "r")
    assert got is not None
    # Upsert replaces every field: no merge with the previous version.
    assert (got.content, got.metadata, got.tags, got.category, got.importance) == (
        "v3 text",
        {},
        (),
        "",
        1.0,
    )
    history = await semantic.history("notes", "r")
    assert [v.version for v in history] == [3, 2, 1]
    assert [v.content for v in history] == ["v3 text", "v2 text", "v1 text"]
    assert history[2].metadata == {"n": 1} and history[2].tags == ("a",)
    assert [v.version for v in await semantic.history("notes", "r", limit=2)] == [3, 2]
    # Search sees only the current version.
    hits = await semantic.search("notes", "text", top_k=10)
    assert [(h.record.id, h.record.version) for h in hits] == [("r", 3)]


async def test_versions_count_per_record(semantic: AsyncSemantic) -> None:
    await semantic.upsert("notes", "a", id="a")
    await semantic.upsert("notes", "a", id="a")
    b = await semantic.upsert("notes", "b", id="b")
    assert b.version == 1


async def test_compare_and_set(semantic: AsyncSemantic) -> None:
    created = await semantic.upsert("notes", "one", id="cas", if_version=0)
    assert created.version == 1
    with pytest.raises(ConflictError, match="must not exist"):
        await semantic.upsert("notes", "two", id="cas", if_version=0)
    with pytest.raises(ConflictError, match="its version is 1"):
        await semantic.upsert("notes", "two", id="cas", if_version=7)
    got = await semantic.get("notes", "cas")
    assert got is not None and got.content == "one" and got.version == 1
    updated = await semantic.upsert("notes", "two", id="cas", if_version=1)
    assert updated.version == 2
    with pytest.raises(ConflictError, match="does not exist"):
        await semantic.upsert("notes", "x", id="never", if_version=1)
    assert await semantic.get("notes", "never") is None
    assert len(await semantic.history("notes", "cas")) == 2


async def test_concurrent_cas_writers_lose_no_update(semantic: AsyncSemantic) -> None:
    await semantic.upsert("notes", "counter", id="c", metadata={"n": 0})

    async def add_one() -> None:
        for _ in range(100):
            rec = await semantic.get("notes", "c")
            assert rec is not None
            try:
                await semantic.upsert(
                    "notes",
                    "counter",
                    id="c",
                    metadata={"n": rec.metadata["n"] + 1},
                    if_version=rec.version,
                )
                return
            except ConflictError:
                await asyncio.sleep(0)
        raise AssertionError("no progress after 100 attempts")

    await asyncio.gather(*(add_one() for _ in range(8)))
    final = await semantic.get("notes", "c")
    assert final is not None and final.metadata["n"] == 8 and final.version == 9


# -- ttl ------------------------------------------------------------------------------------


async def test_ttl_expiry(semantic: AsyncSemantic, clock: ManualClock) -> None:
    await semantic.upsert("notes", "short lived fact", id="t", ttl=60)
    await semantic.upsert("notes", "lasting fact", id="keep")
    await semantic.upsert("notes", "linked", id="other")
    assert await semantic.link("notes", "t", "other", "extends")
    clock.advance(59)
    assert await semantic.get("notes", "t") is not None
    assert {h.record.id for h in await semantic.search("notes", "fact")} == {"t", "keep", "other"}
    clock.advance(2)
    assert await semantic.get("notes", "t") is None
    assert await semantic.get("notes", "t", include_deleted=True) is None
    assert {h.record.id for h in await semantic.search("notes", "fact")} == {"keep", "other"}
    with pytest.raises(NotFoundError):
        await semantic.history("notes", "t")
    assert not await semantic.delete("notes", "t")
    other = await semantic.get("notes", "other")
    assert other is not None and other.links == ()
    # An expired record is absent: compare-and-set sees nothing, versions restart.
    again = await semantic.upsert("notes", "back", id="t", if_version=0)
    assert again.version == 1
    assert len(await semantic.history("notes", "t")) == 1


async def test_update_without_ttl_clears_expiry(
    semantic: AsyncSemantic, clock: ManualClock
) -> None:
    await semantic.upsert("notes", "x", id="k", ttl=10)
    rec = await semantic.upsert("notes", "y", id="k")
    assert rec.expires_at is None
    clock.advance(20)
    got = await semantic.get("notes", "k")
    assert got is not None and got.content == "y" and got.version == 2


async def test_soft_deleted_record_still_expires(
    semantic: AsyncSemantic, clock: ManualClock
) -> None:
    await semantic.upsert("notes", "x", id="k", ttl=10)
    assert await semantic.delete("notes", "k")
    assert await semantic.get("notes", "k", include_deleted=True) is not None
    clock.advance(11)
    assert await semantic.get("notes", "k", include_deleted=True) is None
    with pytest.raises(NotFoundError):
        await semantic.history("notes", "k")


# -- delete -----------------------------------------------------------------------------


async def test_soft_delete(semantic: AsyncSemantic, clock: ManualClock) -> None:
    await semantic.upsert("notes", "to forget", id="d", tags=["x"])
    await semantic.upsert("notes", "to keep", id="k")
    await semantic.link("notes", "d", "k", "contradicts")
    clock.advance(5)
    assert await semantic.delete("notes", "d")
    assert await semantic.get("notes", "d") is None
    deleted = await semantic.get("notes", "d", include_deleted=True)
    assert deleted is not None and deleted.deleted and deleted.version == 2
    assert deleted.content == "to forget" and deleted.tags == ("x",)
    assert [link.to_id for link in deleted.links] == ["k"]
    history = await semantic.history("notes", "d")
    assert [(v.version, v.deleted) for v in history] == [(2, True), (1, False)]
    assert [h.record.id for h in await semantic.search("notes", "to forget")] == ["k"]
    # Deleting again changes nothing.
    assert not await semantic.delete("notes", "d")
    assert len(await semantic.history("notes", "d")) == 2
    # Linking to a deleted record is refused.
    with pytest.raises(NotFoundError, match="'d'"):
        await semantic.link("notes", "k", "d", "extends")
    # A deleted record counts as absent for compare-and-set ...
    with pytest.raises(ConflictError, match="deleted"):
        await semantic.upsert("notes", "again", id="d", if_version=2)
    # ... and writing it again continues its history.
    back = await semantic.upsert("notes", "to remember", id="d", if_version=0)
    assert back.version == 3 and not back.deleted
    assert [h.record.id for h in await semantic.search("notes", "to remember", top_k=1)] == ["d"]
    assert [v.version for v in await semantic.history("notes", "d")] == [3, 2, 1]


async def test_hard_delete(semantic: AsyncSemantic) -> None:
    await semantic.upsert("notes", "v1", id="h")
    await semantic.upsert("notes", "v2", id="h")
    await semantic.upsert("notes", "other", id="o")
    await semantic.link("notes", "h", "o", "supersedes")
    await semantic.link("notes", "o", "h", "extends")
    assert await semantic.delete("notes", "h", hard=True)
    assert await semantic.get("notes", "h", include_deleted=True) is None
    with pytest.raises(NotFoundError):
        await semantic.history("notes", "h")
    other = await semantic.get("notes", "o")
    assert other is not None and other.links == ()
    assert not await semantic.delete("notes", "h", hard=True)
    assert (await semantic.upsert("notes", "new", id="h")).version == 1


async def test_hard_delete_of_soft_deleted_record(semantic: AsyncSemantic) -> None:
    await semantic.upsert("notes", "x", id="s")
    assert await semantic.delete("notes", "s")
    assert await semantic.delete("notes", "s", hard=True)
    assert await semantic.get("notes", "s", include_deleted=True) is None


async def test_delete_missing_is_false(semantic: AsyncSemantic) -> None:
    assert not await semantic.delete("notes", "nothing")
    assert not await semantic.delete("notes", "nothing", hard=True)


# -- search -----------------------------------------------------------------------------


async def test_shared_words_rank_higher(semantic: AsyncSemantic) -> None:
    await semantic.upsert("docs", "the cat sat on the warm mat", id="cat")
    await semantic.upsert("docs", "quarterly stock market report", id="stocks")
    await semantic.upsert("docs", "a recipe for lemon cake", id="cake")
    hits = await semantic.search("docs", "where did the cat sit? on a mat")
    assert hits[0].record.id == "cat"
    assert hits[0].score > hits[1].score
    hits = await semantic.search("docs", "stock report", top_k=1)
    assert [h.record.id for h in hits] == ["stocks"]
    identical = await semantic.search("docs", "a recipe for lemon cake", top_k=1)
    assert identical[0].record.id == "cake"
    assert identical[0].score == pytest.approx(1.0, abs=1e-6)


async def test_vector_search_scores_are_cosine(semantic: AsyncSemantic) -> None:
    await semantic.upsert("vec-s", "", id="x", vector=[1, 0, 0, 0])
    await semantic.upsert("vec-s", "", id="xy", vector=[3, 3, 0, 0])
    await semantic.upsert("vec-s", "", id="minus-x", vector=[-2, 0, 0, 0])
    await semantic.upsert("vec-s", "", id="z", vector=[0, 0, 5, 0])
    hits = await semantic.search("vec-s", [2, 0, 0, 0])
    assert [h.record.id for h in hits] == ["x", "xy", "z", "minus-x"]
    assert [h.score for h in hits] == pytest.approx([1.0, math.sqrt(0.5), 0.0, -1.0], abs=1e-6)
    above = await semantic.search("vec-s", [1, 0, 0, 0], min_score=0.5)
    assert [h.record.id for h in above] == ["x", "xy"]
    assert [h.record.id for h in await semantic.search("vec-s", [1, 0, 0, 0], min_score=-1)] == [
        "x",
        "xy",
        "z",
        "minus-x",
    ]
    assert await semantic.search("vec-s", [0, 1, 0, 0], min_score=0.9) == []
    with_vec = await semantic.search("vec-s", [0, 0, 1, 0], top_k=1, include_vector=True)
    assert with_vec[0].record.vector == [0, 0, 5, 0]
    assert (await semantic.search("vec-s", [0, 0, 1, 0], top_k=1))[0].record.vector is None


async def test_ties_are_broken_by_id(semantic: AsyncSemantic) -> None:
    for id in ["m", "c", "x", "a", "q"]:
        await semantic.upsert("vec-t", "", id=id, vector=[1, 2, 3, 4])
    await semantic.upsert("vec-t", "", id="best", vector=[0, 0, 0, 1])
    hits = await semantic.search("vec-t", [0, 0, 0, 1], top_k=4)
    assert [h.record.id for h in hits] == ["best", "a", "c", "m"]
    hits = await semantic.search("vec-t", [1, 2, 3, 4], top_k=3)
    assert [h.record.id for h in hits] == ["a", "c", "m"]


async def test_top_k_default_and_limit(semantic: AsyncSemantic) -> None:
    for i in range(15):
        await semantic.upsert("many", f"note number {i}", id=f"n{i:02}")
    assert len(await semantic.search("many", "note")) == 10
    assert len(await semantic.search("many", "note", top_k=3)) == 3
    assert len(await semantic.search("many", "note", top_k=1000)) == 15


async def test_search_of_empty_namespace(semantic: AsyncSemantic) -> None:
    assert await semantic.search("empty-ns", "anything") == []
    assert await semantic.search("vec-empty", [1, 0, 0, 0]) == []


async def test_filtered_search_returns_top_k(semantic: AsyncSemantic) -> None:
    """1% of the records match; the query vector is closest to records that do not."""
    total, buckets = 1000, 100
    for i in range(total):
        bucket = i % buckets
        # Matching records (bucket 7) point away from the query; the rest point at it.
        vector = [-1.0, 0.1 * (i % 13), 0.2, 0.1] if bucket == 7 else [1.0, 0.1 * (i % 7), 0, 0]
        await semantic.upsert(
            "vec-filter",
            "",
            id=f"r{i:04}",
            vector=vector,
            metadata={"bucket": bucket, "early": i < total // 2},
            tags=["rare"] if bucket == 7 else ["common"],
        )
    matching = {f"r{i:04}" for i in range(total) if i % buckets == 7}
    assert len(matching) == 10
    hits = await semantic.search("vec-filter", [1, 0, 0, 0], top_k=10, where={"bucket": 7})
    assert {h.record.id for h in hits} == matching
    hits = await semantic.search("vec-filter", [1, 0, 0, 0], top_k=4, where={"bucket": 7})
    assert len(hits) == 4 and {h.record.id for h in hits} <= matching
    assert hits == sorted(hits, key=lambda h: (-h.score, h.record.id))
    hits = await semantic.search("vec-filter", [1, 0, 0, 0], top_k=50, tags_any=["rare"])
    assert {h.record.id for h in hits} == matching
    both = await semantic.search(
        "vec-filter", [1, 0, 0, 0], top_k=10, where={"bucket": 7, "early": True}
    )
    assert {h.record.id for h in both} == {f"r{i:04}" for i in range(7, total // 2, buckets)}
    # Deleted matches are never returned, and do not use up top_k.
    assert await semantic.delete("vec-filter", "r0007")
    hits = await semantic.search("vec-filter", [1, 0, 0, 0], top_k=10, where={"bucket": 7})
    assert {h.record.id for h in hits} == matching - {"r0007"}


async def _filter_ids(semantic: AsyncSemantic, **kwargs: Any) -> set[str]:
    hits = await semantic.search("vec-pred", [1, 1, 1, 1], top_k=100, **kwargs)
    return {h.record.id for h in hits}


@pytest.fixture
async def predicate_data(semantic: AsyncSemantic) -> AsyncSemantic:
    rows: dict[str, dict[str, Any]] = {
        "n1": {"score": 1, "name": "ann", "flag": True, "nested": {"city": "Oslo", "n": 1}},
        "n2": {"score": 2.5, "name": "bob", "flag": False, "nested": {"city": "Rome"}},
        "n3": {"score": 3, "name": "Cid", "list": [1, 2], "nothing": None},
        "s": {"score": "3", "name": 7, "nested": "flat"},
        "empty": {},
    }
    tags = {"n1": ["a", "b"], "n2": ["b"], "n3": ["c"], "s": ["a", "c"], "empty": []}
    for id, metadata in rows.items():
        await semantic.upsert(
            "vec-pred",
            "",
            id=id,
            vector=[1, 1, 1, 1],
            metadata=metadata,
            tags=tags[id],
            category="num" if id.startswith("n") else "",
        )
    return semantic


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"name": "ann"}, {"n1"}),
        ({"name": {"eq": "ann"}}, {"n1"}),
        ({"score": 3}, {"n3"}),  # the string "3" is not the number 3
        ({"score": "3"}, {"s"}),
        ({"score": 2.5}, {"n2"}),
        ({"name": {"ne": "ann"}}, {"n2", "n3"}),  # 7 is not a string: ne is false too
        ({"score": {"gt": 1}}, {"n2", "n3"}),
        ({"score": {"gte": 1}}, {"n1", "n2", "n3"}),
        ({"score": {"lt": 3}}, {"n1", "n2"}),
        ({"score": {"lte": 3}}, {"n1", "n2", "n3"}),
        ({"score": {"gte": 2, "lt": 3}}, {"n2"}),
        ({"score": {"gt": "2"}}, {"s"}),  # strings compare with strings only
        ({"name": {"lt": "bob"}}, {"n1", "n3"}),  # by code point: "Cid" < "ann" < "bob"
        ({"name": {"in": ["ann", "bob", 7]}}, {"n1", "n2", "s"}),
        ({"score": {"in": [1, "3"]}}, {"n1", "s"}),
        ({"name": {"in": []}}, set()),
        ({"flag": True}, {"n1"}),
        ({"flag": False}, {"n2"}),
        ({"flag": 1}, set()),  # a bool is not a number
        ({"score": True}, set()),
        ({"flag": {"gt": 0}}, set()),
        ({"nested.city": "Oslo"}, {"n1"}),
        ({"nested.city": {"ne": "Oslo"}}, {"n2"}),  # missing paths never match
        ({"nested.n": {"gte": 1}}, {"n1"}),
        ({"nested": "flat"}, {"s"}),
        ({"nested": {"eq": {"city": "Rome"}}}, {"n2"}),
        ({"list": [1, 2]}, {"n3"}),
        ({"list.0": 1}, set()),  # paths name object keys; they never index into lists
        ({"nested.city.0": "O"}, set()),
        ({"list": {"eq": [2, 1]}}, set()),
        ({"nothing": None}, {"n3"}),
        ({"absent": {"ne": 1}}, set()),
        ({"name": "ann", "score": 1}, {"n1"}),
        ({"name": "ann", "score": 2}, set()),
    ],
)
async def test_metadata_predicates(
    predicate_data: AsyncSemantic, where: dict[str, Any], expected: set[str]
) -> None:
    assert await _filter_ids(predicate_data, where=where) == expected


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"tags_any": ["a"]}, {"n1", "s"}),
        ({"tags_any": ["a", "c"]}, {"n1", "s", "n3"}),
        ({"tags_all": ["a", "b"]}, {"n1"}),
        ({"tags_all": ["a", "c"]}, {"s"}),
        ({"tags_all": ["a"], "tags_any": ["b", "zzz"]}, {"n1"}),
        ({"tags_any": ["zzz"]}, set()),
        ({"category": "num"}, {"n1", "n2", "n3"}),
        ({"category": "num", "tags_any": ["b"]}, {"n1", "n2"}),
        ({"category": "other"}, set()),
        ({"category": "num", "where": {"score": {"gt": 1}}}, {"n2", "n3"}),
    ],
)
async def test_tag_and_category_filters(
    predicate_data: AsyncSemantic, kwargs: dict[str, Any], expected: set[str]
) -> None:
    assert await _filter_ids(predicate_data, **kwargs) == expected


# -- links ------------------------------------------------------------------------------


async def test_links(semantic: AsyncSemantic, clock: ManualClock) -> None:
    for id in ["old", "new", "other"]:
        await semantic.upsert("graph", f"fact {id}", id=id)
    assert await semantic.link("graph", "new", "old", "supersedes")
    clock.advance(1)
    assert not await semantic.link("graph", "new", "old", "supersedes")  # idempotent
    assert await semantic.link("graph", "new", "old", "extends")  # another type is another link
    clock.advance(1)
    assert await semantic.link("graph", "other", "new", "contradicts")
    new = await semantic.get("graph", "new")
    assert new is not None
    assert [(link.from_id, link.to_id, link.type) for link in new.links] == [
        ("new", "old", "supersedes"),
        ("new", "old", "extends"),
        ("other", "new", "contradicts"),
    ]
    assert new.links[0].created_at == datetime.fromtimestamp(clock.now - 2, UTC)
    old = await semantic.get("graph", "old")
    assert old is not None and len(old.links) == 2
    # Links survive updates of either end.
    await semantic.upsert("graph", "fact old, revised", id="old")
    assert len((await semantic.get("graph", "old")).links) == 2  # type: ignore[union-attr]
    assert await semantic.link("graph", "new", "old", "extends", remove=True)
    assert not await semantic.link("graph", "new", "old", "extends", remove=True)
    old = await semantic.get("graph", "old")
    assert old is not None and [link.type for link in old.links] == ["supersedes"]
    # Removing never needs the records.
    assert not await semantic.link("graph", "ghost", "old", "extends", remove=True)


async def test_link_needs_both_records(semantic: AsyncSemantic) -> None:
    await semantic.upsert("graph", "here", id="here")
    with pytest.raises(NotFoundError, match="'gone'"):
        await semantic.link("graph", "here", "gone", "extends")
    with pytest.raises(NotFoundError, match="'gone'"):
        await semantic.link("graph", "gone", "here", "extends")
    assert (await semantic.get("graph", "here")).links == ()  # type: ignore[union-attr]


async def test_link_limit(semantic: AsyncSemantic) -> None:
    for id in ["hub", "a", "b", "c", "d"]:
        await semantic.upsert("graph", id, id=id)
    await semantic.link("graph", "hub", "a", "extends")
    await semantic.link("graph", "b", "hub", "extends")
    await semantic.link("graph", "hub", "c", "extends")
    with pytest.raises(ResourceExhaustedError, match="max_links_per_record"):
        await semantic.link("graph", "hub", "d", "extends")
    # An existing link is still reported unchanged, and removal frees a slot.
    assert not await semantic.link("graph", "hub", "a", "extends")
    assert await semantic.link("graph", "hub", "a", "extends", remove=True)
    assert await semantic.link("graph", "hub", "d", "extends")
    assert len((await semantic.get("graph", "hub")).links) == 3  # type: ignore[union-attr]


async def test_bad_links_are_rejected(semantic: AsyncSemantic) -> None:
    await semantic.upsert("graph", "a", id="a")
    await semantic.upsert("graph", "b", id="b")
    with pytest.raises(InvalidArgumentError, match="itself"):
        await semantic.link("graph", "a", "a", "extends")
    with pytest.raises(ValueError, match="supersedes, contradicts, extends"):
        await semantic.link("graph", "a", "b", "likes")  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await semantic._stub.Link(
            semantic_pb2.LinkRequest(namespace="graph", from_id="a", to_id="b")
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "LINK_TYPE_SUPERSEDES" in (info.value.details() or "")
    with pytest.raises(InvalidArgumentError, match="from_id is required"):
        await semantic.link("graph", "", "b", "extends")
    assert (await semantic.get("graph", "a")).links == ()  # type: ignore[union-attr]


# -- history ----------------------------------------------------------------------------


async def test_history_limits(semantic: AsyncSemantic) -> None:
    await semantic.upsert("notes", "x", id="h")
    with pytest.raises(InvalidArgumentError, match="negative"):
        await semantic.history("notes", "h", limit=-1)
    with pytest.raises(InvalidArgumentError, match="max_history"):
        await semantic.history("notes", "h", limit=1001)
    with pytest.raises(NotFoundError, match="'missing'"):
        await semantic.history("notes", "missing")
    with pytest.raises(InvalidArgumentError, match="id is required"):
        await semantic.history("notes", "")


async def test_namespaces_are_separate(semantic: AsyncSemantic) -> None:
    await semantic.upsert("one", "shared words", id="k")
    assert await semantic.get("two", "k") is None
    assert await semantic.search("two", "shared words") == []


# -- bad input --------------------------------------------------------------------------

BadCall = Callable[[AsyncSemantic], Awaitable[Any]]
BAD_UPSERTS: list[tuple[BadCall, str]] = [
    (lambda s: s.upsert("bad", ""), "content is required"),
    (lambda s: s.upsert("bad", "", id="base"), "content is required"),
    (lambda s: s.upsert("bad", "x" * (64 * 1024 + 1)), "max_content_bytes"),
    (lambda s: s.upsert("bad", "x", id="i" * 513), "max_id_bytes"),
    (lambda s: s.upsert("bad", "x", id="a\x00b"), "NUL"),
    (lambda s: s.upsert("", "x"), "namespace is required"),
    (lambda s: s.upsert("bad/ns", "x"), "namespace 'bad/ns' is invalid"),
    (lambda s: s.upsert("bad", "x", metadata={"blob": "x" * 16 * 1024}), "max_metadata_bytes"),
    (lambda s: s.upsert("bad", "x", metadata={"n": math.nan}), "finite"),
    (lambda s: s.upsert("bad", "x", metadata={"n": math.inf}), "finite"),
    (lambda s: s.upsert("bad", "x", tags=[f"t{i}" for i in range(65)]), "max_tags"),
    (lambda s: s.upsert("bad", "x", tags=["ok", ""]), "tags"),
    (lambda s: s.upsert("bad", "x", tags=["t" * 257]), "max_label_bytes"),
    (lambda s: s.upsert("bad", "x", category="c" * 257), "max_label_bytes"),
    (lambda s: s.upsert("bad", "x", importance=-0.01), "importance must be between 0 and 1"),
    (lambda s: s.upsert("bad", "x", importance=1.01), "importance must be between 0 and 1"),
    (lambda s: s.upsert("bad", "x", importance=math.nan), "importance"),
    (lambda s: s.upsert("bad", "x", vector=[1.0, 2.0, 3.0]), "3 dimensions .* 256 dimensions"),
    (lambda s: s.upsert("bad", "x", vector=[1.0] * 257), "257 dimensions .* 256 dimensions"),
    (lambda s: s.upsert("bad", "x", vector=[math.nan] + [1.0] * 255), "finite"),
    (lambda s: s.upsert("bad", "x", vector=[math.inf] + [1.0] * 255), "finite"),
    (lambda s: s.upsert("bad", "x", vector=[0.0] * 256), "all zeros"),
    (lambda s: s.upsert("bad", "x", ttl=-1), "must not be negative"),
    (lambda s: s.upsert("bad", "x", id="base", if_version=-1), "if_version"),
]


@pytest.mark.parametrize(("call", "message"), BAD_UPSERTS)
async def test_bad_upsert_is_rejected_and_changes_nothing(
    semantic: AsyncSemantic, call: BadCall, message: str
) -> None:
    await semantic.upsert("bad", "the base record", id="base", metadata={"k": 1})
    before = await snapshot(semantic, "bad")
    with pytest.raises(InvalidArgumentError, match=message):
        await call(semantic)
    assert await snapshot(semantic, "bad") == before


async def test_version_conflict_changes_nothing(semantic: AsyncSemantic) -> None:
    await semantic.upsert("bad", "the base record", id="base")
    before = await snapshot(semantic, "bad")
    for version in (0, 2, 5):
        with pytest.raises(ConflictError):
            await semantic.upsert("bad", "changed", id="base", if_version=version)
    assert await snapshot(semantic, "bad") == before


VECTOR = [1.0] * DIM
BAD_SEARCHES: list[tuple[BadCall, str]] = [
    (lambda s: s.search("bad", ""), "exactly one of query_text"),
    (lambda s: s.search("bad", []), "exactly one of query_text"),
    (lambda s: s.search("bad", "x", top_k=1001), "max_top_k"),
    (lambda s: s.search("bad", "x", top_k=-1), "top_k must not be negative"),
    (lambda s: s.search("bad", "x", min_score=1.5), "min_score"),
    (lambda s: s.search("bad", "x", min_score=-1.01), "min_score"),
    (lambda s: s.search("bad", "x", min_score=math.nan), "min_score"),
    (lambda s: s.search("bad", [1.0, 2.0]), "query_vector has 2 dimensions .* 256"),
    (lambda s: s.search("bad", [0.0] * DIM), "all zeros"),
    (lambda s: s.search("bad", [math.nan] * DIM), "finite"),
    (lambda s: s.search("bad", "x" * (64 * 1024 + 1)), "max_content_bytes"),
    (lambda s: s.search("bad", "x", where={"k": {"in": "a"}}), "needs a list"),
    (lambda s: s.search("bad", "x", where={"k": {"in": 3}}), "needs a list"),
    (lambda s: s.search("bad", "x", where={"k": {"in": list(range(1001))}}), "max_in_values"),
    (lambda s: s.search("bad", "x", where={"k": {"gt": True}}), "number or a string"),
    (lambda s: s.search("bad", "x", where={"k": {"lte": None}}), "number or a string"),
    (lambda s: s.search("bad", "x", where={"k": {"lt": [1]}}), "number or a string"),
    (lambda s: s.search("bad", "x", where={"": 1}), "field is required"),
    (lambda s: s.search("bad", "x", where={"a..b": 1}), "empty key"),
    (lambda s: s.search("bad", "x", where={"k": math.nan}), "finite"),
    (lambda s: s.search("bad", "x", where={f"k{i}": 1 for i in range(65)}), "max_filters"),
    (lambda s: s.search("bad", "x", tags_any=[""]), "tags_any"),
    (lambda s: s.search("bad", "x", tags_all=["t" * 257]), "max_label_bytes"),
    (lambda s: s.search("bad", "x", tags_all=[f"t{i}" for i in range(65)]), "max_tags"),
    (lambda s: s.search("bad", "x", category="c" * 257), "max_label_bytes"),
    (lambda s: s.search("bad/ns", "x"), "invalid"),
]


@pytest.mark.parametrize(("call", "message"), BAD_SEARCHES)
async def test_bad_search_is_rejected(semantic: AsyncSemantic, call: BadCall, message: str) -> None:
    await semantic.upsert("bad", "the base record", id="base", metadata={"k": 1})
    before = await snapshot(semantic, "bad")
    with pytest.raises(InvalidArgumentError, match=message):
        await call(semantic)
    assert await snapshot(semantic, "bad") == before


async def test_both_query_kinds_on_the_wire(semantic: AsyncSemantic) -> None:
    request = semantic_pb2.SearchRequest(namespace="bad", query_text="x", query_vector=VECTOR)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await semantic._stub.Search(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "exactly one" in (info.value.details() or "")


@pytest.mark.parametrize(
    ("predicate", "message"),
    [
        (semantic_pb2.Predicate(field="k", value=struct_pb2.Value(number_value=1)), "op must be"),
        (
            semantic_pb2.Predicate(
                field="k",
                op=42,  # type: ignore[arg-type]
                value=struct_pb2.Value(number_value=1),
            ),
            "op must",
        ),
        (semantic_pb2.Predicate(field="k", op=semantic_pb2.PREDICATE_OP_EQ), "value is required"),
    ],
)
async def test_bad_predicates_on_the_wire(
    semantic: AsyncSemantic, predicate: semantic_pb2.Predicate, message: str
) -> None:
    request = semantic_pb2.SearchRequest(namespace="bad", query_text="x", filters=[predicate])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await semantic._stub.Search(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")


async def test_bad_get_and_delete(semantic: AsyncSemantic) -> None:
    await semantic.upsert("bad", "x", id="base")
    with pytest.raises(InvalidArgumentError, match="id is required"):
        await semantic.get("bad", "")
    with pytest.raises(InvalidArgumentError, match="id is required"):
        await semantic.delete("bad", "")
    with pytest.raises(InvalidArgumentError, match="max_id_bytes"):
        await semantic.delete("bad", "i" * 513, hard=True)
    assert await semantic.get("bad", "base") is not None
