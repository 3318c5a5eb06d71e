"""lease wire messages ↔ driver values."""

from __future__ import annotations

from memsidecar.lease.v1 import lease_pb2
from memsidecar.sidecar.blocks.lease.driver import LeaseRecord
from memsidecar.sidecar.protoconv import timestamp


def lease_to_proto(lease: LeaseRecord) -> lease_pb2.LeaseInfo:
    return lease_pb2.LeaseInfo(
        namespace=lease.namespace,
        key=lease.key,
        holder_id=lease.holder_id,
        fencing_token=lease.fencing_token,
        acquired_at=timestamp(lease.acquired_at),
        expires_at=timestamp(lease.expires_at),
        session_id=lease.session_id,
    )
