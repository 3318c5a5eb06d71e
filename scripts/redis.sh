#!/usr/bin/env bash
# Test-ground Redis (Debian's redis-server), on a Unix socket in the state dir only:
# the reference the benchmarks (make bench, docs/benchmarks.md) measure kv and
# episodic against. No TCP port is opened.
#
#   scripts/redis.sh [up|down|status|env|restart]     (default: up)
#
#   up       install redis-server if missing (Debian package), start a private server
#            (no persistence, no TCP) on $MEMSIDECAR_STATE/redis.sock, wait for PING.
#            Idempotent; fast when already up.
#   down     stop it (SHUTDOWN NOSAVE, then SIGTERM/SIGKILL); nothing is persisted.
#   restart  down then up.
#   status   exit 0 when it is running and answers PING.
#   env      print `export MEMSIDECAR_REDIS_SOCKET=...`:  eval "$(scripts/redis.sh env)"
#
# Progress goes to stderr; `up` and `env` print the exports on stdout.
# Knobs: MEMSIDECAR_STATE (~/.local/state/memsidecar), MEMSIDECAR_REDIS_MAXMEMORY (1gb).
set -euo pipefail

MS_TAG=redis
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REDIS_SERVER=/usr/bin/redis-server
REDIS_CLI=/usr/bin/redis-cli
REDIS_DIR="$MS_STATE/redis"
REDIS_SOCK="$MS_STATE/redis.sock"
REDIS_CONF="$MS_STATE/redis.conf"
REDIS_LOG="$MS_STATE/redis.log"
REDIS_PID="$MS_STATE/redis.pid"
REDIS_MAXMEMORY="${MEMSIDECAR_REDIS_MAXMEMORY:-1gb}"

print_env() {
  printf 'export MEMSIDECAR_REDIS_SOCKET=%s\n' "$REDIS_SOCK"
}

# The Debian package also enables a system service on TCP 6379 where systemd runs;
# ours is separate (own config, socket, pid file) and never touches it.
install_packages() {
  apt_ensure redis-server redis-tools
}

# PID of our running server, from the pid file, if that process is a redis-server.
running_pid() {
  local pid
  [[ -f "$REDIS_PID" ]] || return 1
  pid="$(cat "$REDIS_PID" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)" == *redis-server* ]] || return 1
  printf '%s' "$pid"
}

answers() {
  [[ -S "$REDIS_SOCK" ]] || return 1
  [[ "$(timeout 2 "$REDIS_CLI" -s "$REDIS_SOCK" PING 2>/dev/null || true)" == PONG ]]
}

write_config() {
  # Rewritten on every start; edits are overwritten.
  cat >"$REDIS_CONF" <<EOF
# Written by memsidecar scripts/redis.sh on every start; edits are overwritten.
port 0
unixsocket $REDIS_SOCK
unixsocketperm 700
daemonize no
pidfile $REDIS_PID
dir $REDIS_DIR
logfile ""
save ""
appendonly no
maxmemory $REDIS_MAXMEMORY
maxmemory-policy noeviction
protected-mode yes
EOF
}

start_redis() {
  local i
  mkdir -p "$REDIS_DIR"
  rm -f "$REDIS_PID"
  [[ -S "$REDIS_SOCK" ]] && rm -f "$REDIS_SOCK" # left by a killed server
  write_config
  log "starting redis-server on unix:$REDIS_SOCK (log $REDIS_LOG)"
  printf '\n=== %s scripts/redis.sh start ===\n' "$(date -Is)" >>"$REDIS_LOG"
  # setsid: the server outlives the caller's session / process group.
  setsid "$REDIS_SERVER" "$REDIS_CONF" </dev/null >>"$REDIS_LOG" 2>&1 &
  for ((i = 0; i < 120; i++)); do # 30 s
    if answers && running_pid >/dev/null; then
      log "redis is up (pid $(running_pid), $("$REDIS_SERVER" --version | awk '{print $3}'))"
      return 0
    fi
    sleep 0.25
  done
  tail -n 20 "$REDIS_LOG" >&2 || true
  die "redis-server did not answer PING on $REDIS_SOCK within 30 s; see $REDIS_LOG"
}

do_up() {
  local t0 pid
  t0="$(ms_now)"
  if pid="$(running_pid)" && answers; then
    log "already running on unix:$REDIS_SOCK (pid $pid)"
    return 0
  fi
  [[ -n "${pid:-}" ]] && die "redis-server (pid $pid) runs but does not answer PING; see $REDIS_LOG (try: $0 restart)"
  mkdir -p "$MS_STATE"
  install_packages
  start_redis
  log "up in $(ms_since "$t0") s"
}

do_down() {
  local pid i
  if ! pid="$(running_pid)"; then
    log "not running"
    rm -f "$REDIS_PID"
    return 0
  fi
  log "stopping redis-server (pid $pid)"
  timeout 5 "$REDIS_CLI" -s "$REDIS_SOCK" SHUTDOWN NOSAVE >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 80; i++)); do # 20 s
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    warn "redis-server did not stop in 20 s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$REDIS_PID" "$REDIS_SOCK"
  log "stopped"
}

do_status() {
  local pid
  if pid="$(running_pid)" && answers; then
    log "running on unix:$REDIS_SOCK (pid $pid)"
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
