"""The operator's settings: env vars `MEMSIDECAR_OPERATOR_<FIELD>` or command-line flags
`--<field-with-dashes>` (flags win). The Helm chart sets them through env."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from memsidecar.webhooks.configuration import DEFAULT_NAME, WebhookEndpoint
from memsidecar.webhooks.injection import DEFAULT_RESOURCES, InjectionSettings

DEFAULT_SIDECAR_IMAGE = "ghcr.io/memsidecar/memsidecar-sidecar:0.1.0"


class SettingsError(Exception):
    """The operator's settings are invalid; the message names each bad setting."""


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MEMSIDECAR_OPERATOR_", extra="forbid", validate_default=True
    )

    # --- where it runs and what it watches ---------------------------------------------
    namespace: str = Field(
        default="",
        description="The operator's own namespace (the chart sets it from the pod): the "
        "pod webhook skips it, like kube-system.",
    )
    watch_namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces (globs like 'team-*' allowed) whose MemoryStores and "
        "MemoryPolicies are reconciled; empty: every namespace.",
    )
    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig file; unset: in-cluster credentials, else $KUBECONFIG or "
        "~/.kube/config.",
    )

    # --- what the webhook injects when the MemoryStore does not say ---------------------
    sidecar_image: str = Field(
        default=DEFAULT_SIDECAR_IMAGE,
        description="Sidecar image for stores without spec.sidecar.image.",
    )
    sidecar_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    sidecar_resources: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_RESOURCES),
        description="Sidecar resources (JSON) for stores without spec.sidecar.resources.",
    )

    # --- reconciling ---------------------------------------------------------------------
    recheck_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often every MemoryStore's backends are checked again and its "
        "ConfigMap repaired, besides reacting to changes.",
    )
    retry_base_seconds: float = Field(
        default=2.0, gt=0, description="First retry delay while a backend is unreachable."
    )
    retry_max_seconds: float = Field(
        default=60.0, gt=0, description="Longest retry delay (the delay doubles per retry)."
    )
    backend_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Timeout of one backend reachability check."
    )
    migration_timeout_seconds: float = Field(
        default=600.0, gt=0, description="Longest a store's schema migration may take."
    )
    policy_status_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often MemoryPolicy status (sidecars that loaded it) is recounted.",
    )

    # --- admission webhook ---------------------------------------------------------------
    webhook_enabled: bool = Field(
        default=True, description="Serve the pod injection and CR validation webhooks."
    )
    webhook_listen: str = Field(default="0.0.0.0", description="Address the webhook listens on.")
    webhook_port: int = Field(default=9443, ge=1, le=65535)
    webhook_cert_dir: Path = Field(
        default=Path("/etc/memsidecar-operator/tls"),
        description="Directory with tls.crt and tls.key (and ca.crt) of the webhook.",
    )
    webhook_generate_certificates: bool = Field(
        default=False,
        description="Create (or reuse while valid) a CA and serving certificate in "
        "webhook_cert_dir, for webhook_service's DNS names and webhook_host.",
    )
    webhook_host: str | None = Field(
        default=None,
        description="Reach the webhook at https://<host>:<port> (a URL clientConfig, e.g. "
        "127.0.0.1 for a local run) instead of through webhook_service.",
    )
    webhook_service: str | None = Field(
        default=None, description="Service in front of the webhook (in `namespace`)."
    )
    webhook_service_port: int = Field(default=443, ge=1, le=65535)
    webhook_manage_configuration: bool = Field(
        default=False,
        description="Create/update the Mutating- and ValidatingWebhookConfiguration (with "
        "the CA as caBundle) at start. Off when the Helm chart owns them.",
    )
    webhook_delete_configuration_on_exit: bool = Field(
        default=False,
        description="Delete the configurations it manages when the operator stops "
        "(for local runs: a webhook pointing at a stopped process blocks requests).",
    )
    webhook_configuration_name: str = Field(default=DEFAULT_NAME, min_length=1)
    webhook_failure_policy: Literal["Fail", "Ignore"] = "Fail"
    webhook_timeout_seconds: int = Field(default=5, ge=1, le=30)
    webhook_namespace_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Only namespaces carrying these labels get the webhooks (JSON map); "
        "empty: every namespace but kube-system and `namespace`.",
    )

    # --- health, metrics, logs -------------------------------------------------------------
    health_listen: str = Field(default="0.0.0.0", description="Address of /healthz.")
    health_port: int = Field(default=8080, ge=0, le=65535, description="0 disables /healthz.")
    metrics_listen: str = Field(default="0.0.0.0", description="Address of /metrics.")
    metrics_port: int = Field(
        default=9090, ge=0, le=65535, description="Prometheus /metrics port; 0 disables it."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"

    @field_validator("watch_namespaces")
    @classmethod
    def _nonempty(cls, value: list[str]) -> list[str]:
        if any(not ns.strip() for ns in value):
            raise ValueError("namespace patterns must be non-empty")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> OperatorSettings:
        if self.retry_base_seconds > self.retry_max_seconds:
            raise ValueError("retry_base_seconds must not exceed retry_max_seconds")
        if self.webhook_enabled and self.webhook_manage_configuration:
            if (self.webhook_host is None) == (self.webhook_service is None):
                raise ValueError(
                    "webhook_manage_configuration needs exactly one of webhook_host (a URL "
                    "on that host) or webhook_service (a Service in `namespace`)"
                )
            if self.webhook_service is not None and not self.namespace:
                raise ValueError("webhook_service needs `namespace` (the Service's namespace)")
        if self.webhook_generate_certificates and not (self.webhook_host or self.webhook_service):
            raise ValueError(
                "webhook_generate_certificates needs webhook_host or webhook_service: the "
                "names the certificate is for"
            )
        return self

    # --- derived -------------------------------------------------------------------------

    def injection(self) -> InjectionSettings:
        return InjectionSettings(
            default_image=self.sidecar_image,
            image_pull_policy=self.sidecar_image_pull_policy,
            default_resources=self.sidecar_resources,
        )

    def retry_delay(self, retry: int) -> float:
        """Backoff before retry number `retry` (0-based): base * 2^retry, capped."""
        return float(min(self.retry_max_seconds, self.retry_base_seconds * 2 ** min(retry, 30)))

    def endpoint(self, ca_bundle: bytes | None) -> WebhookEndpoint:
        if self.webhook_host is not None:
            host = f"[{self.webhook_host}]" if ":" in self.webhook_host else self.webhook_host
            return WebhookEndpoint(url=f"https://{host}:{self.webhook_port}", ca_bundle=ca_bundle)
        return WebhookEndpoint(
            service_name=self.webhook_service,
            service_namespace=self.namespace,
            service_port=self.webhook_service_port,
            ca_bundle=ca_bundle,
        )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_args(
    argv: Sequence[str] | None = None, prog: str = "python -m memsidecar.operator"
) -> OperatorSettings:
    """Settings from env vars, overridden by command-line flags; SettingsError if invalid."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the memsidecar operator: reconcile MemoryStore and MemoryPolicy "
        "objects and serve the admission webhooks. Every flag can also be given as the "
        "env var MEMSIDECAR_OPERATOR_<FLAG_IN_CAPS> (--watch-namespace: "
        "MEMSIDECAR_OPERATOR_WATCH_NAMESPACES, a JSON list).",
    )
    for name, info in OperatorSettings.model_fields.items():
        help_text = (info.description or "").replace("%", "%%")
        annotation = info.annotation
        if annotation is bool:
            parser.add_argument(
                _flag(name), dest=name, action=argparse.BooleanOptionalAction, help=help_text
            )
        elif name == "watch_namespaces":
            parser.add_argument(
                _flag(name).removesuffix("s"),
                dest=name,
                action="append",
                metavar="PATTERN",
                help=help_text + " Repeat for several.",
            )
        else:
            parser.add_argument(_flag(name), dest=name, metavar="VALUE", help=help_text)
    args = vars(parser.parse_args(argv))
    given: dict[str, Any] = {}
    for name, value in args.items():
        if value is None:
            continue
        annotation = OperatorSettings.model_fields[name].annotation
        if annotation in (dict[str, Any], dict[str, str]) and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise SettingsError(f"{_flag(name)}: not JSON ({exc})") from exc
        given[name] = value
    return load_settings(given)


def load_settings(given: dict[str, Any] | None = None) -> OperatorSettings:
    try:
        return OperatorSettings(**(given or {}))
    except ValidationError as exc:
        lines = ["invalid operator settings:"]
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(settings)"
            env = "MEMSIDECAR_OPERATOR_" + field.split(".")[0].upper()
            flag = _flag(field.split(".")[0])
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"  {field}: {msg} ({flag} or env {env})")
        raise SettingsError("\n".join(lines)) from exc
