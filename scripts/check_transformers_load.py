#!/usr/bin/env python3
"""Outside check: checkpoints written by Topiary load in transformers and give the same logits.

For each family (llama untied, llama tied, nemotron, mixtral, jetmoe, qwen2 with a sliding layer, qwen2 tied,
qwen3, mistral with a sliding window, qwen3_moe with a dense layer, nemotron_h with Mamba2, MLP and attention
layers, with and without the convolution's bias, nemotron_h with mixture-of-experts layers (grouped sigmoid router,
shared expert; and a latent mixture), qwen3_5_text with Gated DeltaNet and gated attention, tied and
untied, qwen3_5_moe_text with routed and shared experts) it trains a tiny model for a few steps with
`topiary teacher train` (so the weights are Topiary's own), loads the output directory with
AutoModelForCausalLM.from_pretrained, and compares transformers' logits with
`topiary model logits`. Needs a prepared corpus (data/fortunes) and a built topiary.

    .venv/bin/python scripts/check_transformers_load.py [--topiary .build/release/topiary] [NAME ...]

With names (keys of CONFIGS, e.g. qwen3_5_moe), only those are checked.
"""
import argparse
import json
import os
import subprocess
import tempfile

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

CONFIGS = {
    "llama": {"model_type": "llama", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 500.0},
    "llama_tied": {"model_type": "llama", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 4, "tie_word_embeddings": True},
    "nemotron": {"model_type": "nemotron", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "partial_rotary_factor": 0.5},
    "mixtral": {"model_type": "mixtral", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 24, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2},
    "jetmoe": {"model_type": "jetmoe", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 24, "num_hidden_layers": 2,
               "num_key_value_heads": 2, "kv_channels": 8, "num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2": {"model_type": "qwen2", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "use_sliding_window": True, "sliding_window": 6,
              "max_window_layers": 1},
    "qwen2_tied": {"model_type": "qwen2", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True},
    "qwen3": {"model_type": "qwen3", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 12},
    "mistral": {"model_type": "mistral", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "sliding_window": 5},
    "qwen3_moe": {"model_type": "qwen3_moe", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 3,
                  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "num_experts": 4, "num_experts_per_tok": 2,
                  "moe_intermediate_size": 12, "mlp_only_layers": [1], "norm_topk_prob": False},
    "qwen3_moe_all": {"model_type": "qwen3_moe", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "num_experts": 4, "num_experts_per_tok": 2,
                      "moe_intermediate_size": 12, "norm_topk_prob": True},
    "nemotron_h": {"model_type": "nemotron_h", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 48,
                   "layers_block_type": ["mamba", "mlp", "attention", "mamba"], "num_attention_heads": 4,
                   "num_key_value_heads": 2, "head_dim": 8, "mamba_num_heads": 4, "mamba_head_dim": 8, "n_groups": 2,
                   "ssm_state_size": 8, "conv_kernel": 4, "chunk_size": 8},
    "nemotron_h_nobias": {"model_type": "nemotron_h", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 48,
                          "hybrid_override_pattern": "*M-M", "num_attention_heads": 4, "num_key_value_heads": 4,
                          "head_dim": 8, "mamba_num_heads": 2, "mamba_head_dim": 16, "n_groups": 1, "ssm_state_size": 4,
                          "conv_kernel": 2, "chunk_size": 4, "use_conv_bias": False},
    "nemotron_h_moe": {"model_type": "nemotron_h", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 48,
                       "layers_block_type": ["mamba", "moe", "attention", "moe"], "num_attention_heads": 4,
                       "num_key_value_heads": 2, "head_dim": 8, "mamba_num_heads": 4, "mamba_head_dim": 8, "n_groups": 2,
                       "ssm_state_size": 8, "conv_kernel": 4, "chunk_size": 8, "n_routed_experts": 8,
                       "num_experts_per_tok": 2, "moe_intermediate_size": 12, "moe_shared_expert_intermediate_size": 16,
                       "n_group": 2, "topk_group": 1, "routed_scaling_factor": 2.0},
    "nemotron_h_latent": {"model_type": "nemotron_h", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 48,
                          "hybrid_override_pattern": "E-*E", "num_attention_heads": 4, "num_key_value_heads": 4,
                          "head_dim": 8, "n_routed_experts": 4, "num_experts_per_tok": 3, "moe_intermediate_size": 10,
                          "moe_shared_expert_intermediate_size": 8, "moe_latent_size": 16, "norm_topk_prob": False},
    "qwen3_5": {"model_type": "qwen3_5_text", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 48,
                "num_hidden_layers": 4, "layer_types": ["linear_attention", "linear_attention", "full_attention",
                                                        "linear_attention"],
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "linear_num_key_heads": 2,
                "linear_num_value_heads": 4, "linear_key_head_dim": 8, "linear_value_head_dim": 8},
    "qwen3_5_tied": {"model_type": "qwen3_5_text", "vocab_size": 257, "hidden_size": 32, "intermediate_size": 48,
                     "num_hidden_layers": 2, "full_attention_interval": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "head_dim": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 2,
                     "linear_key_head_dim": 8, "linear_value_head_dim": 8, "linear_conv_kernel_dim": 2,
                     "tie_word_embeddings": True,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 1000.0, "partial_rotary_factor": 0.5}},
    "qwen3_5_moe": {"model_type": "qwen3_5_moe_text", "vocab_size": 257, "hidden_size": 32,
                    "num_hidden_layers": 3, "layer_types": ["linear_attention", "full_attention", "linear_attention"],
                    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "linear_num_key_heads": 2,
                    "linear_num_value_heads": 4, "linear_key_head_dim": 8, "linear_value_head_dim": 8,
                    "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 12,
                    "shared_expert_intermediate_size": 24, "output_router_logits": True},
}

# The pruning target of each family's second check (a hybrid decoder's depth is counted per layer type).
PRUNE_TARGETS = {"nemotron_h": {"num_mamba_layers": 1, "mamba_num_heads": 2},
                 "nemotron_h_nobias": {"num_mlp_layers": 0, "mamba_head_dim": 8},
                 "nemotron_h_moe": {"n_routed_experts": 4, "moe_intermediate_size": 8,
                                    "moe_shared_expert_intermediate_size": 8, "num_moe_layers": 1},
                 "nemotron_h_latent": {"hidden_size": 24, "n_routed_experts": 3, "moe_intermediate_size": 6},
                 "qwen3_5": {"num_deltanet_layers": 2, "num_attention_heads": 2, "linear_num_key_heads": 1,
                             "linear_num_value_heads": 2},
                 "qwen3_5_tied": {"hidden_size": 24, "intermediate_size": 24, "linear_value_head_dim": 6},
                 "qwen3_5_moe": {"num_experts": 3, "moe_intermediate_size": 8, "shared_expert_intermediate_size": 16,
                                 "num_deltanet_layers": 1}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--topiary", default=".build/release/topiary")
    ap.add_argument("--data", default="data/fortunes")
    ap.add_argument("names", nargs="*", help="configs to check (default: all)")
    a = ap.parse_args()
    unknown = [n for n in a.names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown config {unknown}; known: {', '.join(CONFIGS)}")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        ids = torch.randint(0, 257, (2, 16), generator=torch.Generator().manual_seed(0))
        ids_path = os.path.join(tmp, "ids.json")
        json.dump({"input_ids": ids.tolist()}, open(ids_path, "w"))
        for name, cfg in CONFIGS.items():
            if a.names and name not in a.names:
                continue
            cfg_path = os.path.join(tmp, name + ".json")
            json.dump(cfg, open(cfg_path, "w"))
            out = os.path.join(tmp, name)
            subprocess.run([a.topiary, "teacher", "train", "--config", cfg_path, "--data", a.data, "--out", out, "--steps", "5",
                            "--batch", "2", "--seq", "16", "--warmup", "1", "--eval-every", "5", "--eval-tokens", "64"],
                           check=True, stdout=subprocess.DEVNULL)
            model = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager", experts_implementation="eager")
            model.eval()
            with torch.no_grad():
                ref = model(input_ids=ids, labels=ids)
            got_path = os.path.join(tmp, name + ".safetensors")
            subprocess.run([a.topiary, "model", "logits", out, "--input-ids", ids_path, "--out", got_path], check=True, stdout=subprocess.DEVNULL)
            got = load_file(got_path)
            # Parameter accounting against transformers: total, non-embedding, active.
            info = json.loads(subprocess.run([a.topiary, "model", "info", out, "--json"], check=True, capture_output=True).stdout)
            sizes = {n: p.numel() for n, p in model.named_parameters()}
            total = model.num_parameters()
            non_embedding = sum(v for n, v in sizes.items()
                                if "embed_tokens" not in n and n != "model.embeddings.weight" and not n.startswith("lm_head"))
            inactive = 0
            if "num_experts_per_tok" in cfg:
                E = getattr(model.config, "num_local_experts", None) or model.config.num_experts
                k = model.config.num_experts_per_tok
                inactive = sum(v * (E - k) // E for n, v in sizes.items()
                               if ".mlp.experts." in n or ".block_sparse_moe.experts." in n or ".mixer.experts." in n
                               or (".mlp." in n and ("input_linear" in n or "output_linear" in n))
                               or ".experts.input_linear" in n or ".experts.output_linear" in n)
            counts = (total, non_embedding, non_embedding - inactive)
            ours = (info["parameters"], info["non_embedding_parameters"], info["active_non_embedding_parameters"])
            if counts != ours:
                print(f"{name}: parameter counts (total, non-embedding, active non-embedding) {ours} vs transformers {counts}")
                worst = float("inf")
            err = ((got["logits"] - ref.logits).norm() / ref.logits.norm()).item()
            worst = max(worst, err)
            print(f"{name:11s} {type(model).__name__:22s} params {model.num_parameters():7d} logits rel. error {err:.2e} "
                  f"loss {got['loss'].item():.6f} vs {ref.loss.item():.6f}")
            # The same model pruned to one layer and written in bfloat16 (`prune --dtype bfloat16`):
            # transformers reads it as bfloat16 and, upcast, gives Topiary's logits. (Pruning refuses
            # a qwen3_moe teacher with dense MLP layers among its mixtures.)
            if cfg.get("mlp_only_layers"):
                continue
            half = os.path.join(tmp, name + "-bf16")
            target = os.path.join(tmp, name + "-target.json")
            json.dump(PRUNE_TARGETS.get(name, {"num_hidden_layers": 1}), open(target, "w"))
            subprocess.run([a.topiary, "prune", "--teacher", out, "--to", target, "--out", half, "--data", a.data, "--dtype", "bfloat16",
                            "--samples", "4", "--calibration-seq", "16", "--importance-cache", os.path.join(tmp, "cache")],
                           check=True, stdout=subprocess.DEVNULL)
            hf_half = AutoModelForCausalLM.from_pretrained(half, attn_implementation="eager", experts_implementation="eager")
            assert hf_half.dtype == torch.bfloat16, hf_half.dtype
            hf_half = hf_half.float().eval()
            with torch.no_grad():
                ref_half = hf_half(input_ids=ids).logits
            got_half_path = os.path.join(tmp, name + "-bf16.safetensors")
            subprocess.run([a.topiary, "model", "logits", half, "--input-ids", ids_path, "--out", got_half_path], check=True, stdout=subprocess.DEVNULL)
            err_half = ((load_file(got_half_path)["logits"] - ref_half).norm() / ref_half.norm()).item()
            worst = max(worst, err_half)
            what = "pruned" + (f" to {PRUNE_TARGETS[name]}" if name in PRUNE_TARGETS else " to 1 layer")
            print(f"{'':11s} {what}, bfloat16 checkpoint: logits rel. error {err_half:.2e}")
    print("OK" if worst < 1e-4 else "FAIL", f"worst {worst:.2e}")


if __name__ == "__main__":
    main()
