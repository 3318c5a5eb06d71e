from __future__ import annotations

from memsidecar.sidecar.blocks.lease.driver import LeaseDriver
from memsidecar.sidecar.blocks.registry import DriverRegistry

DRIVERS: DriverRegistry[LeaseDriver] = DriverRegistry("lease")
DRIVERS.register("memory", "memsidecar.sidecar.blocks.lease.drivers.memory")
DRIVERS.register("postgres", "memsidecar.sidecar.blocks.lease.drivers.postgres", migrations=True)
