/// `MixtralForCausalLM`: llama attention; the MLP is a router choosing the top-k of E SwiGLU
/// experts (softmax over all experts, then top-k, renormalised), `block_sparse_moe.experts.e.w1`
/// (gate), `w3` (up), `w2` (down).
struct Mixtral: FamilyDefinition {
    var modelType: String { "mixtral" }
    var architecture: String { "MixtralForCausalLM" }
    var displayName: String { "Mixtral" }
    var isMixture: Bool { true }
    var requiresHeadsDivideHidden: Bool { true }
    var defaultNormEps: Double { 1e-5 }
    var defaultRopeTheta: Double { 1e6 }
    var defaultNormTopKProb: Bool { true }
    var axes: [Axis] { Axis.dense + [.numLocalExperts, .numExpertsPerTok] }

    func readMixture(_ r: ConfigReader, layers: Int, used: inout Set<String>) throws -> MixtureKeys {
        used.insert("router_jitter_noise")
        if let j = try r.double("router_jitter_noise"), j != 0 {
            throw r.unsupported("router_jitter_noise", "\(j); router jitter is not implemented")
        }
        return try readLocalExperts(r, used: &used)
    }

    /// MixtralConfig has a sliding_window that its attention honours: not implemented here.
    func readSlidingWindow(_ r: ConfigReader, layers: Int, used: inout Set<String>) throws -> (Int?, [Int]) {
        used.insert("sliding_window")
        if let v = r.value("sliding_window"), v != .bool(false) {
            throw r.unsupported("sliding_window", "sliding-window attention is not implemented for mixtral")
        }
        return (nil, [])
    }

    func writeKeys(_ c: ModelConfig, into json: inout [String: JSON], rope: inout [String: JSON]) {
        json["hidden_act"] = "silu"
        json["rms_norm_eps"] = .float(c.normEps)
        json["num_local_experts"] = JSON(c.numLocalExperts)
        json["num_experts_per_tok"] = JSON(c.numExpertsPerTok)
        json["router_aux_loss_coef"] = .float(c.routerAuxLossCoef)
        json["output_router_logits"] = .bool(c.outputRouterLogits)
        json["router_jitter_noise"] = .float(0)
        json["sliding_window"] = JSON.null
    }

    func channelMixerTensors(_ mixer: Block.ChannelMixer, _ c: ModelConfig) -> [TensorSpec] {
        LlamaTensors.experts(
            mixer, c, router: "block_sparse_moe.gate", prefix: "block_sparse_moe.experts.",
            gate: "w1", up: "w3", down: "w2")
    }
}

extension Family {
    public static let mixtral = Family(Mixtral())
}
