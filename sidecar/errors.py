"""Errors that carry their gRPC status code and a message saying what to fix.

Services and drivers raise these; one interceptor turns them into statuses, so
every block maps failures the same way (DESIGN.md section 3).
"""

from __future__ import annotations

import grpc


class MemError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(MemError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(MemError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MemError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(MemError):
    """Version mismatch, lock not held, wrong value type for the operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(MemError):
    """A concurrency conflict the caller may retry, e.g. a lease held by another."""

    code = grpc.StatusCode.ABORTED


class Unauthenticated(MemError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(MemError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(MemError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(MemError):
    """The backend is down; retryable."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(MemError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class SchemaOutdated(Exception):
    """The database schema is older than this sidecar needs (`memsidecar migrate` fixes it).
    Here, not in backends.postgres, so the CLI can catch it without importing asyncpg."""
