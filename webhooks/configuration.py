"""The MutatingWebhookConfiguration (pod injection) and ValidatingWebhookConfiguration
(MemoryStore / MemoryPolicy checks) objects, as dicts ready for the API or a chart.

Choices (docs/injection.md explains them):

- The pod webhook is only called for pods carrying the memsidecar.io/inject
  annotation (a `matchConditions` CEL expression), so its failurePolicy can default
  to Fail: while the webhook is down, only pods that asked for a sidecar are
  refused (and retried by their controller); every other pod is created as usual.
  With Ignore they would start without the sidecar they need.
- kube-system and the control plane's own namespace are skipped with a
  `kubernetes.io/metadata.name NotIn [...]` namespaceSelector, so the operator can
  always start, even when its webhook is down.
- sideEffects None, reinvocationPolicy IfNeeded (containers added by later webhooks
  still get the socket), a short timeout, admissionReviewVersions [v1].
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from memsidecar.webhooks.contract import (
    ANNOTATION_INJECT,
    GROUP,
    POLICY_PLURAL,
    STORE_PLURAL,
    VERSION,
)

JSON = dict[str, Any]
FailurePolicy = Literal["Fail", "Ignore"]

DEFAULT_NAME = "memsidecar"
MUTATE_PODS_PATH = "/mutate-pods"
VALIDATE_STORES_PATH = "/validate-memorystores"
VALIDATE_POLICIES_PATH = "/validate-memorypolicies"
DEFAULT_TIMEOUT_SECONDS = 5
ALWAYS_EXCLUDED = ("kube-system",)
LABELS = {"app.kubernetes.io/name": "memsidecar", "app.kubernetes.io/component": "webhook"}


@dataclass(frozen=True)
class WebhookEndpoint:
    """Where the API server reaches the webhook: a Service, or a URL (e.g. a process on
    127.0.0.1 in the e2e cluster). `ca_bundle` is the PEM CA that signed the serving
    certificate; None leaves caBundle out (for cert-manager's CA injector to fill)."""

    url: str | None = None
    service_name: str | None = None
    service_namespace: str | None = None
    service_port: int = 443
    ca_bundle: bytes | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.service_name is None):
            raise ValueError("give exactly one of url or service_name")
        if self.service_name is not None and not self.service_namespace:
            raise ValueError("service_namespace is required with service_name")
        if self.url is not None and not self.url.startswith("https://"):
            raise ValueError(f"webhook url {self.url!r} must start with https://")

    def client_config(self, path: str) -> JSON:
        config: JSON
        if self.url is not None:
            config = {"url": self.url.rstrip("/") + path}
        else:
            config = {
                "service": {
                    "name": self.service_name,
                    "namespace": self.service_namespace,
                    "port": self.service_port,
                    "path": path,
                }
            }
        if self.ca_bundle is not None:
            config["caBundle"] = base64.b64encode(self.ca_bundle).decode("ascii")
        return config


def excluded_namespaces(control_plane_namespace: str, extra: Sequence[str] = ()) -> list[str]:
    out: list[str] = []
    for ns in (*ALWAYS_EXCLUDED, control_plane_namespace, *extra):
        if ns and ns not in out:
            out.append(ns)
    return out


def namespace_selector(control_plane_namespace: str, extra: Sequence[str] = ()) -> JSON:
    return {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": excluded_namespaces(control_plane_namespace, extra),
            }
        ]
    }


def _metadata(name: str, annotations: Mapping[str, str] | None) -> JSON:
    metadata: JSON = {"name": name, "labels": dict(LABELS)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return metadata


def _check(failure_policy: str, timeout_seconds: int) -> None:
    if failure_policy not in ("Fail", "Ignore"):
        raise ValueError(f"failure_policy must be Fail or Ignore, got {failure_policy!r}")
    if not 1 <= timeout_seconds <= 30:
        raise ValueError(f"timeout_seconds must be 1-30, got {timeout_seconds}")


def mutating_webhook_configuration(
    endpoint: WebhookEndpoint,
    *,
    control_plane_namespace: str,
    name: str = DEFAULT_NAME,
    failure_policy: FailurePolicy = "Fail",
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
    object_selector: Mapping[str, Any] | None = None,
    extra_excluded_namespaces: Sequence[str] = (),
    path: str = MUTATE_PODS_PATH,
    annotations: Mapping[str, str] | None = None,
) -> JSON:
    """The pod-injection webhook configuration."""
    _check(failure_policy, timeout_seconds)
    webhook: JSON = {
        "name": f"inject.{GROUP}",
        "admissionReviewVersions": ["v1"],
        "clientConfig": endpoint.client_config(path),
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ],
        "matchPolicy": "Equivalent",
        "namespaceSelector": namespace_selector(control_plane_namespace, extra_excluded_namespaces),
        "objectSelector": dict(object_selector or {}),
        "matchConditions": [
            {
                "name": "opted-in",
                "expression": (
                    "has(object.metadata.annotations) && "
                    f"'{ANNOTATION_INJECT}' in object.metadata.annotations"
                ),
            }
        ],
        "failurePolicy": failure_policy,
        "sideEffects": "None",
        "reinvocationPolicy": "IfNeeded",
        "timeoutSeconds": timeout_seconds,
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": _metadata(name, annotations),
        "webhooks": [webhook],
    }


def validating_webhook_configuration(
    endpoint: WebhookEndpoint,
    *,
    name: str = DEFAULT_NAME,
    failure_policy: FailurePolicy = "Fail",
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
    stores_path: str = VALIDATE_STORES_PATH,
    policies_path: str = VALIDATE_POLICIES_PATH,
    annotations: Mapping[str, str] | None = None,
) -> JSON:
    """The MemoryStore / MemoryPolicy validation webhook configuration (CREATE, UPDATE).

    Fail by default: while the webhook is down, only changes to these objects are
    refused; the sidecars keep running on what they have.
    """
    _check(failure_policy, timeout_seconds)

    def webhook(plural: str, path: str) -> JSON:
        return {
            "name": f"{plural}.validate.{GROUP}",
            "admissionReviewVersions": ["v1"],
            "clientConfig": endpoint.client_config(path),
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "apiVersions": [VERSION],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": [plural],
                    "scope": "Namespaced",
                }
            ],
            "matchPolicy": "Equivalent",
            "failurePolicy": failure_policy,
            "sideEffects": "None",
            "timeoutSeconds": timeout_seconds,
        }

    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": _metadata(name, annotations),
        "webhooks": [webhook(STORE_PLURAL, stores_path), webhook(POLICY_PLURAL, policies_path)],
    }
