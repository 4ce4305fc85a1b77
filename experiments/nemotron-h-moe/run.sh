#!/usr/bin/env bash
# The worked Nemotron-H mixture example of docs/families.md: trains a small hybrid teacher (3 Mamba2,
# 1 attention and 2 mixture-of-experts layers, pattern MEM*ME; 8 squared-ReLU experts of 96 in 2
# router groups, top 2, and a shared expert of 128) on the default corpus, searches its expert
# count, expert and shared-expert widths, mixture layers kept and Mamba2 heads under a budget on
# active parameters (experiments/nemotron-h-moe/search.json), exports the winners and loads them
# in transformers (NemotronHForCausalLM). Needs the corpus (topiary data prepare --debian-fortunes
# --out data/fortunes) and, for the last step, the torch venv (scripts/setup.sh --torch; PYTHON
# overrides it).
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release >/dev/null
T=.build/release/topiary
PYTHON=${PYTHON:-$HOME/.cache/topiary/torch-venv/bin/python}
$T teacher train --config experiments/nemotron-h-moe/teacher-config.json --data data/fortunes \
    --out results/nemotron-h-moe/teacher --steps 4000 --batch 16 --seq 128 --eval-every 500 --checkpoint-every 500
$T spec check experiments/nemotron-h-moe/search.json
$T search run experiments/nemotron-h-moe/search.json
$T results top nemotron-h-moe
$T export nemotron-h-moe --top 3 --out results/nemotron-h-moe/export
if [ -x "$PYTHON" ]; then
    "$PYTHON" scripts/check_checkpoint_load.py --seq 160 results/nemotron-h-moe/teacher \
        results/nemotron-h-moe/export/*/ results/nemotron-h-moe/export/*/proxy
fi
