"""The access log: one JSON line per RPC.

Lines are encoded and written directly to the stream, not through `logging.Logger`
(a LogRecord, caller lookup and a formatter per call cost ~25 µs of the ~40 µs a line
took; `python -m bench profile`). The stdlib handlers still pick the stream: stderr or
stdout as they are at each write, or a file reopened when it is rotated away.

A line names who called what and how it ended. It never holds request or response
values, payloads, metadata or tokens: only the fields `access_fields()` picks from
the call record (names, sizes, codes, and the status message, which memsidecar
writes itself and which names keys and limits but never quotes values).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from logging.handlers import WatchedFileHandler
from pathlib import Path
from typing import IO, Any

from memsidecar.sidecar.errors import MemError
from memsidecar.sidecar.observability.observer import CallRecord
from memsidecar.sidecar.observability.settings import AccessLogSettings

log = logging.getLogger("memsidecar.access_log")
_encode = json.JSONEncoder(separators=(",", ":")).encode


def iso_time(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


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


def make_handler(stream: str) -> logging.StreamHandler[Any]:
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
        # This sidecar's own stream, outside the logging tree: the sidecar's other logs
        # (and other sidecars in the process) never mix into its lines.
        self.handler = make_handler(settings.stream)

    def write(self, call: CallRecord, duration: float, trace_id: str | None = None) -> None:
        fields = access_fields(call, duration, trace_id)
        line = _encode({"time": iso_time(time.time()), **fields}) + "\n"
        handler = self.handler
        handler.acquire()
        try:
            if isinstance(handler, WatchedFileHandler):
                handler.reopenIfNeeded()
            stream = handler.stream
            stream.write(line)
            stream.flush()
        except (OSError, ValueError) as exc:
            # A full disk or a closed stream loses the line, never the call.
            log.warning("cannot write the access log line: %s", exc)
        finally:
            handler.release()

    def close(self) -> None:
        self.handler.close()
