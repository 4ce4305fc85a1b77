#!/usr/bin/env bash
# The worked Qwen3-MoE example of docs/families.md: trains a small qwen3_moe teacher (8 experts of
# 96, top 2, q/k norms, head_dim 32) on the default corpus, searches it under an active-parameter
# budget (experiments/qwen3-moe/active.json), exports the winners in bfloat16 and loads them in
# transformers. Needs the corpus (topiary data prepare --debian-fortunes --out data/fortunes) and,
# for the last step, the venv of scripts/make_fixtures.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release >/dev/null
T=.build/release/topiary
$T teacher train --config experiments/qwen3-moe/teacher-config.json --data data/fortunes \
    --out results/qwen3-moe/teacher --steps 4000 --batch 16 --seq 128 --eval-every 500 --checkpoint-every 500
$T spec check experiments/qwen3-moe/active.json
$T search run experiments/qwen3-moe/active.json
$T results top qwen3-moe-active
$T export qwen3-moe-active --top 3 --dtype bfloat16 --out results/qwen3-moe/export
if [ -x .venv/bin/python ]; then
    .venv/bin/python scripts/check_checkpoint_load.py results/qwen3-moe/export/*/ results/qwen3-moe/export/*/proxy
fi
