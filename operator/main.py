"""Entry point: `python -m memsidecar.operator [flags]`; a CLI command calls
`memsidecar.operator.main.run(args, prog=...)`. (operator/ has no __init__.py on
purpose: a regular top-level `operator` package would shadow the stdlib's.)

`run(argv)` parses flags/env into OperatorSettings, prepares the webhook certificate
(and, when asked, the webhook configurations), starts /metrics, and runs kopf with
the handlers of operator/handlers.py until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from memsidecar.operator.kube import Kube, KubeError
from memsidecar.operator.settings import OperatorSettings, SettingsError, parse_args
from memsidecar.operator.webhookconfig import (
    CertificateError,
    apply_configurations,
    configurations,
    delete_configurations,
    prepare_certificates,
)

log = logging.getLogger("memsidecar.operator")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class KopfNoiseFilter(logging.Filter):
    """kopf logs every admission denial as an error ("Webhook ... failed permanently"):
    a denial is the webhook working, and the operator logs it at INFO, so it is dropped.
    A handler's retry ("failed temporarily": a backend still unreachable) is expected
    and already in the object's status and events: it is logged at INFO, not ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Webhook '") and "failed permanently" in message:
            return False
        if record.name.startswith("kopf") and "failed temporarily" in message:
            record.levelno, record.levelname = logging.INFO, "INFO"
            return bool(logging.getLogger("memsidecar.operator").isEnabledFor(logging.INFO))
        return True


def configure_logging(settings: OperatorSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(KopfNoiseFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = getattr(logging, settings.log_level.upper())
    root.setLevel(level)
    # kopf reports every handler run at INFO; keep its voice for problems unless debugging.
    logging.getLogger("kopf").setLevel(level if level <= logging.DEBUG else logging.WARNING)
    for noisy in ("aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


async def serve(
    settings: OperatorSettings,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    """Run the operator until stopped (signal, or `stop_flag` set)."""
    import kopf

    from memsidecar.operator import metrics
    from memsidecar.operator.handlers import Operator, build_registry

    if settings.kubeconfig is not None:
        # kopf logs in through the kubernetes client, which reads $KUBECONFIG.
        os.environ["KUBECONFIG"] = str(settings.kubeconfig)
    certfile = keyfile = None
    ca_bundle: bytes | None = None
    if settings.webhook_enabled:
        certfile, keyfile, ca_bundle = prepare_certificates(settings)
    kube = await Kube.connect(settings.kubeconfig)
    managed: list[dict[str, Any]] = []
    metrics_server = None
    tasks: list[asyncio.Task[None]] = []
    op = Operator(settings, kube)
    try:
        if settings.webhook_enabled and settings.webhook_manage_configuration:
            if ca_bundle is None:
                raise CertificateError(
                    f"no ca.crt in {settings.webhook_cert_dir} to use as caBundle; pass "
                    "--webhook-generate-certificates or mount the CA there"
                )
            managed = configurations(settings, ca_bundle)
            await apply_configurations(kube, managed)
        if settings.metrics_port:
            metrics_server = metrics.serve(settings.metrics_listen, settings.metrics_port)
        registry = build_registry(op, certfile=certfile, pkeyfile=keyfile)
        tasks = [
            asyncio.create_task(op.resync_stores(), name="resync-memorystores"),
            asyncio.create_task(op.resync_policies(), name="recount-memorypolicies"),
        ]
        liveness = (
            f"http://{settings.health_listen}:{settings.health_port}/healthz"
            if settings.health_port
            else None
        )
        log.info(
            "memsidecar operator starting: %s, webhook %s",
            "namespaces " + ", ".join(settings.watch_namespaces)
            if settings.watch_namespaces
            else "every namespace",
            f"on {settings.webhook_listen}:{settings.webhook_port}"
            if settings.webhook_enabled
            else "off",
        )
        await kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=not settings.watch_namespaces,
            namespaces=settings.watch_namespaces,
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await op.events.flush()
        if managed and settings.webhook_delete_configuration_on_exit:
            try:
                await delete_configurations(kube, managed)
            except KubeError as exc:
                log.warning("could not delete the webhook configurations: %s", exc)
        if metrics_server is not None:
            metrics_server.shutdown()
        await kube.close()


def run(argv: Sequence[str] | None = None, prog: str = "python -m memsidecar.operator") -> int:
    """The command line (`prog` names it in --help): returns the process exit code."""
    try:
        settings = parse_args(argv, prog)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        asyncio.run(serve(settings))
    except (CertificateError, KubeError) as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        # A port already in use, an unreadable certificate, ...
        log.error("cannot start: %s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
