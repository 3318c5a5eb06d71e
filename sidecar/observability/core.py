"""A sidecar's observability: the call observer the pipeline reports to, and the
backend observer backends report to, feeding metrics, traces and the access log.

Nothing here may fail a call: an error while recording is logged and dropped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace

from memsidecar.sidecar.blocks.base import Block
from memsidecar.sidecar.blocks.lease import LeaseBlock
from memsidecar.sidecar.blocks.session import SessionBlock
from memsidecar.sidecar.calls import CallInfo
from memsidecar.sidecar.observability.access_log import AccessLog
from memsidecar.sidecar.observability.backend import reset_observer, set_observer
from memsidecar.sidecar.observability.metrics import Metrics
from memsidecar.sidecar.observability.observer import CallRecord, peer_kind
from memsidecar.sidecar.observability.settings import ObservabilitySettings
from memsidecar.sidecar.observability.tracing import Tracing
from memsidecar.sidecar.rpc import Ctx

if TYPE_CHECKING:
    from memsidecar.sidecar.observability.metrics_server import MetricsServer

log = logging.getLogger("memsidecar.observability")

DEFAULT_RULE = "(default)"


@dataclass
class _Live:
    """What begin() leaves for end() in CallRecord.state."""

    observer_token: Any
    span: trace.Span | None = None
    context_token: object | None = None


class Observability:
    """Implements CallObserver (sidecar/observability/observer.py) and BackendObserver
    (sidecar/observability/backend.py) for one sidecar."""

    def __init__(
        self, settings: ObservabilitySettings, blocks: Mapping[str, Block] | None = None
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.tracing = Tracing(settings.tracing)
        self.access_log = AccessLog(settings.access_log) if settings.access_log.enabled else None
        self.metrics_server: MetricsServer | None = None
        self._services: dict[str, str] = {}
        self._rpc_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self.watch_blocks(blocks or {})

    def watch_blocks(self, blocks: Mapping[str, Block]) -> None:
        """Name spans after the blocks' services; sample the lease and session gauges."""
        for name, block in blocks.items():
            self._services[name] = block.service_name
            if isinstance(block, LeaseBlock) and block.counts_leases:
                self.metrics.add_gauge(
                    "memsidecar_active_leases",
                    "Live (granted, not released, not expired) leases in the lease backend.",
                    block.active_leases,
                )
            if isinstance(block, SessionBlock):
                self.metrics.add_gauge(
                    "memsidecar_active_sessions",
                    "Open agent sessions whose heartbeats this sidecar is watching.",
                    block.active_sessions,
                )

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        listen = self.settings.metrics.listen
        if listen is not None and self.metrics_server is None:
            from memsidecar.sidecar.observability.metrics_server import MetricsServer

            server = MetricsServer(self.metrics, listen, self.settings.metrics.path)
            await server.start()
            self.metrics_server = server

    async def close(self) -> None:
        if self.metrics_server is not None:
            server, self.metrics_server = self.metrics_server, None
            await server.close()
        await self.tracing.shutdown()
        if self.access_log is not None:
            self.access_log.close()

    def describe(self) -> str:
        metrics = self.metrics_server.url if self.metrics_server is not None else "off"
        tracing = self.settings.tracing
        if tracing.exporter == "otlp":
            where = tracing.otlp_endpoint or "the OTLP default endpoint"
            traces = f"otlp to {where} (sample ratio {tracing.sample_ratio:g})"
        else:
            traces = tracing.exporter if tracing.exporter != "none" else "off"
        access = self.settings.access_log.stream if self.access_log is not None else "off"
        return f"metrics={metrics} tracing={traces} access_log={access}"

    # --- CallObserver -----------------------------------------------------------

    def _rpc_name(self, info: CallInfo) -> str:
        service = self._services.get(info.block, f"memsidecar.{info.block}.v1")
        return f"{service}/{info.method}"

    def begin(self, info: CallInfo, context: Ctx) -> CallRecord:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        call = CallRecord(info, peer_kind(context.peer() or "", metadata))
        live = _Live(set_observer(self))
        call.state = live
        if self.tracing.enabled:
            try:
                span = self.tracing.start_rpc(
                    self._rpc_name(info),
                    self.tracing.parent(metadata),
                    {
                        "rpc.system": "grpc",
                        "rpc.service": self._services.get(info.block, ""),
                        "rpc.method": info.method,
                        "memsidecar.block": info.block,
                        "memsidecar.op": info.op,
                        "memsidecar.peer": call.peer,
                    },
                )
                live.span = span
                live.context_token = otel_context.attach(trace.set_span_in_context(span))
            except Exception:
                log.exception("could not start the span of %s", info.op)
        return call

    def end(self, call: CallRecord, context: Ctx) -> None:
        live = call.state if isinstance(call.state, _Live) else None
        try:
            code = call.settle(context)
            duration = call.elapsed()
            self._record_metrics(call, code, duration)
            trace_id = None
            if live is not None and live.span is not None:
                span_context = live.span.get_span_context()
                if span_context.is_valid and span_context.trace_flags.sampled:
                    trace_id = format(span_context.trace_id, "032x")
                self.tracing.finish_rpc(live.span, code, self._span_attributes(call))
            if self.access_log is not None:
                self.access_log.write(call, duration, trace_id)
        except Exception:
            log.exception("could not record the end of %s", call.info.op)
        finally:
            if live is not None:
                if live.context_token is not None:
                    with contextlib.suppress(ValueError):
                        otel_context.detach(live.context_token)  # type: ignore[arg-type]
                reset_observer(live.observer_token)

    def _record_metrics(self, call: CallRecord, code: grpc.StatusCode, duration: float) -> None:
        labels = (call.info.block, call.info.method, code.name)
        # The labelled children are kept: labels() takes a lock and builds a key per call,
        # and (block, method, code) is a small fixed set.
        children = self._rpc_children.get(labels)
        if children is None:
            children = self._rpc_children[labels] = (
                self.metrics.rpc_requests.labels(*labels),
                self.metrics.rpc_duration.labels(*labels),
            )
        children[0].inc()
        children[1].observe(duration)
        decision = call.decision
        if decision is not None:
            self.metrics.policy_decisions.labels(
                decision.effect, decision.rule or DEFAULT_RULE
            ).inc()

    @staticmethod
    def _span_attributes(call: CallRecord) -> dict[str, str | int]:
        attributes: dict[str, str | int] = {
            "memsidecar.code": (call.code or grpc.StatusCode.OK).name
        }
        if call.namespace:
            attributes["memsidecar.namespace"] = call.namespace
        if call.identity is not None:
            attributes["memsidecar.tenant"] = call.identity.tenant
            attributes["memsidecar.agent"] = call.identity.agent
            attributes["memsidecar.identity"] = call.identity.source
        if call.decision is not None and call.decision.rule is not None:
            attributes["memsidecar.policy.rule"] = call.decision.rule
            attributes["memsidecar.policy.effect"] = call.decision.effect
        return attributes

    # --- BackendObserver --------------------------------------------------------

    def backend_call(self, backend: str, operation: str) -> AbstractContextManager[None]:
        return self._backend_call(backend, operation)

    @contextlib.contextmanager
    def _backend_call(self, backend: str, operation: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            if self.tracing.enabled:
                with self.tracing.backend_span(backend, operation):
                    yield
            else:
                yield
        finally:
            self.metrics.backend_duration.labels(backend, operation).observe(
                time.perf_counter() - started
            )
