"""artifact wire messages ↔ driver values."""

from __future__ import annotations

from memsidecar.artifact.v1 import artifact_pb2
from memsidecar.sidecar.blocks.artifact.driver import ArtifactRecord
from memsidecar.sidecar.protoconv import dict_to_struct, timestamp


def info_to_proto(namespace: str, record: ArtifactRecord) -> artifact_pb2.ArtifactInfo:
    return artifact_pb2.ArtifactInfo(
        namespace=namespace,
        id=record.id,
        size=record.size,
        sha256=record.sha256,
        content_type=record.content_type,
        metadata=dict_to_struct(record.metadata),
        created_at=timestamp(record.created_at),
    )
