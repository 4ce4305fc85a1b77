#!/usr/bin/env bash
# The README's test command: starts the real servers the integration tests need (PostgreSQL and
# a single-node Slurm, on loopback, when installed: scripts/setup.sh --cluster), runs `swift test`
# with any arguments given, and stops the servers whatever happens. Without the servers the tests
# that need them say "SKIPPED …" (under TOPIARY_CI they fail instead).
set -euo pipefail
cd "$(dirname "$0")/.."
export TOPIARY_SERVICES="${TOPIARY_SERVICES:-$(mktemp -d /tmp/topiary-services.XXXXXX)}"
chmod 755 "$TOPIARY_SERVICES"
trap './scripts/services.sh stop; rm -rf "$TOPIARY_SERVICES"' EXIT
./scripts/services.sh start
# shellcheck disable=SC1091
source "$TOPIARY_SERVICES/env"
swift test "$@"
