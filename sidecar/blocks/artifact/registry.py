from __future__ import annotations

from memsidecar.sidecar.blocks.artifact.driver import ArtifactDriver
from memsidecar.sidecar.blocks.artifact.drivers import localfs, memory, s3
from memsidecar.sidecar.blocks.registry import DriverRegistry

DRIVERS: DriverRegistry[ArtifactDriver] = DriverRegistry("artifact")
DRIVERS.register("memory", memory.create)
DRIVERS.register("localfs", localfs.create)
DRIVERS.register("s3", s3.create)
