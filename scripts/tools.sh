#!/usr/bin/env bash
# Install the command-line tools the test suite drives (grpcurl, helm), built from their
# Go modules at pinned versions into the cache. Idempotent; prints the bin dir.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

GRPCURL_VERSION="v1.9.3"
HELM_VERSION="v3.19.0"
BIN="$MS_CACHE/bin"
export PATH="/usr/local/go/bin:$PATH"

# go_tool NAME MODULE/PATH VERSION: build once per version (a stamp records it).
go_tool() {
  local name="$1" path="$2" version="$3" stamp="$BIN/.$1-$3"
  if [[ -x "$BIN/$name" && -e "$stamp" ]]; then
    log "$name $version already in $BIN"
    return
  fi
  command -v go >/dev/null || die "Go is required to build $name (install golang)"
  log "building $name $version into $BIN"
  local start
  start=$(ms_now)
  GOBIN="$BIN" go install "$path@$version"
  touch "$stamp"
  log "$name built in $(ms_since "$start") s"
}

mkdir -p "$BIN"
go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION"
go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
echo "$BIN"
