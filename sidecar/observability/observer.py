"""What the call pipeline tells observers: one CallRecord per RPC, begun before
identity is resolved and ended with the final status code.

The pipeline fills the record as the call proceeds (identity, what policy saw
and decided, bytes in and out, the status of a failure); the observer turns it
into a span, metrics and an access-log line. Nothing in a record holds request
or response values, only sizes and names.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from memsidecar.sidecar.calls import CallInfo

if TYPE_CHECKING:
    from memsidecar.sidecar.identity import Identity
    from memsidecar.sidecar.policy.engine import Decision, PolicyRequest
    from memsidecar.sidecar.rpc import Ctx

# A cancellation this close to the caller's deadline is reported as DEADLINE_EXCEEDED
# (grpc cancels the handler a moment before its own clock reaches the deadline).
DEADLINE_SLACK_SECONDS = 0.05


# Metadata the HTTP/JSON gateway puts on every call it forwards (sidecar/gateway/auth.py).
GATEWAY_MARK = "x-memsidecar-gateway"


def peer_kind(peer: str, metadata: Mapping[str, str] | None = None) -> str:
    """The kind of caller: "http" for calls through the HTTP/JSON gateway, "unix" for
    socket callers, "tcp" for TCP ones (grpc peers "unix:…", "ipv4:…"). For logs and
    metrics only: anyone can send the gateway mark, so nothing is decided on it."""
    if metadata is not None and GATEWAY_MARK in metadata:
        return "http"
    return "unix" if peer.startswith(("unix:", "unix-abstract:")) else "tcp"


@dataclass(eq=False)
class CallRecord:
    info: CallInfo
    # "unix" or "tcp".
    peer: str
    started: float = field(default_factory=time.perf_counter)
    identity: Identity | None = None
    # What policy saw of the (first) request message: namespace, size.
    request: PolicyRequest | None = None
    decision: Decision | None = None
    request_bytes: int | None = None
    response_bytes: int = 0
    responses: int = 0
    code: grpc.StatusCode | None = None
    # The status message of a failed call (ours: names and limits, never values).
    message: str = ""
    # Whatever the observer keeps between begin and end (its span, context tokens).
    state: Any = None

    @property
    def namespace(self) -> str:
        return self.request.namespace if self.request is not None else ""

    def admitted(self, request: PolicyRequest) -> None:
        self.request = request
        self.request_bytes = request.size_bytes

    def sent(self, message: Any) -> None:
        """A response message went out (unary: the response; streams: each item)."""
        self.responses += 1
        if message is not None:
            self.response_bytes += message.ByteSize()

    def fail(self, code: grpc.StatusCode, message: str) -> None:
        if self.code is None:
            self.code, self.message = code, message

    def interrupted(self, context: Ctx, exc: BaseException | None = None) -> None:
        """The handler was cancelled (caller gone, deadline passed) or its stream closed."""
        if self.code is not None:
            return
        remaining = context.time_remaining()
        if remaining is not None and remaining <= DEADLINE_SLACK_SECONDS:
            self.fail(grpc.StatusCode.DEADLINE_EXCEEDED, "the caller's deadline passed")
        else:
            self.fail(grpc.StatusCode.CANCELLED, "the caller cancelled the call")

    def settle(self, context: Ctx) -> grpc.StatusCode:
        """The final code: what the pipeline recorded, else DEADLINE_EXCEEDED / CANCELLED
        if the deadline passed or grpc says the call was cancelled, else what the handler
        set on the context itself (its own context.abort / set_code), else OK.

        A caller that cancels a request stream while the handler waits for its next
        message looks to the handler like the end of the stream; grpc does not tell the
        server otherwise, so such a call ends OK."""
        if self.code is not None:
            return self.code
        remaining = context.time_remaining()
        if context.cancelled() or (remaining is not None and remaining <= 0):
            # A request stream just ends when its deadline passes, so a handler reading
            # one returns normally from a call the caller sees fail.
            self.interrupted(context)
            assert self.code is not None
            return self.code
        code = context.code()
        if isinstance(code, grpc.StatusCode) and code != grpc.StatusCode.OK:
            details = context.details()
            self.message = details if isinstance(details, str) else ""
        else:
            code = grpc.StatusCode.OK
        self.code = code
        return code

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


class CallObserver(Protocol):
    def begin(self, info: CallInfo, context: Ctx) -> CallRecord:
        """Called first for every RPC, before identity is resolved."""
        ...

    def end(self, call: CallRecord, context: Ctx) -> None:
        """Called last for every RPC, however it ended (OK, an error status, cancelled)."""
        ...


class NullObserver:
    """Records nothing beyond what the pipeline itself keeps in the record."""

    def begin(self, info: CallInfo, context: Ctx) -> CallRecord:
        return CallRecord(info, peer_kind(context.peer() or ""))

    def end(self, call: CallRecord, context: Ctx) -> None:
        call.settle(context)
