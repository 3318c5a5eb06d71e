"""The `observability` section of the sidecar config (docs/observability.md).

```yaml
observability:
  metrics:
    listen: 0.0.0.0:9464     # Prometheus /metrics over HTTP; null (the default) = off
    path: /metrics
  tracing:
    exporter: otlp           # none (default) | stdout | otlp
    otlp_endpoint: http://otel-collector:4317
    service_name: memsidecar
    sample_ratio: 1.0
  access_log:
    enabled: true            # one JSON line per RPC
    stream: stderr           # stderr | stdout | a file path
```
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from memsidecar.sidecar.models import StrictModel


def split_host_port(value: str) -> tuple[str, int]:
    """("::1", 9464) from "[::1]:9464"; ValueError naming the expected form otherwise."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(
            f"{value!r} must be host:port, e.g. 127.0.0.1:9464, 0.0.0.0:9464 or [::]:9464 "
            "(port 0 picks a free port)"
        )
    return host, int(port)


class MetricsSettings(StrictModel):
    # "host:port" to serve Prometheus metrics on over HTTP; None = no metrics endpoint.
    # In a pod use 0.0.0.0:9464 so Prometheus can scrape the pod IP.
    listen: str | None = None
    path: str = "/metrics"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            split_host_port(value)
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(c.isspace() for c in value) or "?" in value:
            raise ValueError(f"path {value!r} must be a URL path starting with '/', e.g. /metrics")
        return value


class TracingSettings(StrictModel):
    # none: no spans are made; stdout: each span printed as JSON (debugging);
    # otlp: batched to an OpenTelemetry collector over gRPC.
    exporter: Literal["none", "stdout", "otlp"] = "none"
    # e.g. http://otel-collector:4317 (http:// = plaintext, https:// = TLS). Unset: the
    # exporter's own default, or the OTEL_EXPORTER_OTLP_ENDPOINT env var.
    otlp_endpoint: str | None = None
    service_name: str = Field(default="memsidecar", min_length=1)
    # Fraction of new traces recorded; a caller's sampled traceparent is always honoured.
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)


class AccessLogSettings(StrictModel):
    # One JSON line per RPC; never values, payloads or tokens.
    enabled: bool = True
    # "stderr", "stdout", or a file path (appended to; reopened when rotated away).
    stream: str = Field(default="stderr", min_length=1)


class ObservabilitySettings(StrictModel):
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    access_log: AccessLogSettings = Field(default_factory=AccessLogSettings)
