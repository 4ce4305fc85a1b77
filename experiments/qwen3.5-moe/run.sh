#!/usr/bin/env bash
# The worked Qwen3.5-MoE example of docs/families.md: trains a small hybrid mixture teacher (3
# Gated DeltaNet layers and 1 gated-attention layer, each followed by 8 SwiGLU experts of 48, top 2,
# and a shared expert of 96 behind its sigmoid gate) on the default corpus, searches its expert
# count and widths, DeltaNet value heads and depth under a budget on active parameters
# (experiments/qwen3.5-moe/search.json), exports the winners and loads them in transformers
# (Qwen3_5MoeForCausalLM) over sequences that cross its chunks of 64. Needs the corpus (topiary data
# prepare --debian-fortunes --out data/fortunes) and, for the last step, the torch venv
# (scripts/setup.sh --torch; PYTHON overrides it).
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release >/dev/null
T=.build/release/topiary
PYTHON=${PYTHON:-$HOME/.cache/topiary/torch-venv/bin/python}
$T teacher train --config experiments/qwen3.5-moe/teacher-config.json --data data/fortunes \
    --out results/qwen3.5-moe/teacher --steps 2000 --batch 16 --seq 128 --eval-every 500 --checkpoint-every 500
$T spec check experiments/qwen3.5-moe/search.json
$T search run experiments/qwen3.5-moe/search.json
$T results top qwen3.5-moe
$T export qwen3.5-moe --top 3 --out results/qwen3.5-moe/export
if [ -x "$PYTHON" ]; then
    "$PYTHON" scripts/check_checkpoint_load.py --seq 160 results/qwen3.5-moe/teacher \
        results/qwen3.5-moe/export/*/ results/qwen3.5-moe/export/*/proxy
fi
