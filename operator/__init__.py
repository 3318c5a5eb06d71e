"""The memsidecar operator (kopf): reconciles MemoryStore and MemoryPolicy objects and
serves the admission webhooks. Run it with `python -m memsidecar.operator`."""

from __future__ import annotations

from collections.abc import Sequence


def run(argv: Sequence[str] | None = None) -> int:
    """Run the operator with these command-line arguments; returns the exit code."""
    from memsidecar.operator.main import run as _run

    return _run(argv)


__all__ = ["run"]
