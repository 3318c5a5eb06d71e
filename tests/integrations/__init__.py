import uuid
from typing import Any

import pytest

from tests.support import database_overrides, unique_tenant

BACKENDS = ("memory", "postgres")


def on_every_backend(fixture: str = "async_client") -> pytest.MarkDecorator:
    """Run a test once on the in-memory drivers and once on the database drivers (Postgres
    kv/episodic/lease, pgvector semantic): `fixture` builds its sidecar with
    `backend_overrides(request)`."""
    return pytest.mark.parametrize(fixture, BACKENDS, indirect=True)


def backend_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Sidecar overrides for the backend a test was parametrised with (memory if none)."""
    if getattr(request, "param", "memory") != "postgres":
        return {}
    request.getfixturevalue("postgres")  # reachable and migrated
    return {**database_overrides(), **unique_tenant()}


def fresh_namespace(prefix: str) -> str:
    """A namespace no other test uses: tests of a module share one sidecar process."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
