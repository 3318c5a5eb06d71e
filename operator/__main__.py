"""`python -m memsidecar.operator`."""

from __future__ import annotations

import sys

from memsidecar.operator.main import run

if __name__ == "__main__":
    sys.exit(run())
