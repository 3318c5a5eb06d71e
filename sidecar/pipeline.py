"""The call pipeline every memsidecar RPC passes through: identity, then the handler,
with every MemError turned into its gRPC status and message. An observer (metrics,
traces, access log) hears of each call at its start and at its end, with the final code.

It is a grpc.aio server interceptor that wraps each handler's behaviour, so
unary and streaming RPCs get exactly the same treatment.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from memsidecar.sidecar.auth.scope import check_op, check_scope
from memsidecar.sidecar.calls import CallInfo, parse_method
from memsidecar.sidecar.errors import MemError
from memsidecar.sidecar.identity import (
    Authenticator,
    current_identity,
    reset_identity,
    set_identity,
)
from memsidecar.sidecar.observability.observer import CallObserver, CallRecord, NullObserver
from memsidecar.sidecar.policy.engine import Decision, PolicyRequest
from memsidecar.sidecar.policy.holder import PolicyHolder
from memsidecar.sidecar.rpc import Ctx

log = logging.getLogger("memsidecar.pipeline")


def _status(exc: Exception, info: CallInfo) -> tuple[grpc.StatusCode, str]:
    """The status a failed call ends with: a MemError's own, else INTERNAL with an incident
    id that is in the log (the caller never sees the exception)."""
    if isinstance(exc, MemError):
        return exc.code, exc.message
    incident = uuid.uuid4().hex[:12]
    log.exception("internal error in %s (incident %s)", info.op, incident, exc_info=exc)
    return grpc.StatusCode.INTERNAL, (
        f"internal error in {info.op}; see the sidecar log, incident {incident}"
    )


class CallPipeline(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """identity → policy → handler, for every memsidecar RPC, reported to the observer.

    Policy decides on the request message; for request streams (artifact.put,
    session.keep_alive) on the first message, and a byte cap then bounds the
    whole stream.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        policy: PolicyHolder | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.policy = policy or PolicyHolder()
        self.observer = observer or NullObserver()
        # method → (the server's handler, our wrapped one): built once per method, not per call.
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def _fail(self, context: Ctx, exc: Exception, info: CallInfo, call: CallRecord) -> None:
        """End the call's observation, then send its status. grpc.aio sends the status
        inside abort(), so recording it after would let the caller see the failure before
        metrics, the span and the access log do."""
        code, message = _status(exc, info)
        call.fail(code, message)
        self.observer.end(call, context)
        await context.abort(code, message)

    def _enter(self, context: Ctx, call: CallRecord) -> Any:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        identity = self.authenticator.authenticate(metadata, context.peer() or "")
        call.identity = identity
        return set_identity(identity)

    def _admit(self, info: CallInfo, message: Any, call: CallRecord) -> Decision:
        # current() is read once: the call sees one whole rule set.
        identity = current_identity()
        request = PolicyRequest.from_message(identity, info, message)
        call.admitted(request)
        # Scope before policy, so a refused call takes no rate-limit token.
        if request.namespace:
            check_scope(identity, info.block, request.namespace, info.op)
        else:
            check_op(identity, info.op)
        decision = self.policy.current().decide(request)
        call.decision = decision
        decision.raise_if_rejected()
        return decision

    async def _admit_stream(
        self, info: CallInfo, requests: AsyncIterator[Any], call: CallRecord
    ) -> Any:
        """Decide on the first message of a request stream; bound the rest by the byte cap."""
        iterator = aiter(requests)
        try:
            first = await anext(iterator)
        except StopAsyncIteration:
            self._admit(info, None, call)
            return _empty()
        cap = self._admit(info, first, call).byte_cap

        async def admitted() -> AsyncIterator[Any]:
            total = first.ByteSize()
            yield first
            async for message in iterator:
                total += message.ByteSize()
                call.request_bytes = total
                if cap is not None and cap.exceeded(total):
                    raise cap.error(total, f"the {info.op} stream")
                yield message

        return admitted()

    async def _prepare(
        self, info: CallInfo, request: Any, streaming_request: bool, call: CallRecord
    ) -> Any:
        if streaming_request:
            return await self._admit_stream(info, request, call)
        self._admit(info, request, call)
        return request

    def _wrap_unary(self, behavior: Any, info: CallInfo, streaming_request: bool) -> Any:
        async def handler(request: Any, context: Ctx) -> Any:
            token = None
            ended = False
            call = self.observer.begin(info, context)
            try:
                token = self._enter(context, call)
                request = await self._prepare(info, request, streaming_request, call)
                response = await behavior(request, context)
                call.sent(response)
                return response
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                ended = True  # _fail ends the observation; abort() then raises
                await self._fail(context, exc, info, call)
            except BaseException as exc:
                # Cancelled: the caller went away or its deadline passed.
                call.interrupted(context, exc)
                raise
            finally:
                if not ended:
                    self.observer.end(call, context)
                if token is not None:
                    reset_identity(token)

        return handler

    def _wrap_stream(self, behavior: Any, info: CallInfo, streaming_request: bool) -> Any:
        async def handler(request: Any, context: Ctx) -> AsyncIterator[Any]:
            token = None
            ended = False
            call = self.observer.begin(info, context)
            try:
                token = self._enter(context, call)
                request = await self._prepare(info, request, streaming_request, call)
                async for item in behavior(request, context):
                    call.sent(item)
                    yield item
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                ended = True  # _fail ends the observation; abort() then raises
                await self._fail(context, exc, info, call)
            except BaseException as exc:
                # Cancelled, or the stream was closed before it finished.
                call.interrupted(context, exc)
                raise
            finally:
                if not ended:
                    self.observer.end(call, context)
                if token is not None:
                    reset_identity(token)

        return handler

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        cached = self._wrapped.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, details.method)
        if wrapped is not handler:
            # Only methods the server has (unknown names from callers must not grow this).
            self._wrapped[details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Any, method: str) -> Any:
        info = parse_method(method)
        if handler is None or info is None:
            return handler
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, info, False), **kwargs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, info, True), **kwargs
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, info, False), **kwargs
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(handler.stream_stream, info, True), **kwargs
        )


async def _empty() -> AsyncIterator[Any]:
    return
    yield
