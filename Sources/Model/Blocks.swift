/// A decoder is an embedding, a list of blocks and a head. Each block is a mixer across
/// positions (attention of some shape) followed by a channel mixer (a dense MLP of width F, or a
/// mixture of experts), each behind its norm and a residual connection. A homogeneous model is
/// the case where every block is equal; qwen3_moe's dense-MLP layers and sliding-window layers
/// are blocks that differ.
///
/// The parameter layout (``ParameterLayout/init(config:)``), the forward and backward passes
/// (through ``LayerOffsets``) and pruning walk this list.
public struct Block: Sendable, Equatable {
    public enum Mixer: Sendable, Equatable {
        /// Grouped-query attention: H query heads over G key/value groups of width D; `window`
        /// keys seen (nil: full causal attention). `experts` > 0: JetMoE's mixture of attention
        /// (each of k chosen experts projects G query heads; one shared key/value projection).
        case attention(heads: Int, groups: Int, headDim: Int, window: Int?, experts: Int)
        /// Mamba2's selective state-space mixer (Nemotron-H's `linear_attention` layers).
        case mamba(MambaShape)
        /// Gated DeltaNet (Qwen3.5's `linear_attention` layers).
        case deltaNet(DeltaNetShape)
        /// No mixer and no norm before it: the residual stream passes through (Puzzle's
        /// `no_op` attention).
        case none
    }

    public enum ChannelMixer: Sendable, Equatable {
        /// One MLP of `width` neurons.
        case dense(width: Int)
        /// `count` experts of `width` neurons each, `topK` chosen per token by a router; `shared` > 0:
        /// beside them a shared expert of `shared` neurons that every token passes through (scaled
        /// by σ(w·x) in Qwen3.5-MoE, its `shared_expert` and `shared_expert_gate`; as it is in
        /// Nemotron-H, its `shared_experts`).
        case experts(count: Int, topK: Int, width: Int, shared: Int = 0)
        /// No channel mixer and no norm before it (Puzzle's `no_op` FFN).
        case none
    }

    public var mixer: Mixer
    public var channelMixer: ChannelMixer

    public init(mixer: Mixer, channelMixer: ChannelMixer) {
        self.mixer = mixer
        self.channelMixer = channelMixer
    }

    /// Whether the channel mixer is a mixture of experts.
    public var isSparse: Bool {
        if case .experts = channelMixer { return true }
        return false
    }

    /// Whether the block has a mixer (and its norm).
    public var hasMixer: Bool { mixer != .none }
    /// Whether the block has a channel mixer (and its norm).
    public var hasChannelMixer: Bool { channelMixer != .none }
}

/// The shape of a Mamba2 mixer (transformers' `NemotronHMamba2Mixer`): `heads` heads of
/// `headDim` channels (I = heads·headDim), `groups` groups of B and C (each of `stateSize`),
/// the heads of group g being g·heads/groups ..< (g+1)·heads/groups; a depthwise causal
/// convolution of `convKernel` taps over x, B and C (convDim = I + 2·groups·stateSize).
public struct MambaShape: Sendable, Hashable, Codable {
    public var heads: Int, headDim: Int, groups: Int, stateSize: Int, convKernel: Int

    public init(heads: Int, headDim: Int, groups: Int, stateSize: Int, convKernel: Int) {
        self.heads = heads
        self.headDim = headDim
        self.groups = groups
        self.stateSize = stateSize
        self.convKernel = convKernel
    }

    /// I: the width of x, of the gate z and of the scan's output.
    public var innerWidth: Int { heads * headDim }
    /// The channels the convolution mixes: x, B and C.
    public var convWidth: Int { innerWidth + 2 * groups * stateSize }
    /// The in-projection's output: z, then x, B, C, then one time step per head.
    public var projectionWidth: Int { innerWidth + convWidth + heads }
    /// Parameters of one mixer (in and out projections, convolution, dt bias, A, D, norm),
    /// without the block's norm; `convBias` when the convolution has its bias.
    public func parameterCount(hidden C: Int, convBias: Bool) -> Int {
        C * projectionWidth + convWidth * convKernel + (convBias ? convWidth : 0) + 3 * heads + innerWidth
            + innerWidth * C
    }
}

/// The shape of a Gated DeltaNet mixer (transformers' `Qwen3_5GatedDeltaNet`): `keyHeads` query
/// and key heads of `keyDim` channels, `valueHeads` value heads of `valueDim` (value head h reads
/// key head h / (valueHeads / keyHeads)), and a depthwise causal convolution of `convKernel`
/// taps over q, k and v (convDim = 2·keyHeads·keyDim + valueHeads·valueDim).
public struct DeltaNetShape: Sendable, Hashable, Codable {
    public var keyHeads: Int, valueHeads: Int, keyDim: Int, valueDim: Int, convKernel: Int

    public init(keyHeads: Int, valueHeads: Int, keyDim: Int, valueDim: Int, convKernel: Int) {
        self.keyHeads = keyHeads
        self.valueHeads = valueHeads
        self.keyDim = keyDim
        self.valueDim = valueDim
        self.convKernel = convKernel
    }

    /// The width of q (and of k).
    public var keyWidth: Int { keyHeads * keyDim }
    /// The width of v, of the gate z and of the output.
    public var valueWidth: Int { valueHeads * valueDim }
    /// The channels the convolution mixes: q, k and v.
    public var convWidth: Int { 2 * keyWidth + valueWidth }
    /// The fused in-projection's output: q, k, v (`in_proj_qkv`), z (`in_proj_z`), then one β
    /// logit (`in_proj_b`) and one decay input (`in_proj_a`) per value head.
    public var projectionWidth: Int { convWidth + valueWidth + 2 * valueHeads }
    /// Value heads per key head.
    public var valuesPerKey: Int { valueHeads / keyHeads }
    /// Parameters of one mixer (projections, convolution, dt bias, A_log, norm), without the
    /// block's norm.
    public func parameterCount(hidden C: Int) -> Int {
        C * projectionWidth + convWidth * convKernel + 2 * valueHeads + valueDim + valueWidth * C
    }
}

/// What a hybrid decoder's layer is (Nemotron-H's `layers_block_type`, Qwen3.5's `layer_types`).
public enum HybridLayer: String, Sendable, Hashable, Codable, CaseIterable {
    case mamba, attention, mlp, moe
    /// Qwen3.5's Gated DeltaNet layer (its `linear_attention`; an MLP follows it, as it follows
    /// Qwen3.5's attention layers).
    case deltaNet

    /// The pattern letter (`hybrid_override_pattern`).
    public var letter: Character {
        switch self {
        case .mamba: "M"
        case .attention: "*"
        case .mlp: "-"
        case .moe: "E"
        case .deltaNet: "G"
        }
    }

    /// transformers 5's name (`linear_attention`, `full_attention`, `mlp`, `moe`).
    public var transformersName: String {
        switch self {
        case .mamba: "linear_attention"
        case .attention: "full_attention"
        case .mlp: "mlp"
        case .moe: "moe"
        case .deltaNet: "linear_attention"
        }
    }

    /// Reads one entry of `layers_block_type`: transformers 5's names or the older `mamba` /
    /// `attention`.
    public init?(name: String) {
        switch name {
        case "linear_attention", "mamba": self = .mamba
        case "full_attention", "attention": self = .attention
        case "mlp": self = .mlp
        case "moe": self = .moe
        default: return nil
        }
    }

    /// Reads one letter of `hybrid_override_pattern`.
    public init?(letter: Character) {
        guard let t = HybridLayer.allCases.first(where: { $0.letter == letter && $0 != .deltaNet }) else { return nil }
        self = t
    }
}

/// One layer of a heterogeneous decoder (Puzzle's per-layer `block_configs`): its attention's
/// key/value groups (nil: no attention) and its MLP's width (nil: no MLP). The query heads and
/// head width are the model's.
public struct LayerVariant: Sendable, Hashable, Codable {
    public var keyValueGroups: Int?
    public var mlpWidth: Int?

    public init(keyValueGroups: Int?, mlpWidth: Int?) {
        self.keyValueGroups = keyValueGroups
        self.mlpWidth = mlpWidth
    }
}

extension ModelConfig {
    /// The block a layer variant makes with this config's query heads and head width.
    public func block(_ v: LayerVariant, window: Int? = nil) -> Block {
        Block(
            mixer: v.keyValueGroups.map {
                .attention(heads: numAttentionHeads, groups: $0, headDim: headDim, window: window, experts: 0)
            } ?? .none,
            channelMixer: v.mlpWidth.map { .dense(width: $0) } ?? .none)
    }

    /// The blocks of this config, layer by layer.
    public var blocks: [Block] { (0..<numHiddenLayers).map(block) }

    /// Layer l's block.
    public func block(_ l: Int) -> Block {
        if let v = layerVariants?[l] { return block(v, window: window(layer: l)) }
        if let types = hybridLayers {
            // A Nemotron-H layer is one mixer behind one norm: Mamba2 or attention (a block
            // without its channel mixer), or an MLP or a mixture of experts (a block without its
            // mixer). A Qwen3.5 layer is Gated DeltaNet or attention, then an MLP.
            let mlp: Block.ChannelMixer =
                !family.definition.hybridMixersHaveMLP
                ? .none : family.isMixture ? sparseChannelMixer : .dense(width: intermediateSize)
            switch types[l] {
            case .mamba: return Block(mixer: .mamba(mamba!), channelMixer: .none)
            case .deltaNet: return Block(mixer: .deltaNet(deltaNet!), channelMixer: mlp)
            case .attention:
                let a = Block.Mixer.attention(
                    heads: numAttentionHeads, groups: numKeyValueHeads, headDim: headDim, window: nil, experts: 0)
                return Block(mixer: a, channelMixer: mlp)
            case .mlp: return Block(mixer: .none, channelMixer: .dense(width: intermediateSize))
            case .moe: return Block(mixer: .none, channelMixer: sparseChannelMixer)
            }
        }
        let attentionExperts = family.hasAttentionExperts ? numLocalExperts : 0
        let mixer = Block.Mixer.attention(
            heads: numAttentionHeads, groups: numKeyValueHeads, headDim: headDim,
            window: window(layer: l), experts: attentionExperts)
        let channel: Block.ChannelMixer = isSparse(layer: l) ? sparseChannelMixer : .dense(width: intermediateSize)
        return Block(mixer: mixer, channelMixer: channel)
    }

    /// A mixture layer's channel mixer (with its shared expert of ``sharedExpertWidth`` neurons,
    /// where the family has one).
    var sparseChannelMixer: Block.ChannelMixer {
        .experts(count: numLocalExperts, topK: numExpertsPerTok, width: expertWidth, shared: sharedExpertWidth)
    }
}
