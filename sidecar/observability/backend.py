"""Backend calls as the observability layer sees them: which sidecar is observing the
current task, and a name for the call being made.

A sidecar's Observability is installed in a context variable by the call pipeline
for each RPC (and around block start-up, so background tasks such as sweepers
inherit it). Backends ask `current_observer()` and, when one is set, wrap the call
in `observer.backend_call(backend, operation)`; with none set nothing is recorded
and nothing is computed. Backends are shared by every sidecar in a process (one
Postgres pool per DSN), so the observer cannot live on the backend itself.

This module imports nothing from the blocks or backends, so both may import it.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from types import FrameType
from typing import Protocol


class BackendObserver(Protocol):
    def backend_call(self, backend: str, operation: str) -> AbstractContextManager[None]:
        """Time one backend call (metrics) and make it a child span (tracing)."""
        ...


_current: contextvars.ContextVar[BackendObserver | None] = contextvars.ContextVar(
    "memsidecar_observer", default=None
)


def current_observer() -> BackendObserver | None:
    return _current.get()


def set_observer(observer: BackendObserver | None) -> contextvars.Token[BackendObserver | None]:
    return _current.set(observer)


def reset_observer(token: contextvars.Token[BackendObserver | None]) -> None:
    try:
        _current.reset(token)
    except ValueError:
        # The token was made in another context: an async generator finalised by the
        # event loop rather than by the task that ran it. That context is gone anyway.
        pass


@contextlib.contextmanager
def observing(observer: BackendObserver | None) -> Iterator[None]:
    """Install `observer` for the enclosed code (and tasks created in it)."""
    token = set_observer(observer)
    try:
        yield
    finally:
        reset_observer(token)


# How far up the stack operation_name() looks past private helpers.
_MAX_HOPS = 6


def operation_name(frame: FrameType | None) -> str:
    """A stable, low-cardinality name for the code that started a backend call: the
    qualified name of the nearest public function at or above `frame`, e.g.
    "PostgresKV.put" (a driver's private helpers such as `_tx` are skipped in favour
    of the public method that called them)."""
    first: str | None = None
    hops = 0
    while frame is not None and hops < _MAX_HOPS:
        code = frame.f_code
        if first is None:
            first = code.co_qualname
        name = code.co_name
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            return code.co_qualname
        frame = frame.f_back
        hops += 1
    return first or "unknown"


def caller_operation(depth: int = 1) -> str:
    """operation_name() of the caller `depth` frames above the function calling this."""
    return operation_name(sys._getframe(depth + 1))
