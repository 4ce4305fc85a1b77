import Foundation
import Model
import Testing

/// Issue 26: every spelling of a Nemotron-H config reads to the same model, and what cannot be
/// run is refused naming the key.
@Suite struct HybridConfigTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/nemotron_h_hybrid/config.json")

    /// The fixture's config.json with some keys replaced (nil removes one).
    func variant(_ changes: [String: JSON?]) throws -> ModelConfig { try configVariant(Self.fixture, changes) }
    func refusal(_ changes: [String: JSON?]) -> String { configRefusal(Self.fixture, changes) }

    @Test func everySpellingReadsTheSameModel() throws {
        let base = try ModelConfig.load(Self.fixture)
        #expect(base.hybridLayers == [.mamba, .mlp, .attention, .mamba])
        #expect(base.mamba == MambaShape(heads: 4, headDim: 6, groups: 2, stateSize: 5, convKernel: 4))
        #expect(base.mambaChunkSize == 4 && base.mambaTimeStepMin == 0.01 && base.mambaConvBias)
        #expect(base.mambaTimeStepLimit == MambaTimeStepLimit(lower: 0.01, upper: 1))
        // time_step_limit as transformers writes an infinite end, as a string, and in its legacy
        // spelling (which wins); absent, [0, ∞).
        let infinite = MambaTimeStepLimit(lower: 0, upper: .infinity)
        #expect(try variant(["time_step_limit": [0, ["__float__": "Infinity"]]]).mambaTimeStepLimit == infinite)
        #expect(try variant(["time_step_limit": [0, "inf"]]).mambaTimeStepLimit == infinite)
        #expect(try variant(["time_step_limit": nil]).mambaTimeStepLimit == infinite)
        #expect(try variant(["mamba_dt_limit": [0.5, 2]]).mambaTimeStepLimit == MambaTimeStepLimit(lower: 0.5, upper: 2))
        let unbounded = try variant(["time_step_limit": [0, ["__float__": "Infinity"]]])
        #expect(try ModelConfig.decode(unbounded.json.data()) == unbounded)
        #expect(unbounded.json.object?["time_step_limit"] == [0.0, ["__float__": "Infinity"]])
        #expect(base.passthrough.unknown.isEmpty, "keys warned about: \(base.passthrough.unknown)")
        // The older names of the layer types, and the pattern string.
        let older = try variant(["layers_block_type": ["mamba", "mlp", "attention", "mamba"]])
        #expect(older.hybridLayers == base.hybridLayers && older.blocks == base.blocks)
        let pattern = try variant(["layers_block_type": nil, "hybrid_override_pattern": "M-*M"])
        #expect(pattern.hybridLayers == base.hybridLayers && pattern.blocks == base.blocks)
        // The mamba_* spellings of the Mamba2 keys (transformers prefers them when both are given).
        let legacy = try variant([
            "n_groups": nil, "mamba_n_groups": 2, "conv_kernel": 9, "mamba_d_conv": 4, "chunk_size": nil,
            "mamba_chunk_size": 4, "time_step_min": nil, "mamba_dt_min": 0.01
        ])
        #expect(legacy.mamba == base.mamba && legacy.mambaChunkSize == 4 && legacy.mambaTimeStepMin == 0.01)
        // num_hidden_layers is ignored, as transformers ignores it: the list gives the depth.
        #expect(try variant(["num_hidden_layers": 7]).numHiddenLayers == 4)
        // Written back, it reads the same.
        #expect(try ModelConfig.decode(base.json.data()) == base)
        let written = try #require(base.json.object)
        #expect(written["hybrid_override_pattern"]?.string == "M-*M")
        #expect(written["rope_parameters"] == nil && written["rope_theta"] == nil)
    }

    @Test func whatCannotRunIsRefusedNamingTheKey() {
        #expect(refusal(["layers_block_type": ["mamba", "conv"]]).contains("layers_block_type[1]"))
        #expect(refusal(["layers_block_type": nil, "hybrid_override_pattern": "M-x"]).contains("'x' at position 2"))
        #expect(refusal(["layers_block_type": []]).contains("no layers"))
        #expect(refusal(["n_groups": 3]).contains("n_groups"))
        #expect(refusal(["mamba_hidden_act": "gelu"]).contains("mamba_hidden_act"))
        #expect(refusal(["use_bias": true]).contains("use_bias"))
        #expect(refusal(["ssm_state_size": 0]).contains("ssm_state_size"))
        #expect(refusal(["mlp_hidden_act": "silu"]).contains("mlp_hidden_act"))
        #expect(refusal(["time_step_limit": [1]]).contains("time_step_limit"))
        #expect(refusal(["time_step_limit": [2, 1]]).contains("time_step_limit"))
        #expect(refusal(["mamba_dt_limit": ["x", 1]]).contains("mamba_dt_limit"))
    }

    static let moeFixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/nemotron_h_moe/config.json")
    static let latentFixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/nemotron_h_latent/config.json")

    /// Mixture-of-experts layers: their keys read (with the pattern letter E and the
    /// num_local_experts alias), written back alike, and what transformers' router cannot take
    /// refused naming the key.
    @Test func theMixtureConfigReadsAndRefuses() throws {
        let c = try ModelConfig.load(Self.moeFixture)
        #expect(c.hybridLayers == [.mamba, .moe, .attention, .moe] && c.isMixture && c.sparseLayerCount == 2)
        #expect(c.numLocalExperts == 6 && c.numExpertsPerTok == 2 && c.expertWidth == 12 && c.sharedExpertWidth == 20)
        #expect(c.routerGroups == 2 && c.routerTopKGroups == 1 && c.routedScalingFactor == 2.5 && c.normTopKProb)
        #expect(c.moeLatentSize == nil && c.routerAuxLossCoef == 0)
        #expect(c.passthrough.unknown.isEmpty, "keys warned about: \(c.passthrough.unknown)")
        #expect(c.blocks[1] == Block(mixer: .none, channelMixer: .experts(count: 6, topK: 2, width: 12, shared: 20)))
        #expect(try ModelConfig.decode(c.json.data()) == c)
        let pattern = try configVariant(Self.moeFixture, ["layers_block_type": nil, "hybrid_override_pattern": "ME*E"])
        #expect(pattern == c)
        let alias = try configVariant(Self.moeFixture, ["n_routed_experts": nil, "num_local_experts": 6])
        #expect(alias.numLocalExperts == 6)
        // A config without mixture layers keeps the mixture keys as metadata.
        #expect(!(try ModelConfig.load(Self.fixture)).isMixture)
        let latent = try ModelConfig.load(Self.latentFixture)
        #expect(latent.moeLatentSize == 16 && latent.expertInputWidth == 16 && !latent.normTopKProb)
        #expect(try ModelConfig.decode(latent.json.data()) == latent)
        func refusal(_ changes: [String: JSON?]) -> String { configRefusal(Self.moeFixture, changes) }
        #expect(refusal(["n_group": 4]).contains("n_group"))
        #expect(refusal(["n_group": 3, "n_routed_experts": 3]).contains("groups of at least 2"))
        #expect(refusal(["topk_group": 3]).contains("topk_group"))
        #expect(refusal(["num_experts_per_tok": 4]).contains("num_experts_per_tok"))
        #expect(refusal(["moe_latent_size": 0]).contains("moe_latent_size"))
        #expect(refusal(["moe_shared_expert_intermediate_size": 0]).contains("moe_shared_expert_intermediate_size"))
        #expect(refusal(["n_routed_experts": 0]).contains("n_routed_experts"))
    }

    /// Counts by hand for the latent fixture (C 32, V 61; Mamba H 2, P 8, 1 group, N 4, K 2; MLP
    /// 24; mixture E 4, k 3, F 10, shared 8, latent 16): the correction bias is a buffer, held in
    /// the layout but not counted, as transformers does not count it.
    @Test func mixtureParameterCountsByHand() throws {
        let c = try ModelConfig.load(Self.latentFixture)
        let (C, E, k, F, S, L) = (32, 4, 3, 10, 8, 16)
        let I = 16, convDim = I + 2 * 4, W = I + convDim + 2
        let mamba = C * W + convDim * 2 + convDim + 3 * 2 + I + I * C + C
        let mlp = 2 * C * 24 + C
        func moe(_ experts: Int) -> Int { C + E * C + experts * 2 * F * L + 2 * L * C + 2 * C * S }
        let embeddings = 2 * 61 * C
        #expect(c.parameterCount == embeddings + 2 * moe(E) + mamba + mlp + C)
        #expect(c.activeParameterCount == embeddings + 2 * moe(k) + mamba + mlp + C)
        #expect(c.nonEmbeddingParameterCount == c.parameterCount - embeddings)
        let layout = ParameterLayout(config: c)
        #expect(layout.parameterCount == c.parameterCount && layout.bufferCount == 2 * E)
    }

    /// transformers' Nemotron-H keeps its own LM head whatever tie_word_embeddings says (its
    /// fixture saves an lm_head that differs from the embedding): Topiary reads it untied.
    @Test func tieWordEmbeddingsIsIgnoredAsTransformersIgnoresIt() throws {
        let c = try variant(["tie_word_embeddings": true])
        #expect(!c.tieWordEmbeddings)
        #expect(ParameterLayout(config: c).entry("lm_head.weight") != nil)
    }

    /// Parameter counts by hand for the fixture's shape (C 32, V 61, F 40; Mamba H 4, P 6,
    /// groups 2, N 5, K 4; attention 4 heads, 2 groups of 8).
    @Test func parameterCountsByHand() throws {
        let c = try ModelConfig.load(Self.fixture)
        let I = 24, convDim = I + 2 * 2 * 5, W = I + convDim + 4
        let mamba = 32 * W + convDim * 4 + convDim + 3 * 4 + I + I * 32 + 32
        let mlp = 2 * 32 * 40 + 32
        let attention = 32 * (4 + 2 * 2) * 8 + 4 * 8 * 32 + 32
        let total = 2 * 61 * 32 + 2 * mamba + mlp + attention + 32
        #expect(c.parameterCount == total)
        #expect(ParameterLayout(config: c).count == total)
        #expect(c.activeParameterCount == total)
    }

    /// A hybrid layer carves what its type needs: a Mamba2-only model holds no attention
    /// probabilities (B·H·T² per attention layer), an attention layer does.
    @Test func hybridLayersCarveOnlyWhatTheirTypeNeeds() {
        let (B, T) = (2, 512), probabilities = 2 * 4 * 512 * 512
        let mamba = Activations.floatCount(config: hybridConfig(layers: [.mamba, .mamba, .mamba]), B: B, T: T)
        let withAttention = Activations.floatCount(config: hybridConfig(layers: [.mamba, .attention, .mamba]), B: B, T: T)
        #expect(mamba < probabilities, "\(mamba) floats")
        #expect(withAttention > mamba + probabilities)
    }
}
