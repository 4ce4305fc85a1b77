#!/usr/bin/env bash
# Installs what a fresh Debian machine with Swift lacks for Topiary (run as root).
set -euo pipefail
# Usage: scripts/setup.sh [--corpus]   (--corpus adds the Debian fortune packages of the default corpus)
packages=(libopenblas-dev libsqlite3-dev pkg-config)
if [ "${1:-}" = "--corpus" ]; then
  packages+=(fortunes fortunes-de fortunes-es fortunes-it fortunes-br fortunes-pl fortunes-cs fortunes-ru fortunes-bg fortunes-zh fortunes-eo fortunes-ga)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
