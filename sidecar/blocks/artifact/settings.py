from __future__ import annotations

from pydantic import Field, PositiveInt

from memsidecar.sidecar.blocks.settings import BlockSettings, NamespaceSettings
from memsidecar.sidecar.units import ByteSize


class ArtifactNamespace(NamespaceSettings):
    # Overrides the block's max_size_bytes for this namespace.
    max_size_bytes: ByteSize | None = Field(default=None, ge=0)


class ArtifactSettings(BlockSettings[ArtifactNamespace]):
    driver: str = "localfs"
    namespaces: dict[str, ArtifactNamespace] = Field(
        default_factory=lambda: {"*": ArtifactNamespace()}
    )
    # Largest artifact content, enforced while the upload streams.
    max_size_bytes: ByteSize = Field(default=100 * 1024 * 1024, ge=0)
    # Longest artifact id (UTF-8 bytes); also bounds List's prefix and start_after.
    max_id_bytes: ByteSize = Field(default=512, ge=1)
    # Largest data chunk a Get response carries (keep well under listen.max_message_bytes).
    chunk_bytes: ByteSize = Field(default=256 * 1024, ge=1)
    # Largest metadata object, as compact JSON.
    max_metadata_bytes: ByteSize = Field(default=64 * 1024, ge=0)
    max_content_type_bytes: ByteSize = Field(default=255, ge=1)
    default_list_limit: PositiveInt = 100
    max_list_limit: PositiveInt = 1000
