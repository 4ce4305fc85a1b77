import Foundation
@testable import Model
import Testing

/// Issue 27: a decoder whose layers differ, held as nemotron-nas `block_configs` (Puzzle's
/// format): its counts by hand, its config and checkpoint round trips, and the refusals.
struct HeterogeneousTests {
    @Test func parametersAndLayoutFollowEachLayer() throws {
        let c = heterogeneousConfig()
        // Layer 0: norms 2·16, q 16·16, k and v 2·4·16 each, o 16·16, MLP 3·16·512.
        let l0 = 32 + 256 + 128 + 128 + 256 + 3 * 16 * 512
        let l1 = 16 + 3 * 16 * 256                    // no attention: one norm and the MLP
        let l2 = 16 + 256 + 64 + 64 + 256             // one group, no MLP
        let l3 = 0                                    // neither
        let l4 = 32 + 256 + 128 + 128 + 256 + 3 * 16 * 256
        #expect(c.parameterCount == l0 + l1 + l2 + l3 + l4 + 2 * 23 * 16 + 16)
        #expect(c.parameterCount == 52176)
        let layout = ParameterLayout(config: c)
        #expect(layout.count == c.parameterCount)
        let names = Set(layout.entries.map(\.name))
        #expect(!names.contains { $0.hasPrefix("model.layers.3.") })
        #expect(!names.contains("model.layers.1.input_layernorm.weight") && !names.contains("model.layers.1.self_attn.q_proj.weight"))
        #expect(names.contains("model.layers.1.post_attention_layernorm.weight"))
        #expect(!names.contains("model.layers.2.post_attention_layernorm.weight") && !names.contains("model.layers.2.mlp.up_proj.weight"))
        #expect(layout.entry("model.layers.2.self_attn.k_proj.weight")?.shape == [4, 16])
        #expect(layout.entry("model.layers.4.mlp.down_proj.weight")?.shape == [16, 256])
        // The KV cache holds the layers with attention only: 2·G·D = 16, 8, 16 values a position.
        let cost = c.inferenceCost(Workload(batch: 1, context: 10, weights: .float32))
        #expect(cost.kvCacheBytes == (16 + 8 + 16) * 10 * 4)
        #expect(cost.decodeFLOPsPerToken == 2 * c.matmulParameterCount + 3 * 4 * 4 * 4 * 10)
    }

    @Test func configAndCheckpointRoundTrip() throws {
        let c = heterogeneousConfig()
        let json = c.json
        #expect(json["model_type"]?.string == "nemotron-nas")
        #expect(json["architectures"]?.array?.first?.string == "DeciLMForCausalLM")
        let blocks = try #require(json["block_configs"]?.array)
        #expect(blocks.count == 5)
        #expect(blocks[0]["attention"]?["n_heads_in_group"]?.int == 2 && blocks[0]["ffn"]?["ffn_mult"]?.double == 48)
        #expect(blocks[1]["attention"]?["no_op"]?.bool == true && blocks[1]["ffn"]?["ffn_mult"]?.double == 24)
        #expect(blocks[2]["attention"]?["n_heads_in_group"]?.int == 4 && blocks[2]["ffn"]?["no_op"]?.bool == true)
        let back = try ModelConfig.decode(json.data())
        #expect(back == c)
        // Weights too, and the forward pass of what was loaded equals the original's.
        let m = DecoderModel(config: c)
        m.initialize(seed: 5)
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try Checkpoint.save(m, to: dir)
        let loaded = try Checkpoint.load(dir)
        #expect(loaded.config == c && loaded.parameters.array == m.parameters.array)
        let tokens: [Int32] = [1, 5, 9, 2, 7, 3]
        let a = Activations(config: c, batch: 1, sequence: 6), b = Activations(config: c, batch: 1, sequence: 6)
        try m.forward(tokens: tokens, a)
        try loaded.forward(tokens: tokens, b)
        #expect(Array(a.logits) == Array(b.logits))
        // A layer with neither attention nor MLP passes its input through.
        #expect(Array(a.hidden(3)) == Array(a.hidden(4)))
    }

    /// The `ffn_mult` rule of the format's loaders: int(2 · mult · C / 3) rounded up to 256.
    @Test func ffnMultRule() {
        #expect(NemotronNAS.width(ffnMult: 1.3, hidden: 8192) == 7168)  // int(7099.73) → 7168
        #expect(NemotronNAS.width(ffnMult: 5.25, hidden: 4096) == 14336) // Llama-3.1-8B's own width
        #expect(NemotronNAS.ffnMult(width: 14336, hidden: 4096) == 5.25)
        #expect(NemotronNAS.ffnMult(width: 300, hidden: 16) == nil)
        for width in stride(from: 256, through: 28672, by: 256) {
            let m = NemotronNAS.ffnMult(width: width, hidden: 4096)
            #expect(m.map { NemotronNAS.width(ffnMult: $0, hidden: 4096) } == width, "\(width)")
        }
    }

    /// `first` as layer 0's entry, then four layers of neither attention nor MLP.
    static func blocks(_ first: JSON) -> JSON {
        .array([first] + Array(repeating: ["attention": ["no_op": true], "ffn": ["no_op": true]], count: 4))
    }

    static let badConfigs: [(String, JSON)] = [
        ("block_configs[0].attention.n_heads_in_group", blocks(["attention": ["n_heads_in_group": 3], "ffn": ["ffn_mult": 48]])),
        ("block_configs", .array([["attention": ["no_op": true], "ffn": ["no_op": true]]])),
        ("block_configs[0].attention.replace_with_linear",
         blocks(["attention": ["no_op": false, "n_heads_in_group": 2, "replace_with_linear": true], "ffn": ["ffn_mult": 48]])),
        ("block_configs[0].ffn.sparsify", blocks(["attention": ["n_heads_in_group": 2], "ffn": ["ffn_mult": 48, "sparsify": ["x"]]])),
        ("block_configs[0].ffn", blocks(["attention": ["n_heads_in_group": 2], "ffn": ["intermediate_size": 300]])),
    ]

    @Test(arguments: badConfigs.indices)
    func badBlockConfigsNameTheirKey(_ i: Int) throws {
        let (key, blocks) = Self.badConfigs[i]
        var json = heterogeneousConfig().json.object!
        json["block_configs"] = blocks
        #expect { _ = try ModelConfig.decode(JSON.object(json).data()) } throws: { error in
            "\(error)".contains(key)
        }
    }

    /// Neutral values of the format's other keys (as NVIDIA's checkpoints write them) are read.
    @Test func neutralKeysOfReleasedCheckpointsAreRead() throws {
        var json = heterogeneousConfig().json.object!
        let attention: JSON = ["no_op": false, "replace_with_linear": false, "sparsify": .null, "n_heads_in_group": 2,
                               "window_length": .null, "num_sink_tokens": .null, "use_prefill_window_in_sink_attention": false,
                               "unshifted_sink": false]
        let ffn: JSON = ["no_op": false, "replace_with_linear": false, "sparsify": .null, "ffn_mult": 24]
        json["block_configs"] = .array(Array(repeating: ["attention": attention, "ffn": ffn], count: 5))
        let c = try ModelConfig.decode(JSON.object(json).data())
        #expect(c.layerVariants == Array(repeating: LayerVariant(keyValueGroups: 2, mlpWidth: 256), count: 5))
        #expect(c.intermediateSize == 256)
    }
}
