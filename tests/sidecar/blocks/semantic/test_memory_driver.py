"""The in-memory driver's search shortcuts (an unfiltered search scores the matrix in
place; a filtered one tests the filter best score first and stops at top_k) must rank
exactly as scoring and filtering every record would."""

from __future__ import annotations

import asyncio

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from memsidecar.sidecar.blocks.semantic.driver import (
    Predicate,
    RecordWrite,
    SearchFilter,
    VectorSpace,
)
from memsidecar.sidecar.blocks.semantic.drivers.memory import MemorySemantic
from memsidecar.sidecar.blocks.semantic.filters import matches

SPACE = VectorSpace("fake", 4)


def _brute_force(
    driver: MemorySemantic, query: np.ndarray, where: SearchFilter, top_k: int, floor: float | None
) -> list[tuple[str, float]]:
    ns = driver._spaces[("t", "ns")]
    unit = query / np.linalg.norm(query)
    scored = []
    for id in ns.index.ids:
        record = ns.records[id][-1]
        if not matches(record, where):
            continue
        vector = np.asarray(record.vector, dtype=np.float64)
        score = float(np.clip(vector / np.linalg.norm(vector) @ unit, -1.0, 1.0))
        if floor is None or score >= floor:
            scored.append((id, score))
    scored.sort(key=lambda pair: (-pair[1], pair[0]))
    return scored[:top_k]


@settings(max_examples=150, deadline=None)
@example(  # three tied matches inserted out of id order: the smallest id must win
    vectors=[(1, 0, 0, 0)] * 3,
    groups=[1] * 40,
    names=[5, 1, 3, *range(6, 43)],
    query=(1, 0, 0, 0),
    top_k=1,
    group=1,
    floor=None,
)
@given(
    # Few distinct vectors, so ties (broken by id) are common.
    vectors=st.lists(
        st.sampled_from([(1, 0, 0, 0), (1, 1, 0, 0), (0, 1, 1, 0), (1, 2, 3, 4)]),
        min_size=1,
        max_size=40,
    ),
    groups=st.lists(st.integers(0, 3), min_size=40, max_size=40),
    # Insertion order differs from id order, so the id tie-break is really exercised.
    names=st.permutations(range(40)),
    query=st.tuples(*[st.integers(-3, 3)] * 4).filter(any),
    top_k=st.integers(1, 12),
    group=st.one_of(st.none(), st.integers(0, 3)),
    floor=st.one_of(st.none(), st.sampled_from([-0.5, 0.0, 0.5, 0.9])),
)
def test_search_ranks_like_brute_force(
    vectors: list[tuple[int, ...]],
    groups: list[int],
    names: list[int],
    query: tuple[int, ...],
    top_k: int,
    group: int | None,
    floor: float | None,
) -> None:
    driver = MemorySemantic()
    where = SearchFilter(predicates=() if group is None else (Predicate(("group",), "eq", group),))

    async def run() -> list[tuple[str, float]]:
        for i, vector in enumerate(vectors):
            write = RecordWrite(
                id=f"r{names[i]:02d}",
                content="",
                metadata={"group": groups[i]},
                tags=(),
                category="",
                importance=0.0,
                vector=np.asarray(vector, dtype=np.float32),
                expires_at=None,
            )
            await driver.upsert("t", "ns", SPACE, write, now=1.0, if_version=None)
        found = await driver.search(
            "t", "ns", SPACE, np.asarray(query, dtype=np.float32), top_k, where, floor, now=1.0
        )
        return [(hit.record.id, hit.score) for hit in found]

    got = asyncio.run(run())
    want = _brute_force(driver, np.asarray(query, dtype=np.float64), where, top_k, floor)
    assert [id for id, _ in got] == [id for id, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want])
