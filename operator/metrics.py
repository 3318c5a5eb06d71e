"""Prometheus metrics of the operator (served on /metrics by `serve`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "memsidecar_operator_reconciles_total",
    "Reconciles of MemoryStore and MemoryPolicy objects, by outcome (ready, not_ready, "
    "gone, error).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "memsidecar_operator_reconcile_seconds",
    "Time one reconcile took (backend checks and migrations included).",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
ADMISSIONS = Counter(
    "memsidecar_operator_admission_reviews_total",
    "Admission reviews answered, by webhook and result (allowed, patched, denied, error).",
    ["webhook", "result"],
    registry=REGISTRY,
)
STATUS_WRITES = Counter(
    "memsidecar_operator_status_writes_total",
    "Status patches written (a no-op reconcile writes none).",
    ["kind"],
    registry=REGISTRY,
)


@contextmanager
def timed(kind: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - start)


def serve(addr: str, port: int) -> Any:
    """Serve /metrics in a background thread; returns the server (call .shutdown())."""
    server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
    return server
