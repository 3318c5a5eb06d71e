"""The HTTP/JSON gateway: every unary RPC as `POST /<package>.<Service>/<Method>` with protobuf
JSON, server streams as NDJSON, artifact uploads as a raw body, session heartbeats as one call.

It forwards each request to the sidecar's own gRPC server, so the one call pipeline
does auth, scopes, policy, validation and errors. docs/gateway.md for callers.
"""

from __future__ import annotations

# The server (aiohttp) is in .server, imported only by a sidecar with listen.http set.
from memsidecar.sidecar.gateway.auth import GATEWAY_HEADER, GatewayAwareAuthenticator

__all__ = ["GATEWAY_HEADER", "GatewayAwareAuthenticator"]
