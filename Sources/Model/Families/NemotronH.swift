/// `NemotronHForCausalLM`: a hybrid decoder whose every layer is one mixer behind an RMSNorm and
/// a residual connection — a Mamba2 mixer (`linear_attention`, pattern `M`), grouped-query
/// attention without positional embeddings (`full_attention`, `*`), or a squared-ReLU MLP
/// (`mlp`, `-`) — given by `layers_block_type` (transformers 5's names or the older `mamba` /
/// `attention`) or the older `hybrid_override_pattern` string. Tensors live under `backbone.`.
///
/// A mixture-of-experts layer (`moe`, `E`; `NemotronHMoE`) routes each token by a sigmoid router
/// (``RoutingStyle/sigmoid(groups:topKGroups:normalize:scale:)``: scores σ(W_r·x), chosen with
/// `e_score_correction_bias` within the best `topk_group` of `n_group` groups, the k gates
/// renormalised when `norm_topk_prob` and scaled by `routed_scaling_factor`) to k of
/// `n_routed_experts` squared-ReLU experts of `moe_intermediate_size` neurons — in a latent
/// width between `fc1_latent_proj` and `fc2_latent_proj` where `moe_latent_size` is set — and
/// adds a squared-ReLU shared expert of `moe_shared_expert_intermediate_size` neurons.
struct NemotronH: FamilyDefinition {
    var modelType: String { "nemotron_h" }
    var architecture: String { "NemotronHForCausalLM" }
    var displayName: String { "Nemotron-H" }
    var isGated: Bool { false }
    var hasRotary: Bool { false }
    var canTieEmbeddings: Bool { false }
    var epsKey: String { "layer_norm_epsilon" }
    var activationKey: String { "mlp_hidden_act" }
    var activation: String { "relu2" }
    var defaultNormEps: Double { 1e-5 }
    var hasSeparateExpertWidth: Bool { true }
    var defaultNormTopKProb: Bool { true }
    /// transformers' Nemotron-H adds no load-balancing loss to its loss (its router balances by
    /// the correction bias).
    var defaultRouterAuxLossCoef: Double { 0 }
    var routesBySigmoid: Bool { true }
    var expertCountKey: String { "n_routed_experts" }
    func sharedExpertWidth(_ c: ModelConfig) -> Int { c.moeSharedExpertIntermediateSize }
    var sharedExpertWidthKey: String { "moe_shared_expert_intermediate_size" }
    var biasKeys: [(key: String, refused: Bool)] {
        [("attention_bias", true), ("mlp_bias", true), ("use_bias", true)]
    }
    /// Keys NemotronHConfig defines that change no forward pass here: initialisation, kernels and
    /// cache dtypes, the mixture keys of a config without mixture layers (with them they are
    /// read), the shared-expert count and overlap and the router-loss keys transformers' mixture
    /// does not use, and the multi-token-prediction keys.
    var metadataKeys: Set<String> {
        [
            "expand", "mamba_expand", "time_step_max", "mamba_dt_max", "time_step_floor", "mamba_dt_init_floor",
            "mamba_ssm_cache_dtype", "use_mamba_kernels", "residual_in_fp32",
            "rescale_prenorm_residual", "hidden_dropout", "num_logits_to_keep", "mamba_proj_bias", "sliding_window",
            "n_routed_experts", "n_shared_experts", "moe_intermediate_size", "moe_shared_expert_intermediate_size",
            "moe_latent_size", "moe_shared_expert_overlap", "num_experts_per_tok", "routed_scaling_factor", "n_group",
            "topk_group", "norm_topk_prob", "output_router_logits", "router_aux_loss_coef",
            "num_nextn_predict_layers", "mtp_layers_block_type", "mtp_hybrid_override_pattern"
        ]
    }
    var axes: [Axis] {
        [
            .hiddenSize, .numAttentionHeads, .numKeyValueHeads, .intermediateSize, .mambaNumHeads, .mambaHeadDim,
            .numMambaLayers, .numAttentionLayers, .numMLPLayers, .nRoutedExperts, .numExpertsPerTok,
            .moeIntermediateSize, .moeSharedExpertIntermediateSize, .numMoELayers
        ]
    }

    /// Without mixture layers, no expert axes (they would name experts the model does not have).
    func axes(for c: ModelConfig) -> [Axis] {
        c.isMixture
            ? axes
            : axes.filter {
                ![
                    .nRoutedExperts, .numExpertsPerTok, .moeIntermediateSize, .moeSharedExpertIntermediateSize,
                    .numMoELayers
                ].contains($0)
            }
    }

    var embeddingName: String { "backbone.embeddings.weight" }
    var finalNormName: String { "backbone.norm_f" }
    func layerPrefix(_ l: Int) -> String { "backbone.layers.\(l)." }
    var mixerNormName: String { "norm" }
    var channelMixerNormName: String { "norm" }

    func readHybrid(_ r: ConfigReader, used: inout Set<String>) throws -> HybridKeys? {
        for key in ["layers_block_type", "layer_types", "hybrid_override_pattern", "num_hidden_layers"] {
            used.insert(key)
        }
        var layers: [HybridLayer]
        let listKey = r.value("layers_block_type") != nil ? "layers_block_type" : "layer_types"
        if let v = r.value(listKey) {
            guard let list = v.array else { throw r.fail(listKey, "expected a list of layer types, got \(v)") }
            layers = try list.enumerated().map { i, item in
                guard let name = item.string, let t = HybridLayer(name: name) else {
                    throw r.fail(
                        "\(listKey)[\(i)]",
                        "\(item) is not a layer type; expected linear_attention (or mamba), full_attention "
                            + "(or attention), mlp or moe")
                }
                return t
            }
        } else if let v = r.value("hybrid_override_pattern") {
            guard let pattern = v.string else { throw r.fail("hybrid_override_pattern", "expected a string, got \(v)") }
            layers = try pattern.enumerated().map { i, letter in
                guard let t = HybridLayer(letter: letter) else {
                    throw r.fail(
                        "hybrid_override_pattern",
                        "'\(letter)' at position \(i) is not a layer type; expected M (Mamba2), * (attention), "
                            + "- (MLP) or E (mixture of experts)")
                }
                return t
            }
        } else {
            // transformers' default.
            layers = [.mamba, .moe, .attention, .mlp]
        }
        guard !layers.isEmpty else { throw r.fail(listKey, "the model has no layers") }
        /// A key, or its older spelling, which transformers prefers when both are given.
        func int(_ key: String, legacy: String? = nil, _ fallback: Int) throws -> Int {
            used.insert(key)
            if let legacy {
                used.insert(legacy)
                if let n = try r.int(legacy) { return n }
            }
            return try r.int(key) ?? fallback
        }
        let shape = MambaShape(
            heads: try int("mamba_num_heads", 128), headDim: try int("mamba_head_dim", 64),
            groups: try int("n_groups", legacy: "mamba_n_groups", 8), stateSize: try int("ssm_state_size", 128),
            convKernel: try int("conv_kernel", legacy: "mamba_d_conv", 4))
        var keys = HybridKeys(layers: layers, mamba: shape)
        keys.chunkSize = try int("chunk_size", legacy: "mamba_chunk_size", 128)
        for key in [
            "use_conv_bias", "mamba_conv_bias", "time_step_min", "mamba_dt_min", "mamba_hidden_act", "time_step_limit",
            "mamba_dt_limit"
        ] {
            used.insert(key)
        }
        // The legacy spelling wins, as in transformers.
        for key in ["time_step_limit", "mamba_dt_limit"] {
            if let v = r.value(key) { keys.timeStepLimit = try MambaTimeStepLimit(json: v, key: key, reader: r) }
        }
        keys.convBias = try r.bool("mamba_conv_bias") ?? r.bool("use_conv_bias") ?? true
        keys.timeStepMin = try r.double("mamba_dt_min") ?? r.double("time_step_min") ?? 0.001
        if let v = r.value("mamba_hidden_act"), v.string != "silu" {
            throw r.unsupported("mamba_hidden_act", "\(v); Nemotron-H's Mamba2 mixer is implemented with 'silu'")
        }
        if layers.contains(.moe) { keys.mixture = try readMixture(r, used: &used) }
        return keys
    }

    /// The mixture keys, with NemotronHConfig's defaults (read only when the config has `moe`
    /// layers; otherwise they are metadata). `num_local_experts` is transformers' alias of
    /// `n_routed_experts`.
    func readMixture(_ r: ConfigReader, used: inout Set<String>) throws -> MixtureKeys {
        for key in [
            "n_routed_experts", "num_local_experts", "num_experts_per_tok", "moe_intermediate_size",
            "moe_shared_expert_intermediate_size", "moe_latent_size", "routed_scaling_factor", "n_group", "topk_group",
            "norm_topk_prob"
        ] { used.insert(key) }
        var keys = MixtureKeys()
        keys.experts = try r.int("n_routed_experts") ?? r.int("num_local_experts") ?? 8
        keys.perToken = try r.int("num_experts_per_tok") ?? 2
        keys.expertWidth = try r.int("moe_intermediate_size") ?? 7688
        keys.sharedWidth = try r.int("moe_shared_expert_intermediate_size") ?? 7688
        keys.latent = try r.int("moe_latent_size")
        keys.scaling = try r.double("routed_scaling_factor") ?? 1
        keys.groups = try r.int("n_group") ?? 1
        keys.topKGroups = try r.int("topk_group") ?? 1
        keys.normTopK = try r.bool("norm_topk_prob") ?? true
        return keys
    }

    func writeKeys(_ c: ModelConfig, into json: inout [String: JSON], rope: inout [String: JSON]) {
        let layers = c.hybridLayers ?? []
        json["layers_block_type"] = .array(layers.map { .string($0.transformersName) })
        // vLLM and transformers 4's remote code read the pattern string.
        json["hybrid_override_pattern"] = .string(String(layers.map(\.letter)))
        json["mlp_hidden_act"] = "relu2"
        json["mamba_hidden_act"] = "silu"
        json["layer_norm_epsilon"] = .float(c.normEps)
        json["attention_bias"] = false
        json["mlp_bias"] = false
        json["use_bias"] = false
        if let m = c.mamba {
            json["mamba_num_heads"] = JSON(m.heads)
            json["mamba_head_dim"] = JSON(m.headDim)
            json["n_groups"] = JSON(m.groups)
            json["ssm_state_size"] = JSON(m.stateSize)
            json["conv_kernel"] = JSON(m.convKernel)
        }
        if c.isMixture {
            json["n_routed_experts"] = JSON(c.numLocalExperts)
            json["num_experts_per_tok"] = JSON(c.numExpertsPerTok)
            json["moe_intermediate_size"] = JSON(c.moeIntermediateSize)
            json["moe_shared_expert_intermediate_size"] = JSON(c.moeSharedExpertIntermediateSize)
            json["moe_latent_size"] = c.moeLatentSize.map { JSON($0) } ?? .null
            json["routed_scaling_factor"] = .float(c.routedScalingFactor)
            json["n_group"] = JSON(c.routerGroups)
            json["topk_group"] = JSON(c.routerTopKGroups)
            json["norm_topk_prob"] = .bool(c.normTopKProb)
        }
        json["use_conv_bias"] = .bool(c.mambaConvBias)
        json["chunk_size"] = JSON(c.mambaChunkSize)
        json["time_step_min"] = .float(c.mambaTimeStepMin)
        json["time_step_limit"] = c.mambaTimeStepLimit.json
    }

    func validate(_ c: ModelConfig, file: String) throws {
        if c.tieWordEmbeddings {
            throw ModelError.invalidConfig(
                file: file, key: "tie_word_embeddings",
                reason: "transformers' Nemotron-H always keeps its own LM head; it cannot be tied")
        }
        guard let layers = c.hybridLayers, layers.count == c.numHiddenLayers else {
            throw ModelError.invalidConfig(
                file: file, key: "layers_block_type", reason: "must name one type for each of the model's layers")
        }
        if c.isMixture { try validateMixture(c, file: file) }
        guard let m = c.mamba else {
            throw ModelError.invalidConfig(file: file, key: "mamba_num_heads", reason: "missing")
        }
        try requirePositive(
            [
                (m.heads, "mamba_num_heads"), (m.headDim, "mamba_head_dim"), (m.groups, "n_groups"),
                (m.stateSize, "ssm_state_size"), (m.convKernel, "conv_kernel"), (c.mambaChunkSize, "chunk_size")
            ], file: file)
        if m.heads % m.groups != 0 {
            throw ModelError.invalidConfig(
                file: file, key: "n_groups",
                reason: "mamba_num_heads \(m.heads) is not a multiple of n_groups \(m.groups)")
        }
        if !(c.mambaTimeStepMin >= 0) {
            throw ModelError.invalidConfig(
                file: file, key: "time_step_min", reason: "must be non-negative, got \(c.mambaTimeStepMin)")
        }
        let limit = c.mambaTimeStepLimit
        if !(limit.lower >= 0 && limit.lower <= limit.upper) {
            throw ModelError.invalidConfig(
                file: file, key: "time_step_limit",
                reason: "must be [lower, upper] with 0 ≤ lower ≤ upper, got [\(limit.lower), \(limit.upper)]")
        }
    }

    /// The mixture's shape rules: positive widths, and groups as transformers' router needs them
    /// (equal groups of at least two experts, since a group's worth is its two best scores;
    /// k experts among the kept groups).
    func validateMixture(_ c: ModelConfig, file: String) throws {
        try requirePositive(
            [
                (c.moeIntermediateSize, "moe_intermediate_size"),
                (c.moeSharedExpertIntermediateSize, "moe_shared_expert_intermediate_size"),
                (c.moeLatentSize ?? 1, "moe_latent_size"), (c.routerGroups, "n_group"),
                (c.routerTopKGroups, "topk_group")
            ], file: file)
        let (E, G) = (c.numLocalExperts, c.routerGroups)
        if E % G != 0 || E / G < 2 {
            throw ModelError.invalidConfig(
                file: file, key: "n_group",
                reason: "n_routed_experts \(E) must split into n_group \(G) equal groups of at least 2 experts")
        }
        if c.routerTopKGroups > G {
            throw ModelError.invalidConfig(
                file: file, key: "topk_group", reason: "\(c.routerTopKGroups) is more than n_group \(G)")
        }
        if c.numExpertsPerTok > c.routerTopKGroups * (E / G) {
            throw ModelError.invalidConfig(
                file: file, key: "num_experts_per_tok",
                reason: "top-k \(c.numExpertsPerTok) is more than the \(c.routerTopKGroups * (E / G)) experts of "
                    + "topk_group \(c.routerTopKGroups) groups of \(E / G)")
        }
        if !c.routedScalingFactor.isFinite {
            throw ModelError.invalidConfig(file: file, key: "routed_scaling_factor", reason: "must be finite")
        }
    }

    func mixerTensors(_ mixer: Block.Mixer, _ c: ModelConfig) -> [TensorSpec] {
        guard case let .mamba(m) = mixer else {
            return LlamaTensors.attention(mixer, c, bias: false, qkNorm: false).map(Self.inMixer)
        }
        let C = c.hiddenSize
        var t = [
            TensorSpec("mixer.in_proj.weight", .mambaIn, [m.projectionWidth, C], [.mambaProjection, .channels]),
            TensorSpec(
                "mixer.conv1d.weight", .mambaConv, [m.convWidth, 1, m.convKernel], [.mambaConv, .whole, .whole])
        ]
        if c.mambaConvBias {
            t.append(TensorSpec("mixer.conv1d.bias", .mambaConvBias, [m.convWidth], [.mambaConv]))
        }
        t += [
            TensorSpec("mixer.dt_bias", .mambaDtBias, [m.heads], [.mambaHeads]),
            TensorSpec("mixer.A_log", .mambaALog, [m.heads], [.mambaHeads]),
            TensorSpec("mixer.D", .mambaD, [m.heads], [.mambaHeads]),
            TensorSpec("mixer.norm.weight", .mambaNorm, [m.innerWidth], [.mambaInner]),
            TensorSpec("mixer.out_proj.weight", .mambaOut, [C, m.innerWidth], [.channels, .mambaInner])
        ]
        return t
    }

    func channelMixerTensors(_ mixer: Block.ChannelMixer, _ c: ModelConfig) -> [TensorSpec] {
        guard case let .experts(E, _, F, S) = mixer else {
            return LlamaTensors.mlp(mixer, c, gated: false).map(Self.inMixer)
        }
        // The routed experts read and write the latent width where there is one.
        let (C, X) = (c.hiddenSize, c.expertInputWidth)
        let io: AxisRole = c.moeLatentSize == nil ? .channels : .whole
        var t = [
            TensorSpec("mixer.gate.weight", .mlpRouter, [E, C], [.experts, .channels]),
            TensorSpec("mixer.gate.e_score_correction_bias", .routerCorrectionBias, [E], [.experts])
        ]
        for e in 0..<E {
            t += [
                TensorSpec("mixer.experts.\(e).up_proj.weight", .expertUp, [F, X], [.neurons, io], expert: e),
                TensorSpec("mixer.experts.\(e).down_proj.weight", .expertDown, [X, F], [io, .neurons], expert: e)
            ]
        }
        t += [
            TensorSpec("mixer.shared_experts.up_proj.weight", .sharedUp, [S, C], [.sharedNeurons, .channels]),
            TensorSpec("mixer.shared_experts.down_proj.weight", .sharedDown, [C, S], [.channels, .sharedNeurons])
        ]
        if let L = c.moeLatentSize {
            t += [
                TensorSpec("mixer.fc1_latent_proj.weight", .latentIn, [L, C], [.whole, .channels]),
                TensorSpec("mixer.fc2_latent_proj.weight", .latentOut, [C, L], [.channels, .whole])
            ]
        }
        return t
    }

    /// Every layer's one module is its `mixer` (`self_attn.q_proj` → `mixer.q_proj`).
    static func inMixer(_ t: TensorSpec) -> TensorSpec {
        var t = t
        for old in ["self_attn.", "mlp."] where t.name.hasPrefix(old) {
            t.name = "mixer." + t.name.dropFirst(old.count)
        }
        return t
    }
}

extension Family {
    public static let nemotronH = Family(NemotronH())
}
