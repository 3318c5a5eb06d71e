from __future__ import annotations

from memsidecar.sidecar.blocks.registry import DriverRegistry
from memsidecar.sidecar.blocks.semantic.driver import SemanticDriver

DRIVERS: DriverRegistry[SemanticDriver] = DriverRegistry("semantic")
DRIVERS.register("memory", "memsidecar.sidecar.blocks.semantic.drivers.memory")
DRIVERS.register("pgvector", "memsidecar.sidecar.blocks.semantic.drivers.pgvector", migrations=True)
