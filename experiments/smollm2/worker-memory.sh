#!/usr/bin/env bash
# Peak resident memory of a search worker itself (not its backend process) on a bfloat16
# teacher with the torch backend (issue 25, item 1; docs/robustness.md). It runs a 4-candidate
# grid study of 2 proxy steps and samples the worker's VmHWM (its high-water mark) until it exits.
# Usage: experiments/smollm2/worker-memory.sh TOPIARY TEACHER DATA PYTHON
#   TOPIARY  the topiary binary (a release build)
#   TEACHER  a bfloat16 SmolLM2-135M folder (30 layers, hidden 576, intermediate 1536)
#   DATA     a corpus prepared with its tokenizer (data/fortunes-en-smollm2)
#   PYTHON   a Python with torch and transformers (scripts/torch-venv.sh)
set -euo pipefail
bin=$1 teacher=$2 data=$3 python=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/spec.json" <<JSON
{
  "study": "worker-memory", "teacher": "$teacher", "data": "$data",
  "space": {"num_hidden_layers": [20, 24], "intermediate_size": [768, 1024]},
  "budget": {"min": 1, "max": 134515008},
  "importance": {"calibration_samples": 8, "sequence_length": 64},
  "proxy": {"steps": 2, "batch_size": 2, "sequence_length": 32, "eval_tokens": 64, "learning_rate": 1e-4},
  "strategy": {"name": "grid"},
  "backend": {"name": "torch", "device": "cpu", "dtype": "float32", "python": "$python"}
}
JSON
"$bin" search run "$work/spec.json" --results "$work/results" --db "$work/store.sqlite" \
  --importance-cache "$work/importance" --threads 2 > "$work/log" 2>&1 &
pid=$!
peak=0
while kill -0 "$pid" 2>/dev/null; do
  hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
  [ -n "$hwm" ] && peak=$hwm
  sleep 0.05
done
wait "$pid" || { cat "$work/log" >&2; exit 1; }
grep -c "score" "$work/log" | xargs echo "trials scored:"
echo "worker peak resident set (VmHWM): $peak kB"
