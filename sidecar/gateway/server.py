"""The aiohttp server of the HTTP/JSON gateway and how each kind of RPC is forwarded.

Every request is forwarded to the sidecar's gRPC server over its Unix socket,
marked as a gateway call (gateway/auth.py), with the caller's capability token
copied from `Authorization: Bearer <token>` or `X-Memsidecar-Capability`. The
gateway parses JSON and frames responses; it makes no decision of its own about
who may do what: auth, scopes, policy, validation and limits all happen in the
gRPC call pipeline, exactly as for gRPC callers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from memsidecar.artifact.v1 import artifact_pb2
from memsidecar.client.blocks.artifact import _FirstStatus
from memsidecar.defaults import CAPABILITY_HEADER
from memsidecar.session.v1 import session_pb2
from memsidecar.sidecar.auth.keys import AuthConfigError
from memsidecar.sidecar.config import SidecarConfig
from memsidecar.sidecar.gateway.auth import GATEWAY_HEADER, HTTP_PEER_HEADER
from memsidecar.sidecar.gateway.errors import (
    GatewayError,
    error_body,
    error_response,
    rpc_error_response,
    rpc_message,
)
from memsidecar.sidecar.gateway.methods import (
    ARTIFACT_PUT,
    SESSION_KEEPALIVE,
    Method,
    method_table,
)

log = logging.getLogger("memsidecar.gateway")

NDJSON = "application/x-ndjson"
# A server stream's HTTP status is sent with its first message, so an error before
# any message (no token, denied, bad request) gets its own HTTP status. A stream
# with nothing to send yet (an idle episodic Tail) gets 200 after this many seconds;
# an error after that arrives as a last NDJSON line {"error": {code, message}}.
STREAM_FIRST_MESSAGE_WAIT_SECONDS = 0.25

# Artifact upload fields as HTTP headers (Content-Type is the artifact's content type).
NAMESPACE_HEADER = "X-Memsidecar-Namespace"
ID_HEADER = "X-Memsidecar-Id"
METADATA_HEADER = "X-Memsidecar-Metadata"

Metadata = tuple[tuple[str, str], ...]
# What call.read() returns at the end of a stream (missing from grpc-stubs).
_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _WriteFailed(Exception):
    """Writing to the call failed: the sidecar has already ended it."""


def _bad_request(message: str) -> GatewayError:
    return GatewayError(400, grpc.StatusCode.INVALID_ARGUMENT, message)


def _printable_ascii(value: str) -> bool:
    return all(" " <= c <= "~" for c in value)


def forward_metadata(request: web.Request) -> Metadata:
    """The gRPC metadata of a forwarded call: the gateway mark and the caller's token only."""
    capability = request.headers.get(CAPABILITY_HEADER)
    authorization = request.headers.get("Authorization")
    if (
        capability is not None
        and authorization is not None
        and capability.strip() != authorization.strip()
    ):
        raise GatewayError(
            401,
            grpc.StatusCode.UNAUTHENTICATED,
            f"the request has both Authorization and {CAPABILITY_HEADER} headers with different "
            "values; send the token once, as `Authorization: Bearer <token>`",
        )
    value = capability if capability is not None else authorization
    metadata = [(GATEWAY_HEADER, "http")]
    if value is not None:
        if not _printable_ascii(value):
            raise GatewayError(
                401,
                grpc.StatusCode.UNAUTHENTICATED,
                "the Authorization header must be printable ASCII: `Bearer <token>`",
            )
        metadata.append((CAPABILITY_HEADER, value))
    if request.remote and _printable_ascii(request.remote):
        metadata.append((HTTP_PEER_HEADER, request.remote))
    return tuple(metadata)


def message_json(message: Message) -> dict[str, Any]:
    """Protobuf JSON with camelCase names; fields at their default value are included."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def json_response(message: Message) -> web.Response:
    return web.Response(text=json.dumps(message_json(message)), content_type="application/json")


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


def parse_json_message(raw: bytes, cls: type[Message]) -> Message:
    """A request message from a JSON body; an empty body is the empty message."""
    name = cls.DESCRIPTOR.full_name
    if not raw.strip():
        return cls()
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _bad_request("the request body is not UTF-8; send a JSON object") from None
    except json.JSONDecodeError as exc:
        raise _bad_request(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _bad_request(
            f"the request body must be a JSON object with the fields of {name}, "
            f"not a JSON {type(data).__name__}"
        )
    message = cls()
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        raise _bad_request(f"the request body does not fit {name}: {exc}") from None
    return message


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class HttpGateway:
    """Serves the HTTP/JSON mirror of the gRPC API on `address` (host:port)."""

    def __init__(
        self,
        address: str,
        grpc_target: str,
        methods: dict[str, Method],
        max_message_bytes: int,
        upload_chunk_bytes: int,
    ) -> None:
        self.address = address
        self.grpc_target = grpc_target
        self.methods = methods
        self.max_message_bytes = max_message_bytes
        self.upload_chunk_bytes = upload_chunk_bytes
        self.url: str | None = None
        self._channel: grpc.aio.Channel | None = None
        self._runner: web.AppRunner | None = None

    # --- lifecycle ------------------------------------------------------------

    def _bind(self) -> socket.socket:
        host, _, port = self.address.rpartition(":")
        host = host.strip("[]")
        info = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        family = info[0][0]
        sock = socket.create_server((host, int(port)), family=family)
        sock.setblocking(False)
        return sock

    async def start(self) -> str:
        """Open the channel to the gRPC server and start serving; returns the gateway's URL."""
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
        ]
        self._channel = grpc.aio.insecure_channel(self.grpc_target, options=options)
        app = web.Application(client_max_size=self.max_message_bytes, middlewares=[_errors])
        app.router.add_route("*", "/{service}/{method}", self._dispatch)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        sock = self._bind()
        host, port = sock.getsockname()[:2]
        await web.SockSite(self._runner, sock).start()
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        if not _is_loopback(host):
            log.warning(
                "the HTTP gateway serves plain HTTP on %s: capability tokens cross the network "
                "in clear text; bind it to 127.0.0.1 or put TLS in front (docs/gateway.md)",
                self.url,
            )
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            raise RuntimeError("the gateway is not started")
        return self._channel

    # --- routing ----------------------------------------------------------------

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        raise GatewayError(
            404,
            grpc.StatusCode.NOT_FOUND,
            "no such method: the gateway serves POST /<package>.<Service>/<Method>, "
            "e.g. POST /memsidecar.kv.v1.KV/Get (docs/gateway.md)",
        )

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = f"/{request.match_info['service']}/{request.match_info['method']}"
        method = self.methods.get(path)
        if method is None:
            return await self._unknown(request)
        if request.method != "POST":
            raise GatewayError(
                405,
                grpc.StatusCode.UNIMPLEMENTED,
                f"{path} takes POST, not {request.method}",
                headers={"Allow": "POST"},
            )
        metadata = forward_metadata(request)
        if path == ARTIFACT_PUT:
            return await self._upload(request, metadata)
        message = await self._read_message(request, method.request)
        if path == SESSION_KEEPALIVE:
            return await self._heartbeat(message, metadata)
        if method.server_streaming:
            return await self._stream(request, method, message, metadata)
        return await self._unary(method, message, metadata)

    async def _read_message(self, request: web.Request, cls: type[Message]) -> Message:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise GatewayError(
                413,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the request body is over {self.max_message_bytes} bytes "
                "(listen.max_message_bytes)",
            ) from None
        return parse_json_message(raw, cls)

    # --- unary and server-streaming RPCs ----------------------------------------------

    async def _unary(self, method: Method, message: Message, metadata: Metadata) -> web.Response:
        call = self.channel.unary_unary(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )
        try:
            response = await call(message, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            return rpc_error_response(exc)
        return json_response(response)

    async def _stream(
        self, request: web.Request, method: Method, message: Message, metadata: Metadata
    ) -> web.StreamResponse:
        multi: Any = self.channel.unary_stream(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )
        call = multi(message, metadata=metadata)
        first = asyncio.ensure_future(call.read())
        try:
            done, _ = await asyncio.wait({first}, timeout=STREAM_FIRST_MESSAGE_WAIT_SECONDS)
            if done and isinstance(first.exception(), grpc.aio.AioRpcError):
                error = first.exception()
                assert isinstance(error, grpc.aio.AioRpcError)
                return rpc_error_response(error)
            response = web.StreamResponse(
                status=200, headers={"Content-Type": NDJSON, "Cache-Control": "no-store"}
            )
            await response.prepare(request)
            try:
                try:
                    item = await first
                    while item is not _EOF:
                        await response.write(_line(message_json(item)))
                        item = await call.read()
                except grpc.aio.AioRpcError as exc:
                    body = error_body(exc.code(), rpc_message(exc.code(), exc.details()))
                    await response.write(_line({"error": body}))
                await response.write_eof()
            except ConnectionResetError:
                pass  # the HTTP caller went away; the call is cancelled below
            return response
        finally:
            first.cancel()
            call.cancel()

    # --- request-streaming RPCs with their own HTTP shape ---------------------------------

    def _put_header(self, request: web.Request) -> artifact_pb2.PutHeader:
        header = artifact_pb2.PutHeader(
            namespace=request.headers.get(NAMESPACE_HEADER, ""),
            id=request.headers.get(ID_HEADER, ""),
            content_type=request.headers.get("Content-Type", ""),
        )
        raw = request.headers.get(METADATA_HEADER)
        if raw is not None:
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise _bad_request(f"{METADATA_HEADER} is not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise _bad_request(
                    f"{METADATA_HEADER} must be a JSON object, not a JSON {type(data).__name__}"
                )
            try:
                header.metadata.update(data)
            except (ValueError, TypeError) as exc:
                raise _bad_request(f"{METADATA_HEADER} cannot be stored: {exc}") from None
        return header

    async def _upload(self, request: web.Request, metadata: Metadata) -> web.Response:
        """Artifact Put: header fields from HTTP headers, the raw body streamed as chunks."""
        header = self._put_header(request)
        multi: Any = self.channel.stream_unary(
            ARTIFACT_PUT,
            request_serializer=artifact_pb2.PutRequest.SerializeToString,
            response_deserializer=artifact_pb2.PutResponse.FromString,
        )
        call = multi(metadata=metadata)
        server_status = _FirstStatus(call)

        async def write(part: artifact_pb2.PutRequest | None) -> None:
            try:
                await (call.done_writing() if part is None else call.write(part))
            except Exception as exc:  # AioRpcError, InvalidStateError, or Core's InternalError
                raise _WriteFailed() from exc

        try:
            await write(artifact_pb2.PutRequest(header=header))
            async for chunk in request.content.iter_chunked(self.upload_chunk_bytes):
                await write(artifact_pb2.PutRequest(chunk=chunk))
            # Only a body that arrived whole is committed; a broken upload stores nothing.
            await write(artifact_pb2.PutRequest(end=artifact_pb2.PutEnd()))
            await write(None)
        except _WriteFailed:
            pass  # the sidecar ended the call early; its status follows
        except BaseException:
            call.cancel()  # the HTTP body broke off or the caller left: store nothing
            raise
        try:
            response = await call
        except grpc.aio.AioRpcError as exc:
            return rpc_error_response(server_status.restore(exc))
        return json_response(response)

    async def _heartbeat(self, message: Message, metadata: Metadata) -> web.Response:
        """Session KeepAlive as one request and one response: one heartbeat per HTTP call."""
        multi: Any = self.channel.stream_stream(
            SESSION_KEEPALIVE,
            request_serializer=session_pb2.KeepAliveRequest.SerializeToString,
            response_deserializer=session_pb2.KeepAliveResponse.FromString,
        )
        call = multi(metadata=metadata)
        try:
            try:
                await call.write(message)
                await call.done_writing()
            except Exception:
                log.debug("KeepAlive write failed; the call's status follows", exc_info=True)
            try:
                responses = [item async for item in call]
            except grpc.aio.AioRpcError as exc:
                return rpc_error_response(exc)
        finally:
            call.cancel()
        if len(responses) != 1:
            return error_response(
                grpc.StatusCode.INTERNAL,
                f"KeepAlive answered one heartbeat with {len(responses)} responses",
            )
        return json_response(responses[0])


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return exc.response()
    except web.HTTPException:
        raise
    except Exception:
        incident = uuid.uuid4().hex[:12]
        log.exception(
            "gateway error on %s %s (incident %s)", request.method, request.path, incident
        )
        return error_response(
            grpc.StatusCode.INTERNAL,
            f"internal error in the HTTP gateway; see the sidecar log, incident {incident}",
        )


def build_gateway(config: SidecarConfig, service_names: list[str]) -> HttpGateway:
    """The gateway for `listen.http`, forwarding to the sidecar's own socket."""
    if config.listen.http is None:
        raise ValueError("listen.http is not set")
    if not config.auth.keys:
        raise AuthConfigError(
            "listen.http is set but auth.keys is empty: HTTP callers always need a token, so "
            "nobody could call; add verification keys (docs/tokens.md) or drop listen.http"
        )
    return HttpGateway(
        address=config.listen.http,
        grpc_target=f"unix:{config.listen.socket}",
        methods=method_table(service_names),
        max_message_bytes=config.listen.max_message_bytes,
        upload_chunk_bytes=config.blocks.artifact.chunk_bytes,
    )
