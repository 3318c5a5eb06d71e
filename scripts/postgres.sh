#!/usr/bin/env bash
# Test-ground PostgreSQL 15 + pgvector, on loopback only (DESIGN.md section 10).
#
#   scripts/postgres.sh [up|down|status|env|restart]     (default: up)
#
#   up       install what is missing (Debian packages; pgvector built from Debian's
#            source package), init a private cluster, start it, create the role,
#            databases and the vector extension. Idempotent; fast when already up.
#   down     stop the cluster (pg_ctl stop -m fast); data is kept.
#   restart  down then up (data kept) -- used by tests to simulate an outage.
#   status   exit 0 when the cluster is running.
#   env      print `export MEMSIDECAR_PG_DSN=...` lines:  eval "$(scripts/postgres.sh env)"
#
# Progress goes to stderr; `up` and `env` print the exports on stdout.
# Knobs: MEMSIDECAR_PG_PORT (55432), MEMSIDECAR_CACHE (~/.cache/memsidecar),
#        MEMSIDECAR_STATE (~/.local/state/memsidecar).
set -euo pipefail

MS_TAG=postgres
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_MAJOR=15
PG_BIN="/usr/lib/postgresql/$PG_MAJOR/bin"
PG_CONFIG="$PG_BIN/pg_config"
PG_PORT="${MEMSIDECAR_PG_PORT:-55432}"
PG_HOST=127.0.0.1
PG_USER=memsidecar
PG_PASSWORD=memsidecar
PG_DATABASES=(memsidecar memsidecar_test)
PG_ROOT="$MS_STATE/postgres"  # the data directory (PGDATA)
PG_SOCK="$MS_STATE/postgres-socket"
PG_LOG="$MS_STATE/postgres.log"
PGVECTOR_SRC="$MS_CACHE/pgvector"
PGVECTOR_MIN=0.8.0
# Suite searched for Debian's pgvector source package when the configured suites
# (bookworm, bookworm-updates, bookworm-security) do not carry it.
PGVECTOR_FALLBACK_SUITE="${MEMSIDECAR_PGVECTOR_SUITE:-trixie}"
APT_SRC_FILE=/etc/apt/sources.list.d/memsidecar-deb-src

# Run a command as the cluster owner: postgres refuses to run as root.
if is_root; then
  PG_OWNER=postgres
  as_pg() { runuser -u postgres -- "$@"; }
else
  PG_OWNER="$(id -un)"
  as_pg() { "$@"; }
fi

print_env() {
  printf 'export MEMSIDECAR_PG_DSN=postgresql://%s:%s@%s:%s/%s\n' "$PG_USER" "$PG_PASSWORD" "$PG_HOST" "$PG_PORT" memsidecar
  printf 'export MEMSIDECAR_PG_TEST_DSN=postgresql://%s:%s@%s:%s/%s\n' "$PG_USER" "$PG_PASSWORD" "$PG_HOST" "$PG_PORT" memsidecar_test
}

# ---------------------------------------------------------------- packages

install_packages() {
  # dpkg-dev (via build-essential) unpacks the source package; clang/llvm for the
  # JIT bitcode come with postgresql-server-dev-15.
  apt_ensure postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR build-essential dpkg-dev acl
}

# ---------------------------------------------------------------- pgvector

pgvector_installed() {
  [[ -f "$("$PG_CONFIG" --sharedir)/extension/vector.control" && -f "$("$PG_CONFIG" --pkglibdir)/vector.so" ]]
}

pgvector_installed_version() {
  sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$("$PG_CONFIG" --sharedir)/extension/vector.control"
}

# (Output captured first: `cmd | grep -q` under pipefail can fail on SIGPIPE.)
have_pgvector_source() {
  local out
  out="$(apt-cache showsrc pgvector 2>/dev/null || true)"
  grep -q '^Package: pgvector$' <<<"$out"
}

# Emit deb-src entries mirroring the configured `deb` entries of this Debian
# release. deb822 (.sources) and one-line (.list) formats are both handled;
# options such as Signed-By are copied so apt sees no conflicting values.
# With ALT set, emit instead one entry for suite ALT on the URI(s) that serve
# the release's main suite (CODENAME itself).
# Usage: gen_deb_src deb822|list CODENAME [ALT]
gen_deb_src() {
  local fmt="$1" cn="$2" alt="${3:-}" f
  if [[ "$fmt" == deb822 ]]; then
    for f in /etc/apt/sources.list.d/*.sources; do
      [[ -f "$f" && "$f" != "$APT_SRC_FILE"* ]] || continue
      awk -v cn="$cn" -v alt="$alt" '
        function keep(s) { return s == cn || index(s, cn "-") == 1 }
        function flush(   i, n, s, out, types, suites, enabled, hasdeb) {
          if (nl == 0) return
          types = ""; suites = ""; enabled = "yes"
          for (i = 1; i <= nl; i++) {
            if (tolower(k[i]) == "types") types = v[i]
            if (tolower(k[i]) == "suites") suites = v[i]
            if (tolower(k[i]) == "enabled") enabled = tolower(v[i])
          }
          hasdeb = (" " types " " ~ / deb /)
          if (hasdeb && enabled != "no") {
            n = split(suites, s, /[ \t]+/); out = ""
            for (i = 1; i <= n; i++) {
              if (s[i] == "") continue
              if (alt != "") { if (s[i] == cn) out = alt }
              else if (keep(s[i])) out = out (out == "" ? "" : " ") s[i]
            }
            if (out != "") {
              for (i = 1; i <= nl; i++) {
                if (tolower(k[i]) == "types") print "Types: deb-src"
                else if (tolower(k[i]) == "suites") print "Suites: " out
                else print raw[i]
              }
              print ""
            }
          }
          nl = 0
        }
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]/ { raw[nl] = raw[nl] "\n" $0; next }   # continuation line
        { nl++; raw[nl] = $0; i = index($0, ":"); k[nl] = substr($0, 1, i - 1); v[nl] = substr($0, i + 1); sub(/^[ \t]+/, "", v[nl]); sub(/[ \t]+$/, "", v[nl]) }
        END { flush() }
      ' "$f"
    done
  else
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [[ -f "$f" && "$f" != "$APT_SRC_FILE"* ]] || continue
      awk -v cn="$cn" -v alt="$alt" '
        $1 != "deb" { next }
        {
          i = 2; opts = ""
          if ($2 ~ /^\[/) { while ($i !~ /\]$/) { opts = opts $i " "; i++ } opts = opts $i " "; i++ }
          uri = $i; suite = $(i + 1); comps = ""
          for (j = i + 2; j <= NF; j++) comps = comps " " $j
          if (alt != "") { if (suite == cn) print "deb-src " opts uri " " alt comps }
          else if (suite == cn || index(suite, cn "-") == 1) print "deb-src " opts uri " " suite comps
        }
      ' "$f"
    done
  fi
}

# Write ${APT_SRC_FILE}${1}.{sources,list} from gen_deb_src; returns 1 if empty.
write_deb_src() {
  local suffix="$1" cn="$2" alt="${3:-}" wrote=1 content
  content="$(gen_deb_src deb822 "$cn" "$alt")"
  if [[ -n "$content" ]]; then
    printf '# Added by memsidecar scripts/postgres.sh: source entries to build pgvector.\n%s\n' "$content" \
      >"${APT_SRC_FILE}${suffix}.sources"
    log "wrote ${APT_SRC_FILE}${suffix}.sources"
    wrote=0
  fi
  content="$(gen_deb_src list "$cn" "$alt" | sort -u)"
  if [[ -n "$content" ]]; then
    printf '# Added by memsidecar scripts/postgres.sh: source entries to build pgvector.\n%s\n' "$content" \
      >"${APT_SRC_FILE}${suffix}.list"
    log "wrote ${APT_SRC_FILE}${suffix}.list"
    wrote=0
  fi
  return $wrote
}

ensure_pgvector_source_entry() {
  local cn
  have_pgvector_source && return 0
  cn="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")"
  [[ -n "$cn" ]] || die "cannot tell the Debian codename from /etc/os-release"

  # 1. deb-src for the configured suites of this release, unless some exist already.
  local targets
  # shellcheck disable=SC2016  # apt's own $(FIELD) syntax
  targets="$(apt-get indextargets --format '$(TARGET_OF) $(CODENAME)' 2>/dev/null || true)"
  if ! grep -q "^deb-src $cn" <<<"$targets"; then
    log "no deb-src entries for $cn: adding ones mirroring the configured deb entries"
    write_deb_src "" "$cn" || die "found no configured 'deb' entries for $cn to mirror"
  fi
  MS_APT_UPDATED=0
  apt_update_once
  have_pgvector_source && return 0

  # 2. Debian's pgvector source is not in $cn: look in the fallback suite, same archive.
  log "Debian's pgvector source package is not in $cn*; adding deb-src for $PGVECTOR_FALLBACK_SUITE (source only, no binaries)"
  write_deb_src "-$PGVECTOR_FALLBACK_SUITE" "$cn" "$PGVECTOR_FALLBACK_SUITE" ||
    die "no configured Debian archive entry for $cn to derive a $PGVECTOR_FALLBACK_SUITE deb-src entry from"
  MS_APT_UPDATED=0
  apt_update_once
  have_pgvector_source && return 0
  die "Debian's pgvector source package is not available from the configured archives"
}

build_pgvector() {
  if pgvector_installed; then
    log "pgvector $(pgvector_installed_version) already installed for PostgreSQL $PG_MAJOR (skip build)"
    return 0
  fi
  local t0 dir
  t0="$(ms_now)"
  mkdir -p "$PGVECTOR_SRC"
  dir="$(find "$PGVECTOR_SRC" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | sort -V | tail -n 1)"
  if [[ -z "$dir" ]]; then
    ensure_pgvector_source_entry
    log "apt-get source pgvector -> $PGVECTOR_SRC"
    (cd "$PGVECTOR_SRC" && apt-get source -q pgvector >&2) || die "apt-get source pgvector failed"
    dir="$(find "$PGVECTOR_SRC" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | sort -V | tail -n 1)"
    [[ -n "$dir" ]] || die "apt-get source pgvector left no pgvector-* directory in $PGVECTOR_SRC"
  else
    log "reusing cached source $dir"
  fi
  log "building $(basename "$dir") against $PG_CONFIG"
  make -C "$dir" -j"$(nproc)" PG_CONFIG="$PG_CONFIG" >&2 || die "pgvector build failed"
  make -C "$dir" PG_CONFIG="$PG_CONFIG" install >&2 || die "pgvector install failed"
  pgvector_installed || die "pgvector installed no vector.control"
  log "pgvector $(pgvector_installed_version) built and installed in $(ms_since "$t0") s"
}

check_pgvector_version() {
  local v
  v="$(pgvector_installed_version)"
  if [[ "$(printf '%s\n%s\n' "$PGVECTOR_MIN" "$v" | sort -V | head -n 1)" != "$PGVECTOR_MIN" ]]; then
    warn "pgvector $v is older than $PGVECTOR_MIN (no hnsw.iterative_scan)"
  fi
}

# ---------------------------------------------------------------- cluster

pg_running() {
  [[ -f "$PG_ROOT/PG_VERSION" ]] && as_pg "$PG_BIN/pg_ctl" status -D "$PG_ROOT" >/dev/null 2>&1
}

write_config() {
  # Our settings live in their own file, rewritten on every start, included last.
  cat >"$PG_ROOT/memsidecar.conf" <<EOF
# Written by memsidecar scripts/postgres.sh on every start; edits are overwritten.
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
shared_buffers = 256MB
password_encryption = 'scram-sha-256'
fsync = on
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
  cat >"$PG_ROOT/pg_hba.conf" <<EOF
# Written by memsidecar scripts/postgres.sh. Loopback test ground only.
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   scram-sha-256
host    all       all   ::1/128        scram-sha-256
EOF
  chown "$PG_OWNER" "$PG_ROOT/memsidecar.conf" "$PG_ROOT/pg_hba.conf"
  grep -q "^include_if_exists = 'memsidecar.conf'" "$PG_ROOT/postgresql.conf" ||
    printf "\ninclude_if_exists = 'memsidecar.conf'\n" >>"$PG_ROOT/postgresql.conf"
}

init_cluster() {
  mkdir -p "$MS_STATE"
  if is_root; then
    chown postgres:postgres "$MS_STATE"
    grant_traverse postgres "$MS_STATE"
  fi
  mkdir -p "$PG_SOCK"
  chown "$PG_OWNER" "$PG_SOCK"
  if [[ -f "$PG_ROOT/PG_VERSION" ]]; then
    return 0
  fi
  log "initdb $PG_ROOT"
  mkdir -p "$PG_ROOT"
  chown "$PG_OWNER" "$PG_ROOT"
  chmod 700 "$PG_ROOT"
  as_pg "$PG_BIN/initdb" -D "$PG_ROOT" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >&2 || die "initdb failed"
}

start_cluster() {
  write_config
  if port_open "$PG_HOST" "$PG_PORT"; then
    die "$PG_HOST:$PG_PORT is already in use by another process (set MEMSIDECAR_PG_PORT)"
  fi
  touch "$PG_LOG"
  chown "$PG_OWNER" "$PG_LOG"
  log "starting postgres on $PG_HOST:$PG_PORT (data $PG_ROOT, log $PG_LOG)"
  # setsid: the server outlives the caller's session / process group.
  local -a cmd=("$PG_BIN/pg_ctl" start -D "$PG_ROOT" -l "$PG_LOG" -w -t 60)
  is_root && cmd=(runuser -u postgres -- "${cmd[@]}")
  setsid -w "${cmd[@]}" >&2 ||
    die "pg_ctl start failed; see $PG_LOG"
  wait_for_port "$PG_HOST" "$PG_PORT" 60 || die "postgres does not listen on $PG_HOST:$PG_PORT; see $PG_LOG"
}

psql_admin() {
  as_pg "$PG_BIN/psql" -X -q -h "$PG_SOCK" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 "$@"
}

bootstrap() {
  psql_admin -d postgres >&2 <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN;
  END IF;
END \$\$;
ALTER ROLE $PG_USER WITH LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
SQL
  local db
  for db in "${PG_DATABASES[@]}"; do
    if [[ "$(psql_admin -d postgres -tA -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]]; then
      log "creating database $db"
      psql_admin -d postgres -c "CREATE DATABASE $db OWNER $PG_USER" >&2
    fi
    # UPDATE picks up a newer pgvector after a rebuild; a no-op otherwise.
    PGOPTIONS='-c client_min_messages=warning' psql_admin -d "$db" \
      -c "CREATE EXTENSION IF NOT EXISTS vector" -c "ALTER EXTENSION vector UPDATE" >&2
  done
  log "role $PG_USER, databases ${PG_DATABASES[*]} with extension vector $(psql_admin -d memsidecar -tA -c "SELECT extversion FROM pg_extension WHERE extname = 'vector'")"
}

# ---------------------------------------------------------------- actions

do_up() {
  local t0
  t0="$(ms_now)"
  if pg_running; then
    log "already running on $PG_HOST:$PG_PORT (data $PG_ROOT)"
  else
    install_packages
    build_pgvector
    check_pgvector_version
    init_cluster
    start_cluster
  fi
  bootstrap
  log "up in $(ms_since "$t0") s"
}

do_down() {
  if pg_running; then
    log "stopping postgres (pg_ctl stop -m fast)"
    as_pg "$PG_BIN/pg_ctl" stop -D "$PG_ROOT" -m fast -w -t 60 >&2 || die "pg_ctl stop failed"
  else
    log "not running"
  fi
}

do_status() {
  if pg_running; then
    log "running on $PG_HOST:$PG_PORT (data $PG_ROOT)"
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
