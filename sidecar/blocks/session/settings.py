from __future__ import annotations

from datetime import timedelta

from pydantic import PositiveInt

from memsidecar.sidecar.models import StrictModel
from memsidecar.sidecar.units import ByteSize, Duration


class SessionSettings(StrictModel):
    """Agent sessions; their storage follows the lease block's driver."""

    # Episodic namespace for checkpoint events when a session does not name one.
    checkpoint_namespace: str = "sessions"
    default_heartbeat_interval: Duration = timedelta(seconds=5)
    default_heartbeat_timeout: Duration = timedelta(seconds=15)
    min_heartbeat_interval: Duration = timedelta(milliseconds=50)
    max_heartbeat_timeout: Duration = timedelta(hours=1)
    max_session_id_chars: PositiveInt = 128
    # Size of a session's metadata as JSON.
    max_metadata_bytes: ByteSize = 16 * 1024
    # Open sessions per tenant; Open beyond it is RESOURCE_EXHAUSTED.
    max_open_sessions: PositiveInt = 10_000
    # How long a closed or orphaned session is remembered: late heartbeats get
    # FAILED_PRECONDITION (not NOT_FOUND) and its id cannot be reused meanwhile.
    ended_retention: Duration = timedelta(hours=1)
    # Leases listed by name in a checkpoint event (the count is always given).
    checkpoint_max_leases: PositiveInt = 100
