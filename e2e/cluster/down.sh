#!/usr/bin/env bash
# Stop the loopback control plane started by up.sh (controller-manager, then
# apiserver, then etcd), each with a bounded wait (SIGTERM, then SIGKILL).
# Keeps the PKI and kubeconfig; `--purge` also wipes etcd's data (and logs),
# so the next up.sh starts from an empty cluster.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_TAG=down
# shellcheck source=lib.sh
. "$HERE/lib.sh"

purge=0
for arg in "$@"; do
    case "$arg" in
        --purge) purge=1 ;;
        -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
        *) die "unknown argument: $arg (usage: down.sh [--purge])" ;;
    esac
done

TERM_WAIT="${MEMSIDECAR_STOP_TIMEOUT:-20}"

stop() {
    local name="$1" pid deadline
    if ! pid="$(pid_of "$name")"; then
        log "$name: not running"
        rm -f "$RUN/$name.pid"
        return 0
    fi
    log "$name: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + TERM_WAIT))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name: still alive after ${TERM_WAIT}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$RUN/$name.pid"
    log "$name: stopped"
}

for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop "${COMPONENTS[$i]}"
done

if ((purge)); then
    log "purging etcd data ($ETCD_DATA) and logs ($LOGS); keeping PKI ($PKI)"
    rm -rf "$ETCD_DATA" "$LOGS" "$STATE/kcm-certs" "$STATE/kcm-flexvolume" "$STATE/apiserver-certs"
fi
log "done"
