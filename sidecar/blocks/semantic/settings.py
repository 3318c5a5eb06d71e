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
    # First retry waits up to this long (full jitter), doubling per retry; a Retry-After
    # from the server is honoured up to max_retry_wait.
    retry_backoff: Duration = timedelta(milliseconds=500)
    max_retry_wait: Duration = timedelta(seconds=30)
    # Embeddings kept in memory, by (model, text); 0 turns the cache off.
    cache_size: int = Field(default=10000, ge=0)
    # openai: send `dimensions` in the request (text-embedding-3 models can shorten their
    # vectors to it); off for models and compatible servers that reject the field.
    send_dimensions: bool = False


class PgvectorSettings(StrictModel):
    """Search tuning of the pgvector driver (see docs/blocks/semantic.md, Drivers)."""

    # HNSW candidate list size per search (raised to the candidates a search needs).
    ef_search: int = Field(default=100, ge=1, le=1000)
    # relaxed_order: the index may return rows slightly out of order (they are re-ranked
    # exactly); strict_order: in order, slower.
    iterative_scan: Literal["relaxed_order", "strict_order"] = "relaxed_order"
    # Index tuples one filtered search may visit before the driver falls back to an exact scan.
    max_scan_tuples: int = Field(default=20000, ge=1)
    # Rows fetched from the index beyond top_k, re-ranked exactly (cosine in float64).
    extra_candidates: int = Field(default=20, ge=0, le=10000)
    # Parameters of the HNSW indexes the driver creates (one per vector dimension).
    m: int = Field(default=16, ge=2, le=100)
    ef_construction: int = Field(default=64, ge=4, le=1000)
    # ANALYZE semantic_records in the background after this many writes by this sidecar
    # (0 = leave statistics to autovacuum): a freshly loaded namespace is otherwise
    # planned as a 1-row one and searched exactly instead of through HNSW.
    analyze_after_writes: int = Field(default=5000, ge=0)

    @model_validator(mode="after")
    def _construction_covers_m(self) -> PgvectorSettings:
        if self.ef_construction < 2 * self.m:
            raise ValueError(
                f"ef_construction ({self.ef_construction}) must be at least 2 * m ({2 * self.m})"
            )
        return self


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
    # Used by driver pgvector only.
    pgvector: PgvectorSettings = Field(default_factory=PgvectorSettings)

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
