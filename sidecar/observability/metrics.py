"""Prometheus metrics of one sidecar, in its own registry (several sidecars can share a
process, as in tests), served by `metrics_server.MetricsServer` when configured.

Gauges of state the blocks own (active leases, active sessions) are sampled when
scraped: each scrape awaits the blocks' count callbacks first, so no bookkeeping is
spread through the blocks and the numbers are never stale.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

log = logging.getLogger("memsidecar.observability")

# RPCs over a local socket take well under a millisecond; waits (lease wait_for) and
# streams take seconds.
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
# Longest a scrape waits for one sampled gauge before leaving it out.
SAMPLE_TIMEOUT_SECONDS = 2.0

GaugeSource = Callable[[], Awaitable[int | float]]


@dataclass
class _Sampled:
    name: str
    documentation: str
    source: GaugeSource
    value: float | None = None


class SampledGauges(Collector):
    """Gauges whose values come from async callbacks, awaited by `sample()` at scrape
    time; a callback that fails or times out leaves its gauge out of that scrape."""

    def __init__(self) -> None:
        self._gauges: list[_Sampled] = []

    def add(self, name: str, documentation: str, source: GaugeSource) -> None:
        self._gauges.append(_Sampled(name, documentation, source))

    async def sample(self, timeout: float = SAMPLE_TIMEOUT_SECONDS) -> None:
        for gauge in self._gauges:
            try:
                gauge.value = float(await asyncio.wait_for(gauge.source(), timeout))
            except Exception:
                log.warning("could not sample %s; left out of this scrape", gauge.name)
                gauge.value = None

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        for gauge in self._gauges:
            if gauge.value is not None:
                yield GaugeMetricFamily(gauge.name, gauge.documentation, value=gauge.value)


class Metrics:
    """Every memsidecar metric, registered in a registry of this sidecar's own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rpc_requests = Counter(
            "memsidecar_rpc_requests_total",
            "RPCs handled, by block, gRPC method and final status code.",
            ["block", "method", "code"],
            registry=r,
        )
        self.rpc_duration = Histogram(
            "memsidecar_rpc_duration_seconds",
            "Time from the call reaching the sidecar until its status was decided.",
            ["block", "method", "code"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.backend_duration = Histogram(
            "memsidecar_backend_duration_seconds",
            "Time a backend call held its connection (including waiting for one), by "
            "backend and the driver method that made the call.",
            ["backend", "operation"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.policy_decisions = Counter(
            "memsidecar_policy_decisions_total",
            "Policy decisions, by effect (allow, deny, rate_limit, cap) and the deciding "
            'rule ("(default)" when the defaultEffect decided).',
            ["effect", "rule"],
            registry=r,
        )
        self.sampled = SampledGauges()
        r.register(self.sampled)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    def add_gauge(self, name: str, documentation: str, source: GaugeSource) -> None:
        self.sampled.add(name, documentation, source)

    async def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (Prometheus text, or OpenMetrics when asked) and its content type."""
        await self.sampled.sample()
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
