import Foundation

/// A decoder-only model's shape and numerics, read from and written to a Hugging Face
/// `config.json` with the HF key names.
///
/// Decoding reads every key transformers' config class for the family defines, and the common
/// `PretrainedConfig` keys. An unknown `model_type`, or a value that would change the arithmetic
/// in a way the engine does not implement (a rope type other than default, linear, dynamic,
/// llama3 and yarn; biases; quantization; …) throws ``ModelError`` naming the key and value.
/// Keys that carry only metadata, and keys transformers does not define for the family (it
/// ignores them too), are kept in ``passthrough`` and written back; the latter are named in one
/// warning when a file is loaded.
public struct ModelConfig: Sendable, Equatable {
    public var family: Family
    /// V
    public var vocabSize: Int
    /// C
    public var hiddenSize: Int
    /// F: the dense MLP's width (Qwen3.5-MoE: its shared expert's, `shared_expert_intermediate_size`)
    public var intermediateSize: Int
    /// L
    public var numHiddenLayers: Int
    /// H
    public var numAttentionHeads: Int
    /// G
    public var numKeyValueHeads: Int
    /// D
    public var headDim: Int
    /// `rms_norm_eps` (llama) or `norm_eps` (nemotron).
    public var normEps: Double
    public var ropeTheta: Double
    /// Fraction of each head's dimensions that rotary embeddings touch (1 for llama).
    public var partialRotaryFactor: Double
    public var tieWordEmbeddings: Bool
    public var maxPositionEmbeddings: Int
    public var initializerRange: Double
    public var bosTokenId: Int?
    public var eosTokenIds: [Int]
    public var padTokenId: Int?
    /// E: experts per mixture layer (`num_local_experts`; 0 for dense families).
    public var numLocalExperts: Int
    /// k: experts each token is routed to (`num_experts_per_tok`; 0 for dense families).
    public var numExpertsPerTok: Int
    /// Coefficient of the load-balancing loss (`router_aux_loss_coef`, JetMoE `aux_loss_coef`).
    public var routerAuxLossCoef: Double
    /// transformers adds the load-balancing loss to its `loss` only when this is set.
    public var outputRouterLogits: Bool
    /// qwen3_moe: the experts' width (`moe_intermediate_size`); `intermediate_size` is then the
    /// width of the dense MLPs of ``denseMLPLayers``. 0 for other families.
    public var moeIntermediateSize: Int
    /// Whether the k chosen gates are divided by their sum (Mixtral always; qwen3_moe
    /// `norm_topk_prob`).
    public var normTopKProb: Bool
    /// qwen3_moe: layers with a dense MLP instead of experts (`mlp_only_layers` and the layers
    /// `decoder_sparse_step` skips), sorted. Empty for other families.
    public var denseMLPLayers: [Int]
    /// Sliding-window width (keys j with i − W < j ≤ i are seen) on the layers of
    /// ``slidingLayers``; nil for full attention everywhere.
    public var slidingWindow: Int?
    /// Layers that use ``slidingWindow`` (sorted).
    public var slidingLayers: [Int]
    /// Rotary frequency scaling (`rope_parameters` / `rope_scaling`); ``RopeScaling/none`` by default.
    public var rope: RopeScaling
    /// A heterogeneous decoder's layers, one each (nemotron-nas `block_configs`); nil: every
    /// layer is the config's. ``numKeyValueHeads`` and ``intermediateSize`` are then the largest
    /// any layer has (what buffers are sized by).
    public var layerVariants: [LayerVariant]? = nil
    /// A hybrid decoder's layer types (Nemotron-H `layers_block_type`); nil for the families
    /// whose every layer is attention then an MLP.
    public var hybridLayers: [HybridLayer]? = nil
    /// The Mamba2 mixers' shape (Nemotron-H; nil without Mamba layers).
    public var mamba: MambaShape? = nil
    /// Mamba2's other settings: whether the convolution has a bias (`use_conv_bias`), the
    /// smallest time step its initialisation draws (`time_step_min`), the range Δ is clamped to
    /// (`time_step_limit`, default [0, ∞): transformers ≥ 5.25 clamps with it; 5.24 clamped at
    /// `time_step_min` instead) and the scan's chunk (`chunk_size`: how often the backward pass
    /// checkpoints the state).
    public var mambaConvBias = true
    public var mambaTimeStepMin = 0.001
    public var mambaTimeStepLimit = MambaTimeStepLimit()
    public var mambaChunkSize = 128
    /// The Gated DeltaNet mixers' shape (Qwen3.5; nil without DeltaNet layers).
    public var deltaNet: DeltaNetShape? = nil
    /// How often the DeltaNet scan's backward pass checkpoints the state (transformers' chunked
    /// form uses chunks of 64; not a config key).
    public var deltaNetChunkSize = 64
    /// Nemotron-H's mixture blocks: the shared expert's width
    /// (`moe_shared_expert_intermediate_size`), the latent width the routed experts work in
    /// (`moe_latent_size`; nil: the hidden size), and the sigmoid router's settings — the factor
    /// its k gates are scaled by (`routed_scaling_factor`), the expert groups (`n_group`) and
    /// how many of them a token's experts may come from (`topk_group`).
    public var moeSharedExpertIntermediateSize = 0
    public var moeLatentSize: Int? = nil
    public var routedScalingFactor = 1.0
    public var routerGroups = 1
    public var routerTopKGroups = 1
    /// Keys of the `config.json` read that change no arithmetic and that Topiary does not write
    /// anew (token ids beyond bos/eos/pad, generation defaults, keys transformers does not
    /// define for the family): written back as they were.
    public var passthrough = Passthrough()

    /// The keys a config carries through unchanged, and which of them transformers does not know.
    public struct Passthrough: Sendable, Equatable {
        public var keys: [String: JSON] = [:]
        /// Keys that are not `PretrainedConfig` keys either (sorted): warned about once.
        public var unknown: [String] = []
        public init() {}
    }

    /// The experts' MLP width: `moe_intermediate_size` for qwen3_moe, `intermediate_size` for
    /// the other mixtures.
    public var expertWidth: Int { family.definition.hasSeparateExpertWidth ? moeIntermediateSize : intermediateSize }

    /// Whether the model has mixture-of-experts layers: every layer of a mixture family (but
    /// its ``denseMLPLayers``), or a hybrid decoder's `moe` layers (Nemotron-H).
    public var isMixture: Bool { family.isMixture || hybridLayers?.contains(.moe) == true }

    /// Whether layer l's MLP is a mixture of experts.
    public func isSparse(layer l: Int) -> Bool {
        if let types = hybridLayers, !family.isMixture { return types[l] == .moe }
        return family.isMixture && !denseMLPLayers.contains(l)
    }

    /// Layers with a mixture MLP.
    public var sparseLayerCount: Int {
        if let types = hybridLayers, !family.isMixture { return types.filter { $0 == .moe }.count }
        return family.isMixture ? numHiddenLayers - denseMLPLayers.count : 0
    }

    /// The width of each mixture layer's shared expert (0: none): Qwen3.5-MoE's
    /// `shared_expert_intermediate_size` (its ``intermediateSize``), Nemotron-H's
    /// `moe_shared_expert_intermediate_size`.
    public var sharedExpertWidth: Int { family.definition.sharedExpertWidth(self) }

    /// The width the routed experts read and write: the latent width where a latent projection
    /// surrounds them (Nemotron-H `moe_latent_size`), else the hidden size.
    public var expertInputWidth: Int { moeLatentSize ?? hiddenSize }

    /// The attention window of layer l (nil: full causal attention).
    public func window(layer l: Int) -> Int? {
        guard let w = slidingWindow, slidingLayers.contains(l) else { return nil }
        return w
    }

    /// Rotary dimensions per head: `Int(D × partial_rotary_factor)` as transformers computes it.
    /// 0 for a family without rotary embeddings (Nemotron-H).
    public var rotaryDim: Int { family.definition.hasRotary ? Int(Double(headDim) * partialRotaryFactor) : 0 }

    public init(
        family: Family, vocabSize: Int, hiddenSize: Int, intermediateSize: Int,
        numHiddenLayers: Int, numAttentionHeads: Int, numKeyValueHeads: Int? = nil,
        headDim: Int? = nil, normEps: Double? = nil, ropeTheta: Double = 10000,
        partialRotaryFactor: Double? = nil, tieWordEmbeddings: Bool = false,
        maxPositionEmbeddings: Int = 2048, initializerRange: Double = 0.02,
        bosTokenId: Int? = nil, eosTokenIds: [Int] = [], padTokenId: Int? = nil,
        numLocalExperts: Int = 0, numExpertsPerTok: Int = 0, routerAuxLossCoef: Double? = nil,
        outputRouterLogits: Bool = false, moeIntermediateSize: Int? = nil, normTopKProb: Bool? = nil,
        denseMLPLayers: [Int] = [], slidingWindow: Int? = nil, slidingLayers: [Int]? = nil,
        rope: RopeScaling = .none
    ) {
        self.family = family
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads ?? numAttentionHeads
        self.headDim = headDim ?? (numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0)
        let definition = family.definition
        self.normEps = normEps ?? definition.defaultNormEps
        self.ropeTheta = ropeTheta
        self.partialRotaryFactor = partialRotaryFactor ?? definition.defaultPartialRotaryFactor
        self.tieWordEmbeddings = tieWordEmbeddings
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.initializerRange = initializerRange
        self.bosTokenId = bosTokenId
        self.eosTokenIds = eosTokenIds
        self.padTokenId = padTokenId
        self.numLocalExperts = numLocalExperts
        self.numExpertsPerTok = numExpertsPerTok
        self.routerAuxLossCoef = routerAuxLossCoef ?? definition.defaultRouterAuxLossCoef
        self.outputRouterLogits = outputRouterLogits
        self.moeIntermediateSize = definition.hasSeparateExpertWidth ? (moeIntermediateSize ?? intermediateSize) : 0
        self.normTopKProb = normTopKProb ?? definition.defaultNormTopKProb
        self.denseMLPLayers = definition.allowsDenseMLPLayers ? Array(Set(denseMLPLayers)).sorted() : []
        self.slidingWindow = slidingWindow
        self.slidingLayers =
            slidingWindow == nil ? [] : (slidingLayers.map { Array(Set($0)).sorted() } ?? Array(0..<numHiddenLayers))
        self.rope = rope
    }

    /// Query heads a family derives (JetMoE: G × k): sets them after the axes they follow
    /// changed. Other families are left as they are.
    public mutating func deriveQueryHeads() {
        if let heads = family.definition.derivedQueryHeads(self) { numAttentionHeads = heads }
    }

    /// The JetMoE key/value width G·D, also the width of one attention expert's queries.
    public var attentionExpertWidth: Int { numKeyValueHeads * headDim }

    /// Checks the shape rules every family shares and transformers enforces.
    /// - Throws: ``ModelError/invalidConfig(file:key:reason:)`` naming the offending key.
    public func validate(file: String = "config.json") throws {
        func positive(_ value: Int, _ key: String) throws {
            if value <= 0 {
                throw ModelError.invalidConfig(file: file, key: key, reason: "must be positive, got \(value)")
            }
        }
        try positive(vocabSize, "vocab_size")
        try positive(hiddenSize, "hidden_size")
        try positive(intermediateSize, family.definition.intermediateSizeKey)
        try positive(numHiddenLayers, "num_hidden_layers")
        try positive(numAttentionHeads, "num_attention_heads")
        try positive(numKeyValueHeads, "num_key_value_heads")
        try positive(headDim, "head_dim")
        if !family.derivesQueryHeads, numAttentionHeads % numKeyValueHeads != 0 {
            throw ModelError.invalidConfig(
                file: file, key: "num_key_value_heads",
                reason:
                    "num_attention_heads \(numAttentionHeads) is not a multiple of num_key_value_heads \(numKeyValueHeads)"
            )
        }
        if isMixture {
            let expertsKey = family.definition.expertCountKey
            try positive(numLocalExperts, expertsKey)
            if numLocalExperts > 1 << 16 {
                throw ModelError.invalidConfig(
                    file: file, key: expertsKey, reason: "\(numLocalExperts) experts; at most 65,536 are supported")
            }
            try positive(numExpertsPerTok, "num_experts_per_tok")
            if numExpertsPerTok > numLocalExperts {
                throw ModelError.invalidConfig(
                    file: file, key: "num_experts_per_tok",
                    reason: "top-k \(numExpertsPerTok) is larger than \(expertsKey) \(numLocalExperts)")
            }
            if !(routerAuxLossCoef >= 0) {
                throw ModelError.invalidConfig(
                    file: file, key: family.definition.auxLossKey, reason: "must be non-negative")
            }
        }
        try family.definition.validate(self, file: file)
        if let w = slidingWindow, w <= 0 {
            throw ModelError.invalidConfig(file: file, key: "sliding_window", reason: "must be positive, got \(w)")
        }
        if family.requiresHeadsDivideHidden, hiddenSize % numAttentionHeads != 0 {
            throw ModelError.invalidConfig(
                file: file, key: "hidden_size",
                reason:
                    "\(hiddenSize) is not a multiple of num_attention_heads \(numAttentionHeads) (transformers refuses such a config)"
            )
        }
        if family.definition.hasRotary, rotaryDim % 2 != 0 || rotaryDim <= 0 || rotaryDim > headDim {
            throw ModelError.invalidConfig(
                file: file, key: "partial_rotary_factor",
                reason:
                    "head_dim \(headDim) × \(partialRotaryFactor) = \(rotaryDim) rotary dimensions; need an even number in 2...\(headDim)"
            )
        }
        if !(normEps > 0) {
            throw ModelError.invalidConfig(file: file, key: family.definition.epsKey, reason: "must be positive")
        }
        if !(ropeTheta > 0) {
            throw ModelError.invalidConfig(file: file, key: "rope_theta", reason: "must be positive")
        }
        try rope.validate(path: "rope_parameters", file: file)
        // Counts are exact integers: refuse a config too large to count (2^53 parameters is
        // 9 quadrillion, 10^4 × today's largest models) before anything multiplies it out.
        let size = approximateSize(sequence: 1)
        if !(size.parameters < 0x1p53) {
            throw ModelError.invalidConfig(
                file: file, key: "num_hidden_layers",
                reason: String(format: "the config describes %.3g parameters", size.parameters)
                    + " (num_hidden_layers \(numHiddenLayers) × hidden_size \(hiddenSize), intermediate_size "
                    + "\(intermediateSize), vocab_size \(vocabSize)"
                    + (isMixture ? ", \(numLocalExperts) experts" : "")
                    + "): too large to count exactly (at most 2^53); is a value mistyped?")
        }
    }
}

/// The range Mamba2's time step Δ is clamped to after the softplus (`time_step_limit` in
/// transformers' Nemotron-H config, `mamba_dt_limit` in its legacy spelling; the Mamba2 kernels'
/// `dt_limit`): Δ = min(max(softplus(dt + dt_bias), lower), upper), by default [0, ∞), where it
/// changes nothing. The gradient passes where the clamp does not bind.
public struct MambaTimeStepLimit: Sendable, Equatable {
    public var lower = 0.0
    public var upper = Double.infinity

    public init(lower: Double = 0, upper: Double = .infinity) {
        self.lower = lower
        self.upper = upper
    }

    /// `[lower, upper]` as config.json holds it: each a number, or a non-finite one as transformers
    /// writes it (`{"__float__": "Infinity"}`) or as a string (`"inf"`, `"Infinity"`).
    /// - Throws: ``ModelError/invalidConfig(file:key:reason:)`` naming `key` for anything else.
    public init(json v: JSON, key: String, reader r: ConfigReader) throws {
        func number(_ x: JSON) -> Double? {
            if let d = x.double { return d }
            let text = x.object?["__float__"]?.string ?? x.string
            switch text?.lowercased() {
            case "infinity", "inf", "+inf", "+infinity": return .infinity
            case "-infinity", "-inf": return -.infinity
            default: return nil
            }
        }
        guard let a = v.array, a.count == 2, let lower = number(a[0]), let upper = number(a[1]) else {
            throw r.fail(key, "expected [lower, upper] (numbers; Infinity as {\"__float__\": \"Infinity\"}), got \(v)")
        }
        self.init(lower: lower, upper: upper)
    }

    /// As transformers writes it.
    public var json: JSON {
        func value(_ x: Double) -> JSON {
            x.isFinite ? .float(x) : ["__float__": .string(x > 0 ? "Infinity" : "-Infinity")]
        }
        return [value(lower), value(upper)]
    }

    /// Δ from the softplus's value.
    @inline(__always) public func clamp(_ x: Float) -> Float { min(max(x, Float(lower)), Float(upper)) }
    /// Whether the clamp leaves `x` as it is (the gradient passes).
    @inline(__always) public func passes(_ x: Float) -> Bool { x >= Float(lower) && x <= Float(upper) }
}
