"""Exceptions the SDK raises: one class per gRPC status a caller may want to catch."""

from __future__ import annotations

import grpc


class MemSidecarError(Exception):
    """A call failed; `code` is the gRPC status, `message` says what to fix."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class InvalidArgumentError(MemSidecarError):
    pass


class NotFoundError(MemSidecarError):
    pass


class ConflictError(MemSidecarError):
    """Version mismatch, lease not held (FAILED_PRECONDITION) or contention (ABORTED)."""


class PermissionDeniedError(MemSidecarError):
    pass


class UnauthenticatedError(MemSidecarError):
    pass


class ResourceExhaustedError(MemSidecarError):
    """Rate limit, cap or size limit."""


class UnavailableError(MemSidecarError):
    """The sidecar or its backend is down (retried by the client before surfacing)."""


_BY_CODE: dict[grpc.StatusCode, type[MemSidecarError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: ConflictError,
    grpc.StatusCode.ABORTED: ConflictError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}


def from_rpc_error(exc: grpc.aio.AioRpcError) -> MemSidecarError:
    code = exc.code()
    return _BY_CODE.get(code, MemSidecarError)(code, exc.details() or "")
