#!/usr/bin/env python3
"""Generates the transformers reference fixtures under Tests/ModelTests/Fixtures.

Run once (the Swift tests never need Python):
    python3 -m venv .venv && .venv/bin/pip install torch transformers safetensors
    .venv/bin/python scripts/make_fixtures.py [NAME ...]
With names (e.g. `rope`, `hybrid`), only those are made; `hybrid` makes the Nemotron-H fixtures
(nemotron_h_hybrid, nemotron_h_untied), `nemotronhmoe` its mixture ones (nemotron_h_moe,
nemotron_h_latent), `qwen35` the Qwen3.5 ones (qwen3_5_hybrid,
qwen3_5_tied), `qwen35moe` the Qwen3.5-MoE ones (qwen3_5_moe_hybrid, qwen3_5_moe_tied), `qwen35vl` the
vision-language Qwen3.5 checkpoint as it ships (qwen3_5_vl); `rope` makes the five rope
scaling fixtures (llama_rope_linear, llama_rope_dynamic in transformers 4's `rope_scaling` +
`rope_theta` spelling; llama_rope_llama3, qwen2_yarn, mistral_yarn_mscale in 5's `rope_parameters`).

For each tiny random model it writes, with transformers' own save_pretrained:
  <name>/config.json, <name>/model.safetensors   the checkpoint
  <name>/input_ids.json                          {"input_ids": [[...], ...]}
  <name>/expected.safetensors                    logits [B,T,V], loss [1], grad:<tensor> for every parameter
The loss is transformers' causal-LM loss with labels = input_ids (shifted inside the model).
For the mixture-of-experts models (output_router_logits=True) transformers' loss also holds
coef × load-balancing loss: `loss` stores the cross-entropy alone, `aux_loss` the unweighted
load-balancing loss, and the gradients are those of transformers' total loss. Gradients are
stored under the tensor names of the saved checkpoint (transformers 5 fuses Mixtral's experts
in memory; they are split back into block_sparse_moe.experts.N.w1/w2/w3).
It also writes sharded F16 and BF16 copies of one model for the reader tests.
"""
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import (JetMoeConfig, JetMoeForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, MixtralConfig, MixtralForCausalLM, NemotronConfig, NemotronForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig,
                          NemotronHConfig, NemotronHForCausalLM, Qwen3MoeForCausalLM)
import transformers

ROOT = os.path.join(os.path.dirname(__file__), "..", "Tests", "ModelTests", "Fixtures")


def perturb_norms(model, generator):
    """Random norm weights and biases, so that their gradients are not a special case."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=generator))


def checkpoint_names(name, grad, model_type):
    """The saved checkpoint's tensor names for one in-memory parameter (fused experts split)."""
    if model_type == "nemotron_h":  # saved under `backbone.` (transformers renames it `model.` in memory)
        name = name.replace("model.", "backbone.", 1) if name.startswith("model.") else name
        if name.endswith(".mixer.experts.up_proj") or name.endswith(".mixer.experts.down_proj"):
            # Fused (E, out, in) in memory, one tensor per expert in the checkpoint.
            prefix, proj = name.rsplit(".", 1)
            for e in range(grad.shape[0]):
                yield f"{prefix}.{e}.{proj}.weight", grad[e]
            return
        yield name, grad
        return
    if model_type in ("qwen3_moe", "qwen3_5_moe_text") and ".mlp.experts." in name:
        prefix = name.split(".mlp.experts.")[0] + ".mlp.experts."
        if name.endswith("gate_up_proj"):
            F = grad.shape[1] // 2
            for e in range(grad.shape[0]):
                yield f"{prefix}{e}.gate_proj.weight", grad[e, :F]
                yield f"{prefix}{e}.up_proj.weight", grad[e, F:]
        else:
            for e in range(grad.shape[0]):
                yield f"{prefix}{e}.down_proj.weight", grad[e]
    elif model_type in ("qwen3_moe", "qwen3_5_moe_text"):
        yield name, grad
    elif ".mlp.experts.gate_up_proj" in name:
        prefix = name.replace(".mlp.experts.gate_up_proj", ".block_sparse_moe.experts.")
        F = grad.shape[1] // 2
        for e in range(grad.shape[0]):
            yield f"{prefix}{e}.w1.weight", grad[e, :F]
            yield f"{prefix}{e}.w3.weight", grad[e, F:]
    elif ".mlp.experts.down_proj" in name:
        prefix = name.replace(".mlp.experts.down_proj", ".block_sparse_moe.experts.")
        for e in range(grad.shape[0]):
            yield f"{prefix}{e}.w2.weight", grad[e]
    elif ".mlp.gate.weight" in name and "layers" in name and grad.dim() == 2 and "block_sparse_moe" not in name:
        yield name.replace(".mlp.gate.weight", ".block_sparse_moe.gate.weight"), grad
    else:
        yield name, grad


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
    loss = out_.loss.detach()
    tensors = {"logits": out_.logits.detach().contiguous()}
    if getattr(out_, "aux_loss", None) is not None:
        coef = getattr(model.config, "router_aux_loss_coef", None) or model.config.aux_loss_coef
        tensors["aux_loss"] = out_.aux_loss.detach().reshape(1).float()
        loss = loss - coef * out_.aux_loss.detach()
    tensors["loss"] = loss.reshape(1)
    seen = set()
    for pname, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        for saved_name, g in checkpoint_names(pname, p.grad.detach(), model.config.model_type):
            tensors["grad:" + saved_name] = g.contiguous()
    save_file(tensors, os.path.join(out, "expected.safetensors"), metadata={"transformers": transformers.__version__})
    print(name, "loss", out_.loss.item(), "tensors", len(tensors))
    return model


def v4_rope_spelling(name):
    """Rewrites a saved config.json the way transformers 4 wrote it: `rope_scaling` (with
    `type`) and a top-level `rope_theta` instead of `rope_parameters`."""
    path = os.path.join(ROOT, name, "config.json")
    with open(path) as f:
        config = json.load(f)
    rope = dict(config.pop("rope_parameters"))
    config["rope_theta"] = rope.pop("rope_theta")
    rope["type"] = rope.pop("rope_type")
    config["rope_scaling"] = rope
    with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)


def rope_fixtures(wanted):
    """Tiny models with each rope scaling, on sequences long enough for the scaling to matter
    (longer than the original context the scaling starts from)."""
    common = dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=44, initializer_range=0.2, attn_implementation="eager")
    specs = {
        "llama_rope_linear": (LlamaConfig, LlamaForCausalLM, dict(max_position_embeddings=128, rope_parameters=
                              {"rope_type": "linear", "factor": 4.0, "rope_theta": 500.0}), 41),
        # dynamic NTK rescales only past max_position_embeddings (16 < 40 tokens).
        "llama_rope_dynamic": (LlamaConfig, LlamaForCausalLM, dict(max_position_embeddings=16, rope_parameters=
                               {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}), 43),
        # wavelengths 6.3, 63, 628, 6283 against original 16: one smoothed, three divided by 8.
        "llama_rope_llama3": (LlamaConfig, LlamaForCausalLM, dict(max_position_embeddings=128, rope_parameters=
                              {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 16, "rope_theta": 10000.0}), 47),
        "qwen2_yarn": (Qwen2Config, Qwen2ForCausalLM, dict(max_position_embeddings=64, rope_parameters=
                       {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                        "rope_theta": 10000.0}), 53),
        "mistral_yarn_mscale": (MistralConfig, MistralForCausalLM, dict(max_position_embeddings=64, sliding_window=None,
                                rope_parameters={"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32,
                                                 "mscale": 1.0, "mscale_all_dim": 0.5, "beta_fast": 8.0, "beta_slow": 2.0,
                                                 "truncate": False, "rope_theta": 1000.0}), 59),
    }
    for i, (name, (config_class, model_class, extra, seed)) in enumerate(specs.items()):
        if wanted and name not in wanted and "rope" not in wanted:
            continue
        torch.manual_seed(seed)
        model = model_class(config_class(**common, **extra))
        make(name, model, 61, batch=1, seq=40, seed=seed)
        if name in ("llama_rope_linear", "llama_rope_dynamic"):
            v4_rope_spelling(name)


# The shape of the first Nemotron-H fixture (layer types aside), shared by its mixture fixture.
NEMOTRON_H_SMALL = dict(
    vocab_size=61, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=40,
    mamba_num_heads=4, mamba_head_dim=6, n_groups=2, ssm_state_size=5, conv_kernel=4, chunk_size=4,
    time_step_min=0.01, time_step_limit=(0.01, 1.0), max_position_embeddings=64, initializer_range=0.2,
    attn_implementation="eager")


def hybrid_fixtures(wanted):
    """The Nemotron-H fixtures (`hybrid`, or every fixture without names)."""
    if wanted and "hybrid" not in wanted:
        return
    # Nemotron-H (issue 26): Mamba2, MLP, attention and Mamba2 layers; 4 Mamba heads of 6 channels
    # in 2 groups, a state of 5, a convolution of 4 taps with its bias, chunks of 4 positions so
    # that the 11-token sequences cross chunk boundaries (transformers' chunked scan), Δ biases
    # spread so that some time steps sit at each end of the time_step_limit clamp (0.01, 1.0):
    # transformers ≥ 5.25 clamps Δ with time_step_limit (5.24 clamped at time_step_min).
    torch.manual_seed(41)
    nh = NemotronHForCausalLM(NemotronHConfig(
        layers_block_type=["mamba", "mlp", "attention", "mamba"], **NEMOTRON_H_SMALL))
    with torch.no_grad():
        for layer in nh.model.layers:
            if layer.block_type == "linear_attention":
                layer.mixer.dt_bias.copy_(torch.tensor([-6.0, -1.0, 0.0, 1.0]))
    make("nemotron_h_hybrid", nh, 61, batch=2, seq=11, seed=12)
    # Without the convolution's bias, attention first, one Mamba group; tie_word_embeddings true,
    # which transformers' Nemotron-H ignores (it has no tied keys and keeps its own lm_head).
    torch.manual_seed(43)
    nh2 = NemotronHForCausalLM(NemotronHConfig(
        vocab_size=61, hidden_size=32, layers_block_type=["attention", "mamba", "mlp"], num_attention_heads=4,
        num_key_value_heads=4, head_dim=8, intermediate_size=24, mamba_num_heads=2, mamba_head_dim=8, n_groups=1,
        ssm_state_size=4, conv_kernel=2, chunk_size=8, use_conv_bias=False, tie_word_embeddings=True,
        max_position_embeddings=64, initializer_range=0.2, attn_implementation="eager"))
    make("nemotron_h_untied", nh2, 61, batch=1, seq=19, seed=13)


def nemotron_h_moe_fixtures(wanted):
    """The Nemotron-H mixture fixtures (`nemotronhmoe`, or every fixture without names)."""
    if wanted and "nemotronhmoe" not in wanted:
        return
    # Nemotron-H mixture blocks (issue 26): Mamba2, MoE, attention, MoE layers; a sigmoid router
    # over 6 squared-ReLU experts of 12 in 2 groups (the best group kept, top 2 in it), gates
    # renormalised and scaled by 2.5, a random e_score_correction_bias (a buffer) so that the
    # choice differs from the scores' own, and a shared expert of 20.
    torch.manual_seed(61)
    nh = NemotronHForCausalLM(NemotronHConfig(
        layers_block_type=["mamba", "moe", "attention", "moe"], n_routed_experts=6, num_experts_per_tok=2,
        moe_intermediate_size=12, moe_shared_expert_intermediate_size=20, n_group=2, topk_group=1,
        routed_scaling_factor=2.5, norm_topk_prob=True, experts_implementation="eager", **NEMOTRON_H_SMALL))
    g = torch.Generator().manual_seed(62)
    with torch.no_grad():
        for layer in nh.model.layers:
            if layer.block_type == "moe":
                layer.mixer.gate.e_score_correction_bias.copy_(0.05 * torch.randn(6, generator=g))
    make("nemotron_h_moe", nh, 61, batch=2, seq=11, seed=18)
    # The latent mixture: experts in a latent width of 16 between fc1_latent_proj and
    # fc2_latent_proj, one group, top 3 of 4 without renormalising, an MLP layer beside them.
    torch.manual_seed(63)
    nh2 = NemotronHForCausalLM(NemotronHConfig(
        vocab_size=61, hidden_size=32, layers_block_type=["moe", "mamba", "mlp", "moe"], num_attention_heads=4,
        num_key_value_heads=4, head_dim=8, intermediate_size=24, mamba_num_heads=2, mamba_head_dim=8, n_groups=1,
        ssm_state_size=4, conv_kernel=2, chunk_size=8, n_routed_experts=4, num_experts_per_tok=3,
        moe_intermediate_size=10, moe_shared_expert_intermediate_size=8, moe_latent_size=16, norm_topk_prob=False,
        use_cache=False,  # transformers 5.24 asks a cache without attention layers for its length
        max_position_embeddings=64, initializer_range=0.2, attn_implementation="eager",
        experts_implementation="eager"))
    with torch.no_grad():
        for layer in nh2.model.layers:
            if layer.block_type == "moe":
                layer.mixer.gate.e_score_correction_bias.copy_(0.05 * torch.randn(4, generator=g))
    make("nemotron_h_latent", nh2, 61, batch=1, seq=19, seed=19)


def qwen35_fixtures(wanted):
    """The Qwen3.5 fixtures (`qwen35`, or every fixture without names)."""
    if wanted and "qwen35" not in wanted:
        return
    from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig
    # Qwen3.5 (issue 26): Gated DeltaNet, DeltaNet, gated attention, DeltaNet layers; 2 key heads
    # of 8 serving 4 value heads of 6 (two per key head); attention with q/k norms and a quarter
    # of each head rotating (the default); 70-token sequences cross transformers' chunk of 64.
    torch.manual_seed(51)
    q = Qwen3_5ForCausalLM(Qwen3_5TextConfig(
        vocab_size=61, hidden_size=32, num_hidden_layers=4,
        layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention"],
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=40, linear_num_key_heads=2,
        linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=6, linear_conv_kernel_dim=4,
        max_position_embeddings=128, initializer_range=0.2, attn_implementation="eager"))
    make("qwen3_5_hybrid", q, 61, batch=2, seq=70, seed=14)
    # Tied embeddings, layer types from full_attention_interval 2, as many value heads as key heads,
    # half of each head rotating, a convolution of 2 taps, 67 tokens.
    torch.manual_seed(53)
    q2 = Qwen3_5ForCausalLM(Qwen3_5TextConfig(
        vocab_size=61, hidden_size=24, num_hidden_layers=2, full_attention_interval=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=12, intermediate_size=20, linear_num_key_heads=2, linear_num_value_heads=2,
        linear_key_head_dim=4, linear_value_head_dim=8, linear_conv_kernel_dim=2, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000.0, "partial_rotary_factor": 0.5},
        max_position_embeddings=128, initializer_range=0.2, attn_implementation="eager"))
    make("qwen3_5_tied", q2, 61, batch=1, seq=67, seed=15)


def qwen35_vl_fixtures(wanted):
    """The Qwen3.5 vision-language fixtures (`qwen35vl`, or every fixture without names)."""
    if wanted and "qwen35vl" not in wanted:
        return
    from transformers import (AutoModelForCausalLM, Qwen3_5Config, Qwen3_5ForConditionalGeneration, Qwen3_5MoeConfig,
                              Qwen3_5MoeForConditionalGeneration)
    # Qwen3.5 as it ships (issue 26): `qwen3_5` with a `text_config` and a vision tower (a tiny one
    # here), the language model's tensors under `model.language_model.`, the vision tower's under
    # `model.visual.`, tied embeddings at both levels. The reference is what
    # AutoModelForCausalLM makes of it: Qwen3_5ForCausalLM on the text config, the vision tower
    # left out; gradients under that model's names. `qwen3_5_moe_vl`: the same for Qwen3.5-MoE
    # (3 experts of 10, top 2, a shared expert of 14, the load-balancing loss in the loss; untied).
    text = dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, full_attention_interval=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, linear_num_key_heads=2,
                linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=6, linear_conv_kernel_dim=4,
                max_position_embeddings=128, initializer_range=0.2)
    vision = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=2, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=16)
    moe = dict(num_experts=3, num_experts_per_tok=2, moe_intermediate_size=10, shared_expert_intermediate_size=14,
               output_router_logits=True, router_aux_loss_coef=0.02)
    for name, seed, vl in [
        ("qwen3_5_vl", 71, lambda: Qwen3_5ForConditionalGeneration(Qwen3_5Config(
            text_config=dict(text, intermediate_size=40, tie_word_embeddings=True), vision_config=vision,
            tie_word_embeddings=True))),
        ("qwen3_5_moe_vl", 73, lambda: Qwen3_5MoeForConditionalGeneration(Qwen3_5MoeConfig(
            text_config=dict(text, **moe), vision_config=vision))),
    ]:
        torch.manual_seed(seed)
        model = vl()
        out = os.path.join(ROOT, name)
        shutil.rmtree(out, ignore_errors=True)
        g = torch.Generator().manual_seed(seed + 1)
        perturb_norms(model, g)
        model.save_pretrained(out, safe_serialization=True)
        lm = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager", experts_implementation="eager")
        assert type(lm).__name__ in ("Qwen3_5ForCausalLM", "Qwen3_5MoeForCausalLM"), type(lm).__name__
        ids = torch.randint(0, 61, (1, 70), generator=g)
        with open(os.path.join(out, "input_ids.json"), "w") as f:
            json.dump({"input_ids": ids.tolist()}, f)
        lm.eval()
        result = lm(input_ids=ids, labels=ids)
        result.loss.backward()
        loss = result.loss.detach()
        tensors = {"logits": result.logits.detach().contiguous()}
        if getattr(result, "aux_loss", None) is not None:  # as make(): the cross-entropy alone in `loss`
            tensors["aux_loss"] = result.aux_loss.detach().reshape(1).float()
            loss = loss - lm.config.router_aux_loss_coef * result.aux_loss.detach()
        tensors["loss"] = loss.reshape(1)
        for pname, p in lm.named_parameters():
            if p.grad is not None:
                for saved, grad in checkpoint_names(pname, p.grad.detach(), lm.config.model_type):
                    tensors["grad:" + saved] = grad.contiguous()
        save_file(tensors, os.path.join(out, "expected.safetensors"), metadata={"transformers": transformers.__version__})
        print(name, "loss", result.loss.item(), "tensors", len(tensors))


def qwen35_moe_fixtures(wanted):
    """The Qwen3.5-MoE fixtures (`qwen35moe`, or every fixture without names)."""
    if wanted and "qwen35moe" not in wanted:
        return
    from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig
    # Qwen3.5-MoE (issue 26): DeltaNet, gated attention, DeltaNet layers, each followed by a
    # softmax router over 4 experts of 12 (top 2, renormalised) and a shared expert of 20 behind
    # its sigmoid gate; the load-balancing loss in transformers' loss; 70 tokens cross the chunk
    # of 64.
    torch.manual_seed(57)
    q = Qwen3_5MoeForCausalLM(Qwen3_5MoeTextConfig(
        vocab_size=61, hidden_size=32, num_hidden_layers=3,
        layer_types=["linear_attention", "full_attention", "linear_attention"],
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, linear_num_key_heads=2,
        linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=6, linear_conv_kernel_dim=4,
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=12, shared_expert_intermediate_size=20,
        output_router_logits=True, router_aux_loss_coef=0.02,
        max_position_embeddings=128, initializer_range=0.2, attn_implementation="eager",
        experts_implementation="eager"))
    make("qwen3_5_moe_hybrid", q, 61, batch=2, seq=70, seed=16)
    # Tied embeddings, layer types from full_attention_interval 2, one expert per token of 3, the
    # default load-balancing coefficient.
    torch.manual_seed(59)
    q2 = Qwen3_5MoeForCausalLM(Qwen3_5MoeTextConfig(
        vocab_size=61, hidden_size=24, num_hidden_layers=2, full_attention_interval=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=12, linear_num_key_heads=2, linear_num_value_heads=2,
        linear_key_head_dim=4, linear_value_head_dim=8, linear_conv_kernel_dim=2, tie_word_embeddings=True,
        num_experts=3, num_experts_per_tok=1, moe_intermediate_size=10, shared_expert_intermediate_size=14,
        output_router_logits=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000.0, "partial_rotary_factor": 0.5},
        max_position_embeddings=128, initializer_range=0.2, attn_implementation="eager",
        experts_implementation="eager"))
    make("qwen3_5_moe_tied", q2, 61, batch=1, seq=67, seed=17)


def main():
    import sys
    wanted = set(sys.argv[1:])
    rope_fixtures(wanted)
    hybrid_fixtures(wanted)
    nemotron_h_moe_fixtures(wanted)
    qwen35_fixtures(wanted)
    qwen35_vl_fixtures(wanted)
    qwen35_moe_fixtures(wanted)
    if wanted:
        return
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

    # Mixture of experts: Mixtral (softmax, top-k, renormalise) and JetMoE (attention experts
    # and MLP experts, top-k logits then softmax), with the load-balancing loss in the loss.
    torch.manual_seed(11)
    mixtral = MixtralForCausalLM(MixtralConfig(intermediate_size=24, num_key_value_heads=2, num_local_experts=4,
                                               num_experts_per_tok=2, output_router_logits=True,
                                               router_aux_loss_coef=0.1, initializer_range=0.2, **common))
    make("mixtral_moe", mixtral, 61, seed=4)

    torch.manual_seed(13)
    jet_common = {k: v for k, v in common.items() if k != "num_attention_heads"}
    jetmoe = JetMoeForCausalLM(JetMoeConfig(intermediate_size=24, num_key_value_heads=2, kv_channels=8,
                                            num_local_experts=4, num_experts_per_tok=2, output_router_logits=True,
                                            aux_loss_coef=0.1, initializer_range=0.2, tie_word_embeddings=True, rms_norm_eps=1e-2,
                                            **jet_common))
    make("jetmoe_moa", jetmoe, 61, seed=5)

    # Qwen2: q/k/v biases; sliding-window attention on layer 1 (max_window_layers 1) with a window
    # of 4 < the 7-token sequence; and a tied copy without windows.
    torch.manual_seed(17)
    qwen2 = Qwen2ForCausalLM(Qwen2Config(intermediate_size=44, num_key_value_heads=2, use_sliding_window=True,
                                         sliding_window=4, max_window_layers=1, initializer_range=0.2, **common))
    make("qwen2_sliding", qwen2, 61, seed=6)
    torch.manual_seed(19)
    qwen2_tied = Qwen2ForCausalLM(Qwen2Config(intermediate_size=40, num_key_value_heads=4, tie_word_embeddings=True,
                                              initializer_range=0.2, **common))
    make("qwen2_tied", qwen2_tied, 61, seed=7)

    # Qwen3: per-head q/k RMSNorm, head_dim 12 ≠ hidden/heads (8).
    torch.manual_seed(23)
    qwen3 = Qwen3ForCausalLM(Qwen3Config(intermediate_size=44, num_key_value_heads=2, head_dim=12,
                                         initializer_range=0.2, **common))
    make("qwen3_qknorm", qwen3, 61, seed=8)

    # Mistral: sliding window 3 on every layer.
    torch.manual_seed(29)
    mistral = MistralForCausalLM(MistralConfig(intermediate_size=44, num_key_value_heads=2, sliding_window=3,
                                               initializer_range=0.2, **common))
    make("mistral_sliding", mistral, 61, seed=9)

    # Qwen3-MoE: softmax router, top-2 of 4 experts of width 12 without renormalisation, a dense
    # MLP (intermediate_size 40) on layer 1 (mlp_only_layers), load-balancing loss in the loss;
    # and an all-mixture copy with norm_topk_prob.
    torch.manual_seed(31)
    moe_common = {**common, "num_hidden_layers": 3}
    qwen3_moe = Qwen3MoeForCausalLM(Qwen3MoeConfig(intermediate_size=40, moe_intermediate_size=12, num_key_value_heads=2,
                                                   num_experts=4, num_experts_per_tok=2, mlp_only_layers=[1],
                                                   norm_topk_prob=False, output_router_logits=True, router_aux_loss_coef=0.1,
                                                   head_dim=8, initializer_range=0.2, **moe_common))
    make("qwen3_moe_dense_layer", qwen3_moe, 61, seed=10)
    torch.manual_seed(37)
    qwen3_moe_norm = Qwen3MoeForCausalLM(Qwen3MoeConfig(intermediate_size=40, moe_intermediate_size=12, num_key_value_heads=2,
                                                        num_experts=4, num_experts_per_tok=2, norm_topk_prob=True,
                                                        output_router_logits=True, router_aux_loss_coef=0.1, head_dim=8,
                                                        initializer_range=0.2, **common))
    make("qwen3_moe_norm_topk", qwen3_moe_norm, 61, seed=11)

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
