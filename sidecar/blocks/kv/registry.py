from __future__ import annotations

from memsidecar.sidecar.blocks.kv.driver import KVDriver
from memsidecar.sidecar.blocks.registry import DriverRegistry

DRIVERS: DriverRegistry[KVDriver] = DriverRegistry("kv")
DRIVERS.register("memory", "memsidecar.sidecar.blocks.kv.drivers.memory")
DRIVERS.register("postgres", "memsidecar.sidecar.blocks.kv.drivers.postgres", migrations=True)
