/// `Qwen3MoeForCausalLM`: qwen3 attention; the MLP of most layers a softmax router (`mlp.gate`)
/// choosing the top k of E SwiGLU experts (`mlp.experts.e.gate_proj`, …) of width
/// `moe_intermediate_size` (renormalised when `norm_topk_prob`); the layers of `mlp_only_layers`
/// / `decoder_sparse_step` keep a dense MLP of `intermediate_size`.
struct Qwen3MoE: FamilyDefinition {
    var modelType: String { "qwen3_moe" }
    var architecture: String { "Qwen3MoeForCausalLM" }
    var displayName: String { "Qwen3-MoE" }
    var isMixture: Bool { true }
    var hasQKNorm: Bool { true }
    var hasSeparateExpertWidth: Bool { true }
    var allowsDenseMLPLayers: Bool { true }
    var hasNormTopKProbKey: Bool { true }
    var defaultMaxPositionEmbeddings: Int { 32768 }
    var biasKeys: [(key: String, refused: Bool)] { [("attention_bias", true)] }
    /// Its config names the experts' width and count `moe_intermediate_size` and `num_experts`.
    var axes: [Axis] {
        [
            .numHiddenLayers, .hiddenSize, .numAttentionHeads, .numKeyValueHeads, .moeIntermediateSize, .numExperts,
            .numExpertsPerTok
        ]
    }

    func readMixture(_ r: ConfigReader, layers: Int, used: inout Set<String>) throws -> MixtureKeys {
        var keys = MixtureKeys()
        // transformers 5 calls it num_local_experts and reads num_experts as an alias.
        for key in ["num_experts", "num_local_experts", "num_experts_per_tok"] { used.insert(key) }
        if r.value("num_experts") != nil, r.value("num_local_experts") != nil {
            throw r.fail("num_experts", "both num_experts and num_local_experts are given; keep one")
        }
        keys.experts = try r.int("num_experts") ?? r.int("num_local_experts") ?? 128
        keys.perToken = try r.int("num_experts_per_tok") ?? 8
        for key in ["moe_intermediate_size", "norm_topk_prob", "decoder_sparse_step", "mlp_only_layers"] {
            used.insert(key)
        }
        keys.expertWidth = try r.int("moe_intermediate_size") ?? 768
        keys.normTopK = try r.bool("norm_topk_prob") ?? false
        let step = try r.int("decoder_sparse_step") ?? 1
        guard step >= 1 else { throw r.fail("decoder_sparse_step", "must be at least 1, got \(step)") }
        var only: [Int] = []
        if let v = r.value("mlp_only_layers") {
            guard let list = v.array else {
                throw r.fail("mlp_only_layers", "expected a list of layer indices, got \(v)")
            }
            only = try list.map {
                guard let n = $0.int else { throw r.fail("mlp_only_layers", "expected integers, got \($0)") }
                return n
            }
        }
        keys.denseLayers = Array(Set(only + (0..<layers).filter { ($0 + 1) % step != 0 })).sorted()
        try readRouterLoss(r, into: &keys, used: &used)
        return keys
    }

    func readSlidingWindow(_ r: ConfigReader, layers: Int, used: inout Set<String>) throws -> (Int?, [Int]) {
        try QwenWindows.read(r, layers: layers, perLayer: false, used: &used)
    }

    func writeKeys(_ c: ModelConfig, into json: inout [String: JSON], rope: inout [String: JSON]) {
        QwenWindows.write(c, into: &json, perLayer: false)
        json["attention_bias"] = false
        json["num_experts"] = JSON(c.numLocalExperts)
        json["num_experts_per_tok"] = JSON(c.numExpertsPerTok)
        json["moe_intermediate_size"] = JSON(c.moeIntermediateSize)
        json["norm_topk_prob"] = .bool(c.normTopKProb)
        json["decoder_sparse_step"] = 1
        json["mlp_only_layers"] = .array(c.denseMLPLayers.map { JSON($0) })
        json["router_aux_loss_coef"] = .float(c.routerAuxLossCoef)
        json["output_router_logits"] = .bool(c.outputRouterLogits)
    }

    func validate(_ c: ModelConfig, file: String) throws {
        if c.moeIntermediateSize <= 0 {
            throw ModelError.invalidConfig(
                file: file, key: "moe_intermediate_size", reason: "must be positive, got \(c.moeIntermediateSize)")
        }
        if let l = c.denseMLPLayers.first(where: { $0 < 0 || $0 >= c.numHiddenLayers }) {
            throw ModelError.invalidConfig(
                file: file, key: "mlp_only_layers", reason: "layer \(l) is outside 0..<\(c.numHiddenLayers)")
        }
    }

    func channelMixerTensors(_ mixer: Block.ChannelMixer, _ c: ModelConfig) -> [TensorSpec] {
        if case .dense = mixer { return LlamaTensors.mlp(mixer, c, gated: true) }
        return LlamaTensors.experts(
            mixer, c, router: "mlp.gate", prefix: "mlp.experts.",
            gate: "gate_proj", up: "up_proj", down: "down_proj")
    }
}

extension Family {
    public static let qwen3Moe = Family(Qwen3MoE())
}
