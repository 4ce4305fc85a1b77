#!/usr/bin/env bash
# Training speed on SmolLM2-135M's shape (batch 4 × 256, float32, AdamW, 2 threads):
# `topiary bench train` against transformers + PyTorch (scripts/bench_hf.py, sdpa), ROUNDS rounds
# alternating the two, then `topiary doctor --gemm` for the two-thread sgemm peak and the share of
# it each Topiary run reaches (training FLOPs = 3 × the forward FLOPs `model info` counts).
#   scripts/bench_smollm2.sh [ROUNDS] [STEPS]       (release build first; the torch venv: setup.sh --torch)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
steps=${2:-6}
bin=.build/release/topiary
py="${TOPIARY_TEST_PYTHON:-$(./scripts/torch-venv.sh)}"
config=experiments/bench/smollm2-135m.json
lscpu | sed -n 's/^Model name: *//p;s/^CPU family: *\(.*\)/family \1/p;s/^Model: *\(.*\)/model \1/p' | paste -sd' '
$bin doctor | sed -n '2p;4,5p'
"$py" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "capability", torch.backends.cpu.get_cpu_capability())'
forward=$($bin model info $config --seq 256 --json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["forward_flops_per_token"])')
peak=$($bin doctor --gemm --threads 2 --json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["sgemm_2048_gflops_threads"])')
echo "forward FLOPs/token $forward; two-thread sgemm peak ${peak} GFLOP/s"
ratios=()
for r in $(seq 1 "$rounds"); do
  hf=$("$py" scripts/bench_hf.py $config --batch 4 --seq 256 --steps "$steps" --threads 2 | tail -1 \
       | "$py" -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_second"])')
  tp=$($bin bench train --config $config --batch 4 --seq 256 --steps "$steps" --threads 2 --json \
       | "$py" -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_second"])')
  ratio=$("$py" -c "print(f'{$tp/$hf:.2f}')")
  share=$("$py" -c "p=float('$peak'); print(f'{$tp*3*$forward/1e9/p*100:.0f}%' if p>0 else 'n/a')")
  ratios+=("$ratio")
  printf 'round %d: transformers %.1f tok/s, Topiary %.1f tok/s -> %sx; Topiary at %.0f GFLOP/s = %s of the sgemm peak\n' \
    "$r" "$hf" "$tp" "$ratio" "$("$py" -c "print($tp*3*$forward/1e9)")" "$share"
done
printf 'median ratio %s\n' "$(printf '%s\n' "${ratios[@]}" | sort -n | sed -n "$(( (${#ratios[@]} + 1) / 2 ))p")"
