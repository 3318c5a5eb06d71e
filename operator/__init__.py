"""The memsidecar operator (kopf): reconciles MemoryStore and MemoryPolicy objects and
serves the admission webhooks. Run it with `python -m memsidecar.operator`."""

from __future__ import annotations

from collections.abc import Sequence


def run(argv: Sequence[str] | None = None, prog: str = "python -m memsidecar.operator") -> int:
    """Run the operator with these command-line arguments (flags of `--help`, or env
    MEMSIDECAR_OPERATOR_*) until SIGTERM/SIGINT; returns the process exit code."""
    from memsidecar.operator.main import run as _run

    return _run(argv, prog)


__all__ = ["run"]
