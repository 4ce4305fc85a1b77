/// `NemotronForCausalLM`: LayerNorm1P with bias, partial rotary, squared-ReLU MLP.
struct Nemotron: FamilyDefinition {
    var modelType: String { "nemotron" }
    var architecture: String { "NemotronForCausalLM" }
    var displayName: String { "Nemotron" }
    var isGated: Bool { false }
    var hasNormBias: Bool { true }
    var requiresHeadsDivideHidden: Bool { true }
    var epsKey: String { "norm_eps" }
    var activation: String { "relu2" }
    var defaultNormEps: Double { 1e-5 }
    var defaultPartialRotaryFactor: Double { 0.5 }
    var allowsPartialRotary: Bool { true }
    var biasKeys: [(key: String, refused: Bool)] { [("attention_bias", true), ("mlp_bias", true)] }

    func writeKeys(_ c: ModelConfig, into json: inout [String: JSON], rope: inout [String: JSON]) {
        json["hidden_act"] = "relu2"
        json["norm_eps"] = .float(c.normEps)
        json["partial_rotary_factor"] = .float(c.partialRotaryFactor)
        rope["partial_rotary_factor"] = .float(c.partialRotaryFactor)
        json["attention_bias"] = false
        json["mlp_bias"] = false
    }
}

extension Family {
    public static let nemotron = Family(Nemotron())
}
