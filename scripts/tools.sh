#!/usr/bin/env bash
# Install the command-line tools the test suite drives (grpcurl), built from their
# Go modules at pinned versions into the cache. Idempotent; prints the bin dir.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

GRPCURL_VERSION="v1.9.3"
BIN="$MS_CACHE/bin"
export PATH="/usr/local/go/bin:$PATH"

if [[ -x "$BIN/grpcurl" ]] && "$BIN/grpcurl" -version 2>&1 | grep -q "${GRPCURL_VERSION#v}"; then
  log "grpcurl $GRPCURL_VERSION already in $BIN"
else
  command -v go >/dev/null || die "Go is required to build grpcurl (install golang)"
  log "building grpcurl $GRPCURL_VERSION into $BIN"
  start=$(ms_now)
  GOBIN="$BIN" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
  log "grpcurl built in $(ms_since "$start") s"
fi
echo "$BIN"
