"""OpenTelemetry spans of a real in-process sidecar, caught with an in-memory exporter."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from memsidecar.client import AsyncMemSidecar
from memsidecar.client.errors import InvalidArgumentError
from memsidecar.kv.v1 import kv_pb2, kv_pb2_grpc
from memsidecar.sidecar.server import Sidecar
from tests.sidecar.observability.support import observability
from tests.support import running_sidecar

SECRET = "s3cr3t-value-8c1f0e"


@asynccontextmanager
async def traced(
    overrides: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[Sidecar, AsyncMemSidecar, InMemorySpanExporter]]:
    settings = {
        "observability.tracing.exporter": "stdout",
        "observability.access_log.enabled": False,
        **(overrides or {}),
    }
    async with running_sidecar(settings) as (sidecar, client):
        exporter = InMemorySpanExporter()
        observability(sidecar).tracing.add_span_processor(SimpleSpanProcessor(exporter))
        yield sidecar, client, exporter


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_one_server_span_per_rpc_with_names_not_values() -> None:
    async with traced() as (_, client, exporter):
        await client.kv.put("notes", "k", SECRET)
        with pytest.raises(InvalidArgumentError):
            await client.kv.put("notes", "", SECRET)
        spans = exporter.get_finished_spans()
        puts = by_name(spans, "memsidecar.kv.v1.KV/Put")
        assert len(puts) == 2
        ok, bad = puts
        assert ok.kind == SpanKind.SERVER
        assert ok.attributes is not None and bad.attributes is not None
        assert ok.attributes["memsidecar.block"] == "kv"
        assert ok.attributes["rpc.method"] == "Put"
        assert ok.attributes["rpc.service"] == "memsidecar.kv.v1.KV"
        assert ok.attributes["memsidecar.namespace"] == "notes"
        assert ok.attributes["memsidecar.tenant"] == "default"
        assert ok.attributes["memsidecar.code"] == "OK"
        assert ok.attributes["rpc.grpc.status_code"] == 0
        assert bad.attributes["memsidecar.code"] == "INVALID_ARGUMENT"
        assert bad.attributes["rpc.grpc.status_code"] == 3
        # A caller's mistake is not a server error.
        assert bad.status.status_code == StatusCode.UNSET
        assert ok.resource.attributes["service.name"] == "memsidecar"
        for span in spans:
            assert SECRET not in span.to_json()


async def test_server_fault_marks_the_span_as_error() -> None:
    async with traced() as (sidecar, client, exporter):

        async def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError(f"driver bug near {SECRET}")

        sidecar.blocks["kv"].driver.get = broken  # type: ignore[attr-defined]
        with pytest.raises(Exception, match="internal error"):
            await client.kv.get("notes", "k")
        (span,) = by_name(exporter.get_finished_spans(), "memsidecar.kv.v1.KV/Get")
        assert span.status.status_code == StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["memsidecar.code"] == "INTERNAL"
        # The exception's text is not recorded: it could quote data.
        assert SECRET not in span.to_json()
        assert not span.events


async def test_incoming_traceparent_is_the_parent() -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    parent_id = "b7ad6b7169203331"
    async with traced() as (_, client, exporter):
        stub = kv_pb2_grpc.KVStub(client.transport.channel)
        metadata = (("traceparent", f"00-{trace_id}-{parent_id}-01"),)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Get(kv_pb2.GetRequest(namespace="notes", key="k"), metadata=metadata)
        await client.kv.put("notes", "k", 1)
        first, second = exporter.get_finished_spans()
        assert format(first.context.trace_id, "032x") == trace_id
        assert first.parent is not None and format(first.parent.span_id, "016x") == parent_id
        assert first.parent.is_remote
        # Without a traceparent a call starts a trace of its own.
        assert second.parent is None
        assert format(second.context.trace_id, "032x") != trace_id


async def test_malformed_traceparent_starts_a_new_trace() -> None:
    async with traced() as (_, client, exporter):
        stub = kv_pb2_grpc.KVStub(client.transport.channel)
        await stub.Put(
            kv_pb2.PutRequest(namespace="notes", key="k", value=kv_pb2.Value(int_value=1)),
            metadata=(("traceparent", "00-not-a-trace-01"),),
        )
        (span,) = exporter.get_finished_spans()
        assert span.parent is None


async def test_sample_ratio_zero_records_nothing_unless_the_caller_sampled() -> None:
    trace_id = "1af7651916cd43dd8448eb211c80319c"
    async with traced({"observability.tracing.sample_ratio": 0.0}) as (_, client, exporter):
        await client.kv.put("notes", "k", 1)
        assert exporter.get_finished_spans() == ()
        stub = kv_pb2_grpc.KVStub(client.transport.channel)
        await stub.Get(
            kv_pb2.GetRequest(namespace="notes", key="k"),
            metadata=(("traceparent", f"00-{trace_id}-b7ad6b7169203331-01"),),
        )
        (span,) = exporter.get_finished_spans()
        assert format(span.context.trace_id, "032x") == trace_id


async def test_backend_call_is_a_child_span_on_postgres(postgres: str) -> None:
    overrides = {
        "blocks.kv.driver": "postgres",
        "blocks.kv.options": {"dsn": postgres},
        "identity.tenant": "obs-tracing",
    }
    async with traced(overrides) as (_, client, exporter):
        await client.kv.put("notes", "k", SECRET)
        await client.kv.get("notes", "k")
        spans = exporter.get_finished_spans()
        (put,) = by_name(spans, "memsidecar.kv.v1.KV/Put")
        (get,) = by_name(spans, "memsidecar.kv.v1.KV/Get")
        (put_db,) = by_name(spans, "postgres PostgresKV.put")
        (get_db,) = by_name(spans, "postgres PostgresKV.get")
        for rpc, db in ((put, put_db), (get, get_db)):
            assert db.kind == SpanKind.CLIENT
            assert db.parent is not None
            assert db.parent.span_id == rpc.context.span_id
            assert db.context.trace_id == rpc.context.trace_id
            assert db.attributes is not None
            assert db.attributes["db.system.name"] == "postgresql"
            operation = db.attributes["memsidecar.backend.operation"]
            assert isinstance(operation, str) and db.name == f"postgres {operation}"
        assert put.attributes is not None
        assert put.attributes["memsidecar.tenant"] == "obs-tracing"
        for span in spans:
            assert SECRET not in span.to_json()


async def test_stdout_exporter_prints_spans(capsys: pytest.CaptureFixture[str]) -> None:
    async with running_sidecar(
        {
            "observability.tracing.exporter": "stdout",
            "observability.tracing.service_name": "agent-7-memory",
            "observability.access_log.enabled": False,
        }
    ) as (_, client):
        await client.kv.put("notes", "k", SECRET)
    out = capsys.readouterr().out
    start = out.index("{")
    span = json.loads(out[start : out.index("\n}", start) + 2])
    assert span["name"] == "memsidecar.kv.v1.KV/Put"
    assert span["resource"]["attributes"]["service.name"] == "agent-7-memory"
    assert SECRET not in out


async def test_tracing_off_by_default() -> None:
    async with running_sidecar({"observability.access_log.enabled": False}) as (sidecar, client):
        await client.kv.put("notes", "k", 1)
        tracing = observability(sidecar).tracing
        assert not tracing.enabled
        with pytest.raises(RuntimeError, match="tracing is off"):
            tracing.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
