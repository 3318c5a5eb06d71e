"""Observability of the sidecar: Prometheus metrics, OpenTelemetry traces and a JSON
access log, all fed from the call pipeline and the backends (docs/observability.md).

Modules: settings (config section), observer (what the pipeline reports per call),
backend (what backends report), metrics, tracing, access_log, and core (the
Observability object tying them to one sidecar). This package module imports none
of them, so backends can import `observability.backend` without pulling in blocks.
"""
