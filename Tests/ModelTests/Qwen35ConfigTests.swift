import Foundation
import Model
import Testing

/// Issue 26: Qwen3.5 (`qwen3_5_text`) configs read in every spelling transformers accepts, are
/// written back so that they read the same, and what cannot be run is refused naming the key.
@Suite struct Qwen35ConfigTests {
    static let fixture = fixtures.appendingPathComponent("qwen3_5_hybrid/config.json")

    /// The fixture's config.json with some keys replaced (nil removes one).
    func variant(_ changes: [String: JSON?]) throws -> ModelConfig { try configVariant(Self.fixture, changes) }
    func refusal(_ changes: [String: JSON?]) -> String { configRefusal(Self.fixture, changes) }

    @Test func everySpellingReadsTheSameModel() throws {
        let base = try ModelConfig.load(Self.fixture)
        #expect(base.hybridLayers == [.deltaNet, .deltaNet, .attention, .deltaNet])
        #expect(base.deltaNet == DeltaNetShape(keyHeads: 2, valueHeads: 4, keyDim: 8, valueDim: 6, convKernel: 4))
        #expect(base.partialRotaryFactor == 0.25 && base.rotaryDim == 2)
        #expect(base.passthrough.unknown.isEmpty, "keys warned about: \(base.passthrough.unknown)")
        // Without layer_types, one attention layer in every full_attention_interval (default 4).
        #expect(try variant(["layer_types": nil]).hybridLayers == [.deltaNet, .deltaNet, .deltaNet, .attention])
        #expect(
            try variant(["layer_types": nil, "full_attention_interval": 2]).hybridLayers == [
                .deltaNet, .attention, .deltaNet, .attention
            ])
        // The multimodal rope keys of the full Qwen3.5 config change nothing for text.
        let mrope = try variant([
            "rope_parameters": [
                "rope_type": "default", "rope_theta": 10000, "partial_rotary_factor": 0.25,
                "mrope_section": [11, 11, 10], "mrope_interleaved": true
            ]
        ])
        #expect(mrope.blocks == base.blocks && mrope.rotaryDim == 2)
        // partial_rotary_factor defaults to a quarter, as transformers sets it.
        #expect(try variant(["rope_parameters": ["rope_type": "default", "rope_theta": 10000]]).rotaryDim == 2)
        // Written back, it reads the same.
        #expect(try ModelConfig.decode(base.json.data()) == base)
        let written = try #require(base.json.object)
        #expect(written["layer_types"]?.array?.compactMap(\.string) == [
            "linear_attention", "linear_attention", "full_attention", "linear_attention"
        ])
    }

    @Test func whatCannotRunIsRefusedNamingTheKey() {
        #expect(refusal(["layer_types": ["linear_attention", "sliding_attention", "full_attention", "linear_attention"]])
            .contains("layer_types[1]"))
        #expect(refusal(["layer_types": ["linear_attention", "full_attention"]]).contains("num_hidden_layers is 4"))
        #expect(refusal(["linear_num_value_heads": 3]).contains("linear_num_value_heads"))
        #expect(refusal(["linear_key_head_dim": 0]).contains("linear_key_head_dim"))
        #expect(refusal(["attention_bias": true]).contains("attention_bias"))
        #expect(refusal(["hidden_act": "gelu"]).contains("hidden_act"))
        #expect(
            refusal(["rope_parameters": ["rope_type": "default", "rope_theta": 10000, "mrope_sections": [1]]])
                .contains("mrope_sections"))
    }

    /// Parameter counts by hand for the fixture's shape (C 32, V 61, F 40; DeltaNet 2 key heads
    /// of 8, 4 value heads of 6, K 4; attention 4 heads of 8 with their gates, 2 groups), and
    /// equal to the checkpoint transformers saved.
    @Test func parameterCountsByHand() throws {
        let c = try ModelConfig.load(Self.fixture)
        let convDim = 2 * 2 * 8 + 4 * 6, W = convDim + 24 + 2 * 4
        let deltaNet = 32 * W + convDim * 4 + 2 * 4 + 6 + 24 * 32
        let attention = 32 * (2 * 4 + 2 * 2) * 8 + 4 * 8 * 32 + 2 * 8
        let mlp = 3 * 32 * 40, norms = 2 * 32
        let total = 2 * 61 * 32 + 3 * (deltaNet + mlp + norms) + attention + mlp + norms + 32
        #expect(c.parameterCount == total)
        #expect(ParameterLayout(config: c).count == total)
        let file = try SafeTensorsFile(url: fixtures.appendingPathComponent("qwen3_5_hybrid/model.safetensors"))
        #expect(try file.tensors.keys.reduce(0) { $0 + (try file.info($1).count) } == total)
    }

    /// Qwen3.5-MoE (`qwen3_5_moe_text`): every layer's MLP is a mixture with a shared expert, whose
    /// width is `shared_expert_intermediate_size` (there is no intermediate_size); the router
    /// always renormalises its k gates. Read, written back, counted by hand and refused by key.
    @Test func theMixtureConfigReadsCountsAndRefuses() throws {
        let file = fixtures.appendingPathComponent("qwen3_5_moe_hybrid/config.json")
        let c = try ModelConfig.load(file)
        #expect(c.family == .qwen35Moe && c.passthrough.unknown.isEmpty, "\(c.passthrough.unknown)")
        #expect(c.numLocalExperts == 4 && c.numExpertsPerTok == 2 && c.expertWidth == 12 && c.intermediateSize == 20)
        #expect(c.normTopKProb && c.outputRouterLogits && c.routerAuxLossCoef == 0.02)
        #expect(c.blocks.allSatisfy { $0.channelMixer == .experts(count: 4, topK: 2, width: 12, shared: 20) })
        #expect(try ModelConfig.decode(c.json.data()) == c)
        let written = try #require(c.json.object)
        #expect(written["intermediate_size"] == nil && written["shared_expert_intermediate_size"]?.int == 20)
        // By hand (C 32, V 61; DeltaNet 2 key heads of 8, 4 value heads of 6, K 4; attention 4 heads
        // of 8 with gates, 2 groups): each mixture is a router (4, C), 4 experts of 3·12·C, a shared
        // expert of 3·20·C and its (1, C) gate; k = 2 experts are active.
        let convDim = 2 * 2 * 8 + 4 * 6, W = convDim + 24 + 2 * 4
        let deltaNet = 32 * W + convDim * 4 + 2 * 4 + 6 + 24 * 32
        let attention = 32 * (2 * 4 + 2 * 2) * 8 + 4 * 8 * 32 + 2 * 8
        let shared = 4 * 32 + 3 * 32 * 20 + 32, experts = 3 * 32 * 12, norms = 2 * 32
        let total = 2 * 61 * 32 + 2 * deltaNet + attention + 3 * (shared + 4 * experts + norms) + 32
        #expect(c.parameterCount == total && ParameterLayout(config: c).count == total)
        #expect(c.activeParameterCount == total - 3 * 2 * experts)
        let weights = try SafeTensorsFile(url: fixtures.appendingPathComponent("qwen3_5_moe_hybrid/model.safetensors"))
        #expect(try weights.tensors.keys.reduce(0) { $0 + (try weights.info($1).count) } == total)
        func refusal(_ changes: [String: JSON?]) -> String { configRefusal(file, changes) }
        #expect(refusal(["shared_expert_intermediate_size": nil]).contains("shared_expert_intermediate_size"))
        #expect(refusal(["moe_intermediate_size": 0]).contains("moe_intermediate_size"))
        #expect(refusal(["num_experts_per_tok": 5]).contains("num_experts_per_tok"))
    }

    /// RMSNorm scales by 1 + w: the checkpoint's w is read as 1 + w and written back as w, bit for bit.
    @Test func zeroCenteredNormsRoundTrip() throws {
        let dir = fixtures.appendingPathComponent("qwen3_5_tied")
        let model = try Checkpoint.load(dir)
        let name = "model.layers.0.input_layernorm.weight"
        let stored = try SafeTensorsFile(url: dir.appendingPathComponent("model.safetensors")).floats(name)
        #expect(Array(model.tensor(name)!) == stored.map { $0 + 1 })
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("qwen35-roundtrip-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        try Checkpoint.save(model, to: out)
        let again = try SafeTensorsFile(url: out.appendingPathComponent("model.safetensors")).floats(name)
        #expect(zip(again, stored).allSatisfy { abs($0 - $1) <= 1e-7 })
        #expect(Array(try Checkpoint.load(out).tensor(name)!) == Array(model.tensor(name)!))
    }

    /// Qwen3.5 as it ships: a `qwen3_5` vision-language config. Its language model is read from
    /// `text_config` (errors name the key there), its `model.language_model.*` tensors as the text
    /// model's with the vision tower left out, and a model written from it is `qwen3_5_text`, which
    /// reads back the same.
    @Test func theVisionLanguageCheckpointReadsAsItsLanguageModel() throws {
        let dir = fixtures.appendingPathComponent("qwen3_5_vl")
        let file = dir.appendingPathComponent("config.json")
        let c = try ModelConfig.load(file)
        #expect(c.family == .qwen35 && c.tieWordEmbeddings && c.hybridLayers == [.deltaNet, .attention])
        #expect(c.passthrough.unknown.isEmpty, "keys warned about: \(c.passthrough.unknown)")
        #expect(configRefusal(file, ["text_config": nil]).contains("text_config"))
        var text = try #require(JSON.parse(try Data(contentsOf: file))?["text_config"]?.object)
        text["hidden_act"] = "gelu"
        #expect(configRefusal(file, ["text_config": .object(text)]).contains("text_config.hidden_act"))
        text["hidden_act"] = "silu"
        text["model_type"] = "qwen3_5_moe_text"
        #expect(configRefusal(file, ["text_config": .object(text)]).contains("text_config.model_type"))
        // The text config's own tie_word_embeddings, as transformers reads it (default false).
        text["model_type"] = "qwen3_5_text"
        text["tie_word_embeddings"] = nil
        #expect(try !configVariant(file, ["text_config": .object(text), "tie_word_embeddings": true]).tieWordEmbeddings)
        // The weights: the stored tensors under model.language_model., the vision tower's ignored.
        let stored = try SafeTensorsFile(url: dir.appendingPathComponent("model.safetensors"))
        #expect(stored.tensors.keys.contains { $0.hasPrefix("model.visual.") })
        let model = try Checkpoint.load(dir)
        let name = "layers.1.self_attn.q_proj.weight"
        #expect(Array(model.tensor("model." + name)!) == (try stored.floats("model.language_model." + name)))
        // Streamed from the files (as a search reads a teacher), the same weights.
        var streamed: [Float] = []
        try CheckpointWeights(dir).streamFloat32 { raw in streamed += raw.bindMemory(to: Float.self) }
        #expect(streamed == model.parameters.array)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("qwen35-vl-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        try Checkpoint.save(model, to: out)
        let written = try ModelConfig.load(out.appendingPathComponent("config.json"))
        #expect(written == c && written.json["model_type"]?.string == "qwen3_5_text")
        #expect(try Checkpoint.load(out).parameters.array == model.parameters.array)
    }
}
