#!/usr/bin/env bash
# Installs what a fresh Debian machine with Swift lacks for Topiary (run as root).
set -euo pipefail
# Usage: scripts/setup.sh [--corpus] [--browser] [--cluster] [--torch] [--real-model]
#   --corpus  adds the Debian fortune packages of the default corpus
#   --browser adds chromium and chromium-driver, which the report and dashboard tests drive headless
#   --cluster adds PostgreSQL (and openssl, for its test certificate) and Slurm (slurm-wlm, munge), which the cluster tests start on loopback
#   --torch   makes (or reuses) the PyTorch backend's Python environment (scripts/torch-venv.sh)
#   --real-model  fetches and converts SmolLM2-135M-Instruct into ~/.cache/topiary/models (implies
#             --torch; scripts/get-smollm2.sh), which the real-model tests and experiments/smollm2/half.json use
packages=(libopenblas-dev libsqlite3-dev libpq-dev libglpk-dev pkg-config)
torch=0
real=0
for option in "$@"; do
  case "$option" in
    --corpus) packages+=(fortunes fortunes-de fortunes-es fortunes-it fortunes-br fortunes-pl fortunes-cs fortunes-ru fortunes-bg fortunes-zh fortunes-eo fortunes-ga) ;;
    --browser) packages+=(chromium chromium-driver) ;;
    --cluster) packages+=(postgresql openssl slurm-wlm munge) ;;
    --torch) packages+=(python3-venv); torch=1 ;;
    --real-model) packages+=(python3-venv); torch=1; real=1 ;;
    *) echo "unknown option $option" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "$torch" = 1 ]; then
  echo "torch backend: $("$(dirname "$0")/torch-venv.sh")"
fi
if [ "$real" = 1 ]; then
  echo "real model: $("$(dirname "$0")/get-smollm2.sh")"
fi
