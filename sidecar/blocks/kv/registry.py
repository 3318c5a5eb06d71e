from __future__ import annotations

from memsidecar.sidecar.blocks.kv.driver import KVDriver
from memsidecar.sidecar.blocks.kv.drivers import memory, postgres
from memsidecar.sidecar.blocks.registry import DriverRegistry

DRIVERS: DriverRegistry[KVDriver] = DriverRegistry("kv")
DRIVERS.register("memory", memory.create)
DRIVERS.register("postgres", postgres.create, postgres.MIGRATIONS)
