from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

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


# The security suite (issue: tokens, scopes, policy, traversal, limits): every test in
# these places tries an attack or a bad input and checks it is refused with the right
# status and no side effect. The count is reported at the end of the run.
SECURITY_PATHS = (
    "tests/sidecar/auth/",
    "tests/sidecar/policy/test_engine.py",
    "tests/sidecar/policy/test_holder.py",
    "tests/sidecar/gateway/",
    "tests/sidecar/test_tls.py",
    "tests/integration/test_policy.py",
)
SECURITY_KEYWORDS = ("traversal", "bad_input", "bad_id", "size_limit", "over_the_limit", "rejected")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        name = item.name.lower()
        if path.startswith(SECURITY_PATHS) or any(k in name for k in SECURITY_KEYWORDS):
            item.add_marker(pytest.mark.security)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    outcomes: dict[str, int] = {}
    for outcome in ("passed", "failed", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if report.when == "call" or outcome == "error":
                if "security" in getattr(report, "keywords", {}):
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
    tried = sum(outcomes.values())
    if tried:
        terminalreporter.write_line(
            f"security cases tried: {tried} ({outcomes.get('passed', 0)} passed, "
            f"{outcomes.get('failed', 0) + outcomes.get('error', 0)} failed)"
        )
