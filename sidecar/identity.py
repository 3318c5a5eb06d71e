"""Who is calling: resolved once per RPC by the call pipeline, read by services."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Protocol

from memsidecar.sidecar.errors import Unauthenticated


@dataclass(frozen=True)
class Identity:
    tenant: str
    agent: str
    # Namespace globs per block ("kv/scratch*"); empty = unrestricted (ambient callers).
    namespaces: tuple[str, ...] = ()
    # Allowed ops ("kv.put", "put", "*"); empty = unrestricted.
    ops: tuple[str, ...] = ()
    # How the identity was established: "ambient" or "token".
    source: str = "ambient"
    extra: dict[str, str] = field(default_factory=dict, compare=False)


class Authenticator(Protocol):
    def authenticate(self, metadata: dict[str, str], peer: str) -> Identity:
        """Resolve the caller or raise Unauthenticated."""
        ...


class AmbientAuthenticator:
    """Grants every caller one configured identity (socket callers in the same pod)."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    def authenticate(self, metadata: dict[str, str], peer: str) -> Identity:
        return self.identity


_current: contextvars.ContextVar[Identity] = contextvars.ContextVar("memsidecar_identity")


def current_identity() -> Identity:
    try:
        return _current.get()
    except LookupError:
        raise Unauthenticated("no caller identity was established for this call") from None


def set_identity(identity: Identity) -> contextvars.Token[Identity]:
    return _current.set(identity)


def reset_identity(token: contextvars.Token[Identity]) -> None:
    _current.reset(token)
