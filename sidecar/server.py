"""Build and run the sidecar: blocks, call pipeline, health, reflection, listeners."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from memsidecar.sidecar.auth import AuthConfigError, ListenerAuthenticator
from memsidecar.sidecar.blocks import BLOCK_TYPES
from memsidecar.sidecar.blocks.base import Block, BlockContext
from memsidecar.sidecar.clock import Clock, system_clock
from memsidecar.sidecar.config import SidecarConfig
from memsidecar.sidecar.gateway import GatewayAwareAuthenticator
from memsidecar.sidecar.identity import Identity
from memsidecar.sidecar.observability.backend import observing
from memsidecar.sidecar.observability.core import Observability
from memsidecar.sidecar.pipeline import CallPipeline
from memsidecar.sidecar.policy.holder import PolicyHolder
from memsidecar.sidecar.policy.kubernetes import KubernetesPolicySource
from memsidecar.sidecar.policy.loader import PolicyFileWatcher
from memsidecar.sidecar.tls import CertificateReloader

if TYPE_CHECKING:
    from memsidecar.sidecar.gateway.server import HttpGateway

log = logging.getLogger("memsidecar.server")

HEALTH_INTERVAL_SECONDS = 5.0


@dataclass
class Sidecar:
    config: SidecarConfig
    server: grpc.aio.Server
    blocks: dict[str, Block]
    health: Any
    policy: PolicyHolder = field(default_factory=PolicyHolder)
    policy_watcher: PolicyFileWatcher | KubernetesPolicySource | None = None
    # Metrics endpoint, tracing, access log (observability.*); also the pipeline's observer.
    observability: Observability | None = None
    addresses: list[str] = field(default_factory=list)
    # The HTTP/JSON gateway (listen.http), started after the gRPC server it forwards to.
    gateway: HttpGateway | None = None
    # The TCP listener's TLS files, reloaded on change (listen.tls).
    tls: CertificateReloader | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        if self.policy_watcher is not None:
            # Raises on an invalid file: never serve with allow-all by accident.
            await self.policy_watcher.start()
        if self.observability is not None:
            await self.observability.start()
        await self.server.start()
        if self.gateway is not None:
            self.addresses.append(await self.gateway.start())
        # Background tasks the blocks start (sweepers, timers) report backend calls too.
        with observing(self.observability):
            for block in self.blocks.values():
                await block.start()
        await self.check_health()
        self._tasks.append(asyncio.create_task(self._health_loop(), name="health"))

    async def check_health(self) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING
        down = health_pb2.HealthCheckResponse.NOT_SERVING
        all_up = True
        for block in self.blocks.values():
            try:
                up = await asyncio.wait_for(block.health(), HEALTH_INTERVAL_SECONDS)
            except Exception:
                log.warning("health check of block %s failed", block.name, exc_info=True)
                up = False
            all_up &= up
            await self.health.set(block.service_name, serving if up else down)
        await self.health.set("", serving if all_up else down)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_SECONDS)
            await self.check_health()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.gateway is not None:
            await self.gateway.stop()
        await self.health.enter_graceful_shutdown()
        for block in self.blocks.values():
            await block.end_streams()
        await self.server.stop(self.config.listen.shutdown_grace_seconds)
        if self.policy_watcher is not None:
            await self.policy_watcher.stop()
        for block in reversed(list(self.blocks.values())):
            await block.close()
        if self.observability is not None:
            await self.observability.close()
        with contextlib.suppress(FileNotFoundError):
            self.config.listen.socket.unlink()


def _prepare_socket(config: SidecarConfig) -> str:
    path = config.listen.socket
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() or path.is_symlink():
        # A socket left by a crashed sidecar would make bind fail.
        path.unlink()
    return f"unix:{path}"


async def build_sidecar(config: SidecarConfig, clock: Clock = system_clock) -> Sidecar:
    """Open every block's driver and bind the listeners (not yet serving)."""
    ctx = BlockContext(config=config, clock=clock)
    for block_type in BLOCK_TYPES:
        ctx.blocks[block_type.name] = await block_type.build(ctx)
    identity = Identity(tenant=config.identity.tenant, agent=config.identity.agent)
    max_bytes = config.listen.max_message_bytes
    if config.listen.tcp and not config.auth.keys:
        raise AuthConfigError(
            "listen.tcp is set but auth.keys is empty: TCP callers always need a token, so "
            "nobody could call; add verification keys (docs/tokens.md) or drop listen.tcp"
        )
    verifier = None
    if config.auth.keys:
        from memsidecar.sidecar.auth.tokens import TokenVerifier  # pyseto, PyJWT: only with keys

        verifier = TokenVerifier.from_settings(config.auth, clock)
    # Gateway calls arrive on the socket but are held to the TCP rule (sidecar/gateway/auth.py).
    authenticator = GatewayAwareAuthenticator(
        ListenerAuthenticator(config.auth, identity, verifier)
    )
    tls = CertificateReloader(config.listen.tls) if config.listen.tls else None
    policy = PolicyHolder()
    observability = Observability(config.observability, ctx.blocks)
    server = grpc.aio.server(
        interceptors=[CallPipeline(authenticator, policy, observability)],
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
        ],
    )
    for block in ctx.blocks.values():
        block.add_to_server(server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [b.service_name for b in ctx.blocks.values()]
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    sidecar = Sidecar(config, server, ctx.blocks, health_servicer, policy)
    sidecar.observability = observability
    if config.listen.http:
        from memsidecar.sidecar.gateway.server import build_gateway  # aiohttp: only when used

        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        sidecar.gateway = build_gateway(config, [*names, health_name])
    if config.policy.file is not None:
        sidecar.policy_watcher = PolicyFileWatcher(
            config.policy.file,
            policy,
            debounce_ms=config.policy.debounce_ms,
            poll_seconds=config.policy.poll_seconds,
        )
    kube = config.policy.kubernetes
    if kube is not None:
        sidecar.policy_watcher = KubernetesPolicySource(
            policy,
            kube.namespace,
            pod_labels=kube.labels,
            pod_name=kube.pod_name,
            labels_file=None if kube.labels is not None else kube.labels_file,
            labels_poll_seconds=kube.labels_poll_seconds,
            start_timeout_seconds=kube.start_timeout_seconds,
            request_timeout_seconds=kube.request_timeout_seconds,
        )
    unix = _prepare_socket(config)
    server.add_insecure_port(unix)
    os.chmod(config.listen.socket, int(config.listen.socket_mode, 8))
    sidecar.addresses.append(unix)
    if config.listen.tcp:
        if tls is not None:
            sidecar.tls = tls
            port = server.add_secure_port(config.listen.tcp, tls.server_credentials())
        else:
            port = server.add_insecure_port(config.listen.tcp)
        host = config.listen.tcp.rpartition(":")[0]
        sidecar.addresses.append(f"{host}:{port}")
    return sidecar


def _policy_source(cfg: SidecarConfig) -> str:
    if cfg.policy.kubernetes is not None:
        return f"MemoryPolicy objects in namespace {cfg.policy.kubernetes.namespace}"
    return str(cfg.policy.file or "none (every call allowed)")


def describe(sidecar: Sidecar) -> str:
    cfg = sidecar.config
    drivers = ", ".join(
        f"{name}={getattr(cfg.blocks, name).driver}"
        for name in sidecar.blocks
        if hasattr(getattr(cfg.blocks, name), "driver")
    )
    lines = [
        f"memsidecar serving on {' and '.join(sidecar.addresses)}",
        f"  config: {cfg.source}",
        f"  blocks: {drivers}",
        f"  identity: ambient tenant={cfg.identity.tenant} agent={cfg.identity.agent}",
        f"  auth: socket={cfg.auth.socket} tcp={cfg.auth.tcp} "
        f"keys={','.join(k.kid for k in cfg.auth.keys) or 'none'}",
        f"  policy: {_policy_source(cfg)}",
    ]
    if sidecar.observability is not None:
        lines.append(f"  observability: {sidecar.observability.describe()}")
    if sidecar.tls is not None:
        lines.append(f"  tls: {sidecar.tls}, reloaded when the files change")
    if sidecar.gateway is not None:
        lines.append(f"  http gateway: {sidecar.gateway.url} (token required)")
    if cfg.source.startswith("embedded default"):
        lines.append(
            "  embedded default: memory is in-process and lost on exit; artifacts on local disk "
            f"at {cfg.blocks.artifact.options.get('root')}; fake embedder"
        )
    return "\n".join(lines)


async def serve(config: SidecarConfig, ready_file: str | None = None) -> None:
    """Run until SIGTERM/SIGINT, then drain calls and close the drivers."""
    sidecar = await build_sidecar(config)
    await sidecar.start()
    print(describe(sidecar), flush=True)
    if ready_file:
        Path(ready_file).write_text("\n".join(sidecar.addresses) + "\n")  # noqa: ASYNC240
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await sidecar.stop()
