"""Serving certificate and webhook configurations for the operator's own webhooks.

In a Helm install the chart owns the Mutating-/ValidatingWebhookConfiguration and the
certificate (Secret mounted at webhook_cert_dir); the operator only serves. For a
local run (or a chart value asking for it) the operator makes a CA and serving
certificate with webhooks/certs.py and applies the configurations built by
webhooks/configuration.py itself, with its CA as caBundle.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
from pathlib import Path
from typing import Any

from memsidecar.operator.kube import Kube
from memsidecar.operator.settings import OperatorSettings
from memsidecar.webhooks import certs
from memsidecar.webhooks.configuration import (
    mutating_webhook_configuration,
    validating_webhook_configuration,
)

log = logging.getLogger("memsidecar.operator.webhooks")

JSON = dict[str, Any]
ADMISSION_API = "/apis/admissionregistration.k8s.io/v1"


class CertificateError(Exception):
    pass


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def certificate_names(settings: OperatorSettings) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) the serving certificate must carry."""
    dns: list[str] = []
    ips: list[str] = []
    if settings.webhook_service:
        dns += certs.service_dns_names(settings.webhook_service, settings.namespace)
    if settings.webhook_host:
        (ips if _is_ip(settings.webhook_host) else dns).append(settings.webhook_host)
    return dns, ips


def prepare_certificates(settings: OperatorSettings) -> tuple[Path, Path, bytes | None]:
    """(cert file, key file, CA PEM or None) for the webhook server; generated when
    settings ask for it, else read from webhook_cert_dir (where the chart mounts them)."""
    directory = settings.webhook_cert_dir
    if settings.webhook_generate_certificates:
        dns, ips = certificate_names(settings)
        bundle, paths, created = certs.ensure_certificates(directory, dns, ips)
        log.info(
            "%s webhook certificate in %s for %s",
            "created" if created else "reusing",
            directory,
            ", ".join(dns + ips),
        )
        return paths.cert, paths.key, bundle.ca_bundle
    paths = certs.certificate_paths(directory)
    missing = [p for p in (paths.cert, paths.key) if not p.is_file()]
    if missing:
        raise CertificateError(
            f"webhook certificate missing: {', '.join(map(str, missing))}; mount the serving "
            "certificate there (the chart does) or pass --webhook-generate-certificates"
        )
    ca = paths.ca_cert.read_bytes() if paths.ca_cert.is_file() else None
    return paths.cert, paths.key, ca


def configurations(settings: OperatorSettings, ca_bundle: bytes | None) -> list[JSON]:
    """The two configurations for these settings (namespace labels narrow both)."""
    endpoint = settings.endpoint(ca_bundle)
    mutating = mutating_webhook_configuration(
        endpoint,
        control_plane_namespace=settings.namespace,
        name=settings.webhook_configuration_name,
        failure_policy=settings.webhook_failure_policy,
        timeout_seconds=settings.webhook_timeout_seconds,
    )
    validating = validating_webhook_configuration(
        endpoint,
        name=settings.webhook_configuration_name,
        failure_policy=settings.webhook_failure_policy,
        timeout_seconds=settings.webhook_timeout_seconds,
    )
    if settings.webhook_namespace_labels:
        for config in (mutating, validating):
            for webhook in config["webhooks"]:
                selector = copy.deepcopy(webhook.get("namespaceSelector") or {})
                selector.setdefault("matchLabels", {}).update(settings.webhook_namespace_labels)
                webhook["namespaceSelector"] = selector
    return [mutating, validating]


def _path(config: JSON) -> str:
    plural = config["kind"].lower() + "s"
    return f"{ADMISSION_API}/{plural}/{config['metadata']['name']}"


async def apply_configurations(kube: Kube, configs: list[JSON]) -> None:
    for config in configs:
        await kube.apply(_path(config), config)
        log.info("applied %s %s", config["kind"], config["metadata"]["name"])


async def delete_configurations(kube: Kube, configs: list[JSON]) -> None:
    for config in configs:
        if await kube.delete(_path(config)):
            log.info("deleted %s %s", config["kind"], config["metadata"]["name"])
