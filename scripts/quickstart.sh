#!/usr/bin/env bash
# The README's main job: install what is missing, build, prepare the default corpus, and run
# the main job on the bundled teacher.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --corpus
swift build -c release
bin=.build/release/topiary
[ -f data/fortunes/manifest.json ] || $bin data prepare --debian-fortunes --out data/fortunes
$bin model info models/fortunes-teacher
$bin model eval models/fortunes-teacher --data data/fortunes --tokens 16384
