from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from memsidecar.sidecar.blocks.settings import BlockSettings, NamespaceSettings
from memsidecar.sidecar.models import StrictModel
from memsidecar.sidecar.units import ByteSize, Duration


class EmbedderSettings(StrictModel):
    # fake: deterministic hashing embedder (tests, laptops); ollama / openai: HTTP APIs.
    type: Literal["fake", "ollama", "openai"] = "fake"
    dimension: PositiveInt = 256
    model: str = ""
    url: str = ""
    # Name of an environment variable holding the API key (openai).
    api_key_env: str = ""
    batch_size: PositiveInt = 64
    timeout: Duration = timedelta(seconds=30)
    max_retries: int = Field(default=3, ge=0, le=10)
    cache_size: int = Field(default=10000, ge=0)


class SemanticNamespace(NamespaceSettings):
    embedder: str = "fake"


class SemanticSettings(BlockSettings[SemanticNamespace]):
    namespaces: dict[str, SemanticNamespace] = Field(
        default_factory=lambda: {"*": SemanticNamespace()}
    )
    embedders: dict[str, EmbedderSettings] = Field(
        default_factory=lambda: {"fake": EmbedderSettings()}
    )
    max_content_bytes: ByteSize = 64 * 1024
    max_metadata_bytes: ByteSize = 16 * 1024
    max_tags: PositiveInt = 64
    default_top_k: PositiveInt = 10
    max_top_k: PositiveInt = 1000
    max_history: PositiveInt = 1000
    # Record ids (also link ends).
    max_id_bytes: ByteSize = 512
    # Each tag and the category, on records and in Search.
    max_label_bytes: ByteSize = 256
    # Metadata predicates in one Search, and values in one `in` predicate.
    max_filters: PositiveInt = 64
    max_in_values: PositiveInt = 1000
    # Links from and to one record, together.
    max_links_per_record: PositiveInt = 1000
    # How often expired records are physically removed (they are invisible at once).
    sweep_interval: Duration = timedelta(minutes=1)

    @model_validator(mode="after")
    def _embedders_exist(self) -> SemanticSettings:
        for pattern, ns in self.namespaces.items():
            if ns.embedder not in self.embedders:
                raise ValueError(
                    f"namespace {pattern!r} uses embedder {ns.embedder!r}, which is not defined "
                    f"under blocks.semantic.embedders (defined: {', '.join(self.embedders)})"
                )
        if self.default_top_k > self.max_top_k:
            raise ValueError(
                f"default_top_k ({self.default_top_k}) must not be over "
                f"max_top_k ({self.max_top_k})"
            )
        return self
