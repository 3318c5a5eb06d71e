"""The observability config section, the start-up banner, the OTLP exporter, and the
pieces that need no running sidecar."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from memsidecar.sidecar.config import ConfigError, load_config
from memsidecar.sidecar.errors import MemError
from memsidecar.sidecar.observability.backend import (
    caller_operation,
    observing,
    operation_name,
)
from memsidecar.sidecar.observability.observer import peer_kind
from memsidecar.sidecar.observability.settings import split_host_port
from memsidecar.sidecar.server import describe
from tests.sidecar.observability.support import observed_overrides
from tests.support import running_sidecar


def test_defaults() -> None:
    obs = load_config().observability
    assert obs.metrics.listen is None
    assert obs.metrics.path == "/metrics"
    assert obs.tracing.exporter == "none"
    assert obs.tracing.service_name == "memsidecar"
    assert obs.tracing.sample_ratio == 1.0
    assert obs.access_log.enabled is True
    assert obs.access_log.stream == "stderr"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("observability.metrics.listen", "9464", "must be host:port"),
        ("observability.metrics.listen", "0.0.0.0:99999", "must be host:port"),
        ("observability.metrics.path", "metrics", "must be a URL path"),
        ("observability.tracing.exporter", "jaeger", "observability.tracing.exporter"),
        ("observability.tracing.sample_ratio", 1.5, "observability.tracing.sample_ratio"),
        ("observability.access_log.stream", "", "observability.access_log.stream"),
        ("observability.metrics.listne", "0.0.0.0:9464", "observability.metrics.listne"),
    ],
)
def test_invalid_settings_name_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, {field: value})


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSIDECAR_OBSERVABILITY__METRICS__LISTEN", "0.0.0.0:9464")
    monkeypatch.setenv("MEMSIDECAR_OBSERVABILITY__TRACING__EXPORTER", "otlp")
    monkeypatch.setenv("MEMSIDECAR_OBSERVABILITY__ACCESS_LOG__ENABLED", "false")
    obs = load_config().observability
    assert obs.metrics.listen == "0.0.0.0:9464"
    assert obs.tracing.exporter == "otlp"
    assert obs.access_log.enabled is False


def test_split_host_port() -> None:
    assert split_host_port("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert split_host_port("[::1]:0") == ("::1", 0)
    with pytest.raises(ValueError, match="host:port"):
        split_host_port(":9464")


async def test_banner_says_where_metrics_are(tmp_path: Path) -> None:
    async with running_sidecar(observed_overrides(tmp_path)) as (sidecar, _):
        banner = describe(sidecar)
        assert sidecar.observability is not None and sidecar.observability.metrics_server
        url = sidecar.observability.metrics_server.url
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/metrics")
        assert f"metrics={url}" in banner
        assert "tracing=off" in banner
        assert f"access_log={tmp_path / 'access.log'}" in banner


async def test_metrics_port_in_use_is_a_clear_start_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        overrides = observed_overrides(
            tmp_path, **{"observability.metrics.listen": f"127.0.0.1:{port}"}
        )
        with pytest.raises(MemError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            async with running_sidecar(overrides):
                pass


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.names: list[str] = []
        self.services: list[str] = []
        self.received = asyncio.Event()

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    self.services.append(attribute.value.string_value)
            for scope in resource_spans.scope_spans:
                self.names.extend(span.name for span in scope.spans)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_otlp_exporter_sends_spans_to_a_collector(tmp_path: Path) -> None:
    collector = _Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        overrides = observed_overrides(
            tmp_path,
            **{
                "observability.tracing.exporter": "otlp",
                "observability.tracing.otlp_endpoint": f"http://127.0.0.1:{port}",
                "observability.tracing.service_name": "memsidecar-otlp-test",
            },
        )
        async with running_sidecar(overrides) as (sidecar, client):
            assert f"otlp to http://127.0.0.1:{port}" in describe(sidecar)
            await client.kv.put("notes", "k", 1)
        # Stopping the sidecar flushes the batch.
        await asyncio.wait_for(collector.received.wait(), 10)
        assert "memsidecar.kv.v1.KV/Put" in collector.names
        assert collector.services[0] == "memsidecar-otlp-test"
    finally:
        await server.stop(0)


def test_peer_kind() -> None:
    assert peer_kind("unix:/run/m.sock") == "unix"
    assert peer_kind("unix-abstract:x") == "unix"
    assert peer_kind("ipv4:127.0.0.1:5555") == "tcp"
    assert peer_kind("ipv6:[::1]:5555") == "tcp"
    assert peer_kind("unix:/run/m.sock", {"x-memsidecar-gateway": "1"}) == "http"


class FakeDriver:
    async def put(self) -> str:
        return self._tx()

    def _tx(self) -> str:
        return self._inner()

    def _inner(self) -> str:
        return caller_operation()


def test_operation_name_is_the_public_caller() -> None:
    assert asyncio.run(FakeDriver().put()) == "FakeDriver.put"
    assert operation_name(sys._getframe()) == "test_operation_name_is_the_public_caller"
    assert operation_name(None) == "unknown"


def test_observing_restores_the_previous_observer() -> None:
    from memsidecar.sidecar.observability.backend import current_observer

    class Recorder:
        def backend_call(self, backend: str, operation: str) -> Any:
            raise AssertionError("not called")

    outer, inner = Recorder(), Recorder()
    assert current_observer() is None
    with observing(outer):
        assert current_observer() is outer
        with observing(inner):
            assert current_observer() is inner
        assert current_observer() is outer
    assert current_observer() is None
