"""`memsidecar`: run and inspect the sidecar."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import click

from memsidecar.sidecar.auth.keys import AuthConfigError
from memsidecar.sidecar.blocks.registry import DriverConfigError
from memsidecar.sidecar.config import ConfigError, SidecarConfig, load_config
from memsidecar.sidecar.errors import MemError, SchemaOutdated
from memsidecar.sidecar.policy.model import PolicyError
from memsidecar.sidecar.tls import TLSConfigError


def _load(config: Path | None, overrides: dict[str, Any]) -> SidecarConfig:
    try:
        return load_config(config, {k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
@click.version_option(package_name="memsidecar")
def main() -> None:
    """memsidecar: a memory layer for AI agents, served over a local socket."""


@main.command()
@click.option("--config", "-c", type=click.Path(path_type=Path), help="sidecar YAML config")
@click.option("--socket", type=click.Path(path_type=Path), help="Unix socket path to serve on")
@click.option("--tcp", help="also serve on host:port, e.g. 127.0.0.1:7070")
@click.option("--http", help="also serve the HTTP/JSON gateway on host:port (docs/gateway.md)")
@click.option("--ready-file", help="write the served addresses here once serving")
def serve(
    config: Path | None,
    socket: Path | None,
    tcp: str | None,
    http: str | None,
    ready_file: str | None,
) -> None:
    """Serve every memory block (no --config: the embedded in-memory default)."""
    from memsidecar.sidecar.server import serve as run

    cfg = _load(
        config,
        {"listen.socket": str(socket) if socket else None, "listen.tcp": tcp, "listen.http": http},
    )
    logging.basicConfig(
        level=cfg.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(run(cfg, ready_file))
    except (DriverConfigError, SchemaOutdated, PolicyError, AuthConfigError, TLSConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    except MemError as exc:
        raise click.ClickException(f"cannot start: {exc.message}") from exc


@main.command()
@click.option("--config", "-c", type=click.Path(path_type=Path), help="sidecar YAML config")
def migrate(config: Path | None) -> None:
    """Create or upgrade the database schema of every block stored in a database."""
    from memsidecar.sidecar.migrate import migrate as run

    cfg = _load(config, {})
    try:
        results = asyncio.run(run(cfg))
    except MemError as exc:
        raise click.ClickException(exc.message) from exc
    if not results:
        click.echo("no block uses a database driver; nothing to migrate")
    for r in results:
        click.echo(f"{r.block}: {r.driver} schema at version {r.version} ({r.applied} applied)")


@main.command()
@click.option("--socket", type=click.Path(path_type=Path), help="Unix socket of the sidecar")
@click.option("--target", help="host:port instead of a socket")
@click.option("--service", default="", help="a block service name; empty = every block")
@click.option("--timeout", default=2.0, show_default=True, help="seconds to wait")
def probe(socket: Path | None, target: str | None, service: str, timeout: float) -> None:
    """Exit 0 when the sidecar reports SERVING (for Kubernetes exec probes)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from memsidecar.client.transport import resolve_target

    address = resolve_target(socket, target)
    with grpc.insecure_channel(address) as channel:
        try:
            status = (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
                .status
            )
        except grpc.RpcError as exc:
            raise click.ClickException(f"{address}: {exc.code().name}: {exc.details()}") from exc
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    click.echo(f"{address} {service or '(all blocks)'}: {name}")
    if status != health_pb2.HealthCheckResponse.SERVING:
        sys.exit(1)


@main.command(
    "operator", context_settings={"ignore_unknown_options": True, "help_option_names": []}
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def operator_command(args: tuple[str, ...]) -> None:
    """Run the Kubernetes operator (flags: `memsidecar operator --help`)."""
    from memsidecar.operator.main import run as run_operator

    sys.exit(run_operator(list(args), prog="memsidecar operator"))


@main.command("mcp", context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def mcp_command(args: tuple[str, ...]) -> None:
    """Serve memory to MCP clients as tools (flags: `memsidecar mcp --help`; needs [mcp])."""
    # Imported here: the mcp extra is optional and heavy.
    from memsidecar.integrations.mcp.server import command

    command.main(list(args), prog_name="memsidecar mcp")


@main.command("config")
@click.option("--config", "-c", type=click.Path(path_type=Path), help="sidecar YAML config")
def show_config(config: Path | None) -> None:
    """Validate a config and print the effective result (file + env + defaults)."""
    cfg = _load(config, {})
    click.echo(cfg.model_dump_json(indent=2))


if __name__ == "__main__":
    main()
