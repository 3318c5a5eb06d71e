"""The semantic drivers the conformance suite runs against; a new driver adds a parameter here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from memsidecar.client.blocks.semantic import AsyncSemantic
from tests.support import PG_TEST_DSN, ManualClock, running_sidecar, unique_tenant

SEMANTIC_DRIVERS: dict[str, dict[str, Any]] = {
    "memory": {"blocks.semantic.driver": "memory"},
    "pgvector": {
        "blocks.semantic.driver": "pgvector",
        "blocks.semantic.options": {"dsn": PG_TEST_DSN},
    },
    # The same driver with the planner steered onto the HNSW indexes: with sorting
    # disabled (a connection setting passed in the DSN), ordering by the index is the
    # cheapest plan even for the small namespaces of these tests, where the planner
    # would otherwise pick an exact scan. So the suite covers the approximate path too:
    # iterative index scans, the exact re-ranking, the fallback and the tie completion.
    # (jit=off: the planner's penalty for a disabled sort would make every query look
    # expensive enough to JIT-compile.)
    "pgvector-hnsw": {
        "blocks.semantic.driver": "pgvector",
        "blocks.semantic.options": {"dsn": f"{PG_TEST_DSN}?enable_sort=off&jit=off"},
    },
}

# Namespaces "vec-*" use a 4-dimensional fake embedder so tests can write exact vectors by
# hand; every other namespace uses the default 256-dimensional one.
SEMANTIC_SETTINGS: dict[str, Any] = {
    "blocks.semantic.embedders": {
        "fake": {"type": "fake", "dimension": 256},
        "tiny": {"type": "fake", "dimension": 4},
    },
    "blocks.semantic.namespaces": {"vec-*": {"embedder": "tiny"}, "*": {"embedder": "fake"}},
    "blocks.semantic.max_links_per_record": 3,
}


@pytest.fixture(params=sorted(SEMANTIC_DRIVERS))
async def semantic(
    request: pytest.FixtureRequest, clock: ManualClock
) -> AsyncIterator[AsyncSemantic]:
    if request.param.startswith("pgvector"):
        request.getfixturevalue("postgres")
    overrides = {**SEMANTIC_SETTINGS, **SEMANTIC_DRIVERS[request.param], **unique_tenant()}
    async with running_sidecar(overrides, clock=clock) as (_, client):
        yield client.semantic
