from __future__ import annotations

from memsidecar.sidecar.blocks.episodic.driver import EpisodicDriver
from memsidecar.sidecar.blocks.episodic.drivers import memory, postgres
from memsidecar.sidecar.blocks.registry import DriverRegistry

DRIVERS: DriverRegistry[EpisodicDriver] = DriverRegistry("episodic")
DRIVERS.register("memory", memory.create)
DRIVERS.register("postgres", postgres.create, postgres.MIGRATIONS)
