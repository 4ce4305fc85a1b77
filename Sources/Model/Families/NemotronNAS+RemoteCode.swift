/// The modeling code a nemotron-nas checkpoint carries for transformers (loaded with
/// `trust_remote_code=True` through the config's `auto_map`), written by Topiary beside the
/// weights. It implements the format as its public description states it (see ``NemotronNAS``):
/// Llama's numerics — RMSNorm, rotary embeddings of any rope type transformers knows (its Llama
/// rotary module reads them from the config), SwiGLU — with each layer's attention and MLP
/// present or not and sized by its `block_configs` entry. No KV cache (generation recomputes the
/// prefix); trainable (the torch backend distils such students): eager or SDPA attention
/// (`attn_implementation`), and gradient checkpointing per layer where transformers has it.
extension NemotronNAS {
    var remoteCode: [String: String] {
        ["configuration_decilm.py": Self.configuration, "modeling_decilm.py": Self.modeling]
    }

    static let configuration = #"""
        # Written by Topiary: the nemotron-nas (DeciLM) config, Llama's plus per-layer block_configs.
        from transformers import LlamaConfig


        class DeciLMConfig(LlamaConfig):
            model_type = "nemotron-nas"

            def __init__(self, block_configs=None, **kwargs):
                self.block_configs = list(block_configs or [])
                super().__init__(**kwargs)
        """#

    static let modeling = #"""
        # Written by Topiary: a heterogeneous Llama (nemotron-nas). Layer i keeps attention unless
        # block_configs[i].attention.no_op, with num_attention_heads / n_heads_in_group key/value
        # heads, and an MLP unless block_configs[i].ffn.no_op, of width
        # find_multiple(int(2 * ffn_mult * hidden_size / 3), 256). A missing part has no norm.
        import torch
        import torch.nn.functional as F
        from torch import nn
        from transformers import GenerationMixin, PreTrainedModel
        from transformers.modeling_outputs import CausalLMOutputWithPast
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

        from .configuration_decilm import DeciLMConfig

        try:  # transformers ≥ 4.52: gradient checkpointing per layer
            from transformers.modeling_layers import GradientCheckpointingLayer
        except ImportError:
            GradientCheckpointingLayer = nn.Module


        def ffn_width(ffn_mult, hidden_size):
            n = int(2 * ffn_mult * hidden_size / 3)
            return n if n % 256 == 0 else n + 256 - n % 256


        def entry(block, part):
            value = block.get(part, {}) if isinstance(block, dict) else getattr(block, part)
            return value if isinstance(value, dict) else vars(value)


        class DeciLMRMSNorm(nn.Module):
            def __init__(self, size, eps):
                super().__init__()
                self.weight = nn.Parameter(torch.ones(size))
                self.eps = eps

            def forward(self, x):
                dtype = x.dtype
                x = x.to(torch.float32)
                x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
                return self.weight * x.to(dtype)


        class DeciLMAttention(nn.Module):
            def __init__(self, config, groups):
                super().__init__()
                self.config = config
                self.heads = config.num_attention_heads
                self.groups = groups
                self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
                c, d = config.hidden_size, self.head_dim
                self.q_proj = nn.Linear(c, self.heads * d, bias=False)
                self.k_proj = nn.Linear(c, groups * d, bias=False)
                self.v_proj = nn.Linear(c, groups * d, bias=False)
                self.o_proj = nn.Linear(self.heads * d, c, bias=False)

            def forward(self, x, cos, sin, mask):
                b, t, _ = x.shape
                d = self.head_dim
                q = self.q_proj(x).view(b, t, self.heads, d).transpose(1, 2)
                k = self.k_proj(x).view(b, t, self.groups, d).transpose(1, 2)
                v = self.v_proj(x).view(b, t, self.groups, d).transpose(1, 2)
                q, k = apply_rotary_pos_emb(q, k, cos, sin)
                repeat = self.heads // self.groups
                k = k.repeat_interleave(repeat, dim=1)
                v = v.repeat_interleave(repeat, dim=1)
                if getattr(self.config, "_attn_implementation", "eager") == "sdpa":
                    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), scale=d**-0.5)
                else:
                    scores = torch.matmul(q, k.transpose(2, 3)) / d**0.5 + mask
                    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
                    out = torch.matmul(probs, v)
                return self.o_proj(out.transpose(1, 2).reshape(b, t, self.heads * d))


        class DeciLMMLP(nn.Module):
            def __init__(self, config, width):
                super().__init__()
                self.gate_proj = nn.Linear(config.hidden_size, width, bias=False)
                self.up_proj = nn.Linear(config.hidden_size, width, bias=False)
                self.down_proj = nn.Linear(width, config.hidden_size, bias=False)

            def forward(self, x):
                return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


        class DeciLMDecoderLayer(GradientCheckpointingLayer):
            def __init__(self, config, block):
                super().__init__()
                attention, ffn = entry(block, "attention"), entry(block, "ffn")
                self.has_attention = not attention.get("no_op", False)
                self.has_mlp = not ffn.get("no_op", False)
                if self.has_attention:
                    groups = config.num_attention_heads // attention["n_heads_in_group"]
                    self.input_layernorm = DeciLMRMSNorm(config.hidden_size, config.rms_norm_eps)
                    self.self_attn = DeciLMAttention(config, groups)
                if self.has_mlp:
                    width = ffn.get("intermediate_size") or ffn_width(ffn["ffn_mult"], config.hidden_size)
                    self.post_attention_layernorm = DeciLMRMSNorm(config.hidden_size, config.rms_norm_eps)
                    self.mlp = DeciLMMLP(config, width)

            def forward(self, x, cos, sin, mask):
                if self.has_attention:
                    x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
                if self.has_mlp:
                    x = x + self.mlp(self.post_attention_layernorm(x))
                return x


        class DeciLMPreTrainedModel(PreTrainedModel):
            config_class = DeciLMConfig
            base_model_prefix = "model"
            _no_split_modules = ["DeciLMDecoderLayer"]
            _supports_sdpa = True
            supports_gradient_checkpointing = True

            def _init_weights(self, module):
                std = self.config.initializer_range
                if isinstance(module, nn.Linear):
                    module.weight.data.normal_(0.0, std)
                elif isinstance(module, nn.Embedding):
                    module.weight.data.normal_(0.0, std)
                elif isinstance(module, DeciLMRMSNorm):
                    module.weight.data.fill_(1.0)


        class DeciLMModel(DeciLMPreTrainedModel):
            def __init__(self, config):
                super().__init__(config)
                self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
                self.layers = nn.ModuleList(DeciLMDecoderLayer(config, b) for b in config.block_configs)
                self.norm = DeciLMRMSNorm(config.hidden_size, config.rms_norm_eps)
                self.post_init()

            def rotary(self, device):
                # Built at the first forward on the weights' device, outside the module tree: a
                # buffer made in __init__ would be lost to loading on the meta device.
                cached = self.__dict__.get("_rotary")
                if cached is None or cached.inv_freq.device != device:
                    cached = LlamaRotaryEmbedding(config=self.config).to(device)
                    self.__dict__["_rotary"] = cached
                return cached

            def forward(self, input_ids, attention_mask=None, position_ids=None):
                x = self.embed_tokens(input_ids)
                b, t = input_ids.shape
                if position_ids is None:
                    position_ids = torch.arange(t, device=x.device).unsqueeze(0).expand(b, t)
                cos, sin = self.rotary(x.device)(x, position_ids)
                mask = torch.full((t, t), torch.finfo(x.dtype).min, device=x.device, dtype=x.dtype).triu(1)
                mask = mask[None, None]
                if attention_mask is not None:
                    padding = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
                    mask = mask + padding
                for layer in self.layers:
                    x = layer(x, cos, sin, mask)
                return self.norm(x)


        class DeciLMForCausalLM(DeciLMPreTrainedModel, GenerationMixin):
            _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

            def __init__(self, config):
                super().__init__(config)
                self.model = DeciLMModel(config)
                self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
                self.post_init()

            def get_input_embeddings(self):
                return self.model.embed_tokens

            def get_output_embeddings(self):
                return self.lm_head

            def forward(self, input_ids=None, attention_mask=None, position_ids=None, labels=None, **kwargs):
                logits = self.lm_head(self.model(input_ids, attention_mask, position_ids)).float()
                loss = None
                if labels is not None:
                    loss = F.cross_entropy(
                        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
                    )
                return CausalLMOutputWithPast(loss=loss, logits=logits)
        """#
}
