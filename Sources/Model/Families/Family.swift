import Foundation

/// What one model family is: its Hugging Face config keys and their transformers defaults, its
/// numerics (the kind of norm, MLP, attention and router), its tensor names, and the axes a
/// search may vary. One type per family under `Sources/Model/Families/`, registered by its
/// `model_type` in ``Family/allCases``; the rest of Topiary asks the family through ``Family``
/// and never names one.
///
/// Every requirement has the llama answer as its default, so a family states only how it
/// differs.
public protocol FamilyDefinition: Sendable {
    /// The `model_type` of `config.json`.
    var modelType: String { get }
    /// The `architectures` entry transformers writes.
    var architecture: String { get }
    /// The name in prose ("JetMoE").
    var displayName: String { get }

    // MARK: numerics
    /// SwiGLU MLPs (false: squared ReLU, nemotron).
    var isGated: Bool { get }
    /// LayerNorm1P with biases (nemotron) rather than RMSNorm.
    var hasNormBias: Bool { get }
    /// The MLP is a mixture of experts.
    var isMixture: Bool { get }
    /// Attention is a mixture of experts too (JetMoE's MoA): G·k query heads, derived, with
    /// query head j·G + g of choice j reading key/value head g.
    var hasAttentionExperts: Bool { get }
    /// Biases on the query, key and value projections (qwen2).
    var hasQKVBias: Bool { get }
    /// Per-head RMSNorm on queries and keys before rotary (qwen3, qwen3_moe).
    var hasQKNorm: Bool { get }
    /// transformers refuses a hidden_size that is not a multiple of num_attention_heads.
    var requiresHeadsDivideHidden: Bool { get }
    /// Routers take the top-k logits and a softmax over those k (JetMoE), rather than a softmax
    /// over all experts and then the top k.
    var routesTopKThenSoftmax: Bool { get }
    /// The experts' width is its own key, `moe_intermediate_size` (qwen3_moe); otherwise it is
    /// `intermediate_size`.
    var hasSeparateExpertWidth: Bool { get }
    /// Each mixture MLP adds a bias to its output (JetMoE).
    var expertsHaveOutputBias: Bool { get }
    /// Some layers may keep a dense MLP (qwen3_moe's `mlp_only_layers`, `decoder_sparse_step`).
    var allowsDenseMLPLayers: Bool { get }
    /// `norm_topk_prob` is a key of the config (qwen3_moe); Mixtral always renormalises.
    var hasNormTopKProbKey: Bool { get }
    /// ε of the per-layer norms when the family fixes it whatever the config says (transformers
    /// builds JetMoE's with RMSNorm's default 1e-6); nil: the config's.
    var layerNormEps: Double? { get }

    // MARK: config keys and the defaults transformers gives them
    var epsKey: String { get }
    var activationKey: String { get }
    /// The only activation implemented for the family.
    var activation: String { get }
    var auxLossKey: String { get }
    var defaultNormEps: Double { get }
    var defaultRopeTheta: Double { get }
    var defaultPartialRotaryFactor: Double { get }
    var defaultRouterAuxLossCoef: Double { get }
    var defaultNormTopKProb: Bool { get }
    var defaultMaxPositionEmbeddings: Int { get }
    var defaultInitializerRange: Double { get }
    var defaultTieWordEmbeddings: Bool { get }
    /// Whether `partial_rotary_factor` below 1 is implemented (nemotron).
    var allowsPartialRotary: Bool { get }
    /// Bias switches the config has: the key, and whether `true` is refused (qwen2's attention
    /// has its q/k/v biases whatever `attention_bias` says).
    var biasKeys: [(key: String, refused: Bool)] { get }
    /// The heads, key/value heads and head width a config names (JetMoE: `kv_channels`, and
    /// query heads derived).
    func readAttentionShape(_ r: ConfigReader, expertsPerToken: Int, used: inout Set<String>) throws
        -> (heads: Int?, kvHeads: Int?, headDim: Int?)
    /// The mixture keys (experts, top-k, the load-balancing coefficient, …); dense families none.
    func readMixture(_ r: ConfigReader, layers: Int, used: inout Set<String>) throws -> MixtureKeys
    /// The sliding window and the layers it applies to, as transformers 5 derives them; families
    /// without window keys ignore them as transformers does.
    func readSlidingWindow(_ r: ConfigReader, layers: Int, used: inout Set<String>) throws -> (Int?, [Int])
    /// A heterogeneous family's per-layer variants (nemotron-nas `block_configs`); nil for the
    /// families whose layers follow the config's shape.
    func readLayerVariants(_ r: ConfigReader, heads: Int, hidden: Int, layers: Int, used: inout Set<String>) throws
        -> [LayerVariant]?
    /// Python files a checkpoint of the family carries for transformers' `trust_remote_code`
    /// (name → text), written beside `config.json`; none for the families transformers ships.
    var remoteCode: [String: String] { get }
    /// Writes the family's own keys of `config.json` (and of `rope_parameters`).
    func writeKeys(_ c: ModelConfig, into json: inout [String: JSON], rope: inout [String: JSON])
    /// Shape rules of the family beyond those every family shares.
    func validate(_ c: ModelConfig, file: String) throws

    // MARK: search
    /// The config keys a search space may vary and a pruning target may set.
    var axes: [Axis] { get }
    /// The axes of one config of the family (by default ``axes``; Nemotron-H without mixture
    /// layers has no expert axes).
    func axes(for c: ModelConfig) -> [Axis]
    /// Query heads the family derives from other axes (JetMoE: G × k); nil when they are free.
    func derivedQueryHeads(_ c: ModelConfig) -> Int?

    // MARK: hybrid decoders
    /// Rotary position embeddings on attention (Nemotron-H's attention has none).
    var hasRotary: Bool { get }
    /// Whether `tie_word_embeddings` ties the LM head to the embedding (transformers' Nemotron-H
    /// has no tied keys: it always keeps its own head).
    var canTieEmbeddings: Bool { get }
    /// A hybrid family's layer types and Mamba2 settings (Nemotron-H); nil for the families
    /// whose layers are all attention then an MLP. The layer count is then the list's length.
    func readHybrid(_ r: ConfigReader, used: inout Set<String>) throws -> HybridKeys?
    /// A hybrid layer's mixer is followed by an MLP (Qwen3.5); Nemotron-H's layers are one each.
    var hybridMixersHaveMLP: Bool { get }
    /// Attention's output is gated per channel by σ(gate), the gate projected with the queries
    /// (Qwen3.5's `q_proj` of 2·H·D rows: each head's queries then its gate).
    var hasGatedAttention: Bool { get }
    /// RMSNorm scales by 1 + w (Qwen3.5's `Qwen3_5RMSNorm`, weights initialised to 0). Topiary
    /// holds 1 + w in memory, adding 1 when a checkpoint is read and subtracting it when one
    /// is written, so that the engine's norms are the same for every family.
    var hasZeroCenteredNorms: Bool { get }
    /// Every mixture layer has a shared expert beside its routed ones: a SwiGLU MLP of
    /// ``ModelConfig/intermediateSize`` neurons scaled per token by σ(w·x) (Qwen3.5-MoE's
    /// `shared_expert` and `shared_expert_gate`).
    var hasSharedExpert: Bool { get }
    /// The shared expert's width in a config (0: none); by default ``ModelConfig/intermediateSize``
    /// where the family has one.
    func sharedExpertWidth(_ c: ModelConfig) -> Int
    /// The `model_type` of the vision-language model whose `text_config` is this family's (Qwen3.5's
    /// `qwen3_5`); nil for a family that ships as text alone.
    var visionLanguageModelType: String? { get }
    /// The config key of the shared expert's width.
    var sharedExpertWidthKey: String { get }
    /// The shared expert's output is scaled by σ(w·x) (Qwen3.5-MoE's `shared_expert_gate`);
    /// Nemotron-H's is added as it is.
    var hasSharedExpertGate: Bool { get }
    /// Routers score experts by a sigmoid and choose by score plus a per-expert correction bias
    /// (`e_score_correction_bias`), within the best `topk_group` of `n_group` groups, the k gates
    /// optionally renormalised and scaled by `routed_scaling_factor` (Nemotron-H, as DeepSeek-V3).
    var routesBySigmoid: Bool { get }
    /// The config key of the expert count (``ModelConfig/numLocalExperts``).
    var expertCountKey: String { get }
    /// The config key of ``ModelConfig/intermediateSize`` (Qwen3.5-MoE has no dense MLP: its
    /// `shared_expert_intermediate_size`).
    var intermediateSizeKey: String { get }
    /// Keys of `rope_parameters` the family's config may carry that change nothing for text
    /// (Qwen3.5's multimodal `mrope_section`, `mrope_interleaved`).
    var ignoredRopeKeys: Set<String> { get }
    /// Keys the family's transformers config defines that change no forward arithmetic (its
    /// initialisation, cache dtypes, keys of a block type the config has none of): kept and
    /// written back, not warned about.
    var metadataKeys: Set<String> { get }

    // MARK: tensors
    /// The checkpoint names of the parts every family has: the token embedding, the final
    /// norm's prefix, layer l's prefix, and the norms before a block's mixer and channel mixer.
    var embeddingName: String { get }
    var finalNormName: String { get }
    func layerPrefix(_ l: Int) -> String
    var mixerNormName: String { get }
    var channelMixerNormName: String { get }
    /// One block's mixer tensors, named inside the layer (`self_attn.q_proj.weight`).
    func mixerTensors(_ mixer: Block.Mixer, _ c: ModelConfig) -> [TensorSpec]
    /// One block's channel-mixer tensors, named inside the layer.
    func channelMixerTensors(_ mixer: Block.ChannelMixer, _ c: ModelConfig) -> [TensorSpec]
}

/// A hybrid config's layers and Mamba2 settings (``FamilyDefinition/readHybrid(_:used:)``).
public struct HybridKeys: Sendable {
    public var layers: [HybridLayer]
    public var mamba: MambaShape?
    public var deltaNet: DeltaNetShape? = nil
    public var convBias = true
    public var timeStepMin = 0.001
    public var timeStepLimit = MambaTimeStepLimit()
    public var chunkSize = 128
    /// The mixture keys of a hybrid decoder with mixture-of-experts layers (Nemotron-H's `moe`).
    public var mixture: MixtureKeys? = nil
    public init(layers: [HybridLayer], mamba: MambaShape?) {
        self.layers = layers
        self.mamba = mamba
    }
}

/// A mixture's config values (zero and nil for dense families).
public struct MixtureKeys: Sendable {
    public var experts = 0, perToken = 0
    public var auxCoef: Double? = nil
    public var routerLogits = false
    public var expertWidth: Int? = nil
    public var normTopK: Bool? = nil
    public var denseLayers: [Int] = []
    /// Nemotron-H: the shared expert's width, the latent width, and the sigmoid router's scale,
    /// groups and groups kept per token (``ModelConfig/moeSharedExpertIntermediateSize`` …).
    public var sharedWidth = 0
    public var latent: Int? = nil
    public var scaling = 1.0
    public var groups = 1, topKGroups = 1
    public init() {}
}

extension FamilyDefinition {
    public var displayName: String { architecture.replacingOccurrences(of: "ForCausalLM", with: "") }
    public var isGated: Bool { true }
    public var hasNormBias: Bool { false }
    public var isMixture: Bool { false }
    public var hasAttentionExperts: Bool { false }
    public var hasQKVBias: Bool { false }
    public var hasQKNorm: Bool { false }
    public var requiresHeadsDivideHidden: Bool { false }
    public var routesTopKThenSoftmax: Bool { false }
    public var hasSeparateExpertWidth: Bool { false }
    public var expertsHaveOutputBias: Bool { false }
    public var allowsDenseMLPLayers: Bool { false }
    public var hasNormTopKProbKey: Bool { false }
    public var layerNormEps: Double? { nil }

    public var epsKey: String { "rms_norm_eps" }
    public var activationKey: String { "hidden_act" }
    public var activation: String { "silu" }
    public var auxLossKey: String { "router_aux_loss_coef" }
    public var defaultNormEps: Double { 1e-6 }
    public var defaultRopeTheta: Double { 10000 }
    public var defaultPartialRotaryFactor: Double { 1 }
    public var defaultRouterAuxLossCoef: Double { 0.001 }
    public var defaultNormTopKProb: Bool { false }
    public var defaultMaxPositionEmbeddings: Int { 4096 }
    public var defaultInitializerRange: Double { 0.02 }
    public var defaultTieWordEmbeddings: Bool { false }
    public var allowsPartialRotary: Bool { false }
    public var biasKeys: [(key: String, refused: Bool)] { [] }
    public var hasRotary: Bool { true }
    public var canTieEmbeddings: Bool { true }
    public func readHybrid(_ r: ConfigReader, used: inout Set<String>) throws -> HybridKeys? { nil }
    public var metadataKeys: Set<String> { [] }
    public var hybridMixersHaveMLP: Bool { false }
    public var hasGatedAttention: Bool { false }
    public var hasZeroCenteredNorms: Bool { false }
    public var hasSharedExpert: Bool { false }
    public func sharedExpertWidth(_ c: ModelConfig) -> Int { hasSharedExpert ? c.intermediateSize : 0 }
    public var hasSharedExpertGate: Bool { hasSharedExpert }
    public var sharedExpertWidthKey: String { intermediateSizeKey }
    public var visionLanguageModelType: String? { nil }
    public var routesBySigmoid: Bool { false }
    public var expertCountKey: String { "num_local_experts" }
    public var intermediateSizeKey: String { "intermediate_size" }
    public var ignoredRopeKeys: Set<String> { [] }
    public var embeddingName: String { ParameterLayout.embeddingName }
    public var finalNormName: String { "model.norm" }
    public func layerPrefix(_ l: Int) -> String { ParameterLayout.layerPrefix(l) }
    public var mixerNormName: String { "input_layernorm" }
    public var channelMixerNormName: String { "post_attention_layernorm" }

    public func readAttentionShape(_ r: ConfigReader, expertsPerToken: Int, used: inout Set<String>) throws
        -> (heads: Int?, kvHeads: Int?, headDim: Int?)
    {
        (try r.int("num_attention_heads"), try r.int("num_key_value_heads"), try r.int("head_dim"))
    }
    public func readMixture(_ r: ConfigReader, layers: Int, used: inout Set<String>) throws -> MixtureKeys {
        MixtureKeys()
    }
    public func readSlidingWindow(_ r: ConfigReader, layers: Int, used: inout Set<String>) throws -> (Int?, [Int]) {
        (nil, [])
    }
    public var remoteCode: [String: String] { [:] }
    public func readLayerVariants(
        _ r: ConfigReader, heads: Int, hidden: Int, layers: Int, used: inout Set<String>
    ) throws -> [LayerVariant]? { nil }
    public func writeKeys(_ c: ModelConfig, into json: inout [String: JSON], rope: inout [String: JSON]) {
        json["hidden_act"] = "silu"
        json["rms_norm_eps"] = .float(c.normEps)
    }
    public func validate(_ c: ModelConfig, file: String) throws {}

    public var axes: [Axis] { Axis.dense }
    public func axes(for c: ModelConfig) -> [Axis] { axes }
    public func derivedQueryHeads(_ c: ModelConfig) -> Int? { nil }

    public func mixerTensors(_ mixer: Block.Mixer, _ c: ModelConfig) -> [TensorSpec] {
        LlamaTensors.attention(mixer, c, bias: hasQKVBias, qkNorm: hasQKNorm)
    }
    public func channelMixerTensors(_ mixer: Block.ChannelMixer, _ c: ModelConfig) -> [TensorSpec] {
        LlamaTensors.mlp(mixer, c, gated: isGated)
    }

    /// Refuses the first of `values` (a value and its config key) that is not positive.
    func requirePositive(_ values: [(Int, String)], file: String) throws {
        for (value, key) in values where value <= 0 {
            throw ModelError.invalidConfig(file: file, key: key, reason: "must be positive, got \(value)")
        }
    }

    /// Mixtral-style expert counts: `num_local_experts` (default 8) and `num_experts_per_tok`
    /// (default 2), then the router-loss keys (``readRouterLoss(_:into:used:)``).
    func readLocalExperts(_ r: ConfigReader, used: inout Set<String>) throws -> MixtureKeys {
        var keys = MixtureKeys()
        for key in ["num_local_experts", "num_experts_per_tok"] { used.insert(key) }
        keys.experts = try r.int("num_local_experts") ?? 8
        keys.perToken = try r.int("num_experts_per_tok") ?? 2
        try readRouterLoss(r, into: &keys, used: &used)
        return keys
    }

    /// The keys every mixture reads: its load-balancing coefficient and `output_router_logits`.
    func readRouterLoss(_ r: ConfigReader, into keys: inout MixtureKeys, used: inout Set<String>) throws {
        for key in [auxLossKey, "output_router_logits"] { used.insert(key) }
        keys.auxCoef = try r.double(auxLossKey)
        keys.routerLogits = try r.bool("output_router_logits") ?? false
    }
}

/// A model family, named by its Hugging Face `model_type`: a handle on its
/// ``FamilyDefinition``. The families are the registered ones (``allCases``), each a static
/// member declared in its own file (`Family.llama` in `Families/Llama.swift`).
public struct Family: Sendable, Hashable, CaseIterable, Codable, RawRepresentable, CustomStringConvertible {
    public let definition: any FamilyDefinition

    init(_ definition: any FamilyDefinition) { self.definition = definition }

    /// The registry: every family the engine implements, by `model_type`. A new family is one
    /// file under `Sources/Model/Families/` and its line here.
    public static let allCases: [Family] = [
        .llama, .nemotron, .mixtral, .jetmoe, .qwen2, .qwen3, .mistral, .qwen3Moe, .nemotronNAS, .nemotronH, .qwen35,
        .qwen35Moe
    ]

    private static let byModelType: [String: Family] = Dictionary(
        uniqueKeysWithValues: allCases.map { ($0.rawValue, $0) })

    /// The family of a `model_type`; nil when none is registered.
    public init?(rawValue: String) {
        guard let f = Family.byModelType[rawValue] else { return nil }
        self = f
    }

    public var rawValue: String { definition.modelType }
    public var description: String { rawValue }
    public static func == (a: Family, b: Family) -> Bool { a.rawValue == b.rawValue }
    public func hash(into h: inout Hasher) { h.combine(rawValue) }

    public init(from decoder: any Decoder) throws {
        let name = try decoder.singleValueContainer().decode(String.self)
        guard let f = Family(rawValue: name) else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "unknown model_type '\(name)'"))
        }
        self = f
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }

    public var architecture: String { definition.architecture }
    public var displayName: String { definition.displayName }
    public var isGated: Bool { definition.isGated }
    public var hasNormBias: Bool { definition.hasNormBias }
    public var isMixture: Bool { definition.isMixture }
    public var hasAttentionExperts: Bool { definition.hasAttentionExperts }
    public var hasQKVBias: Bool { definition.hasQKVBias }
    public var hasQKNorm: Bool { definition.hasQKNorm }
    public var requiresHeadsDivideHidden: Bool { definition.requiresHeadsDivideHidden }
    /// Query heads follow from other axes (JetMoE: num_key_value_heads × num_experts_per_tok).
    public var derivesQueryHeads: Bool { definition.hasAttentionExperts }
    public var axes: [Axis] { definition.axes }
}
