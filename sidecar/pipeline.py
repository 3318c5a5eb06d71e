"""The call pipeline every memsidecar RPC passes through: identity, then the handler,
with every MemError turned into its gRPC status and message.

It is a grpc.aio server interceptor that wraps each handler's behaviour, so
unary and streaming RPCs get exactly the same treatment.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from memsidecar.sidecar.errors import MemError
from memsidecar.sidecar.identity import Authenticator, reset_identity, set_identity
from memsidecar.sidecar.rpc import Ctx

log = logging.getLogger("memsidecar.pipeline")

_METHOD_RE = re.compile(r"^/memsidecar\.(\w+)\.v1\.(\w+)/(\w+)$")


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass(frozen=True)
class CallInfo:
    """The parts of a method path policy and logs speak about."""

    block: str
    method: str
    # "kv.put", "episodic.list_sessions", ...
    op: str


def parse_method(path: str) -> CallInfo | None:
    m = _METHOD_RE.match(path)
    if not m:
        return None
    block, _service, method = m.groups()
    return CallInfo(block=block, method=method, op=f"{block}.{snake(method)}")


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
    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    def _enter(self, context: Ctx) -> Any:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        identity = self.authenticator.authenticate(metadata, context.peer() or "")
        return set_identity(identity)

    def _wrap_unary(self, behavior: Callable[..., Awaitable[Any]], info: CallInfo) -> Any:
        async def handler(request: Any, context: Ctx) -> Any:
            token = None
            try:
                token = self._enter(context)
                return await behavior(request, context)
            except (MemError, Exception) as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                await _abort(context, exc, info)
            finally:
                if token is not None:
                    reset_identity(token)

        return handler

    def _wrap_stream(self, behavior: Any, info: CallInfo) -> Any:
        async def handler(request: Any, context: Ctx) -> AsyncIterator[Any]:
            token = None
            try:
                token = self._enter(context)
                async for item in behavior(request, context):
                    yield item
            except (MemError, Exception) as exc:
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
                self._wrap_unary(handler.unary_unary, info), **kwargs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, info), **kwargs
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, info), **kwargs
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(handler.stream_stream, info), **kwargs
        )
