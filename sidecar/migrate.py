"""`memsidecar migrate`: bring every configured database schema up to date."""

from __future__ import annotations

from dataclasses import dataclass

from memsidecar.sidecar.backends.postgres import acquire_pool, apply_migrations, release_pool
from memsidecar.sidecar.blocks import BLOCK_TYPES
from memsidecar.sidecar.config import SidecarConfig


@dataclass(frozen=True)
class MigrationResult:
    block: str
    driver: str
    applied: int
    version: int


async def migrate(config: SidecarConfig) -> list[MigrationResult]:
    """Apply pending migrations for each block whose configured driver has a schema."""
    results = []
    for block_type in BLOCK_TYPES:
        settings = getattr(config.blocks, block_type.name)
        registry = block_type.drivers
        if registry is None:
            continue
        migrations = registry.migrations(settings.driver)
        if not migrations:
            continue
        pool = await acquire_pool(settings.options)
        try:
            applied = await apply_migrations(pool, block_type.name, migrations)
        finally:
            await release_pool(pool)
        results.append(
            MigrationResult(block_type.name, settings.driver, applied, migrations[-1].version)
        )
    return results
