from __future__ import annotations

from memsidecar.sidecar.blocks.registry import DriverRegistry
from memsidecar.sidecar.blocks.semantic.driver import SemanticDriver
from memsidecar.sidecar.blocks.semantic.drivers import memory, pgvector

DRIVERS: DriverRegistry[SemanticDriver] = DriverRegistry("semantic")
DRIVERS.register("memory", memory.create)
DRIVERS.register("pgvector", pgvector.create, pgvector.MIGRATIONS)
