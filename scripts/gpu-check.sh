#!/usr/bin/env bash
# The GPU check, run inside the bundle scripts/gpu-bundle.sh makes (docs/backends.md, "The GPU
# check kit"): needs Python with CUDA torch, transformers and safetensors; no Swift. Prints one
# JSON summary; exit status 0 when the equivalence gates hold. Usage: ./gpu-check.sh [WORK]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python=${PYTHON:-python3}
"$python" -c 'import torch, transformers, safetensors' || { echo "gpu-check: needs torch, transformers and safetensors in $python" >&2; exit 2; }
export TOPIARY_PYTHON="$("$python" -c 'import sys; print(sys.executable)')"
exec "$python" "$here/check/gpu-check.py" "${1:-$here/work}"
