"""The sidecar's configuration: one YAML file, every field overridable by env var.

Env vars use the prefix MEMSIDECAR_ and `__` between levels, e.g.
MEMSIDECAR_BLOCKS__KV__DRIVER=postgres or MEMSIDECAR_LISTEN__TCP=127.0.0.1:7070.
They win over the file. With no file the embedded default runs: in-memory
blocks, artifacts on local disk, the fake embedder, a socket in the user's
runtime dir, ambient auth.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from memsidecar.defaults import default_socket_path, runtime_dir
from memsidecar.sidecar.auth.settings import AuthSettings
from memsidecar.sidecar.blocks.artifact.settings import ArtifactSettings
from memsidecar.sidecar.blocks.episodic.settings import EpisodicSettings
from memsidecar.sidecar.blocks.kv.settings import KVSettings
from memsidecar.sidecar.blocks.lease.settings import LeaseSettings
from memsidecar.sidecar.blocks.semantic.settings import SemanticSettings
from memsidecar.sidecar.blocks.session.settings import SessionSettings
from memsidecar.sidecar.blocks.settings import validate_namespace_name
from memsidecar.sidecar.errors import MemError
from memsidecar.sidecar.models import StrictModel
from memsidecar.sidecar.observability.settings import ObservabilitySettings
from memsidecar.sidecar.tls import TLSSettings
from memsidecar.sidecar.units import ByteSize


class ConfigError(Exception):
    """The configuration is invalid; the message names each bad field."""


class ListenSettings(StrictModel):
    # The Unix socket; always served.
    socket: Path = Field(default_factory=default_socket_path)
    # Octal permission bits of the socket file.
    socket_mode: str = "0660"
    # Optional TCP listener, "host:port" (e.g. 127.0.0.1:7070).
    tcp: str | None = None
    # TLS / mTLS on the TCP listener, reloaded when the files change (docs/tls.md).
    tls: TLSSettings | None = None
    # Optional HTTP/JSON gateway, "host:port" (docs/gateway.md); callers need a token.
    http: str | None = None
    max_message_bytes: ByteSize = 8 * 1024 * 1024
    # Seconds in-flight calls get to finish on shutdown.
    shutdown_grace_seconds: float = Field(default=5.0, ge=0)

    @field_validator("socket_mode")
    @classmethod
    def _octal(cls, value: str) -> str:
        try:
            mode = int(value, 8)
        except ValueError as exc:
            raise ValueError(f"socket_mode {value!r} must be octal, e.g. '0660'") from exc
        if not 0 <= mode <= 0o777:
            raise ValueError(f"socket_mode {value!r} must be between 0000 and 0777")
        return value

    @field_validator("tcp", "http")
    @classmethod
    def _host_port(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{info.field_name} {value!r} must be host:port, e.g. 127.0.0.1:7070")
        return value

    @model_validator(mode="after")
    def _tls_needs_tcp(self) -> ListenSettings:
        if self.tls is not None and self.tcp is None:
            raise ValueError(
                "tls is set but tcp is not: TLS applies to the TCP listener (the socket is "
                "local); set listen.tcp or drop listen.tls"
            )
        return self


class IdentitySettings(StrictModel):
    """Ambient identity granted to callers on the socket."""

    tenant: str = "default"
    agent: str = "local"

    @field_validator("tenant")
    @classmethod
    def _tenant_name(cls, value: str) -> str:
        try:
            return validate_namespace_name(value)
        except MemError as exc:
            raise ValueError(exc.message.replace("namespace", "tenant")) from exc


class KubernetesPolicySettings(StrictModel):
    """MemoryPolicy objects of the pod's namespace, listed and watched (docs/policy.md)."""

    namespace: str = Field(default_factory=lambda: os.environ.get("POD_NAMESPACE", ""))
    pod_name: str | None = Field(default_factory=lambda: os.environ.get("POD_NAME") or None)
    # The pod's labels (for podSelector) from the Downward API file the injector mounts,
    labels_file: Path | None = Path("/etc/memsidecar-podinfo/labels")
    # or given here (outside a pod).
    labels: dict[str, str] | None = None
    labels_poll_seconds: float = Field(default=5.0, gt=0)
    start_timeout_seconds: float = Field(default=30.0, gt=0)
    request_timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("namespace")
    @classmethod
    def _namespace_known(cls, value: str) -> str:
        if not value:
            raise ValueError("set namespace (or the POD_NAMESPACE env var the injector sets)")
        return value


class PolicySettings(StrictModel):
    """Where the allow/deny/rate-limit/cap rules come from (docs/policy.md); unset = allow."""

    # A policy YAML file, reloaded on change and on SIGHUP,
    file: Path | None = None
    debounce_ms: int = Field(default=300, ge=10)
    poll_seconds: float = Field(default=5.0, gt=0)
    # or the MemoryPolicy objects of the pod's namespace.
    kubernetes: KubernetesPolicySettings | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PolicySettings:
        if self.file is not None and self.kubernetes is not None:
            raise ValueError("set policy.file or policy.kubernetes, not both")
        return self


class BlocksSettings(StrictModel):
    kv: KVSettings = Field(default_factory=KVSettings)
    episodic: EpisodicSettings = Field(default_factory=EpisodicSettings)
    semantic: SemanticSettings = Field(default_factory=SemanticSettings)
    artifact: ArtifactSettings = Field(
        default_factory=lambda: ArtifactSettings(options={"root": str(runtime_dir() / "artifacts")})
    )
    lease: LeaseSettings = Field(default_factory=LeaseSettings)
    session: SessionSettings = Field(default_factory=SessionSettings)


class SidecarConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MEMSIDECAR_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    listen: ListenSettings = Field(default_factory=ListenSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    blocks: BlocksSettings = Field(default_factory=BlocksSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    # Metrics, tracing and the access log (docs/observability.md).
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Where this config came from, for the start-up message.
    source: str = "embedded default"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Env vars override the file, which is passed as init kwargs.
        return (env_settings, init_settings)


def _describe(exc: ValidationError, origin: str) -> str:
    lines = [f"invalid sidecar config ({origin}):"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        env = "MEMSIDECAR_" + "__".join(str(p).upper() for p in err["loc"])
        lines.append(f"  {field}: {err['msg']} (in the file, or env {env})")
    return "\n".join(lines)


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> SidecarConfig:
    """Read, merge and validate the config; raise ConfigError naming every bad field."""
    data: dict[str, Any] = {}
    origin = "embedded default"
    if path is not None:
        origin = str(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    elif any(k.startswith("MEMSIDECAR_") and "__" in k for k in os.environ):
        origin = "embedded default + environment"
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    data["source"] = origin
    try:
        return SidecarConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from exc
