from __future__ import annotations

import asyncio
import concurrent.futures

import asyncpg
import pytest

from memsidecar.sidecar.config import load_config
from memsidecar.sidecar.migrate import migrate
from tests.support import PG_TEST_DSN, ManualClock, database_overrides


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="session")
def postgres() -> str:
    """The test database, reachable and migrated; a clear failure when it is not running."""

    async def prepare() -> None:
        try:
            conn = await asyncpg.connect(PG_TEST_DSN, timeout=5)
        except (OSError, asyncpg.PostgresError) as exc:
            pytest.fail(
                f"Postgres is not reachable at {PG_TEST_DSN} ({exc}): "
                "run `scripts/postgres.sh up` (make test does)",
                pytrace=False,
            )
        await conn.close()
        await migrate(load_config(None, database_overrides()))

    # Requested lazily from async fixtures too, so run in a thread with its own loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, prepare()).result()
    return PG_TEST_DSN
