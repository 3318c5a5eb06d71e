"""memsidecar: a Kubernetes-native memory layer for AI agents."""

from memsidecar.client import AsyncMemSidecar, MemSidecar, RetryPolicy

__all__ = ["AsyncMemSidecar", "MemSidecar", "RetryPolicy"]
__version__ = "0.1.0"
