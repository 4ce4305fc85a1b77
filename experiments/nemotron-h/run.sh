#!/usr/bin/env bash
# The worked Nemotron-H example of docs/families.md: trains a small hybrid teacher (3 Mamba2, 1
# attention and 2 squared-ReLU MLP layers, pattern M-M*M-) on the default corpus, searches its
# Mamba2 heads and head width, MLP width and depth per layer type under a parameter budget
# (experiments/nemotron-h/search.json), exports the winners and loads them in transformers
# (NemotronHForCausalLM) over sequences that cross its scan chunks. Needs the corpus (topiary data
# prepare --debian-fortunes --out data/fortunes) and, for the last step, the torch venv
# (scripts/setup.sh --torch; PYTHON overrides it).
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release >/dev/null
T=.build/release/topiary
PYTHON=${PYTHON:-$HOME/.cache/topiary/torch-venv/bin/python}
$T teacher train --config experiments/nemotron-h/teacher-config.json --data data/fortunes \
    --out results/nemotron-h/teacher --steps 4000 --batch 16 --seq 128 --eval-every 500 --checkpoint-every 500
$T spec check experiments/nemotron-h/search.json
$T search run experiments/nemotron-h/search.json
$T results top nemotron-h
$T export nemotron-h --top 3 --out results/nemotron-h/export
if [ -x "$PYTHON" ]; then
    "$PYTHON" scripts/check_checkpoint_load.py --seq 160 results/nemotron-h/teacher \
        results/nemotron-h/export/*/ results/nemotron-h/export/*/proxy
fi
