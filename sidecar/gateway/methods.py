"""The RPCs the gateway mirrors, read from the protobuf descriptors of the served services."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

ARTIFACT_PUT = "/memsidecar.artifact.v1.Artifact/Put"
SESSION_KEEPALIVE = "/memsidecar.session.v1.Session/KeepAlive"
# Request-streaming RPCs with a dedicated HTTP shape (docs/gateway.md); other
# request-streaming RPCs (e.g. server reflection) are not mirrored.
SPECIAL = (ARTIFACT_PUT, SESSION_KEEPALIVE)


@dataclass(frozen=True)
class Method:
    path: str  # "/memsidecar.kv.v1.KV/Get"
    request: type[Message]
    response: type[Message]
    client_streaming: bool
    server_streaming: bool


def method_table(service_names: Iterable[str]) -> dict[str, Method]:
    """Every mirrored method of the named services, by its gRPC path."""
    pool = descriptor_pool.Default()
    table: dict[str, Method] = {}
    for name in service_names:
        service = pool.FindServiceByName(name)
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            if method.client_streaming and path not in SPECIAL:
                continue
            table[path] = Method(
                path=path,
                request=message_factory.GetMessageClass(method.input_type),
                response=message_factory.GetMessageClass(method.output_type),
                client_streaming=method.client_streaming,
                server_streaming=method.server_streaming,
            )
    return table
