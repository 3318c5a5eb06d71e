"""The call pipeline every memsidecar RPC passes through: identity, then the handler,
with every MemError turned into its gRPC status and message.

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
from memsidecar.sidecar.policy.engine import Decision, PolicyRequest
from memsidecar.sidecar.policy.holder import PolicyHolder
from memsidecar.sidecar.rpc import Ctx

log = logging.getLogger("memsidecar.pipeline")


async def _abort(context: Ctx, exc: BaseException, info: CallInfo) -> None:
    if isinstance(exc, MemError):
        await context.abort(exc.code, exc.message)
    incident = uuid.uuid4().hex[:12]
    log.exception("internal error in %s (incident %s)", info.op, incident, exc_info=exc)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error in {info.op}; see the sidecar log, incident {incident}",
    )


class CallPipeline(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """identity → policy → handler, for every memsidecar RPC.

    Policy decides on the request message; for request streams (artifact.put,
    session.keep_alive) on the first message, and a byte cap then bounds the
    whole stream.
    """

    def __init__(self, authenticator: Authenticator, policy: PolicyHolder | None = None) -> None:
        self.authenticator = authenticator
        self.policy = policy or PolicyHolder()

    def _enter(self, context: Ctx) -> Any:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        identity = self.authenticator.authenticate(metadata, context.peer() or "")
        return set_identity(identity)

    def _admit(self, info: CallInfo, message: Any) -> Decision:
        # current() is read once: the call sees one whole rule set.
        identity = current_identity()
        request = PolicyRequest.from_message(identity, info, message)
        # Scope before policy, so a refused call takes no rate-limit token.
        if request.namespace:
            check_scope(identity, info.block, request.namespace, info.op)
        else:
            check_op(identity, info.op)
        decision = self.policy.current().decide(request)
        decision.raise_if_rejected()
        return decision

    async def _admit_stream(self, info: CallInfo, requests: AsyncIterator[Any]) -> Any:
        """Decide on the first message of a request stream; bound the rest by the byte cap."""
        iterator = aiter(requests)
        try:
            first = await anext(iterator)
        except StopAsyncIteration:
            self._admit(info, None)
            return _empty()
        cap = self._admit(info, first).byte_cap

        async def admitted() -> AsyncIterator[Any]:
            total = first.ByteSize()
            yield first
            async for message in iterator:
                total += message.ByteSize()
                if cap is not None and cap.exceeded(total):
                    raise cap.error(total, f"the {info.op} stream")
                yield message

        return admitted()

    async def _prepare(self, info: CallInfo, request: Any, streaming_request: bool) -> Any:
        if streaming_request:
            return await self._admit_stream(info, request)
        self._admit(info, request)
        return request

    def _wrap_unary(self, behavior: Any, info: CallInfo, streaming_request: bool) -> Any:
        async def handler(request: Any, context: Ctx) -> Any:
            token = None
            try:
                token = self._enter(context)
                request = await self._prepare(info, request, streaming_request)
                return await behavior(request, context)
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                await _abort(context, exc, info)
            finally:
                if token is not None:
                    reset_identity(token)

        return handler

    def _wrap_stream(self, behavior: Any, info: CallInfo, streaming_request: bool) -> Any:
        async def handler(request: Any, context: Ctx) -> AsyncIterator[Any]:
            token = None
            try:
                token = self._enter(context)
                request = await self._prepare(info, request, streaming_request)
                async for item in behavior(request, context):
                    yield item
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                await _abort(context, exc, info)
            finally:
                if token is not None:
                    reset_identity(token)

        return handler

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        info = parse_method(details.method)
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
