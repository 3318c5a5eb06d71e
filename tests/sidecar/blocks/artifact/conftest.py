"""The artifact drivers the conformance suite runs against; a new driver adds a parameter here.

Each entry is a set of config overrides for tests.support.running_sidecar, which
already points blocks.artifact.options.root at a fresh temp dir (used by localfs).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from memsidecar.client.blocks.artifact import AsyncArtifact
from memsidecar.sidecar.server import Sidecar
from tests.support import ManualClock, running_sidecar

ARTIFACT_DRIVERS: dict[str, dict[str, Any]] = {
    "memory": {"blocks.artifact.driver": "memory", "blocks.artifact.options": {}},
    "localfs": {"blocks.artifact.driver": "localfs"},
}

# Namespaces every conformance run has: "limited" overrides the size cap.
LIMITED_MAX_BYTES = 100_000
NAMESPACES: dict[str, Any] = {"limited": {"max_size_bytes": LIMITED_MAX_BYTES}, "*": {}}


@dataclass
class ArtifactHarness:
    sidecar: Sidecar
    client: AsyncArtifact
    driver: str

    @property
    def disk_root(self) -> Path | None:
        """Where the driver keeps files, when it keeps them on local disk."""
        root = self.sidecar.config.blocks.artifact.options.get("root")
        return Path(root) if self.driver == "localfs" and root else None


@pytest.fixture(params=sorted(ARTIFACT_DRIVERS))
async def artifact_harness(
    request: pytest.FixtureRequest, clock: ManualClock
) -> AsyncIterator[ArtifactHarness]:
    overrides = {
        **ARTIFACT_DRIVERS[request.param],
        "blocks.artifact.namespaces": NAMESPACES,
    }
    async with running_sidecar(overrides, clock=clock) as (sidecar, client):
        yield ArtifactHarness(sidecar, client.artifact, request.param)


@pytest.fixture
def artifact(artifact_harness: ArtifactHarness) -> AsyncArtifact:
    return artifact_harness.client
