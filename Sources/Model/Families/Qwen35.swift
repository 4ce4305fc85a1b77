/// `Qwen3_5ForCausalLM` (`qwen3_5_text`): a hybrid decoder whose layers are Gated DeltaNet
/// (`linear_attention`) or gated attention (`full_attention`), each followed by a SwiGLU MLP,
/// given by `layer_types` or, without it, one attention layer in every `full_attention_interval`
/// (default 4). Attention has per-head q/k norms, partial rotary (default a quarter of each
/// head) and an output gate σ(gate) that `q_proj` projects beside each head's queries. Every
/// RMSNorm but the DeltaNet's gated one scales by 1 + w (``FamilyDefinition/hasZeroCenteredNorms``).
///
/// `Qwen3_5MoeForCausalLM` (`qwen3_5_moe_text`, `mixture`): the same mixers, each followed by a
/// mixture instead of the MLP — a softmax router (`mlp.gate`) choosing the top k of
/// `num_experts` SwiGLU experts of width `moe_intermediate_size`, their gates always
/// renormalised, plus a shared SwiGLU expert of `shared_expert_intermediate_size` neurons that
/// every token passes through, scaled by σ(`mlp.shared_expert_gate` · x).
struct Qwen35: FamilyDefinition {
    var mixture = false
    var modelType: String { mixture ? "qwen3_5_moe_text" : "qwen3_5_text" }
    var architecture: String { mixture ? "Qwen3_5MoeForCausalLM" : "Qwen3_5ForCausalLM" }
    var displayName: String { mixture ? "Qwen3.5-MoE" : "Qwen3.5" }
    var isMixture: Bool { mixture }
    /// Qwen3.5 ships as a vision-language checkpoint (`Qwen3_5ForConditionalGeneration`): its
    /// language model is read from `text_config` and `model.language_model.*`.
    var visionLanguageModelType: String? { mixture ? "qwen3_5_moe" : "qwen3_5" }
    var hasSeparateExpertWidth: Bool { mixture }
    var hasSharedExpert: Bool { mixture }
    var intermediateSizeKey: String { mixture ? "shared_expert_intermediate_size" : "intermediate_size" }
    var defaultNormTopKProb: Bool { true }
    var hasQKNorm: Bool { true }
    var hybridMixersHaveMLP: Bool { true }
    var hasGatedAttention: Bool { true }
    var hasZeroCenteredNorms: Bool { true }
    var allowsPartialRotary: Bool { true }
    var defaultPartialRotaryFactor: Double { 0.25 }
    var defaultMaxPositionEmbeddings: Int { 32768 }
    var ignoredRopeKeys: Set<String> { ["mrope_section", "mrope_interleaved"] }
    var biasKeys: [(key: String, refused: Bool)] { [("attention_bias", true)] }
    var axes: [Axis] {
        let channel: [Axis] =
            mixture
            ? [.moeIntermediateSize, .numExperts, .numExpertsPerTok, .sharedExpertIntermediateSize]
            : [.intermediateSize]
        return [.hiddenSize, .numAttentionHeads, .numKeyValueHeads] + channel + [
            .linearNumKeyHeads, .linearNumValueHeads, .linearValueHeadDim, .numDeltaNetLayers, .numAttentionLayers
        ]
    }

    /// Qwen3.5-MoE: `num_experts` (default 256), `num_experts_per_tok` (8) and
    /// `moe_intermediate_size` (512); every layer is sparse and its k gates are always
    /// renormalised (transformers' router has no `norm_topk_prob`).
    func readMixture(_ r: ConfigReader, layers: Int, used: inout Set<String>) throws -> MixtureKeys {
        var keys = MixtureKeys()
        guard mixture else { return keys }
        for key in ["num_experts", "num_experts_per_tok", "moe_intermediate_size"] { used.insert(key) }
        keys.experts = try r.int("num_experts") ?? 256
        keys.perToken = try r.int("num_experts_per_tok") ?? 8
        keys.expertWidth = try r.int("moe_intermediate_size") ?? 512
        keys.normTopK = true
        try readRouterLoss(r, into: &keys, used: &used)
        return keys
    }

    func readAttentionShape(_ r: ConfigReader, expertsPerToken: Int, used: inout Set<String>) throws
        -> (heads: Int?, kvHeads: Int?, headDim: Int?)
    {
        (try r.int("num_attention_heads") ?? 16, try r.int("num_key_value_heads") ?? 4, try r.int("head_dim") ?? 256)
    }

    func readHybrid(_ r: ConfigReader, used: inout Set<String>) throws -> HybridKeys? {
        for key in ["layer_types", "full_attention_interval", "num_hidden_layers"] { used.insert(key) }
        let count = try r.int("num_hidden_layers") ?? 32
        var layers: [HybridLayer]
        if let v = r.value("layer_types"), !v.isNull {
            guard let list = v.array else { throw r.fail("layer_types", "expected a list of layer types, got \(v)") }
            layers = try list.enumerated().map { i, item in
                switch item.string {
                case "linear_attention": return .deltaNet
                case "full_attention": return .attention
                default:
                    throw r.fail(
                        "layer_types[\(i)]", "\(item) is not a layer type; expected linear_attention or full_attention")
                }
            }
            guard layers.count == count else {
                throw r.fail(
                    "layer_types", "names \(layers.count) layers but num_hidden_layers is \(count); they must agree")
            }
        } else {
            let interval = try r.int("full_attention_interval") ?? 4
            guard interval > 0 else { throw r.fail("full_attention_interval", "must be positive, got \(interval)") }
            layers = (0..<count).map { ($0 + 1) % interval == 0 ? .attention : .deltaNet }
        }
        guard !layers.isEmpty else { throw r.fail("num_hidden_layers", "the model has no layers") }
        func int(_ key: String, _ fallback: Int) throws -> Int {
            used.insert(key)
            return try r.int(key) ?? fallback
        }
        let shape = DeltaNetShape(
            keyHeads: try int("linear_num_key_heads", 16), valueHeads: try int("linear_num_value_heads", 32),
            keyDim: try int("linear_key_head_dim", 128), valueDim: try int("linear_value_head_dim", 128),
            convKernel: try int("linear_conv_kernel_dim", 4))
        var keys = HybridKeys(layers: layers, mamba: nil)
        keys.deltaNet = shape
        return keys
    }

    func writeKeys(_ c: ModelConfig, into json: inout [String: JSON], rope: inout [String: JSON]) {
        json["hidden_act"] = "silu"
        json["rms_norm_eps"] = .float(c.normEps)
        json["attention_bias"] = false
        json["layer_types"] = .array(
            (c.hybridLayers ?? []).map { .string($0 == .deltaNet ? "linear_attention" : "full_attention") })
        json["partial_rotary_factor"] = .float(c.partialRotaryFactor)
        if mixture {
            json["num_experts"] = JSON(c.numLocalExperts)
            json["num_experts_per_tok"] = JSON(c.numExpertsPerTok)
            json["moe_intermediate_size"] = JSON(c.moeIntermediateSize)
            json["router_aux_loss_coef"] = .float(c.routerAuxLossCoef)
            json["output_router_logits"] = .bool(c.outputRouterLogits)
        }
        rope["partial_rotary_factor"] = .float(c.partialRotaryFactor)
        if let d = c.deltaNet {
            json["linear_num_key_heads"] = JSON(d.keyHeads)
            json["linear_num_value_heads"] = JSON(d.valueHeads)
            json["linear_key_head_dim"] = JSON(d.keyDim)
            json["linear_value_head_dim"] = JSON(d.valueDim)
            json["linear_conv_kernel_dim"] = JSON(d.convKernel)
        }
    }

    func validate(_ c: ModelConfig, file: String) throws {
        guard let layers = c.hybridLayers, layers.count == c.numHiddenLayers,
            layers.allSatisfy({ $0 == .deltaNet || $0 == .attention })
        else {
            throw ModelError.invalidConfig(
                file: file, key: "layer_types",
                reason: "must name linear_attention or full_attention for each of the model's layers")
        }
        guard let d = c.deltaNet else {
            throw ModelError.invalidConfig(file: file, key: "linear_num_key_heads", reason: "missing")
        }
        try requirePositive(
            [
                (d.keyHeads, "linear_num_key_heads"), (d.valueHeads, "linear_num_value_heads"),
                (d.keyDim, "linear_key_head_dim"), (d.valueDim, "linear_value_head_dim"),
                (d.convKernel, "linear_conv_kernel_dim")
            ], file: file)
        if mixture { try requirePositive([(c.moeIntermediateSize, "moe_intermediate_size")], file: file) }
        if d.valueHeads % d.keyHeads != 0 {
            throw ModelError.invalidConfig(
                file: file, key: "linear_num_value_heads",
                reason: "\(d.valueHeads) is not a multiple of linear_num_key_heads \(d.keyHeads)")
        }
    }

    func mixerTensors(_ mixer: Block.Mixer, _ c: ModelConfig) -> [TensorSpec] {
        guard case let .deltaNet(d) = mixer else {
            guard case let .attention(H, _, D, _, _) = mixer else { return [] }
            // q_proj holds each head's queries then its gate: 2·D rows per head.
            return LlamaTensors.attention(mixer, c, bias: false, qkNorm: true).map { t in
                guard t.role == .q else { return t }
                return TensorSpec(t.name, .q, [2 * H * D, c.hiddenSize], [.heads(2 * D), .channels])
            }
        }
        let C = c.hiddenSize
        // The four in-projections are adjacent: one (W, C) matrix.
        return [
            TensorSpec("linear_attn.in_proj_qkv.weight", .deltaQKV, [d.convWidth, C], [.deltaConv, .channels]),
            TensorSpec("linear_attn.in_proj_z.weight", .deltaZ, [d.valueWidth, C], [.deltaValues, .channels]),
            TensorSpec("linear_attn.in_proj_b.weight", .deltaB, [d.valueHeads, C], [.deltaHeads, .channels]),
            TensorSpec("linear_attn.in_proj_a.weight", .deltaA, [d.valueHeads, C], [.deltaHeads, .channels]),
            TensorSpec(
                "linear_attn.conv1d.weight", .deltaConv, [d.convWidth, 1, d.convKernel], [.deltaConv, .whole, .whole]),
            TensorSpec("linear_attn.dt_bias", .deltaDtBias, [d.valueHeads], [.deltaHeads]),
            TensorSpec("linear_attn.A_log", .deltaALog, [d.valueHeads], [.deltaHeads]),
            TensorSpec("linear_attn.norm.weight", .deltaNorm, [d.valueDim], [.deltaChannels]),
            TensorSpec("linear_attn.out_proj.weight", .deltaOut, [C, d.valueWidth], [.channels, .deltaValues])
        ]
    }

    func channelMixerTensors(_ mixer: Block.ChannelMixer, _ c: ModelConfig) -> [TensorSpec] {
        guard case let .experts(_, _, _, S) = mixer else { return LlamaTensors.mlp(mixer, c, gated: true) }
        let C = c.hiddenSize
        return LlamaTensors.experts(
            mixer, c, router: "mlp.gate", prefix: "mlp.experts.", gate: "gate_proj", up: "up_proj", down: "down_proj")
            + [
                TensorSpec("mlp.shared_expert.gate_proj.weight", .sharedGate, [S, C], [.sharedNeurons, .channels]),
                TensorSpec("mlp.shared_expert.up_proj.weight", .sharedUp, [S, C], [.sharedNeurons, .channels]),
                TensorSpec("mlp.shared_expert.down_proj.weight", .sharedDown, [C, S], [.channels, .sharedNeurons]),
                TensorSpec("mlp.shared_expert_gate.weight", .sharedExpertGate, [1, C], [.whole, .channels])
            ]
    }
}

extension Family {
    public static let qwen35 = Family(Qwen35())
    public static let qwen35Moe = Family(Qwen35(mixture: true))
}
