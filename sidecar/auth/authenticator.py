"""Who is calling, per listener: the pod's ambient identity on the socket, or a capability token.

- Socket, `auth.socket: ambient`: a caller without a token gets the pod's
  ambient identity (unrestricted). A caller that does send a token is held to
  it: the token is verified and its narrower identity used; an invalid token
  is rejected, never quietly replaced by the ambient identity.
- Socket, `auth.socket: token`, and every TCP listener: a valid token is required.

The token travels as gRPC metadata `x-memsidecar-capability: Bearer <token>`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memsidecar.defaults import CAPABILITY_HEADER
from memsidecar.sidecar.auth.settings import AuthSettings
from memsidecar.sidecar.errors import Unauthenticated
from memsidecar.sidecar.identity import Identity

if TYPE_CHECKING:
    # tokens imports pyseto and PyJWT: only a sidecar with token keys loads it.
    from memsidecar.sidecar.auth.tokens import TokenVerifier

_HOW_TO_SEND = (
    f"send metadata `{CAPABILITY_HEADER}: Bearer <token>` (the SDK does this with "
    "MemSidecar(token=...) or the MEMSIDECAR_TOKEN env var); `memctl token issue` makes tokens"
)


def is_socket_peer(peer: str) -> bool:
    """grpc reports Unix socket peers as "unix:..." (or "unix-abstract:..."); TCP as ipv4:/ipv6:."""
    return peer.startswith(("unix:", "unix-abstract:"))


def bearer_token(value: str) -> str:
    """The token in a `Bearer <token>` header value; Unauthenticated if the value is garbled."""
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        raise Unauthenticated(
            f"malformed {CAPABILITY_HEADER} header: expected 'Bearer <token>'; {_HOW_TO_SEND}"
        )
    return token


class ListenerAuthenticator:
    """The Authenticator (sidecar/identity.py) for the sidecar's socket and TCP listeners."""

    def __init__(
        self, settings: AuthSettings, ambient: Identity, verifier: TokenVerifier | None
    ) -> None:
        self.settings = settings
        self.ambient = ambient
        self.verifier = verifier

    def authenticate(self, metadata: dict[str, str], peer: str) -> Identity:
        socket = is_socket_peer(peer)
        mode = self.settings.socket if socket else self.settings.tcp
        header = metadata.get(CAPABILITY_HEADER)
        if header is None:
            if mode == "ambient":
                return self.ambient
            where = "the Unix socket (auth.socket: token)" if socket else "TCP"
            raise Unauthenticated(f"a capability token is required on {where}; {_HOW_TO_SEND}")
        token = bearer_token(header)
        if self.verifier is None:
            raise Unauthenticated(
                "a capability token was sent but this sidecar has no verification keys "
                "configured (auth.keys), so it cannot check it"
            )
        return self.verifier.verify(token)
