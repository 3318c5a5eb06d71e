# Shared settings and helpers for e2e/cluster/{up,down}.sh. Source, don't run.
# shellcheck shell=bash disable=SC2034  # variables are used by the scripts sourcing this

K8S_VERSION="${MEMSIDECAR_K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${MEMSIDECAR_ETCD_VERSION:-v3.6.16}"
CACHE="${MEMSIDECAR_CACHE:-$HOME/.cache/memsidecar}"
BIN="$CACHE/k8s/$K8S_VERSION/bin"

STATE="${MEMSIDECAR_STATE:-$HOME/.local/state/memsidecar}/k8s"
PKI="$STATE/pki"
RUN="$STATE/run"
LOGS="$STATE/logs"
ETCD_DATA="$STATE/etcd"
KUBECONFIG_PATH="$STATE/kubeconfig"

ETCD_PORT="${MEMSIDECAR_ETCD_PORT:-52379}"
ETCD_PEER_PORT="${MEMSIDECAR_ETCD_PEER_PORT:-52380}"
APISERVER_PORT="${MEMSIDECAR_APISERVER_PORT:-56443}"
KCM_PORT="${MEMSIDECAR_KCM_PORT:-50257}"
SERVICE_CIDR="10.0.0.0/24"

# Processes, in start order.
COMPONENTS=(etcd kube-apiserver kube-controller-manager)

log() { printf '[cluster/%s] %s\n' "${LOG_TAG:-cluster}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Print the pid of component $1 if it is running (pid file present, process
# alive and started as that binary); return 1 otherwise.
pid_of() {
    local name="$1" pid argv0
    [[ -f "$RUN/$name.pid" ]] || return 1
    pid="$(cat "$RUN/$name.pid" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # argv[0] (as up.sh exec'd it), not /proc/PID/exe: that one changes when
    # the binary is rebuilt or moved while the process runs.
    argv0="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n 1 || true)"
    [[ "${argv0##*/}" == "$name" ]] || return 1
    printf '%s\n' "$pid"
}

port_busy() {
    [[ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]]
}
