from __future__ import annotations

from memsidecar.sidecar.blocks.artifact.driver import ArtifactDriver
from memsidecar.sidecar.blocks.artifact.drivers import localfs, memory
from memsidecar.sidecar.blocks.registry import DriverRegistry

DRIVERS: DriverRegistry[ArtifactDriver] = DriverRegistry("artifact")
DRIVERS.register("memory", memory.create)
DRIVERS.register("localfs", localfs.create)
