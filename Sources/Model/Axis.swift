import Foundation

/// The architecture axes a search space may vary and a pruning target may set, by their HF config
/// keys: the one map from axis to config field that Search (spaces, enumeration, mutation) and
/// Proxy (pruning targets) share.
public enum Axis: String, CaseIterable, Sendable, Codable {
    case numHiddenLayers = "num_hidden_layers"
    case hiddenSize = "hidden_size"
    case numAttentionHeads = "num_attention_heads"
    case numKeyValueHeads = "num_key_value_heads"
    case intermediateSize = "intermediate_size"
    /// Mixtures only.
    case numLocalExperts = "num_local_experts"
    case numExpertsPerTok = "num_experts_per_tok"
    /// qwen3_moe's names for the experts' width and count.
    case moeIntermediateSize = "moe_intermediate_size"
    case numExperts = "num_experts"

    public static let dense: [Axis] = [
        .numHiddenLayers, .hiddenSize, .numAttentionHeads, .numKeyValueHeads, .intermediateSize
    ]

    /// The axes of a family (``FamilyDefinition/axes``): dense models the first five; Mixtral
    /// those and the two expert axes; JetMoE all but num_attention_heads, which it derives as
    /// num_key_value_heads × num_experts_per_tok; qwen3_moe names the expert width and count as
    /// its config does.
    public static func axes(for family: Family) -> [Axis] { family.axes }

    public func value(_ c: ModelConfig) -> Int {
        switch self {
        case .numHiddenLayers: return c.numHiddenLayers
        case .hiddenSize: return c.hiddenSize
        case .numAttentionHeads: return c.numAttentionHeads
        case .numKeyValueHeads: return c.numKeyValueHeads
        case .intermediateSize: return c.intermediateSize
        case .numLocalExperts, .numExperts: return c.numLocalExperts
        case .numExpertsPerTok: return c.numExpertsPerTok
        case .moeIntermediateSize: return c.moeIntermediateSize
        }
    }
    /// Sets the axis (JetMoE's query heads follow its key/value heads and top-k).
    public func set(_ c: inout ModelConfig, _ v: Int) {
        switch self {
        case .numHiddenLayers: c.numHiddenLayers = v
        case .hiddenSize: c.hiddenSize = v
        case .numAttentionHeads: c.numAttentionHeads = v
        case .numKeyValueHeads: c.numKeyValueHeads = v
        case .intermediateSize: c.intermediateSize = v
        case .numLocalExperts, .numExperts: c.numLocalExperts = v
        case .numExpertsPerTok: c.numExpertsPerTok = v
        case .moeIntermediateSize: c.moeIntermediateSize = v
        }
        c.deriveQueryHeads()
    }
}
