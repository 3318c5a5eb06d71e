"""The Python SDK: `MemSidecar` (blocking) and `AsyncMemSidecar`, one object per block."""

from memsidecar.client.aio import AsyncMemSidecar
from memsidecar.client.errors import (
    ConflictError,
    InvalidArgumentError,
    MemSidecarError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from memsidecar.client.retry import RetryPolicy
from memsidecar.client.sync import MemSidecar

__all__ = [
    "AsyncMemSidecar",
    "ConflictError",
    "InvalidArgumentError",
    "MemSidecar",
    "MemSidecarError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "UnauthenticatedError",
    "UnavailableError",
]
