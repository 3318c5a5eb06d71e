from __future__ import annotations

from pydantic import Field, PositiveInt

from memsidecar.sidecar.blocks.settings import BlockSettings, NamespaceSettings
from memsidecar.sidecar.units import ByteSize


class ArtifactNamespace(NamespaceSettings):
    # Overrides the block's max_size_bytes for this namespace.
    max_size_bytes: ByteSize | None = None


class ArtifactSettings(BlockSettings[ArtifactNamespace]):
    driver: str = "localfs"
    namespaces: dict[str, ArtifactNamespace] = Field(
        default_factory=lambda: {"*": ArtifactNamespace()}
    )
    max_size_bytes: ByteSize = 100 * 1024 * 1024
    max_id_bytes: ByteSize = 512
    chunk_bytes: ByteSize = 256 * 1024
    default_list_limit: PositiveInt = 100
    max_list_limit: PositiveInt = 1000
