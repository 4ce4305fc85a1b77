#!/usr/bin/env bash
# The worked Qwen3.5 example of docs/families.md: trains a small hybrid teacher (3 Gated DeltaNet
# layers and 1 gated-attention layer, each followed by a SwiGLU MLP) on the default corpus,
# searches its hidden size, attention heads, MLP width and DeltaNet depth under a parameter budget
# (experiments/qwen3.5/search.json), exports the winners and loads them in transformers
# (Qwen3_5ForCausalLM) over sequences that cross its chunks of 64. Needs the corpus (topiary data
# prepare --debian-fortunes --out data/fortunes) and, for the last step, the torch venv
# (scripts/setup.sh --torch; PYTHON overrides it).
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release >/dev/null
T=.build/release/topiary
PYTHON=${PYTHON:-$HOME/.cache/topiary/torch-venv/bin/python}
$T teacher train --config experiments/qwen3.5/teacher-config.json --data data/fortunes \
    --out results/qwen3.5/teacher --steps 2000 --batch 16 --seq 128 --eval-every 500 --checkpoint-every 500
$T spec check experiments/qwen3.5/search.json
$T search run experiments/qwen3.5/search.json
$T results top qwen3.5
$T export qwen3.5 --top 3 --out results/qwen3.5/export
if [ -x "$PYTHON" ]; then
    "$PYTHON" scripts/check_checkpoint_load.py --seq 160 results/qwen3.5/teacher \
        results/qwen3.5/export/*/ results/qwen3.5/export/*/proxy
fi
