#!/usr/bin/env bash
# Trains a small JetMoE teacher on the default corpus, then searches it under an active-parameter
# budget (experiments/moe/jetmoe-active.json). Results: docs/moe.md. About 25 minutes on 2 cores.
# Needs the corpus: topiary data prepare --debian-fortunes --out data/fortunes
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release >/dev/null
T=.build/release/topiary
$T teacher train --config experiments/moe/jetmoe-teacher-config.json --data data/fortunes \
    --out results/moe/jetmoe-teacher --steps 2500 --batch 32 --seq 128 --unimax-epochs 4 \
    --router-z-loss 0.001 --eval-every 500 --checkpoint-every 250
$T importance --teacher results/moe/jetmoe-teacher --data data/fortunes --samples 128
$T search run experiments/moe/jetmoe-active.json
$T results top jetmoe-active
$T export jetmoe-active --top 3 --out results/jetmoe-active
