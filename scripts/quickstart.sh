#!/usr/bin/env bash
# The README's main job: install what is missing, build, prepare the default corpus, and search
# the bundled teacher for the best model at half its size (experiments/quickstart.json).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --corpus
swift build -c release --product topiary   # the dashboard (topiary serve) is built apart: --product topiary-serve
bin=.build/release/topiary
[ -f data/fortunes/manifest.json ] || $bin data prepare --debian-fortunes --out data/fortunes
$bin spec check experiments/quickstart.json
$bin search run experiments/quickstart.json
$bin export quickstart --top 3
