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
        /// No mixer and no norm before it: the residual stream passes through (Puzzle's
        /// `no_op` attention).
        case none
    }

    public enum ChannelMixer: Sendable, Equatable {
        /// One MLP of `width` neurons.
        case dense(width: Int)
        /// `count` experts of `width` neurons each, `topK` chosen per token by a router.
        case experts(count: Int, topK: Int, width: Int)
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
        let attentionExperts = family.hasAttentionExperts ? numLocalExperts : 0
        let mixer = Block.Mixer.attention(
            heads: numAttentionHeads, groups: numKeyValueHeads, headDim: headDim,
            window: window(layer: l), experts: attentionExperts)
        let channel: Block.ChannelMixer =
            isSparse(layer: l)
            ? .experts(count: numLocalExperts, topK: numExpertsPerTok, width: expertWidth)
            : .dense(width: intermediateSize)
        return Block(mixer: mixer, channelMixer: channel)
    }
}
