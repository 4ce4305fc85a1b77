/// `Qwen3ForCausalLM`: llama with a per-head RMSNorm on queries and keys (`q_norm`, `k_norm`,
/// over head_dim, before rotary) and an explicit `head_dim` (default 128, not hidden_size /
/// heads).
struct Qwen3: FamilyDefinition {
    var modelType: String { "qwen3" }
    var architecture: String { "Qwen3ForCausalLM" }
    var displayName: String { "Qwen3" }
    var hasQKNorm: Bool { true }
    var defaultMaxPositionEmbeddings: Int { 32768 }
    var biasKeys: [(key: String, refused: Bool)] { [("attention_bias", true)] }

    func readAttentionShape(_ r: ConfigReader, expertsPerToken: Int, used: inout Set<String>) throws
        -> (heads: Int?, kvHeads: Int?, headDim: Int?)
    {
        (try r.int("num_attention_heads"), try r.int("num_key_value_heads"), try r.int("head_dim") ?? 128)
    }
    func readSlidingWindow(_ r: ConfigReader, layers: Int, used: inout Set<String>) throws -> (Int?, [Int]) {
        try QwenWindows.read(r, layers: layers, perLayer: true, used: &used)
    }
    func writeKeys(_ c: ModelConfig, into json: inout [String: JSON], rope: inout [String: JSON]) {
        QwenWindows.write(c, into: &json, perLayer: true)
        json["attention_bias"] = false
    }
}

extension Family {
    public static let qwen3 = Family(Qwen3())
}
