import Foundation

/// `DeciLMForCausalLM`, `model_type` `nemotron-nas`: the heterogeneous Llama that NVIDIA's Puzzle
/// writes (Llama-3.1-Nemotron-51B, Llama-3.3-Nemotron-Super-49B), which vLLM reads natively and
/// transformers through the checkpoint's own modeling file. Llama's numerics and tensor names;
/// each layer's `block_configs` entry says what it keeps:
/// - `attention`: `no_op` (no attention and no `input_layernorm`: the residual passes), else
///   `n_heads_in_group` query heads per key/value group (every layer has `num_attention_heads`
///   query heads; the groups are `num_attention_heads / n_heads_in_group`);
/// - `ffn`: `no_op` (no MLP and no `post_attention_layernorm`), else `ffn_mult`, the width being
///   `find_multiple(int(2 · ffn_mult · hidden_size / 3), 256)` (``width(ffnMult:hidden:)``).
///
/// Topiary holds the layers as ``ModelConfig/layerVariants``. A width the `ffn_mult` rule cannot
/// reach (not a multiple of 256) cannot be written in this format and is refused by ``validate``.
struct NemotronNAS: FamilyDefinition {
    var modelType: String { "nemotron-nas" }
    var architecture: String { "DeciLMForCausalLM" }
    var displayName: String { "Nemotron-NAS" }
    var requiresHeadsDivideHidden: Bool { true }
    var defaultMaxPositionEmbeddings: Int { 2048 }
    var biasKeys: [(key: String, refused: Bool)] { [("attention_bias", true), ("mlp_bias", true)] }

    /// The MLP width an `ffn_mult` gives, as the format's loaders compute it (in doubles, as
    /// Python does, the same operations in the same order).
    static func width(ffnMult: Double, hidden: Int) -> Int {
        let n = Int(2 * ffnMult * Double(hidden) / 3)
        return n % 256 == 0 ? n : n + 256 - n % 256
    }

    /// The `ffn_mult` that gives `width` (nil when none does: a width not a multiple of 256).
    static func ffnMult(width: Int, hidden: Int) -> Double? {
        guard width > 0, width % 256 == 0 else { return nil }
        let mult = Double(width) * 1.5 / Double(hidden)
        return Self.width(ffnMult: mult, hidden: hidden) == width ? mult : nil
    }

    func readLayerVariants(_ r: ConfigReader, heads: Int, hidden: Int, layers: Int, used: inout Set<String>) throws
        -> [LayerVariant]?
    {
        used.insert("block_configs")
        guard let list = r.value("block_configs") else { throw r.fail("block_configs", "missing") }
        guard let blocks = list.array, blocks.count == layers else {
            throw r.fail("block_configs", "expected one entry per layer (\(layers))")
        }
        /// Keys the format defines that Topiary accepts at their neutral value only.
        func neutral(_ o: [String: JSON], _ path: String, allowed: Set<String>) throws {
            for (key, value) in o where !allowed.contains(key) {
                switch key {
                case "replace_with_linear", "unshifted_sink", "use_prefill_window_in_sink_attention":
                    if value.bool == true { throw r.unsupported("\(path).\(key)", "true is not implemented") }
                case "sparsify", "window_length", "num_sink_tokens", "llama4", "mamba", "moe", "hidden_act":
                    if value != .null && !(key == "hidden_act" && value.string == "silu") {
                        throw r.unsupported("\(path).\(key)", "\(value) is not implemented")
                    }
                default: throw r.fail("\(path).\(key)", "unknown key")
                }
            }
        }
        return try blocks.enumerated().map { l, entry in
            let path = "block_configs[\(l)]"
            guard let o = entry.object else { throw r.fail(path, "expected an object") }
            try neutral(o, path, allowed: ["attention", "ffn", "parallel_blocks"])
            if let p = o["parallel_blocks"], p != .null {
                throw r.unsupported("\(path).parallel_blocks", "parallel blocks are not implemented")
            }
            guard let a = o["attention"]?.object else { throw r.fail("\(path).attention", "missing") }
            guard let f = o["ffn"]?.object else { throw r.fail("\(path).ffn", "missing") }
            try neutral(a, "\(path).attention", allowed: ["no_op", "n_heads_in_group"])
            try neutral(f, "\(path).ffn", allowed: ["no_op", "ffn_mult", "intermediate_size"])
            var groups: Int?
            if a["no_op"]?.bool != true {
                guard let k = a["n_heads_in_group"]?.int, k > 0, heads % k == 0 else {
                    throw r.fail(
                        "\(path).attention.n_heads_in_group", "a positive divisor of num_attention_heads \(heads)")
                }
                groups = heads / k
            }
            var width: Int?
            if f["no_op"]?.bool != true {
                if let n = f["intermediate_size"]?.int {
                    width = n
                } else if let m = f["ffn_mult"]?.double, m > 0 {
                    width = Self.width(ffnMult: m, hidden: hidden)
                } else {
                    throw r.fail("\(path).ffn.ffn_mult", "a positive number (or no_op)")
                }
            }
            return LayerVariant(keyValueGroups: groups, mlpWidth: width)
        }
    }

    func writeKeys(_ c: ModelConfig, into json: inout [String: JSON], rope: inout [String: JSON]) {
        json["hidden_act"] = "silu"
        json["rms_norm_eps"] = .float(c.normEps)
        json["attention_bias"] = false
        json["mlp_bias"] = false
        json["block_configs"] = .array(
            c.blocks.map { b in
                var attention: [String: JSON] = ["no_op": true, "replace_with_linear": false]
                if case let .attention(H, G, _, _, _) = b.mixer {
                    attention = ["no_op": false, "replace_with_linear": false, "n_heads_in_group": JSON(H / G)]
                }
                var ffn: [String: JSON] = ["no_op": true, "replace_with_linear": false]
                if case let .dense(F) = b.channelMixer {
                    // validate() has refused a width without an ffn_mult.
                    ffn = [
                        "no_op": false, "replace_with_linear": false,
                        "ffn_mult": .float(Self.ffnMult(width: F, hidden: c.hiddenSize) ?? 0)
                    ]
                }
                return ["attention": .object(attention), "ffn": .object(ffn)]
            })
        // transformers loads the format through the modeling file written beside the weights.
        json["auto_map"] = [
            "AutoConfig": "configuration_decilm.DeciLMConfig",
            "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM"
        ]
    }

    func validate(_ c: ModelConfig, file: String) throws {
        if let v = c.layerVariants, v.count != c.numHiddenLayers {
            throw ModelError.invalidConfig(
                file: file, key: "block_configs", reason: "\(v.count) entries for \(c.numHiddenLayers) layers")
        }
        for (l, b) in c.blocks.enumerated() {
            if case let .attention(H, G, _, _, _) = b.mixer, G <= 0 || H % G != 0 || G > c.numKeyValueHeads {
                throw ModelError.invalidConfig(
                    file: file, key: "block_configs[\(l)].attention",
                    reason: "\(G) key/value groups for \(H) heads (at most num_key_value_heads \(c.numKeyValueHeads))")
            }
            if case let .dense(F) = b.channelMixer {
                guard Self.ffnMult(width: F, hidden: c.hiddenSize) != nil, F <= c.intermediateSize else {
                    throw ModelError.invalidConfig(
                        file: file, key: "block_configs[\(l)].ffn",
                        reason:
                            "an MLP of width \(F) cannot be written as an ffn_mult (the format rounds widths up to a "
                            + "multiple of 256; at most intermediate_size \(c.intermediateSize))")
                }
            }
        }
    }
}

/// The nemotron-nas format's `ffn_mult` rule, for callers outside the family (a spec's block library).
public enum NemotronNASFormat {
    /// Whether an MLP of `width` can be written as an `ffn_mult` at `hidden`.
    public static func canWrite(width: Int, hidden: Int) -> Bool {
        NemotronNAS.ffnMult(width: width, hidden: hidden) != nil
    }
}

extension Family {
    public static let nemotronNAS = Family(NemotronNAS())
}
