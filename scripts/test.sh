#!/usr/bin/env bash
# The README's test command: starts the real servers the integration tests need (PostgreSQL and
# a single-node Slurm, on loopback, when installed: scripts/setup.sh --cluster), points the
# PyTorch-backend tests at the environment scripts/setup.sh --torch made, runs `swift test`
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
# The PyTorch backend's environment, when scripts/setup.sh --torch made it.
venv="${TOPIARY_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/topiary/torch-venv}"
if [ -z "${TOPIARY_TEST_PYTHON:-}" ] && [ -x "$venv/bin/python" ]; then export TOPIARY_TEST_PYTHON="$venv/bin/python"; fi
swift test "$@"
