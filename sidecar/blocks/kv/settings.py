from __future__ import annotations

from datetime import timedelta

from pydantic import Field, PositiveInt

from memsidecar.sidecar.blocks.settings import BlockSettings, NamespaceSettings
from memsidecar.sidecar.units import ByteSize, Duration


class KVNamespace(NamespaceSettings):
    pass


class KVSettings(BlockSettings[KVNamespace]):
    namespaces: dict[str, KVNamespace] = Field(default_factory=lambda: {"*": KVNamespace()})
    max_key_bytes: ByteSize = 512
    max_value_bytes: ByteSize = 1024 * 1024
    default_scan_limit: PositiveInt = 100
    max_scan_limit: PositiveInt = 1000
    max_multiget_keys: PositiveInt = 1000
    # How often expired keys are physically removed (they are invisible at once).
    sweep_interval: Duration = timedelta(minutes=1)
