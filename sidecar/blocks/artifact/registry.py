from __future__ import annotations

from memsidecar.sidecar.blocks.artifact.driver import ArtifactDriver
from memsidecar.sidecar.blocks.registry import DriverRegistry

DRIVERS: DriverRegistry[ArtifactDriver] = DriverRegistry("artifact")
DRIVERS.register("memory", "memsidecar.sidecar.blocks.artifact.drivers.memory")
DRIVERS.register("localfs", "memsidecar.sidecar.blocks.artifact.drivers.localfs")
DRIVERS.register("s3", "memsidecar.sidecar.blocks.artifact.drivers.s3")
