"""gRPC status codes as HTTP statuses, and the JSON error body `{code, message}`."""

from __future__ import annotations

import json

import grpc
from aiohttp import web

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
}
# Every other code (INTERNAL, UNKNOWN, DEADLINE_EXCEEDED, CANCELLED, ...) is a 500.
DEFAULT_HTTP_STATUS = 500


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, DEFAULT_HTTP_STATUS)


def error_body(code: grpc.StatusCode | str, message: str) -> dict[str, str]:
    name = code if isinstance(code, str) else code.name
    return {"code": name, "message": message}


def error_response(
    code: grpc.StatusCode | str, message: str, status: int | None = None
) -> web.Response:
    """A JSON error; `status` overrides the HTTP status derived from a gRPC code."""
    if status is None:
        status = http_status(code) if isinstance(code, grpc.StatusCode) else DEFAULT_HTTP_STATUS
    headers = {"WWW-Authenticate": 'Bearer realm="memsidecar"'} if status == 401 else None
    return web.Response(
        status=status,
        text=json.dumps(error_body(code, message)),
        content_type="application/json",
        headers=headers,
    )


HTTP_TOKEN_HINT = " (over HTTP: send the token as `Authorization: Bearer <token>`)"


def rpc_message(code: grpc.StatusCode, details: str | None) -> str:
    """The sidecar's message for a failed call, with how to send a token over HTTP."""
    message = details or code.name
    return message + HTTP_TOKEN_HINT if code == grpc.StatusCode.UNAUTHENTICATED else message


def rpc_error_response(exc: grpc.aio.AioRpcError) -> web.Response:
    return error_response(exc.code(), rpc_message(exc.code(), exc.details()))


class GatewayError(Exception):
    """A request the gateway itself refuses before forwarding (bad JSON, unknown method)."""

    def __init__(
        self,
        status: int,
        code: grpc.StatusCode,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> web.Response:
        resp = error_response(self.code, self.message, self.status)
        resp.headers.update(self.headers)
        return resp
