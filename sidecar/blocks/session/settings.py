from __future__ import annotations

from datetime import timedelta

from memsidecar.sidecar.blocks.settings import StrictModel
from memsidecar.sidecar.units import Duration


class SessionSettings(StrictModel):
    """Agent sessions; their storage follows the lease block's driver."""

    # Episodic namespace for checkpoint events when a session does not name one.
    checkpoint_namespace: str = "sessions"
    default_heartbeat_interval: Duration = timedelta(seconds=5)
    default_heartbeat_timeout: Duration = timedelta(seconds=15)
    min_heartbeat_interval: Duration = timedelta(milliseconds=50)
    max_heartbeat_timeout: Duration = timedelta(hours=1)
