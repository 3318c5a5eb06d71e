from __future__ import annotations

from memsidecar.sidecar.blocks.lease.driver import LeaseDriver
from memsidecar.sidecar.blocks.lease.drivers import memory, postgres
from memsidecar.sidecar.blocks.registry import DriverRegistry

DRIVERS: DriverRegistry[LeaseDriver] = DriverRegistry("lease")
DRIVERS.register("memory", memory.create)
DRIVERS.register("postgres", postgres.create, postgres.MIGRATIONS)
