#!/usr/bin/env bash
# Side-by-side training speed: transformers + PyTorch (scripts/bench_hf.py, in the git-ignored .venv)
# against `topiary bench train`, the README's three shapes, ROUNDS rounds alternating the two,
# 2 threads each. Prints one line per run and the median ratio per shape.
#   scripts/bench_side_by_side.sh [ROUNDS]        (release build first: swift build -c release)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bin=.build/release/topiary
py=.venv/bin/python
$bin doctor | sed -n '2p;4,5p'
"$py" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "capability", torch.backends.cpu.get_cpu_capability())'
for shape in "llama-256 16 256 10" "llama-128 16 128 20" "llama-64 8 64 40"; do
  set -- $shape
  ratios=()
  for r in $(seq 1 "$rounds"); do
    hf=$("$py" scripts/bench_hf.py "experiments/bench/$1.json" --batch "$2" --seq "$3" --steps "$4" --threads 2 | tail -1 \
         | "$py" -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_second"])')
    tp=$($bin bench train --config "experiments/bench/$1.json" --batch "$2" --seq "$3" --steps "$4" --threads 2 --json \
         | "$py" -c 'import json,sys; d=json.load(sys.stdin); print(d["tokens_per_second"], d["blas_core"], d["peak_rss_bytes"]-d["baseline_rss_bytes"], d["predicted_bytes"])')
    set -- $1 $2 $3 $4 $tp
    ratio=$("$py" -c "print(f'{$5/$hf:.2f}')")
    ratios+=("$ratio")
    printf '%s %sx%s round %d: HF %.0f tok/s, Topiary %.0f tok/s (core %s) -> %sx; memory %.1f MiB measured vs %.1f predicted\n' \
      "$1" "$2" "$3" "$r" "$hf" "$5" "$6" "$ratio" "$("$py" -c "print($7/2**20)")" "$("$py" -c "print($8/2**20)")"
  done
  printf '%s median ratio %s\n' "$1" "$(printf '%s\n' "${ratios[@]}" | sort -n | sed -n "$(( (${#ratios[@]} + 1) / 2 ))p")"
done
