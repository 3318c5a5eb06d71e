from __future__ import annotations

from memsidecar.sidecar.blocks.episodic.driver import EpisodicDriver
from memsidecar.sidecar.blocks.registry import DriverRegistry

DRIVERS: DriverRegistry[EpisodicDriver] = DriverRegistry("episodic")
DRIVERS.register("memory", "memsidecar.sidecar.blocks.episodic.drivers.memory")
DRIVERS.register("postgres", "memsidecar.sidecar.blocks.episodic.drivers.postgres", migrations=True)
