"""The MCP server: the sidecar's memory blocks as MCP tools, over stdio or streamable HTTP.

Every tool is one or two SDK calls. Scope and policy are the sidecar's: the server
sends a capability token with each call (its own, or over HTTP the one the MCP
client presented), so the sidecar's call pipeline decides what a caller may do and
this module keeps no rules of its own. Sidecar errors become MCP tool errors
carrying the sidecar's status and message.

This module builds the server (`build_server`), runs it over stdio or streamable HTTP,
and is the `memsidecar mcp` command; the tools are in `tools.py`, their results in
`results.py`, and the HTTP bearer gate in `http.py`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import click
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE

from memsidecar.client import AsyncMemSidecar
from memsidecar.integrations.mcp.http import (
    DEFAULT_HOST,
    DEFAULT_PATH,
    DEFAULT_PORT,
    BearerGate,
    HttpOptions,
    bearer_token,
    is_loopback,
    listen_socket,
)
from memsidecar.integrations.mcp.tools import (
    DEFAULT_MAX_ARTIFACT_BYTES,
    DEFAULT_NAMESPACE,
    MemoryTools,
    Settings,
)

log = logging.getLogger("memsidecar.mcp")

# How long start-up waits to see the sidecar before serving anyway (with a warning).
CONNECT_CHECK_SECONDS = 3.0


def instructions(settings: Settings) -> str:
    return (
        "Memory for this agent, kept by a memsidecar: remember/recall (long-term semantic "
        "memory searched by meaning), log_event/read_events (an append-only history), "
        "get_scratch/set_scratch (working key-value state, optionally expiring), "
        "store_artifact/fetch_artifact (documents and files), acquire_lock/release_lock "
        "(exclusive locks with fencing tokens). Every tool takes an optional namespace; "
        f"the default is {settings.namespace!r}. A refused call returns an error with the "
        "sidecar's reason (e.g. PERMISSION_DENIED names what the caller's token allows)."
    )


def build_server(client: AsyncMemSidecar, settings: Settings | None = None) -> MCPServer[Any]:
    """An MCP server whose tools act on the sidecar behind `client`."""
    settings = settings or Settings()
    server: MCPServer[Any] = MCPServer(
        "memsidecar",
        title="memsidecar memory",
        instructions=instructions(settings),
    )
    MemoryTools(client, settings).register(server)
    return server


@contextlib.asynccontextmanager
async def connected(
    socket_path: Path | None, target: str | None, token: str | None
) -> AsyncIterator[AsyncMemSidecar]:
    """The sidecar client (created on the running loop, as grpc.aio requires)."""
    client = AsyncMemSidecar(socket=socket_path, target=target, token=token)
    try:
        try:
            await client.wait_ready(CONNECT_CHECK_SECONDS)
        except TimeoutError:
            log.warning(
                "the sidecar at %s is not reachable yet; tool calls fail with UNAVAILABLE "
                "until it is",
                client.target,
            )
        yield client
    finally:
        await client.close()


async def serve_stdio(client: AsyncMemSidecar, settings: Settings) -> None:
    await build_server(client, settings).run_stdio_async()


async def serve_http(client: AsyncMemSidecar, settings: Settings, http: HttpOptions) -> None:
    import uvicorn

    server = build_server(client, settings)
    app = server.streamable_http_app(
        streamable_http_path=http.path,
        host=http.host,
        # Room for a base64 artifact at the size limit plus the JSON-RPC envelope.
        max_request_body_size=max(
            DEFAULT_MAX_REQUEST_BODY_SIZE, settings.max_artifact_bytes * 4 // 3 + 64 * 1024
        ),
    )
    sock = listen_socket(http.host, http.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"memsidecar mcp: streamable HTTP on http://{shown}:{port}{http.path} "
        f"(sidecar {client.target}; "
        f"{'anonymous requests allowed' if http.allow_anonymous else 'bearer token required'})",
        err=True,
    )
    config = uvicorn.Config(
        BearerGate(app, http.allow_anonymous), log_level="warning", lifespan="on"
    )
    with sock:
        await uvicorn.Server(config).serve(sockets=[sock])


# ---- command line ------------------------------------------------------------------------


@click.command("mcp")
@click.option(
    "--transport",
    type=click.Choice(["stdio", "streamable-http"]),
    default="stdio",
    show_default=True,
    help="stdio for a desktop client that spawns the server; streamable-http to serve a URL",
)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="HTTP bind address")
@click.option("--port", default=DEFAULT_PORT, show_default=True, help="HTTP port (0: any free)")
@click.option("--path", default=DEFAULT_PATH, show_default=True, help="HTTP endpoint path")
@click.option(
    "--allow-anonymous",
    is_flag=True,
    help="HTTP: let requests without 'Authorization: Bearer <token>' act with the server's "
    "own identity instead of refusing them",
)
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path),
    help="the sidecar's Unix socket (default: MEMSIDECAR_SOCKET, else the default path)",
)
@click.option("--target", help="the sidecar as host:port instead of a socket (MEMSIDECAR_TARGET)")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="file holding the server's own capability token (default: MEMSIDECAR_TOKEN; none: "
    "the socket's ambient identity)",
)
@click.option(
    "--namespace",
    envvar="MEMSIDECAR_MCP_NAMESPACE",
    default=DEFAULT_NAMESPACE,
    show_default=True,
    help="namespace a tool uses when the caller names none (MEMSIDECAR_MCP_NAMESPACE)",
)
@click.option(
    "--max-artifact-bytes",
    envvar="MEMSIDECAR_MCP_MAX_ARTIFACT_BYTES",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_ARTIFACT_BYTES,
    show_default=True,
    help="largest artifact content a tool call stores or returns",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="WARNING",
    show_default=True,
)
def command(
    transport: str,
    host: str,
    port: int,
    path: str,
    allow_anonymous: bool,
    socket_path: Path | None,
    target: str | None,
    token_file: Path | None,
    namespace: str,
    max_artifact_bytes: int,
    log_level: str,
) -> None:
    """Serve the sidecar's memory to MCP clients as tools (docs/integrations/mcp.md)."""
    # Logs go to stderr: on stdio, stdout carries the protocol.
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if socket_path is not None and target is not None:
        raise click.UsageError("pass either --socket or --target, not both")
    if not path.startswith("/"):
        raise click.UsageError("--path must start with '/'")
    token = token_file.read_text().strip() if token_file is not None else None
    settings = Settings(namespace=namespace, max_artifact_bytes=max_artifact_bytes)
    http = HttpOptions(host=host, port=port, path=path, allow_anonymous=allow_anonymous)
    if transport == "streamable-http" and allow_anonymous and not is_loopback(host):
        log.warning(
            "--allow-anonymous on %s: anyone who reaches this address acts with the "
            "server's own identity",
            host,
        )

    async def run() -> None:
        async with connected(socket_path, target, token) as client:
            if transport == "stdio":
                await serve_stdio(client, settings)
            else:
                await serve_http(client, settings, http)

    try:
        anyio.run(run)
    except OSError as exc:
        raise click.ClickException(f"cannot serve: {exc}") from exc
    except KeyboardInterrupt:
        pass


__all__ = [
    "BearerGate",
    "HttpOptions",
    "MemoryTools",
    "Settings",
    "bearer_token",
    "build_server",
    "command",
]
