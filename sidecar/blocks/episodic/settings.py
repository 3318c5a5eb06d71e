from __future__ import annotations

from pydantic import Field, PositiveInt

from memsidecar.sidecar.blocks.settings import BlockSettings, NamespaceSettings
from memsidecar.sidecar.units import ByteSize, Duration


class EpisodicNamespace(NamespaceSettings):
    # Events older than this are dropped (unset = kept forever).
    retention_max_age: Duration | None = None
    # Only the newest N events are kept (unset = no bound).
    retention_max_events: PositiveInt | None = None


class EpisodicSettings(BlockSettings[EpisodicNamespace]):
    namespaces: dict[str, EpisodicNamespace] = Field(
        default_factory=lambda: {"*": EpisodicNamespace()}
    )
    max_event_bytes: ByteSize = 256 * 1024
    max_field_chars: PositiveInt = 256
    default_range_limit: PositiveInt = 100
    max_range_limit: PositiveInt = 1000
    max_window: PositiveInt = 1000
    # Events buffered per live tail before a slow reader is cut off with
    # RESOURCE_EXHAUSTED (it resumes from its last cursor, losing nothing).
    tail_buffer: PositiveInt = 10000
