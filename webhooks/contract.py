"""Names and paths of the injection contract (DESIGN.md section 7), in one place.

The webhook, the operator (which creates the rendered-config ConfigMap) and the
e2e harness (which plays the kubelet) all read these instead of spelling them.
"""

from __future__ import annotations

GROUP = "memsidecar.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
STORE_KIND = "MemoryStore"
STORE_PLURAL = "memorystores"
POLICY_KIND = "MemoryPolicy"
POLICY_PLURAL = "memorypolicies"

# Pod annotations read by the webhook.
ANNOTATION_INJECT = "memsidecar.io/inject"
ANNOTATION_STORE = "memsidecar.io/store"
ANNOTATION_AGENT_ID = "memsidecar.io/agent-id"
# Comma-separated names of init containers that also get the socket and env.
ANNOTATION_INIT_CONTAINERS = "memsidecar.io/init-containers"
# Written by the webhook.
ANNOTATION_STATUS = "memsidecar.io/status"
STATUS_INJECTED = "injected"

DEFAULT_STORE = "default"
DEFAULT_AGENT = "default"

SIDECAR_NAME = "memsidecar"
# Uid/gid the sidecar runs as (distroless "nonroot").
SIDECAR_UID = 65532

# Volumes (names are also what the webhook leaves alone if the user already has them).
SOCKET_VOLUME = "memsidecar-socket"
CONFIG_VOLUME = "memsidecar-config"
DATA_VOLUME = "memsidecar-data"
TMP_VOLUME = "memsidecar-tmp"
PODINFO_VOLUME = "memsidecar-podinfo"
KUBE_API_VOLUME = "memsidecar-kube-api-access"

SOCKET_DIR = "/var/run/memsidecar"
SOCKET_PATH = f"{SOCKET_DIR}/memsidecar.sock"
CONFIG_DIR = "/etc/memsidecar"
CONFIG_KEY = "sidecar.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
DATA_DIR = "/var/lib/memsidecar"
ARTIFACT_ROOT = f"{DATA_DIR}/artifacts"
TMP_DIR = "/tmp"
READY_FILE = f"{TMP_DIR}/ready"
# Downward API files: `labels` and `annotations` of the pod (live-updated by the
# kubelet), so the sidecar can match MemoryPolicy podSelectors without reading Pods.
PODINFO_DIR = "/etc/memsidecar-podinfo"
KUBE_API_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

# Env in app containers.
ENV_SOCKET = "MEMSIDECAR_SOCKET"
ENV_STORE = "MEMSIDECAR_STORE"
ENV_AGENT_ID = "MEMSIDECAR_AGENT_ID"
# Env in the sidecar (identity overrides of the rendered config, and the pod).
ENV_TENANT = "MEMSIDECAR_IDENTITY__TENANT"
ENV_AGENT = "MEMSIDECAR_IDENTITY__AGENT"
ENV_POD_NAME = "POD_NAME"
ENV_POD_NAMESPACE = "POD_NAMESPACE"
ENV_POD_UID = "POD_UID"

# Env the sidecar reads secrets from (filled from Secrets, never inlined in the config).
ENV_PG_DSN = "MEMSIDECAR_PG_DSN"
ENV_S3_ACCESS_KEY_ID = "MEMSIDECAR_S3_ACCESS_KEY_ID"
ENV_S3_SECRET_ACCESS_KEY = "MEMSIDECAR_S3_SECRET_ACCESS_KEY"


def config_map_name(store_name: str) -> str:
    """The ConfigMap holding a store's rendered sidecar config (key `sidecar.yaml`)."""
    return f"memsidecar-{store_name}"


def embedder_api_key_env(embedder: str) -> str:
    """Env var holding an embedder's API key: MEMSIDECAR_EMBEDDER_<NAME>_API_KEY."""
    return f"MEMSIDECAR_EMBEDDER_{embedder.upper().replace('-', '_')}_API_KEY"


def auth_secret_env(index: int) -> str:
    """Env var holding the HS256 secret of auth.keys[index]."""
    return f"MEMSIDECAR_AUTH_KEY_{index}_SECRET"


def escape_json_pointer(token: str) -> str:
    """One JSON-pointer reference token (RFC 6901): `~` → `~0`, `/` → `~1`."""
    return token.replace("~", "~0").replace("/", "~1")
