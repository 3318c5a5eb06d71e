# shellcheck shell=bash
# Shared helpers for the test-ground scripts (scripts/postgres.sh, scripts/minio.sh).
# Sourced, never executed. Everything human-readable goes to stderr; callers keep
# stdout for `env` output so that `eval "$(scripts/X.sh env)"` works.

# Resolved once, overridable from the environment.
# shellcheck disable=SC2034  # used by the scripts that source this file
MS_CACHE="${MEMSIDECAR_CACHE:-$HOME/.cache/memsidecar}"
# shellcheck disable=SC2034
MS_STATE="${MEMSIDECAR_STATE:-$HOME/.local/state/memsidecar}"
MS_TAG="${MS_TAG:-$(basename "${0:-memsidecar}" .sh)}"

log() { printf '[%s %s] %s\n' "$MS_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
warn() { log "WARNING: $*"; }
die() {
  log "ERROR: $*"
  exit 1
}

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Seconds since the epoch with sub-second precision, for "took N s" messages.
ms_now() { date +%s.%N; }
ms_since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }

# True when TCP host:port accepts a connection (pure bash, no nc/curl needed).
port_open() {
  local host="$1" port="$2"
  timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null
}

# Bounded wait until host:port accepts connections. Usage: wait_for_port HOST PORT [SECONDS]
wait_for_port() {
  local host="$1" port="$2" secs="${3:-60}" i
  for ((i = 0; i < secs * 4; i++)); do
    port_open "$host" "$port" && return 0
    sleep 0.25
  done
  return 1
}

# HTTP status code of GET http://HOST:PORT/PATH (pure bash, HTTP/1.0), or 000.
http_status() {
  local host="$1" port="$2" path="$3"
  # shellcheck disable=SC2016  # expanded by the inner shell
  timeout 5 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "GET %s HTTP/1.0\r\nHost: %s:%s\r\nConnection: close\r\n\r\n" "$2" "$0" "$1" >&3
    IFS=" " read -r _ code _ <&3 && printf "%s" "$code"
  ' "$host" "$port" "$path" 2>/dev/null || printf '000'
}

# Bounded wait until GET returns 200. Usage: wait_for_http HOST PORT PATH [SECONDS]
wait_for_http() {
  local host="$1" port="$2" path="$3" secs="${4:-60}" i
  for ((i = 0; i < secs * 4; i++)); do
    [[ "$(http_status "$host" "$port" "$path")" == 200 ]] && return 0
    sleep 0.25
  done
  return 1
}

# Debian packages among the arguments that are not installed.
apt_missing() {
  local p out=()
  for p in "$@"; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" == "install ok installed" ]] || out+=("$p")
  done
  printf '%s\n' "${out[@]}"
}

MS_APT_UPDATED=0
apt_update_once() {
  ((MS_APT_UPDATED)) && return 0
  log "apt-get update"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || die "apt-get update failed"
  MS_APT_UPDATED=1
}

# Install only the packages that are missing.
apt_ensure() {
  local missing
  mapfile -t missing < <(apt_missing "$@" | sed '/^$/d')
  ((${#missing[@]})) || return 0
  is_root || die "need root to apt-get install: ${missing[*]}"
  apt_update_once
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
    die "apt-get install failed: ${missing[*]}"
}

# Let USER traverse every ancestor directory of PATH (e.g. a state dir under /root,
# which is 0700, must be reachable by the postgres system user). Uses a POSIX ACL
# granting only search permission to that one user; falls back to o+x.
grant_traverse() {
  local user="$1" path="$2" dir
  dir="$(dirname "$path")"
  while [[ "$dir" != "/" ]]; do
    if ! runuser -u "$user" -- test -x "$dir" 2>/dev/null; then
      if command -v setfacl >/dev/null && setfacl -m "u:$user:x" "$dir" 2>/dev/null; then
        log "granted $user search (x) ACL on $dir"
      else
        chmod o+x "$dir"
        log "chmod o+x $dir (so $user can reach $path)"
      fi
    fi
    dir="$(dirname "$dir")"
  done
}

# Parse the action argument shared by both scripts.
ms_action() {
  local a="${1:-up}"
  case "$a" in
    up | down | status | env | restart) printf '%s' "$a" ;;
    -h | --help | help)
      printf 'usage: %s [up|down|status|env|restart]   (default: up)\n' "$0" >&2
      exit 0
      ;;
    *) die "unknown action '$a' (expected up|down|status|env|restart)" ;;
  esac
}
