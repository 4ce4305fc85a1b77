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
    /// Qwen3.5-MoE's shared expert's width (``ModelConfig/intermediateSize`` of that family).
    case sharedExpertIntermediateSize = "shared_expert_intermediate_size"
    /// Nemotron-H's names for the expert count and the shared expert's width
    /// (``ModelConfig/moeSharedExpertIntermediateSize``).
    case nRoutedExperts = "n_routed_experts"
    case moeSharedExpertIntermediateSize = "moe_shared_expert_intermediate_size"
    /// Hybrid decoders (Nemotron-H, Qwen3.5): the Mamba2 heads and their width, and the depth counted per
    /// layer type — the layers of each type a candidate keeps (which ones is pruning's choice,
    /// by block importance among the layers of that type). A type whose axis a space leaves out
    /// keeps every layer.
    case mambaNumHeads = "mamba_num_heads"
    case mambaHeadDim = "mamba_head_dim"
    case numMambaLayers = "num_mamba_layers"
    case numAttentionLayers = "num_attention_layers"
    case numMLPLayers = "num_mlp_layers"
    /// Nemotron-H's mixture-of-experts layers.
    case numMoELayers = "num_moe_layers"
    /// Qwen3.5's Gated DeltaNet layers (its attention layers are `num_attention_layers`).
    case numDeltaNetLayers = "num_deltanet_layers"
    /// Qwen3.5's Gated DeltaNet value heads, pruned within their key heads (the same number from
    /// each, so that it stays a multiple of `linear_num_key_heads`).
    case linearNumValueHeads = "linear_num_value_heads"
    /// Qwen3.5's Gated DeltaNet key heads, each pruned with its value heads (a candidate keeps at
    /// most the teacher's value heads per key head).
    case linearNumKeyHeads = "linear_num_key_heads"
    /// Qwen3.5's Gated DeltaNet value head width: the same channels kept in every value head of a
    /// layer (after Minitron-SSM's head channels).
    case linearValueHeadDim = "linear_value_head_dim"

    /// The layer type a depth axis of a hybrid decoder counts.
    public var layerType: HybridLayer? {
        switch self {
        case .numMambaLayers: .mamba
        case .numAttentionLayers: .attention
        case .numMLPLayers: .mlp
        case .numMoELayers: .moe
        case .numDeltaNetLayers: .deltaNet
        default: nil
        }
    }

    public static let dense: [Axis] = [
        .numHiddenLayers, .hiddenSize, .numAttentionHeads, .numKeyValueHeads, .intermediateSize
    ]

    /// The axes of a family (``FamilyDefinition/axes``): dense models the first five; Mixtral
    /// those and the two expert axes; JetMoE all but num_attention_heads, which it derives as
    /// num_key_value_heads × num_experts_per_tok; qwen3_moe names the expert width and count as
    /// its config does.
    public static func axes(for family: Family) -> [Axis] { family.axes }
    /// The axes of one config (``FamilyDefinition/axes(for:)``): a Nemotron-H teacher without
    /// mixture layers has no expert axes.
    public static func axes(for c: ModelConfig) -> [Axis] { c.family.definition.axes(for: c) }

    public func value(_ c: ModelConfig) -> Int {
        switch self {
        case .numHiddenLayers: return c.numHiddenLayers
        case .hiddenSize: return c.hiddenSize
        case .numAttentionHeads: return c.numAttentionHeads
        case .numKeyValueHeads: return c.numKeyValueHeads
        case .intermediateSize, .sharedExpertIntermediateSize: return c.intermediateSize
        case .numLocalExperts, .numExperts, .nRoutedExperts: return c.numLocalExperts
        case .moeSharedExpertIntermediateSize: return c.moeSharedExpertIntermediateSize
        case .numExpertsPerTok: return c.numExpertsPerTok
        case .moeIntermediateSize: return c.moeIntermediateSize
        case .mambaNumHeads: return c.mamba?.heads ?? 0
        case .mambaHeadDim: return c.mamba?.headDim ?? 0
        case .linearNumValueHeads: return c.deltaNet?.valueHeads ?? 0
        case .linearNumKeyHeads: return c.deltaNet?.keyHeads ?? 0
        case .linearValueHeadDim: return c.deltaNet?.valueDim ?? 0
        case .numMambaLayers, .numAttentionLayers, .numMLPLayers, .numMoELayers, .numDeltaNetLayers:
            return c.hybridLayers?.filter { $0 == layerType }.count ?? 0
        }
    }
    /// Sets the axis (JetMoE's query heads follow its key/value heads and top-k).
    public func set(_ c: inout ModelConfig, _ v: Int) {
        switch self {
        case .numHiddenLayers: c.numHiddenLayers = v
        case .hiddenSize: c.hiddenSize = v
        case .numAttentionHeads: c.numAttentionHeads = v
        case .numKeyValueHeads: c.numKeyValueHeads = v
        case .intermediateSize, .sharedExpertIntermediateSize: c.intermediateSize = v
        case .numLocalExperts, .numExperts, .nRoutedExperts: c.numLocalExperts = v
        case .moeSharedExpertIntermediateSize: c.moeSharedExpertIntermediateSize = v
        case .numExpertsPerTok: c.numExpertsPerTok = v
        case .moeIntermediateSize: c.moeIntermediateSize = v
        case .mambaNumHeads: c.mamba?.heads = v
        case .mambaHeadDim: c.mamba?.headDim = v
        case .linearNumValueHeads: c.deltaNet?.valueHeads = v
        case .linearNumKeyHeads: c.deltaNet?.keyHeads = v
        case .linearValueHeadDim: c.deltaNet?.valueDim = v
        case .numMambaLayers, .numAttentionLayers, .numMLPLayers, .numMoELayers, .numDeltaNetLayers:
            // Which layers of the type go is pruning's choice: until then the last ones do (the
            // counts, and so every cost, do not depend on which).
            guard var layers = c.hybridLayers, let type = layerType else { return }
            var have = layers.filter { $0 == type }.count
            while have > v, let last = layers.lastIndex(of: type) {
                layers.remove(at: last)
                have -= 1
            }
            c.hybridLayers = layers
            c.numHiddenLayers = layers.count
        }
        c.deriveQueryHeads()
    }
}
