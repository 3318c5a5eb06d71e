#!/usr/bin/env bash
# Test-ground S3: a real MinIO server built from its Go module, on loopback only
# (DESIGN.md section 10).
#
#   scripts/minio.sh [up|down|status|env|restart]     (default: up)
#
#   up       build the pinned MinIO (cached), start it in the background, wait for
#            /minio/health/live. Idempotent; fast when already up.
#   down     stop it (SIGTERM, then SIGKILL after 30 s); data is kept.
#   restart  down then up (data kept) -- used by tests to stop S3 mid-upload.
#   status   exit 0 when it is running and healthy.
#   env      print `export MEMSIDECAR_S3_...` lines:  eval "$(scripts/minio.sh env)"
#
# Progress goes to stderr; `up` and `env` print the exports on stdout.
# Knobs: MEMSIDECAR_MINIO_PORT (59000; console on port+1), MEMSIDECAR_CACHE,
#        MEMSIDECAR_STATE, GO (path of the go command).
set -euo pipefail

MS_TAG=minio
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Pinned: the last commit of github.com/minio/minio (the repository is archived;
# it is RELEASE.2025-10-15T17-29-55Z plus the final maintenance commits). The
# module proxy reachable here serves this pseudo-version; the RELEASE.* tags do
# not resolve through it.
MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

MINIO_HOST=127.0.0.1
MINIO_PORT="${MEMSIDECAR_MINIO_PORT:-59000}"
MINIO_CONSOLE_PORT=$((MINIO_PORT + 1))
MINIO_USER=memsidecar
MINIO_PASSWORD=memsidecar-secret
MINIO_REGION=us-east-1
MINIO_BIN_DIR="$MS_CACHE/bin"
MINIO_BIN="$MINIO_BIN_DIR/minio"
MINIO_DATA="$MS_STATE/minio"
MINIO_LOG="$MS_STATE/minio.log"
MINIO_PID="$MS_STATE/minio.pid"

print_env() {
  printf 'export MEMSIDECAR_S3_ENDPOINT=http://%s:%s\n' "$MINIO_HOST" "$MINIO_PORT"
  printf 'export MEMSIDECAR_S3_ACCESS_KEY=%s\n' "$MINIO_USER"
  printf 'export MEMSIDECAR_S3_SECRET_KEY=%s\n' "$MINIO_PASSWORD"
  printf 'export MEMSIDECAR_S3_REGION=%s\n' "$MINIO_REGION"
}

find_go() {
  local g
  for g in "${GO:-}" "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go; do
    [[ -n "$g" && -x "$g" ]] && {
      printf '%s' "$g"
      return 0
    }
  done
  return 1
}

# True when the cached binary exists and was built from the pinned module version.
binary_current() {
  local go="$1"
  [[ -x "$MINIO_BIN" ]] || return 1
  "$go" version -m "$MINIO_BIN" 2>/dev/null | awk -v m="$MINIO_MODULE" -v v="$MINIO_VERSION" '
    $1 == "mod" && $2 == m && $3 == v { ok = 1 } END { exit !ok }'
}

build_minio() {
  local go t0
  if [[ -x "$MINIO_BIN" ]] && ! go="$(find_go)"; then
    log "using cached $MINIO_BIN (no go command to check its version)"
    return 0
  fi
  go="$(find_go)" || die "no go command found (looked at \$GO, PATH, /usr/local/go/bin/go)"
  if binary_current "$go"; then
    log "cached $MINIO_BIN is $MINIO_MODULE@$MINIO_VERSION (skip build)"
    return 0
  fi
  mkdir -p "$MINIO_BIN_DIR"
  log "building $MINIO_MODULE@$MINIO_VERSION with $("$go" version | awk '{print $3}') -> $MINIO_BIN_DIR (cold: several minutes)"
  t0="$(ms_now)"
  GOBIN="$MINIO_BIN_DIR" GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -trimpath" \
    "$go" install "$MINIO_MODULE@$MINIO_VERSION" >&2 || die "go install $MINIO_MODULE@$MINIO_VERSION failed"
  binary_current "$go" || die "built $MINIO_BIN does not report $MINIO_VERSION"
  log "built minio in $(ms_since "$t0") s"
}

# PID of our running server, from the pid file, if that process is our minio.
running_pid() {
  local pid
  [[ -f "$MINIO_PID" ]] || return 1
  pid="$(cat "$MINIO_PID" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)" == *"minio server"* ]] || return 1
  printf '%s' "$pid"
}

healthy() { [[ "$(http_status "$MINIO_HOST" "$MINIO_PORT" /minio/health/live)" == 200 ]]; }

start_minio() {
  local pid i
  if port_open "$MINIO_HOST" "$MINIO_PORT"; then
    die "$MINIO_HOST:$MINIO_PORT is already in use by another process (set MEMSIDECAR_MINIO_PORT)"
  fi
  if port_open "$MINIO_HOST" "$MINIO_CONSOLE_PORT"; then
    die "console port $MINIO_HOST:$MINIO_CONSOLE_PORT is already in use (set MEMSIDECAR_MINIO_PORT)"
  fi
  mkdir -p "$MINIO_DATA"
  rm -f "$MINIO_PID"
  log "starting minio on $MINIO_HOST:$MINIO_PORT (console :$MINIO_CONSOLE_PORT, data $MINIO_DATA, log $MINIO_LOG)"
  printf '\n=== %s scripts/minio.sh start ===\n' "$(date -Is)" >>"$MINIO_LOG"
  # setsid: the server outlives the caller's session / process group. The inner
  # shell writes its own pid, then execs minio, so the pid file names minio.
  # shellcheck disable=SC2016  # $$, $1 and $@ are expanded by the inner shell
  MINIO_ROOT_USER="$MINIO_USER" MINIO_ROOT_PASSWORD="$MINIO_PASSWORD" \
    MINIO_SITE_REGION="$MINIO_REGION" MINIO_UPDATE=off MINIO_BROWSER=on \
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$MINIO_PID" \
    "$MINIO_BIN" server --anonymous \
    --address "$MINIO_HOST:$MINIO_PORT" --console-address "$MINIO_HOST:$MINIO_CONSOLE_PORT" \
    "$MINIO_DATA" </dev/null >>"$MINIO_LOG" 2>&1 &
  for ((i = 0; i < 240; i++)); do # 60 s
    if healthy; then
      pid="$(running_pid)" || die "minio answers but the pid file is wrong; see $MINIO_LOG"
      log "minio is up (pid $pid)"
      return 0
    fi
    if ((i > 4)) && ! running_pid >/dev/null; then
      tail -n 20 "$MINIO_LOG" >&2 || true
      die "minio exited during startup; see $MINIO_LOG"
    fi
    sleep 0.25
  done
  tail -n 20 "$MINIO_LOG" >&2 || true
  die "minio did not answer /minio/health/live within 60 s; see $MINIO_LOG"
}

do_up() {
  local t0 pid
  t0="$(ms_now)"
  if pid="$(running_pid)"; then
    if wait_for_http "$MINIO_HOST" "$MINIO_PORT" /minio/health/live 60; then
      log "already running on $MINIO_HOST:$MINIO_PORT (pid $pid)"
      return 0
    fi
    die "minio (pid $pid) runs but is not healthy; see $MINIO_LOG (try: $0 restart)"
  fi
  mkdir -p "$MS_STATE"
  build_minio
  start_minio
  log "up in $(ms_since "$t0") s"
}

do_down() {
  local pid i
  if ! pid="$(running_pid)"; then
    log "not running"
    rm -f "$MINIO_PID"
    return 0
  fi
  log "stopping minio (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 120; i++)); do # 30 s
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    warn "minio did not stop after SIGTERM in 30 s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$MINIO_PID"
  # The listening socket may linger for a moment after exit.
  for ((i = 0; i < 40; i++)); do
    port_open "$MINIO_HOST" "$MINIO_PORT" || break
    sleep 0.25
  done
  log "stopped"
}

do_status() {
  local pid
  if pid="$(running_pid)" && healthy; then
    log "running on $MINIO_HOST:$MINIO_PORT (pid $pid)"
    return 0
  fi
  log "not running"
  return 1
}

main() {
  local action
  action="$(ms_action "${1:-up}")"
  case "$action" in
    env) print_env ;;
    status) do_status ;;
    down) do_down ;;
    up)
      do_up
      print_env
      ;;
    restart)
      do_down
      do_up
      print_env
      ;;
  esac
}

main "$@"
