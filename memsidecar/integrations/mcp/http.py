"""The HTTP side of the MCP server: the bearer-token gate and the listening socket.

Over streamable HTTP each MCP client presents its own memsidecar capability token as
`Authorization: Bearer <token>`; `bearer_token` reads it (the tools pass it on to the
sidecar) and `BearerGate` refuses malformed or, unless allowed, missing ones before the
MCP app sees the request. `HttpOptions`, `listen_socket` and `is_loopback` are what
`server.serve_http` and the command line need to bind and warn. Nothing here judges a
token: the sidecar verifies it on every call.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_PATH = "/mcp"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value (None when absent)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ValueError("the Authorization header must be 'Bearer <memsidecar capability token>'")
    return token.strip()


class BearerGate:
    """ASGI middleware in front of the streamable HTTP app.

    Refuses (401) a malformed Authorization header and, unless anonymous callers are
    allowed, a request without a bearer token. It does not judge the token: the sidecar
    verifies it on every tool call.
    """

    def __init__(self, app: ASGIApp, allow_anonymous: bool) -> None:
        self.app = app
        self.allow_anonymous = allow_anonymous

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem: str | None = None
            try:
                token = bearer_token(Headers(scope=scope).get("authorization"))
            except ValueError as exc:
                problem = str(exc)
            else:
                if token is None and not self.allow_anonymous:
                    problem = (
                        "this MCP server acts with each client's own memsidecar capability "
                        "token: send it as 'Authorization: Bearer <token>'"
                    )
            if problem is not None:
                response = JSONResponse(
                    {"error": "invalid_token", "error_description": problem},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="memsidecar"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen_socket(host: str, port: int) -> socket.socket:
    """Bind before serving, so the real port is known (and printed) even for port 0."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class HttpOptions:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    path: str = DEFAULT_PATH
    # Let requests without a bearer act with the server's own identity.
    allow_anonymous: bool = False
