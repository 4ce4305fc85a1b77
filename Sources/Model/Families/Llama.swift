/// `LlamaForCausalLM`: RMSNorm, full rotary, SwiGLU MLP. The names of its attention and MLP
/// tensors are shared by every family but JetMoE (``LlamaTensors``).
struct Llama: FamilyDefinition {
    var modelType: String { "llama" }
    var architecture: String { "LlamaForCausalLM" }
    var displayName: String { "Llama" }
    var requiresHeadsDivideHidden: Bool { true }
    var defaultMaxPositionEmbeddings: Int { 2048 }
    var biasKeys: [(key: String, refused: Bool)] { [("attention_bias", true), ("mlp_bias", true)] }

    func writeKeys(_ c: ModelConfig, into json: inout [String: JSON], rope: inout [String: JSON]) {
        json["hidden_act"] = "silu"
        json["rms_norm_eps"] = .float(c.normEps)
        json["pretraining_tp"] = 1
        json["attention_bias"] = false
        json["mlp_bias"] = false
    }
}

extension Family {
    public static let llama = Family(Llama())
}

/// Llama's tensor names and what their axes index: the attention (`self_attn.q_proj`, …, with
/// qwen2's biases and qwen3's per-head norms) and the dense MLP (`mlp.gate_proj`, …).
enum LlamaTensors {
    static func attention(_ mixer: Block.Mixer, _ c: ModelConfig, bias: Bool, qkNorm: Bool) -> [TensorSpec] {
        guard case let .attention(H, G, D, _, _) = mixer else { return [] }
        let C = c.hiddenSize
        var t = [
            TensorSpec("self_attn.q_proj.weight", .q, [H * D, C], [.heads(D), .channels]),
            TensorSpec("self_attn.k_proj.weight", .k, [G * D, C], [.groups(D), .channels]),
            TensorSpec("self_attn.v_proj.weight", .v, [G * D, C], [.groups(D), .channels])
        ]
        if bias {
            t += [
                TensorSpec("self_attn.q_proj.bias", .qBias, [H * D], [.heads(D)]),
                TensorSpec("self_attn.k_proj.bias", .kBias, [G * D], [.groups(D)]),
                TensorSpec("self_attn.v_proj.bias", .vBias, [G * D], [.groups(D)])
            ]
        }
        if qkNorm {
            // They act on head_dim, which pruning keeps.
            t += [
                TensorSpec("self_attn.q_norm.weight", .qNorm, [D], [.whole]),
                TensorSpec("self_attn.k_norm.weight", .kNorm, [D], [.whole])
            ]
        }
        t.append(TensorSpec("self_attn.o_proj.weight", .o, [C, H * D], [.channels, .heads(D)]))
        return t
    }

    static func mlp(_ mixer: Block.ChannelMixer, _ c: ModelConfig, gated: Bool) -> [TensorSpec] {
        guard case let .dense(F) = mixer else { return [] }
        let C = c.hiddenSize
        return (gated ? [TensorSpec("mlp.gate_proj.weight", .gate, [F, C], [.neurons, .channels])] : [])
            + [
                TensorSpec("mlp.up_proj.weight", .up, [F, C], [.neurons, .channels]),
                TensorSpec("mlp.down_proj.weight", .down, [C, F], [.channels, .neurons])
            ]
    }

    /// Experts with one tensor per projection (Mixtral's `w1`/`w3`/`w2`, qwen3_moe's
    /// `gate_proj`/`up_proj`/`down_proj`), gate and up adjacent so that they form one (2F, C)
    /// matrix, behind a router (E, C).
    static func experts(
        _ mixer: Block.ChannelMixer, _ c: ModelConfig, router: String, prefix: String,
        gate: String, up: String, down: String
    ) -> [TensorSpec] {
        guard case let .experts(E, _, F, _) = mixer else { return [] }
        let C = c.hiddenSize
        var t = [TensorSpec(router + ".weight", .mlpRouter, [E, C], [.experts, .channels])]
        for e in 0..<E {
            let x = prefix + "\(e)."
            t += [
                TensorSpec(x + gate + ".weight", .expertGate, [F, C], [.neurons, .channels], expert: e),
                TensorSpec(x + up + ".weight", .expertUp, [F, C], [.neurons, .channels], expert: e),
                TensorSpec(x + down + ".weight", .expertDown, [C, F], [.channels, .neurons], expert: e)
            ]
        }
        return t
    }
}
