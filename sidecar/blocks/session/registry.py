from __future__ import annotations

from memsidecar.sidecar.blocks.registry import DriverRegistry
from memsidecar.sidecar.blocks.session.driver import SessionDriver

# Sessions are configured by blocks.lease.driver / blocks.lease.options (same backend as
# the leases they hold), so errors name the lease block's settings.
DRIVERS: DriverRegistry[SessionDriver] = DriverRegistry("lease")
DRIVERS.register("memory", "memsidecar.sidecar.blocks.session.drivers.memory")
DRIVERS.register("postgres", "memsidecar.sidecar.blocks.session.drivers.postgres")
