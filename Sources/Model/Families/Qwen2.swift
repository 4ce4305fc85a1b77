/// `Qwen2ForCausalLM`: llama with biases on the query, key and value projections; optional
/// sliding-window attention on the layers `layer_types` names.
struct Qwen2: FamilyDefinition {
    var modelType: String { "qwen2" }
    var architecture: String { "Qwen2ForCausalLM" }
    var displayName: String { "Qwen2" }
    var hasQKVBias: Bool { true }
    var defaultMaxPositionEmbeddings: Int { 32768 }
    /// Its attention always has q/k/v biases, whatever `attention_bias` says.
    var biasKeys: [(key: String, refused: Bool)] { [("attention_bias", false)] }

    func readSlidingWindow(_ r: ConfigReader, layers: Int, used: inout Set<String>) throws -> (Int?, [Int]) {
        try QwenWindows.read(r, layers: layers, perLayer: true, used: &used)
    }
    func writeKeys(_ c: ModelConfig, into json: inout [String: JSON], rope: inout [String: JSON]) {
        QwenWindows.write(c, into: &json, perLayer: true)
    }
}

extension Family {
    public static let qwen2 = Family(Qwen2())
}

/// The window keys of the Qwen families, as transformers 5 derives them: a window only when
/// `use_sliding_window`; qwen2/qwen3 on the layers `layer_types` calls "sliding_attention" (by
/// default those from `max_window_layers` on); qwen3_moe on every layer.
enum QwenWindows {
    static func read(_ r: ConfigReader, layers: Int, perLayer: Bool, used: inout Set<String>) throws -> (Int?, [Int]) {
        for key in ["sliding_window", "use_sliding_window"] { used.insert(key) }
        if perLayer { for key in ["max_window_layers", "layer_types"] { used.insert(key) } }
        let window = try r.int("sliding_window")
        let on = try r.bool("use_sliding_window") ?? false
        var types: [String]
        if perLayer, let v = r.value("layer_types") {
            guard let list = v.array, list.count == layers,
                list.allSatisfy({ $0.string == "full_attention" || $0.string == "sliding_attention" })
            else {
                throw r.fail(
                    "layer_types",
                    "expected \(layers) entries (num_hidden_layers), each \"full_attention\" or \"sliding_attention\"")
            }
            types = list.map { $0.string! }
        } else {
            let from = perLayer ? (try r.int("max_window_layers") ?? 28) : 0
            types = (0..<layers).map { on && window != nil && $0 >= from ? "sliding_attention" : "full_attention" }
        }
        guard on, let window else { return (nil, []) }
        let sliding = types.indices.filter { types[$0] == "sliding_attention" }
        return sliding.isEmpty ? (nil, []) : (window, sliding)
    }

    static func write(_ c: ModelConfig, into json: inout [String: JSON], perLayer: Bool) {
        json["hidden_act"] = "silu"
        json["rms_norm_eps"] = .float(c.normEps)
        json["use_sliding_window"] = .bool(c.slidingWindow != nil)
        json["sliding_window"] = c.slidingWindow.map { JSON($0) } ?? JSON.null
        if perLayer {
            json["max_window_layers"] = JSON(c.numHiddenLayers)
            json["layer_types"] = .array(
                (0..<c.numHiddenLayers).map {
                    c.window(layer: $0) == nil ? "full_attention" : "sliding_attention"
                })
        }
    }
}
