"""Defaults shared by the sidecar and its clients."""

from __future__ import annotations

import os
from pathlib import Path

SOCKET_ENV = "MEMSIDECAR_SOCKET"
TARGET_ENV = "MEMSIDECAR_TARGET"
TOKEN_ENV = "MEMSIDECAR_TOKEN"
CAPABILITY_HEADER = "x-memsidecar-capability"


def runtime_dir() -> Path:
    """A private per-user directory for the socket when none is configured."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base) / f"memsidecar-{os.getuid()}"


def default_socket_path() -> Path:
    """Where the sidecar listens and clients connect when nothing says otherwise."""
    configured = os.environ.get(SOCKET_ENV)
    return Path(configured) if configured else runtime_dir() / "memsidecar.sock"
