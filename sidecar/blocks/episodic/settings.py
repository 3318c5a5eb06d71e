from __future__ import annotations

from datetime import timedelta

from pydantic import Field, PositiveInt, field_validator

from memsidecar.sidecar.blocks.settings import BlockSettings, NamespaceSettings
from memsidecar.sidecar.units import ByteSize, Duration


class EpisodicNamespace(NamespaceSettings):
    # Events older than this are dropped (unset = kept forever).
    retention_max_age: Duration | None = None
    # Only the newest N events are kept (unset = no bound).
    retention_max_events: PositiveInt | None = None

    @field_validator("retention_max_age")
    @classmethod
    def _positive_age(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(microseconds=1):
            raise ValueError(
                "retention_max_age must be positive, e.g. '7d'; leave it unset to keep events"
            )
        return value


class EpisodicSettings(BlockSettings[EpisodicNamespace]):
    namespaces: dict[str, EpisodicNamespace] = Field(
        default_factory=lambda: {"*": EpisodicNamespace()}
    )
    max_event_bytes: ByteSize = 256 * 1024
    max_field_chars: PositiveInt = 256
    # The SDK sends a 36-character uuid4 key with every append.
    max_idempotency_key_chars: int = Field(default=128, ge=36)
    default_range_limit: PositiveInt = 100
    max_range_limit: PositiveInt = 1000
    max_window: PositiveInt = 1000
    # Event types one Range or Tail may filter on.
    max_filter_types: PositiveInt = 100
    # Events buffered per live tail before a slow reader is cut off with
    # RESOURCE_EXHAUSTED (it resumes from its last cursor, losing nothing).
    tail_buffer: PositiveInt = 10000
