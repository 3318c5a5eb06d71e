"""How the gRPC pipeline tells gateway calls apart: they are held to the TCP rule (a token).

The gateway reaches the gRPC server over the sidecar's Unix socket, where callers
without a token get the pod's ambient identity. An HTTP caller must not inherit
that: the gateway marks every call it forwards with metadata `x-memsidecar-gateway`,
and `GatewayAwareAuthenticator` authenticates marked calls as if they came over
TCP, where a capability token is required. The mark can only take trust away
(ambient → token required), never add it, so it needs no secret: a socket caller
that sends it merely gives up its ambient identity, and an HTTP caller cannot
remove it because the gateway builds the gRPC metadata itself, copying only the
capability token from the HTTP request.
"""

from __future__ import annotations

from memsidecar.sidecar.identity import Authenticator, Identity

GATEWAY_HEADER = "x-memsidecar-gateway"
# The HTTP caller's address, passed along for logs only; never used for decisions.
HTTP_PEER_HEADER = "x-memsidecar-http-peer"
# The peer the wrapped authenticator sees for gateway calls: not a socket peer.
GATEWAY_PEER_PREFIX = "http-gateway:"


class GatewayAwareAuthenticator:
    """Wraps the listener authenticator: calls the gateway forwards are treated as TCP calls."""

    def __init__(self, inner: Authenticator) -> None:
        self.inner = inner

    def authenticate(self, metadata: dict[str, str], peer: str) -> Identity:
        if GATEWAY_HEADER in metadata:
            peer = GATEWAY_PEER_PREFIX + peer
        return self.inner.authenticate(metadata, peer)
