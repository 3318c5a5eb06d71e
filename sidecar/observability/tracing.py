"""OpenTelemetry tracing of one sidecar: a span per RPC, a child span per backend call.

Each sidecar has its own TracerProvider (never the global one), so an embedding
application's tracing is left alone and several sidecars can share a process.
The caller's W3C `traceparent` / `tracestate` gRPC metadata, when present, makes
the RPC span a child of the caller's span. Spans carry names (block, method,
namespace, tenant, agent, status code), never values, payloads, tokens or
exception texts.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from memsidecar.sidecar.errors import MemError, Unavailable
from memsidecar.sidecar.observability.settings import TracingSettings

INSTRUMENTATION = "memsidecar.sidecar"

# Server-side gRPC codes that mark a span as an error (OpenTelemetry's gRPC semantic
# conventions); the others are the caller's mistake, not the server's.
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def make_exporter(settings: TracingSettings) -> SpanExporter:
    if settings.exporter == "stdout":
        # sys.stdout as it is now, not as it was when the SDK was imported.
        return ConsoleSpanExporter(service_name=settings.service_name, out=sys.stdout)
    # Imported here: the gRPC exporter pulls in protobuf modules only OTLP users need.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.otlp_endpoint)


def backend_failed(exc: BaseException) -> bool:
    """Whether an exception leaving a backend call is the backend's failure (rather than a
    refusal the driver raised on purpose, such as a version mismatch)."""
    return isinstance(exc, Unavailable) or not isinstance(exc, MemError)


class Tracing:
    def __init__(self, settings: TracingSettings) -> None:
        self.settings = settings
        self.propagator = TraceContextTextMapPropagator()
        self.provider: TracerProvider | None = None
        self.tracer: trace.Tracer = trace.NoOpTracer()
        if settings.exporter == "none":
            return
        self.provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: settings.service_name}),
            sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
        )
        exporter = make_exporter(settings)
        processor: SpanProcessor = (
            SimpleSpanProcessor(exporter)
            if settings.exporter == "stdout"
            else BatchSpanProcessor(exporter)
        )
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer(INSTRUMENTATION)

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Send spans somewhere else too (tests use an in-memory exporter)."""
        if self.provider is None:
            raise RuntimeError("tracing is off (observability.tracing.exporter: none)")
        self.provider.add_span_processor(processor)

    def parent(self, metadata: Mapping[str, str]) -> Context:
        """The caller's trace context from `traceparent` / `tracestate` metadata (an empty
        context, so a new trace, when there is none or it is malformed)."""
        return self.propagator.extract(dict(metadata))

    def start_rpc(self, name: str, parent: Context, attributes: dict[str, str]) -> Span:
        return self.tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )

    @staticmethod
    def finish_rpc(span: Span, code: grpc.StatusCode, attributes: dict[str, str | int]) -> None:
        span.set_attributes(attributes)
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()

    @contextmanager
    def backend_span(self, backend: str, operation: str) -> Iterator[None]:
        """A child span of the current one around a backend call. Exceptions are marked by
        type only: their text can quote data (a database error echoing a row)."""
        with self.tracer.start_as_current_span(
            f"{backend} {operation}",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system.name": "postgresql" if backend == "postgres" else backend,
                "memsidecar.backend": backend,
                "memsidecar.backend.operation": operation,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as exc:
                if backend_failed(exc):
                    span.set_attribute("error.type", type(exc).__name__)
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise

    async def shutdown(self) -> None:
        """Flush and stop the exporter (in a thread: an OTLP flush may wait on the network)."""
        if self.provider is not None:
            provider, self.provider = self.provider, None
            self.tracer = trace.NoOpTracer()
            await asyncio.to_thread(provider.shutdown)
