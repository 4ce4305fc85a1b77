#!/usr/bin/env python3
"""Generates the transformers reference fixtures under Tests/ModelTests/Fixtures.

Run once (the Swift tests never need Python):
    python3 -m venv .venv && .venv/bin/pip install torch transformers safetensors
    .venv/bin/python scripts/make_fixtures.py

For each tiny random model it writes, with transformers' own save_pretrained:
  <name>/config.json, <name>/model.safetensors   the checkpoint
  <name>/input_ids.json                          {"input_ids": [[...], ...]}
  <name>/expected.safetensors                    logits [B,T,V], loss [1], grad:<tensor> for every parameter
The loss is transformers' causal-LM loss with labels = input_ids (shifted inside the model).
It also writes sharded F16 and BF16 copies of one model for the reader tests.
"""
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, NemotronConfig, NemotronForCausalLM
import transformers

ROOT = os.path.join(os.path.dirname(__file__), "..", "Tests", "ModelTests", "Fixtures")


def perturb_norms(model, generator):
    """Random norm weights and biases, so that their gradients are not a special case."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=generator))


def make(name, model, vocab, batch=2, seq=7, seed=0):
    out = os.path.join(ROOT, name)
    shutil.rmtree(out, ignore_errors=True)
    g = torch.Generator().manual_seed(seed)
    perturb_norms(model, g)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    with open(os.path.join(out, "input_ids.json"), "w") as f:
        json.dump({"input_ids": ids.tolist()}, f)
    out_ = model(input_ids=ids, labels=ids)
    out_.loss.backward()
    tensors = {"logits": out_.logits.detach().contiguous(), "loss": out_.loss.detach().reshape(1)}
    seen = set()
    for pname, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        tensors["grad:" + pname] = p.grad.detach().contiguous()
    save_file(tensors, os.path.join(out, "expected.safetensors"), metadata={"transformers": transformers.__version__})
    print(name, "loss", out_.loss.item(), "tensors", len(tensors))
    return model


def main():
    torch.manual_seed(1234)
    common = dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=64, attn_implementation="eager")
    llama = LlamaForCausalLM(LlamaConfig(intermediate_size=44, num_key_value_heads=2, rope_theta=500.0,
                                         initializer_range=0.2, **common))
    make("llama_gqa", llama, 61)

    torch.manual_seed(99)
    tied = LlamaForCausalLM(LlamaConfig(intermediate_size=40, num_key_value_heads=4, tie_word_embeddings=True,
                                        initializer_range=0.2, **common))
    make("llama_tied", tied, 61, seed=1)

    torch.manual_seed(7)
    nemo = NemotronForCausalLM(NemotronConfig(intermediate_size=48, num_key_value_heads=2, partial_rotary_factor=0.5,
                                              initializer_range=0.2, **common))
    make("nemotron_partial", nemo, 61, seed=2)

    # A longer sequence, so that attention's causal row blocks (32 rows) are exercised.
    torch.manual_seed(5)
    long = LlamaForCausalLM(LlamaConfig(intermediate_size=44, num_key_value_heads=2, initializer_range=0.2,
                                        **{**common, "max_position_embeddings": 128}))
    make("llama_long", long, 61, batch=1, seq=75, seed=3)

    # Sharded half-precision copies of llama_gqa, with the values they hold as F32 for comparison.
    for dtype, tag in [(torch.float16, "f16"), (torch.bfloat16, "bf16")]:
        out = os.path.join(ROOT, "llama_gqa_sharded_" + tag)
        shutil.rmtree(out, ignore_errors=True)
        half = LlamaForCausalLM.from_pretrained(os.path.join(ROOT, "llama_gqa"), dtype=dtype)
        half.save_pretrained(out, safe_serialization=True, max_shard_size="20KB")
        save_file({k: v.float().contiguous() for k, v in half.state_dict().items()},
                  os.path.join(out, "reference_f32.safetensors"))
        print(tag, sorted(os.listdir(out)))


if __name__ == "__main__":
    main()
