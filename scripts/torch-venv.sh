#!/usr/bin/env bash
# Makes (or reuses) the Python environment of the PyTorch trial backend and prints its python:
# torch (CPU wheels: /opt/wheels when it holds one, else PyTorch's CPU index, else PyPI),
# transformers and safetensors, as backends/torch/requirements.txt pins them. The environment
# lives outside the clone (TOPIARY_TORCH_VENV, default ~/.cache/topiary/torch-venv) so that CI runs
# on the same machine reuse it; it is rebuilt when the requirements change.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TOPIARY_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/topiary/torch-venv}"
stamp="$venv/.requirements-$(sha256sum backends/torch/requirements.txt | cut -c1-16)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && "$venv/bin/python" -c "import torch, transformers, safetensors" 2>/dev/null; then
  echo "$venv/bin/python"; exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2
pip=("$venv/bin/pip" install --quiet --disable-pip-version-check)
cpu_wheel="$(ls /opt/wheels/torch-*+cpu-*.whl 2>/dev/null | sort -V | tail -1 || true)"
if [ -n "$cpu_wheel" ]; then
  echo "torch-venv: torch from $cpu_wheel" >&2
  "${pip[@]}" "$cpu_wheel" >&2
elif "${pip[@]}" --index-url https://download.pytorch.org/whl/cpu torch >&2 2>/dev/null; then
  echo "torch-venv: torch from PyTorch's CPU index" >&2
else
  echo "torch-venv: torch from PyPI (with its CUDA libraries: large)" >&2
  "${pip[@]}" torch >&2
fi
"${pip[@]}" -r backends/torch/requirements.txt >&2
touch "$stamp"
echo "$venv/bin/python"
