"""Sidecar injection as a pure function: pod + MemoryStore + settings → JSON patch.

The contract (DESIGN.md section 7, docs/injection.md):

- Opt in with the pod annotation `memsidecar.io/inject: "true"` ("false" opts out;
  any other value is an error, so a typo is never a silently uninjected pod). The
  store is `memsidecar.io/store` (default `default`, in the pod's namespace); the
  agent id is `memsidecar.io/agent-id` (default: the pod's service account, else
  "default").
- Injected: the sidecar as a native sidecar (the first init container, with
  `restartPolicy: Always`) with probes and a restricted security context; an
  in-memory emptyDir socket volume mounted into the sidecar and every app
  container; MEMSIDECAR_SOCKET / MEMSIDECAR_STORE / MEMSIDECAR_AGENT_ID in every app
  container; the store's rendered config from the ConfigMap `memsidecar-<store>`.
  Init containers get the socket and env only when named in
  `memsidecar.io/init-containers` (they run after the sidecar has started).
- Idempotent: the marker annotation `memsidecar.io/status: injected`. A pod that
  carries it and our sidecar only gets the socket mount and env added to app
  containers that lack them (containers another webhook added after us, seen on
  reinvocation) — normally nothing, an empty patch. A pod that has the marker
  without our sidecar, or its own container named `memsidecar`, is left alone.
  Env vars, volumes and mount paths the user already defined are never replaced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from memsidecar.webhooks.contract import (
    ANNOTATION_AGENT_ID,
    ANNOTATION_INIT_CONTAINERS,
    ANNOTATION_INJECT,
    ANNOTATION_STATUS,
    ANNOTATION_STORE,
    CONFIG_DIR,
    CONFIG_PATH,
    CONFIG_VOLUME,
    DATA_DIR,
    DATA_VOLUME,
    DEFAULT_AGENT,
    DEFAULT_STORE,
    ENV_AGENT,
    ENV_AGENT_ID,
    ENV_POD_NAME,
    ENV_POD_NAMESPACE,
    ENV_POD_UID,
    ENV_SOCKET,
    ENV_STORE,
    ENV_TENANT,
    KUBE_API_DIR,
    KUBE_API_VOLUME,
    PODINFO_DIR,
    PODINFO_VOLUME,
    READY_FILE,
    SIDECAR_NAME,
    SIDECAR_UID,
    SOCKET_DIR,
    SOCKET_PATH,
    SOCKET_VOLUME,
    STATUS_INJECTED,
    TMP_DIR,
    TMP_VOLUME,
    config_map_name,
    escape_json_pointer,
)
from memsidecar.webhooks.store import store_env, store_spec, store_tenant

JSON = dict[str, Any]
Patch = list[JSON]

# A Kubernetes object name (DNS subdomain); MemoryStore names stay within 242 characters
# so memsidecar-<name> is still a valid ConfigMap name.
STORE_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_STORE_NAME = 242
MAX_AGENT_ID = 256

DEFAULT_RESOURCES: Mapping[str, Any] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"memory": "256Mi"},
}
SOCKET_SIZE_LIMIT = "1Mi"
# Lifetime of the sidecar's own projected service-account token (the kubelet refreshes it).
TOKEN_EXPIRATION_SECONDS = 3607


class InjectionError(Exception):
    """The pod cannot be injected; the admission response denies it with `message`."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class StoreNotFound(InjectionError):
    """The MemoryStore the pod asks for does not exist in its namespace."""

    def __init__(self, namespace: str, name: str) -> None:
        self.namespace = namespace
        self.name = name
        super().__init__(
            f"MemoryStore {namespace}/{name} does not exist; create it or set {ANNOTATION_STORE}"
        )


class InvalidAnnotation(InjectionError):
    """A memsidecar.io/* annotation on the pod has a value that cannot be used."""


@dataclass(frozen=True)
class InjectionSettings:
    """What the webhook injects when the MemoryStore does not say (Helm values)."""

    # Sidecar image when the store has no spec.sidecar.image.
    default_image: str
    image_pull_policy: str = "IfNotPresent"
    # Sidecar resources when the store has no spec.sidecar.resources.
    default_resources: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    # The startup probe allows period * threshold seconds for the sidecar to serve.
    startup_period_seconds: int = 1
    startup_failure_threshold: int = 120
    readiness_period_seconds: int = 10
    liveness_period_seconds: int = 30
    liveness_failure_threshold: int = 3
    probe_timeout_seconds: int = 5


# --- reading the pod -------------------------------------------------------------------


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    annotations = (pod.get("metadata") or {}).get("annotations")
    return annotations if isinstance(annotations, Mapping) else {}


def _spec(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = pod.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _containers(pod: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    containers = _spec(pod).get(key)
    return [c for c in containers if isinstance(c, Mapping)] if isinstance(containers, list) else []


def injection_requested(pod: Mapping[str, Any]) -> bool:
    """True for memsidecar.io/inject "true", False when absent or "false"."""
    value = _annotations(pod).get(ANNOTATION_INJECT)
    if value is None:
        return False
    text = str(value).strip().lower()
    if text == "true":
        return True
    if text == "false":
        return False
    raise InvalidAnnotation(
        f'{ANNOTATION_INJECT} must be "true" or "false", got {value!r}; quote it in YAML '
        f'({ANNOTATION_INJECT}: "true")'
    )


def store_name(pod: Mapping[str, Any]) -> str:
    """memsidecar.io/store, or "default"."""
    value = _annotations(pod).get(ANNOTATION_STORE)
    if value is None or str(value).strip() == "":
        return DEFAULT_STORE
    name = str(value).strip()
    if len(name) > MAX_STORE_NAME or not STORE_NAME_RE.match(name):
        raise InvalidAnnotation(
            f"{ANNOTATION_STORE} {name!r} is not a MemoryStore name: use lowercase letters, "
            f"digits, '-' and '.', at most {MAX_STORE_NAME} characters"
        )
    return name


def agent_id(pod: Mapping[str, Any]) -> str:
    """memsidecar.io/agent-id, else the pod's service account, else "default"."""
    value = _annotations(pod).get(ANNOTATION_AGENT_ID)
    if value is not None and str(value).strip():
        agent = str(value).strip()
        if len(agent) > MAX_AGENT_ID or any(ord(ch) < 0x20 for ch in agent):
            raise InvalidAnnotation(
                f"{ANNOTATION_AGENT_ID} must be at most {MAX_AGENT_ID} printable characters"
            )
        return agent
    spec = _spec(pod)
    for key in ("serviceAccountName", "serviceAccount"):
        account = spec.get(key)
        if isinstance(account, str) and account:
            return account
    return DEFAULT_AGENT


def opted_in_init_containers(pod: Mapping[str, Any]) -> list[str]:
    """Init containers named in memsidecar.io/init-containers ("a,b"); each must exist."""
    value = _annotations(pod).get(ANNOTATION_INIT_CONTAINERS)
    if value is None:
        return []
    names = [part.strip() for part in str(value).split(",") if part.strip()]
    existing = {c.get("name") for c in _containers(pod, "initContainers")}
    missing = [n for n in names if n not in existing or n == SIDECAR_NAME]
    if missing:
        raise InvalidAnnotation(
            f"{ANNOTATION_INIT_CONTAINERS} names {', '.join(missing)}, which "
            f"{'is not an init container' if len(missing) == 1 else 'are not init containers'}"
            f" of this pod; list init container names separated by commas"
        )
    return names


def has_marker(pod: Mapping[str, Any]) -> bool:
    return _annotations(pod).get(ANNOTATION_STATUS) == STATUS_INJECTED


def has_our_sidecar(pod: Mapping[str, Any]) -> bool:
    """An init container named memsidecar with restartPolicy Always (what we inject)."""
    return any(
        c.get("name") == SIDECAR_NAME and c.get("restartPolicy") == "Always"
        for c in _containers(pod, "initContainers")
    )


def has_container_named_sidecar(pod: Mapping[str, Any]) -> bool:
    return any(
        c.get("name") == SIDECAR_NAME
        for key in ("initContainers", "containers")
        for c in _containers(pod, key)
    )


# --- what gets injected ----------------------------------------------------------------


def _probe(settings: InjectionSettings, period: int, failure_threshold: int) -> JSON:
    return {
        "exec": {
            "command": [
                "memsidecar",
                "probe",
                "--socket",
                SOCKET_PATH,
                "--timeout",
                str(max(1, settings.probe_timeout_seconds - 1)),
            ]
        },
        "periodSeconds": period,
        "timeoutSeconds": settings.probe_timeout_seconds,
        "failureThreshold": failure_threshold,
    }


def security_context() -> JSON:
    """The restricted Pod Security Standard, for the sidecar container."""
    return {
        "runAsNonRoot": True,
        "runAsUser": SIDECAR_UID,
        "runAsGroup": SIDECAR_UID,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _field_env(name: str, path: str) -> JSON:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def sidecar_container(
    store: Mapping[str, Any], store_name_: str, agent: str, settings: InjectionSettings
) -> JSON:
    """The native sidecar container for `store`."""
    sidecar_spec = store_spec(store).get("sidecar") or {}
    resources = sidecar_spec.get("resources") or settings.default_resources
    env: list[JSON] = [
        {"name": ENV_TENANT, "value": store_tenant(store)},
        {"name": ENV_AGENT, "value": agent},
        {"name": ENV_STORE, "value": store_name_},
        _field_env(ENV_POD_NAME, "metadata.name"),
        _field_env(ENV_POD_NAMESPACE, "metadata.namespace"),
        _field_env(ENV_POD_UID, "metadata.uid"),
        *store_env(store),
    ]
    return {
        "name": SIDECAR_NAME,
        "image": sidecar_spec.get("image") or settings.default_image,
        "imagePullPolicy": sidecar_spec.get("imagePullPolicy") or settings.image_pull_policy,
        "restartPolicy": "Always",
        "command": [
            "memsidecar",
            "serve",
            "--config",
            CONFIG_PATH,
            "--socket",
            SOCKET_PATH,
            "--ready-file",
            READY_FILE,
        ],
        "env": env,
        "resources": _plain(resources),
        "securityContext": security_context(),
        "volumeMounts": [
            {"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR},
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": DATA_VOLUME, "mountPath": DATA_DIR},
            {"name": TMP_VOLUME, "mountPath": TMP_DIR},
            {"name": PODINFO_VOLUME, "mountPath": PODINFO_DIR, "readOnly": True},
            {"name": KUBE_API_VOLUME, "mountPath": KUBE_API_DIR, "readOnly": True},
        ],
        "startupProbe": _probe(
            settings, settings.startup_period_seconds, settings.startup_failure_threshold
        ),
        "readinessProbe": _probe(settings, settings.readiness_period_seconds, 3),
        "livenessProbe": _probe(
            settings, settings.liveness_period_seconds, settings.liveness_failure_threshold
        ),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def sidecar_volumes(store: Mapping[str, Any], store_name_: str) -> list[JSON]:
    """The pod volumes the sidecar and the app containers use."""
    data: JSON = {}
    size_limit = (store_spec(store).get("sidecar") or {}).get("dataSizeLimit")
    if size_limit is not None:
        data["sizeLimit"] = size_limit
    return [
        {"name": SOCKET_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": SOCKET_SIZE_LIMIT}},
        {
            "name": CONFIG_VOLUME,
            "configMap": {"name": config_map_name(store_name_), "defaultMode": 0o444},
        },
        {"name": DATA_VOLUME, "emptyDir": data},
        {"name": TMP_VOLUME, "emptyDir": {}},
        {
            "name": PODINFO_VOLUME,
            "downwardAPI": {
                "defaultMode": 0o444,
                "items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                ],
            },
        },
        {
            # The sidecar's own API credentials (to watch MemoryPolicy objects), whether or
            # not the pod automounts its service account token for the app containers.
            "name": KUBE_API_VOLUME,
            "projected": {
                "defaultMode": 0o444,
                "sources": [
                    {
                        "serviceAccountToken": {
                            "path": "token",
                            "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                        }
                    },
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {
                                        "apiVersion": "v1",
                                        "fieldPath": "metadata.namespace",
                                    },
                                }
                            ]
                        }
                    },
                ],
            },
        },
    ]


def app_env(store_name_: str, agent: str) -> list[JSON]:
    """Env every app container gets (unless it defines the same names itself)."""
    return [
        {"name": ENV_SOCKET, "value": SOCKET_PATH},
        {"name": ENV_STORE, "value": store_name_},
        {"name": ENV_AGENT_ID, "value": agent},
    ]


def app_mount() -> JSON:
    # Read-only is enough to connect to a Unix socket, and stops an app from removing it.
    return {"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR, "readOnly": True}


def _plain(value: Any) -> Any:
    """A JSON-ready deep copy (mappings → dicts)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --- the patch -------------------------------------------------------------------------


def _append_ops(path: str, existing: object, items: Sequence[JSON]) -> Patch:
    """Add items to the array at `path`: the whole array when it is absent."""
    if not items:
        return []
    if not isinstance(existing, list):
        return [{"op": "add", "path": path, "value": [_plain(i) for i in items]}]
    return [{"op": "add", "path": f"{path}/-", "value": _plain(i)} for i in items]


def _container_ops(path: str, container: Mapping[str, Any], env: list[JSON]) -> Patch:
    """Socket mount and env for one container, keeping what it already defines."""
    existing_env = container.get("env")
    env_names = {e.get("name") for e in existing_env or [] if isinstance(e, Mapping)}
    new_env = [e for e in env if e["name"] not in env_names]
    existing_mounts = container.get("volumeMounts")
    mount_paths = {
        str(m.get("mountPath", "")).rstrip("/")
        for m in existing_mounts or []
        if isinstance(m, Mapping)
    }
    new_mounts = [] if SOCKET_DIR in mount_paths else [app_mount()]
    return _append_ops(f"{path}/env", existing_env, new_env) + _append_ops(
        f"{path}/volumeMounts", existing_mounts, new_mounts
    )


def _app_ops(pod: Mapping[str, Any], store_name_: str, agent: str, init_names: list[str]) -> Patch:
    env = app_env(store_name_, agent)
    ops: Patch = []
    for index, container in enumerate(_containers(pod, "containers")):
        ops += _container_ops(f"/spec/containers/{index}", container, env)
    for index, container in enumerate(_containers(pod, "initContainers")):
        if container.get("name") in init_names:
            ops += _container_ops(f"/spec/initContainers/{index}", container, env)
    return ops


def inject(
    pod: Mapping[str, Any],
    store: Mapping[str, Any] | None,
    settings: InjectionSettings,
    *,
    namespace: str | None = None,
) -> Patch:
    """The JSON patch (RFC 6902 ops) that injects the memory sidecar into `pod`.

    `store` is the MemoryStore the pod names (memsidecar.io/store, default "default"),
    looked up by the caller in the pod's namespace, or None when it does not exist.
    Returns [] for a pod that did not opt in or is already injected. Raises
    StoreNotFound when injection needs the store and it is None, InvalidAnnotation
    for an unusable memsidecar.io/* annotation; the caller denies the pod with the
    exception's message (never admits a half-injected pod).
    """
    if not injection_requested(pod):
        return []
    name = store_name(pod)
    agent = agent_id(pod)
    init_names = opted_in_init_containers(pod)
    if has_marker(pod):
        # Already injected (e.g. a reinvocation after another webhook added a container):
        # only make sure every app container reaches the socket.
        return _app_ops(pod, name, agent, init_names) if has_our_sidecar(pod) else []
    if has_container_named_sidecar(pod):
        return []
    if store is None:
        ns = namespace or str((pod.get("metadata") or {}).get("namespace") or "")
        raise StoreNotFound(ns, name)

    spec = _spec(pod)
    ops: Patch = []
    annotations = (pod.get("metadata") or {}).get("annotations")
    if isinstance(annotations, Mapping):
        ops.append(
            {
                "op": "add",
                "path": f"/metadata/annotations/{escape_json_pointer(ANNOTATION_STATUS)}",
                "value": STATUS_INJECTED,
            }
        )
    else:
        ops.append(
            {
                "op": "add",
                "path": "/metadata/annotations",
                "value": {ANNOTATION_STATUS: STATUS_INJECTED},
            }
        )

    existing_volumes = spec.get("volumes")
    volume_names = {v.get("name") for v in existing_volumes or [] if isinstance(v, Mapping)}
    volumes = [v for v in sidecar_volumes(store, name) if v["name"] not in volume_names]
    ops += _append_ops("/spec/volumes", existing_volumes, volumes)

    ops += _app_ops(pod, name, agent, init_names)

    sidecar = sidecar_container(store, name, agent, settings)
    init_containers = spec.get("initContainers")
    if isinstance(init_containers, list):
        ops.append({"op": "add", "path": "/spec/initContainers/0", "value": sidecar})
    else:
        ops.append({"op": "add", "path": "/spec/initContainers", "value": [sidecar]})
    return ops
