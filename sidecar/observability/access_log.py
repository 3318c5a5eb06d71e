"""The access log: one JSON line per RPC, through the stdlib logging machinery.

A line names who called what and how it ended. It never holds request or response
values, payloads, metadata or tokens: only the fields `access_fields()` picks from
the call record (names, sizes, codes, and the status message, which memsidecar
writes itself and which names keys and limits but never quotes values).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from logging.handlers import WatchedFileHandler
from pathlib import Path
from typing import IO, Any

from memsidecar.sidecar.errors import MemError
from memsidecar.sidecar.observability.observer import CallRecord
from memsidecar.sidecar.observability.settings import AccessLogSettings

# The LogRecord attribute the access fields travel in.
FIELDS_ATTR = "memsidecar_access"


def iso_time(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class JsonLineFormatter(logging.Formatter):
    """`{"time": ..., **fields}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, FIELDS_ATTR, None) or {"msg": record.getMessage()}
        return json.dumps({"time": iso_time(record.created), **fields}, separators=(",", ":"))


class StdStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to sys.stderr / sys.stdout as they are at each write (so redirection after
    start-up, e.g. by a test harness, is followed)."""

    def __init__(self, which: str) -> None:
        logging.Handler.__init__(self)
        self.which = which

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stdout if self.which == "stdout" else sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        # logging.StreamHandler.setStream assigns; the stream is always the current one.
        pass


def make_handler(stream: str) -> logging.Handler:
    if stream in ("stderr", "stdout"):
        return StdStreamHandler(stream)
    path = Path(stream)
    try:
        return WatchedFileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise MemError(
            f"cannot open the access log file {path}: {exc.strerror or exc}; set "
            "observability.access_log.stream to a writable path, stderr or stdout"
        ) from exc


def access_fields(call: CallRecord, duration: float, trace_id: str | None) -> dict[str, Any]:
    """The whole content of one access-log line (besides its time)."""
    code = call.code.name if call.code is not None else "UNKNOWN"
    fields: dict[str, Any] = {"event": "rpc", "peer": call.peer}
    identity = call.identity
    if identity is not None:
        fields.update(tenant=identity.tenant, agent=identity.agent, identity=identity.source)
    fields.update(block=call.info.block, method=call.info.method, op=call.info.op)
    if call.namespace:
        fields["namespace"] = call.namespace
    fields.update(code=code, duration_ms=round(duration * 1000, 3))
    if call.request_bytes is not None:
        fields["request_bytes"] = call.request_bytes
    if call.responses:
        fields["response_bytes"] = call.response_bytes
    decision = call.decision
    if decision is not None and (decision.rule is not None or not decision.allowed):
        fields["policy_effect"] = decision.effect
        fields["policy_rule"] = decision.rule or "(default)"
    if code != "OK" and call.message:
        fields["error"] = call.message
    if trace_id:
        fields["trace_id"] = trace_id
    return fields


class AccessLog:
    def __init__(self, settings: AccessLogSettings) -> None:
        self.settings = settings
        self.handler = make_handler(settings.stream)
        self.handler.setFormatter(JsonLineFormatter())
        # A logger of this sidecar's own, outside the logging tree: the sidecar's other
        # logs (and other sidecars in the process) never mix into its lines.
        self.logger = logging.Logger("memsidecar.access", logging.INFO)
        self.logger.propagate = False
        self.logger.addHandler(self.handler)

    def write(self, call: CallRecord, duration: float, trace_id: str | None = None) -> None:
        self.logger.info("rpc", extra={FIELDS_ATTR: access_fields(call, duration, trace_id)})

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()
