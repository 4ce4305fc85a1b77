import Foundation

/// The model families the engine implements, named by their Hugging Face `model_type`.
public enum Family: String, Sendable, Equatable, CaseIterable, Codable {
    /// `LlamaForCausalLM`: RMSNorm, full rotary, SwiGLU MLP.
    case llama
    /// `NemotronForCausalLM`: LayerNorm1P with bias, partial rotary, squared-ReLU MLP.
    case nemotron

    /// The `architectures` entry transformers writes for this family.
    public var architecture: String {
        switch self {
        case .llama: return "LlamaForCausalLM"
        case .nemotron: return "NemotronForCausalLM"
        }
    }
}

/// A decoder-only model's shape and numerics, read from and written to a Hugging Face
/// `config.json` with the HF key names.
///
/// Decoding is strict: an unknown `model_type`, an unknown key, or a key that would change the
/// arithmetic in a way the engine does not implement (rope scaling, attention or MLP biases,
/// sliding windows, …) throws ``ModelError`` naming the key. Keys that carry only metadata
/// (`transformers_version`, token ids, `use_cache`, …) are accepted and the token ids kept.
public struct ModelConfig: Sendable, Equatable {
    public var family: Family
    /// V
    public var vocabSize: Int
    /// C
    public var hiddenSize: Int
    /// F
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

    /// Rotary dimensions per head: `Int(D × partial_rotary_factor)` as transformers computes it.
    public var rotaryDim: Int { Int(Double(headDim) * partialRotaryFactor) }

    public init(family: Family, vocabSize: Int, hiddenSize: Int, intermediateSize: Int,
                numHiddenLayers: Int, numAttentionHeads: Int, numKeyValueHeads: Int? = nil,
                headDim: Int? = nil, normEps: Double? = nil, ropeTheta: Double = 10000,
                partialRotaryFactor: Double? = nil, tieWordEmbeddings: Bool = false,
                maxPositionEmbeddings: Int = 2048, initializerRange: Double = 0.02,
                bosTokenId: Int? = nil, eosTokenIds: [Int] = [], padTokenId: Int? = nil) {
        self.family = family
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads ?? numAttentionHeads
        self.headDim = headDim ?? (numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0)
        self.normEps = normEps ?? (family == .llama ? 1e-6 : 1e-5)
        self.ropeTheta = ropeTheta
        self.partialRotaryFactor = partialRotaryFactor ?? (family == .llama ? 1.0 : 0.5)
        self.tieWordEmbeddings = tieWordEmbeddings
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.initializerRange = initializerRange
        self.bosTokenId = bosTokenId
        self.eosTokenIds = eosTokenIds
        self.padTokenId = padTokenId
    }

    /// Checks the shape rules every family shares and transformers enforces.
    /// - Throws: ``ModelError/invalidConfig(file:key:reason:)`` naming the offending key.
    public func validate(file: String = "config.json") throws {
        func positive(_ value: Int, _ key: String) throws {
            if value <= 0 { throw ModelError.invalidConfig(file: file, key: key, reason: "must be positive, got \(value)") }
        }
        try positive(vocabSize, "vocab_size")
        try positive(hiddenSize, "hidden_size")
        try positive(intermediateSize, "intermediate_size")
        try positive(numHiddenLayers, "num_hidden_layers")
        try positive(numAttentionHeads, "num_attention_heads")
        try positive(numKeyValueHeads, "num_key_value_heads")
        try positive(headDim, "head_dim")
        if numAttentionHeads % numKeyValueHeads != 0 {
            throw ModelError.invalidConfig(file: file, key: "num_key_value_heads",
                reason: "num_attention_heads \(numAttentionHeads) is not a multiple of num_key_value_heads \(numKeyValueHeads)")
        }
        if hiddenSize % numAttentionHeads != 0 {
            throw ModelError.invalidConfig(file: file, key: "hidden_size",
                reason: "\(hiddenSize) is not a multiple of num_attention_heads \(numAttentionHeads) (transformers refuses such a config)")
        }
        if rotaryDim % 2 != 0 || rotaryDim <= 0 || rotaryDim > headDim {
            throw ModelError.invalidConfig(file: file, key: "partial_rotary_factor",
                reason: "head_dim \(headDim) × \(partialRotaryFactor) = \(rotaryDim) rotary dimensions; need an even number in 2...\(headDim)")
        }
        if !(normEps > 0) {
            throw ModelError.invalidConfig(file: file, key: family == .llama ? "rms_norm_eps" : "norm_eps", reason: "must be positive")
        }
        if !(ropeTheta > 0) { throw ModelError.invalidConfig(file: file, key: "rope_theta", reason: "must be positive") }
    }
}
