/// `MistralForCausalLM`: llama with sliding-window attention on every layer (`sliding_window`,
/// `null` for full attention).
struct Mistral: FamilyDefinition {
    var modelType: String { "mistral" }
    var architecture: String { "MistralForCausalLM" }
    var displayName: String { "Mistral" }
    var defaultMaxPositionEmbeddings: Int { 131072 }

    func readSlidingWindow(_ r: ConfigReader, layers: Int, used: inout Set<String>) throws -> (Int?, [Int]) {
        used.insert("sliding_window")
        return (try r.int("sliding_window"), Array(0..<layers))
    }

    func writeKeys(_ c: ModelConfig, into json: inout [String: JSON], rope: inout [String: JSON]) {
        json["hidden_act"] = "silu"
        json["rms_norm_eps"] = .float(c.normEps)
        json["sliding_window"] = c.slidingWindow.map { JSON($0) } ?? JSON.null
    }
}

extension Family {
    public static let mistral = Family(Mistral())
}
