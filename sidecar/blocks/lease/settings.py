from __future__ import annotations

from datetime import timedelta

from pydantic import Field, PositiveInt

from memsidecar.sidecar.blocks.settings import BlockSettings, NamespaceSettings
from memsidecar.sidecar.units import ByteSize, Duration


class LeaseNamespace(NamespaceSettings):
    pass


class LeaseSettings(BlockSettings[LeaseNamespace]):
    namespaces: dict[str, LeaseNamespace] = Field(default_factory=lambda: {"*": LeaseNamespace()})
    max_key_bytes: ByteSize = 512
    max_holder_chars: PositiveInt = 256
    max_ttl: Duration = timedelta(hours=24)
    max_wait: Duration = timedelta(minutes=5)
    default_list_limit: PositiveInt = 100
    max_list_limit: PositiveInt = 1000
