"""The MemoryStore fields that map one-to-one onto sidecar config settings.

One table per block: the sidecar setting's snake_case name (its CRD name is the
camelCase form), its kind (how the CRD schema types it) and the description
`kubectl explain` shows. The CRD generator (webhooks/crds.py) and the renderer
(webhooks/store.py) both read these tables, and a test checks them against the
sidecar's settings models, so a setting added to the sidecar cannot be silently
missing from the CRD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic.alias_generators import to_camel

Kind = Literal["size", "duration", "go_duration", "count", "int", "name", "bool", "enum"]


@dataclass(frozen=True)
class SettingField:
    """One sidecar setting as a MemoryStore field."""

    name: str
    kind: Kind
    description: str
    # Smallest allowed value (count, int and size kinds).
    minimum: int = 1
    maximum: int | None = None
    # The allowed values of an enum field (the first is the sidecar's default).
    choices: tuple[str, ...] = ()

    @property
    def camel(self) -> str:
        return to_camel(self.name)


def _f(
    name: str,
    kind: Kind,
    description: str,
    minimum: int = 1,
    maximum: int | None = None,
    choices: tuple[str, ...] = (),
) -> SettingField:
    return SettingField(name, kind, description, minimum, maximum, choices)


# `blocks.<block>.limits` → `blocks.<block>.<setting>` in the sidecar config.
BLOCK_LIMITS: dict[str, tuple[SettingField, ...]] = {
    "kv": (
        _f("max_key_bytes", "size", "Longest key, in UTF-8 bytes."),
        _f("max_value_bytes", "size", "Largest value, in bytes."),
        _f("default_scan_limit", "count", "Page size of a Scan that does not set a limit."),
        _f("max_scan_limit", "count", "Largest page a Scan may ask for."),
        _f("max_multiget_keys", "count", "Most keys one MultiGet may read."),
        _f(
            "sweep_interval",
            "duration",
            "How often expired keys are physically removed (they are invisible at once).",
        ),
    ),
    "episodic": (
        _f("max_event_bytes", "size", "Largest event (payload and metadata), in bytes."),
        _f(
            "max_field_chars",
            "count",
            "Longest short text field of an event (type, role, session id), in characters.",
        ),
        _f(
            "max_idempotency_key_chars",
            "int",
            "Longest idempotency key of an Append, in characters (the SDK sends 36-character "
            "UUIDs, so at least 36).",
            minimum=36,
        ),
        _f("default_range_limit", "count", "Page size of a Range that does not set a limit."),
        _f("max_range_limit", "count", "Largest page a Range may ask for."),
        _f("max_window", "count", "Most events one Window call may return."),
        _f("max_filter_types", "count", "Most event types one Range or Tail may filter on."),
        _f(
            "tail_buffer",
            "count",
            "Events buffered per live Tail before a slow reader is cut off with "
            "RESOURCE_EXHAUSTED (it resumes from its last cursor, losing nothing).",
        ),
    ),
    "semantic": (
        _f("max_content_bytes", "size", "Largest record content, in bytes."),
        _f("max_metadata_bytes", "size", "Largest record metadata, as JSON, in bytes."),
        _f("max_tags", "count", "Most tags on one record."),
        _f("default_top_k", "count", "Results of a Search that does not set top_k."),
        _f("max_top_k", "count", "Largest top_k a Search may ask for."),
        _f("max_history", "count", "Versions kept per record for History."),
        _f("max_id_bytes", "size", "Longest record id (also link ends), in UTF-8 bytes."),
        _f(
            "max_label_bytes",
            "size",
            "Longest tag or category, on records and in Search, in UTF-8 bytes.",
        ),
        _f("max_filters", "count", "Most metadata predicates in one Search."),
        _f("max_in_values", "count", "Most values in one `in` predicate."),
        _f("max_links_per_record", "count", "Most links from and to one record, together."),
        _f(
            "sweep_interval",
            "duration",
            "How often expired records are physically removed (they are invisible at once).",
        ),
    ),
    "artifact": (
        _f(
            "max_size_bytes",
            "size",
            "Largest artifact content, enforced while the upload streams; a namespace may "
            "override it.",
            minimum=0,
        ),
        _f(
            "max_id_bytes",
            "size",
            "Longest artifact id, in UTF-8 bytes; also bounds List's prefix and start_after.",
        ),
        _f(
            "chunk_bytes",
            "size",
            "Largest data chunk one Get response carries (keep it well under the gRPC "
            "message limit).",
        ),
        _f("max_metadata_bytes", "size", "Largest artifact metadata, as JSON.", minimum=0),
        _f("max_content_type_bytes", "size", "Longest content type string, in bytes."),
        _f("default_list_limit", "count", "Page size of a List that does not set a limit."),
        _f("max_list_limit", "count", "Largest page a List may ask for."),
    ),
    "lease": (
        _f("max_key_bytes", "size", "Longest lease key, in UTF-8 bytes."),
        _f("max_holder_chars", "count", "Longest holder id, in characters."),
        _f("max_ttl", "duration", "Longest TTL an Acquire or Renew may ask for."),
        _f("max_wait", "duration", "Longest wait_for an Acquire may block."),
        _f("default_list_limit", "count", "Page size of a List that does not set a limit."),
        _f("max_list_limit", "count", "Largest page a List may ask for."),
    ),
}

# `blocks.session.<setting>` (sessions have no driver: they follow the lease block's).
SESSION_FIELDS: tuple[SettingField, ...] = (
    _f(
        "checkpoint_namespace",
        "name",
        "Episodic namespace that receives a session's checkpoint event when the session does "
        "not name one. It must be a namespace the episodic block serves.",
    ),
    _f(
        "default_heartbeat_interval",
        "go_duration",
        "Heartbeat interval of a session that does not set one. Must be shorter than "
        "defaultHeartbeatTimeout.",
    ),
    _f(
        "default_heartbeat_timeout",
        "go_duration",
        "Heartbeat timeout of a session that does not set one: a session silent this long is "
        "orphaned (detected within half of it) and its onOrphan action applied.",
    ),
    _f(
        "min_heartbeat_interval",
        "go_duration",
        "Shortest heartbeat interval a session may ask for.",
    ),
    _f("max_heartbeat_timeout", "go_duration", "Longest heartbeat timeout a session may ask for."),
    _f("max_session_id_chars", "count", "Longest session id, in characters."),
    _f("max_metadata_bytes", "size", "Largest session metadata, as JSON."),
    _f(
        "max_open_sessions",
        "count",
        "Open sessions per tenant; an Open beyond it fails with RESOURCE_EXHAUSTED.",
    ),
    _f(
        "ended_retention",
        "duration",
        "How long a closed or orphaned session is remembered: late heartbeats get "
        "FAILED_PRECONDITION and its id cannot be reused meanwhile.",
    ),
    _f(
        "checkpoint_max_leases",
        "count",
        "Leases listed by name in a checkpoint event (the count is always given).",
    ),
)

# `blocks.<block>.namespaces.<pattern>` settings.
NAMESPACE_FIELDS: dict[str, tuple[SettingField, ...]] = {
    "kv": (),
    "episodic": (
        _f(
            "retention_max_age",
            "duration",
            "Events older than this are dropped. Unset: kept forever.",
        ),
        _f(
            "retention_max_events",
            "count",
            "Only the newest N events of the namespace are kept. Unset: no bound.",
        ),
    ),
    "semantic": (
        _f(
            "embedder",
            "name",
            "Name of the embedder (a key of blocks.semantic.embedders) that embeds this "
            "namespace's records. Fixed for the life of the namespace: records embedded with "
            "another embedder or dimension are an error, never silently mixed. Default: fake.",
        ),
    ),
    "artifact": (
        _f(
            "max_size_bytes",
            "size",
            "Largest artifact in this namespace; overrides limits.maxSizeBytes.",
            minimum=0,
        ),
    ),
    "lease": (),
}

# `blocks.semantic.embedders.<name>` settings other than apiKeySecretRef.
EMBEDDER_FIELDS: tuple[SettingField, ...] = (
    _f(
        "dimension",
        "count",
        "Vector dimension the embedder produces. A namespace's dimension is fixed once records "
        "exist.",
        maximum=16000,
    ),
    _f("batch_size", "count", "Most texts sent to the embedding API in one request."),
    _f("timeout", "duration", "Time one embedding request may take."),
    _f(
        "max_retries",
        "int",
        "Retries (with jittered backoff) of a failed embedding request.",
        minimum=0,
        maximum=10,
    ),
    _f(
        "retry_backoff",
        "duration",
        "Longest wait before the first retry (full jitter), doubling per retry.",
    ),
    _f(
        "max_retry_wait",
        "duration",
        "Longest wait between retries, also for a server's Retry-After.",
    ),
    _f(
        "cache_size",
        "int",
        "Embeddings kept in the in-memory LRU cache, by model and text (0 disables it).",
        minimum=0,
    ),
    _f(
        "send_dimensions",
        "bool",
        "openai: send `dimensions` in the request (text-embedding-3 models shorten their "
        "vectors to it); leave false for models and compatible servers that reject the field.",
    ),
)

# `blocks.semantic.pgvector` → `blocks.semantic.pgvector` (search tuning of that driver).
PGVECTOR_FIELDS: tuple[SettingField, ...] = (
    _f(
        "ef_search",
        "int",
        "HNSW candidate list size per search (raised to the candidates a search needs).",
        maximum=1000,
    ),
    _f(
        "iterative_scan",
        "enum",
        "relaxed_order: the index may return rows slightly out of order (they are re-ranked "
        "exactly); strict_order: in order, slower.",
        choices=("relaxed_order", "strict_order"),
    ),
    _f(
        "max_scan_tuples",
        "int",
        "Index tuples one filtered search may visit before the driver falls back to an exact scan.",
    ),
    _f(
        "extra_candidates",
        "int",
        "Rows fetched from the index beyond top_k and re-ranked exactly.",
        minimum=0,
        maximum=10000,
    ),
    _f("m", "int", "HNSW index parameter m of the indexes the driver creates.", 2, 100),
    _f(
        "ef_construction",
        "int",
        "HNSW index parameter ef_construction (at least 2 * m).",
        minimum=4,
        maximum=1000,
    ),
    _f(
        "analyze_after_writes",
        "int",
        "Run ANALYZE on the records table in the background after this many writes by one "
        "sidecar, so freshly loaded namespaces are searched through HNSW (0 = off).",
        minimum=0,
    ),
)

BLOCKS: tuple[str, ...] = ("kv", "episodic", "semantic", "artifact", "lease")

# Drivers a MemoryStore may pick per block; the first is the default.
BLOCK_DRIVERS: dict[str, tuple[str, ...]] = {
    "kv": ("memory", "postgres"),
    "episodic": ("memory", "postgres"),
    "semantic": ("memory", "pgvector"),
    "artifact": ("localfs", "memory", "s3"),
    "lease": ("memory", "postgres"),
}
# Drivers that keep their data in the store's Postgres database.
DATABASE_DRIVERS = frozenset({"postgres", "pgvector"})
