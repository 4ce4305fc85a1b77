/// `JetMoeForCausalLM`: a mixture of attention heads (per-expert query and output projections,
/// one shared key/value projection) and a mixture-of-experts SwiGLU MLP, each with its own
/// router (top-k logits, softmax over the chosen k) and an output bias. Its query heads are
/// derived: num_key_value_heads × num_experts_per_tok (query head j·G + g of choice j reads
/// key/value head g).
struct JetMoE: FamilyDefinition {
    var modelType: String { "jetmoe" }
    var architecture: String { "JetMoeForCausalLM" }
    var displayName: String { "JetMoE" }
    var isMixture: Bool { true }
    var hasAttentionExperts: Bool { true }
    var routesTopKThenSoftmax: Bool { true }
    var expertsHaveOutputBias: Bool { true }
    /// transformers builds its per-layer norms with RMSNorm's default ε whatever rms_norm_eps
    /// says; only the final norm reads the config.
    var layerNormEps: Double? { 1e-6 }
    var activationKey: String { "activation_function" }
    var auxLossKey: String { "aux_loss_coef" }
    var defaultRouterAuxLossCoef: Double { 0.01 }
    var defaultInitializerRange: Double { 0.01 }
    var defaultTieWordEmbeddings: Bool { true }
    /// num_attention_heads is derived, not an axis.
    var axes: [Axis] { Axis.dense.filter { $0 != .numAttentionHeads } + [.numLocalExperts, .numExpertsPerTok] }

    func derivedQueryHeads(_ c: ModelConfig) -> Int? { c.numKeyValueHeads * c.numExpertsPerTok }

    /// The head width is `kv_channels`; key/value heads default to 16; query heads follow.
    func readAttentionShape(_ r: ConfigReader, expertsPerToken: Int, used: inout Set<String>) throws
        -> (heads: Int?, kvHeads: Int?, headDim: Int?)
    {
        used.insert("kv_channels")
        let kvHeads = try r.int("num_key_value_heads") ?? 16
        let headDim = try r.int("kv_channels") ?? r.int("head_dim") ?? 128
        return (try r.int("num_attention_heads") ?? kvHeads * expertsPerToken, kvHeads, headDim)
    }

    func readMixture(_ r: ConfigReader, layers: Int, used: inout Set<String>) throws -> MixtureKeys {
        try readLocalExperts(r, used: &used)
    }

    func writeKeys(_ c: ModelConfig, into json: inout [String: JSON], rope: inout [String: JSON]) {
        json["head_dim"] = nil
        json["activation_function"] = "silu"
        json["rms_norm_eps"] = .float(c.normEps)
        json["num_local_experts"] = JSON(c.numLocalExperts)
        json["num_experts_per_tok"] = JSON(c.numExpertsPerTok)
        json["aux_loss_coef"] = .float(c.routerAuxLossCoef)
        json["output_router_logits"] = .bool(c.outputRouterLogits)
        json["kv_channels"] = JSON(c.headDim)
    }

    func validate(_ c: ModelConfig, file: String) throws {
        let (G, k) = (c.numKeyValueHeads, c.numExpertsPerTok)
        if c.numAttentionHeads != G * k {
            throw ModelError.invalidConfig(
                file: file, key: "num_attention_heads",
                reason:
                    "JetMoE has num_key_value_heads × num_experts_per_tok = \(G) × \(k) = \(G * k) query heads, "
                    + "got \(c.numAttentionHeads)"
            )
        }
    }

    func mixerTensors(_ mixer: Block.Mixer, _ c: ModelConfig) -> [TensorSpec] {
        guard case let .attention(_, G, D, _, E) = mixer else { return [] }
        let (C, GD) = (c.hiddenSize, G * D)
        return [
            TensorSpec(
                "self_attention.experts.router.layer.weight", .attentionRouter, [E, C], [.attentionExperts, .channels]),
            TensorSpec(
                "self_attention.experts.input_linear.weight", .attentionExpertsIn, [E, GD, C],
                [.attentionExperts, .groups(D), .channels]),
            TensorSpec("self_attention.kv_proj.weight", .kv, [2 * GD, C], [.groups(D, copies: 2), .channels]),
            TensorSpec(
                "self_attention.experts.output_linear.weight", .attentionExpertsOut, [E, C, GD],
                [.attentionExperts, .channels, .groups(D)]),
            TensorSpec("self_attention.experts.bias", .attentionBias, [C], [.channels])
        ]
    }

    func channelMixerTensors(_ mixer: Block.ChannelMixer, _ c: ModelConfig) -> [TensorSpec] {
        guard case let .experts(E, _, F, _) = mixer else { return LlamaTensors.mlp(mixer, c, gated: true) }
        let C = c.hiddenSize
        return [
            TensorSpec("mlp.router.layer.weight", .mlpRouter, [E, C], [.experts, .channels]),
            TensorSpec(
                "mlp.input_linear.weight", .expertsIn, [E, 2 * F, C],
                [.experts, AxisRole(.neurons, copies: 2), .channels]),
            TensorSpec("mlp.output_linear.weight", .expertsOut, [E, C, F], [.experts, .channels, .neurons]),
            TensorSpec("mlp.bias", .mlpBias, [C], [.channels])
        ]
    }
}

extension Family {
    public static let jetmoe = Family(JetMoE())
}
