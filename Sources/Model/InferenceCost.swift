/// What serving a model costs at a named workload: `batch` sequences of up to `context` tokens
/// each (prompt and generated tokens together), the weights held in `weights`, the key/value
/// cache in `cache`. Puzzle (arXiv 2411.19146) states its memory and throughput targets this way.
public struct Workload: Sendable, Equatable {
    public var batch: Int
    public var context: Int
    public var weights: StorageType
    public var cache: StorageType

    public init(batch: Int, context: Int, weights: StorageType = .bfloat16, cache: StorageType? = nil) {
        self.batch = batch
        self.context = context
        self.weights = weights
        self.cache = cache ?? weights
    }
}

/// A config's costs at a workload, every term an exact count.
public struct InferenceCost: Sendable, Equatable {
    /// Every parameter (``ModelConfig/parameterCount``) in the workload's weight dtype.
    public var weightBytes: Int
    /// Keys and values of every attention layer for every position it keeps, for every sequence.
    public var kvCacheBytes: Int
    /// Forward FLOPs of one token decoded with `context` tokens before it.
    public var decodeFLOPsPerToken: Int

    /// What the model occupies while serving: weights plus the cache (activations, a few
    /// hidden-size rows per sequence at decode, are not counted).
    public var memoryBytes: Int { saturating(weightBytes, plus: kvCacheBytes) }
}

extension Block {
    /// Key/value values one position of this block keeps: `2 · G · D` (a JetMoE layer shares one
    /// key/value projection among its attention experts, so the same). A Mamba2 mixer keeps one
    /// recurrent state whatever the context: `I · N` for the scan plus `convDim · (K − 1)` for the
    /// convolution, counted as one position; a Gated DeltaNet mixer `Hv · Dk · Dv` plus its
    /// convolution's `convDim · (K − 1)`.
    public var keyValueWidth: Int {
        switch mixer {
        case .none: return 0
        case let .attention(_, G, D, _, _): return 2 * G * D
        case let .mamba(m): return m.innerWidth * m.stateSize + m.convWidth * (m.convKernel - 1)
        case let .deltaNet(d): return d.valueHeads * d.keyDim * d.valueDim + d.convWidth * (d.convKernel - 1)
        }
    }

    /// Positions this block's cache holds at `context`: all of them, or its sliding window; 1 for
    /// a Mamba2 mixer's state.
    public func cachedPositions(context: Int) -> Int {
        switch mixer {
        case .none: return 0
        case let .attention(_, _, _, window, _): return window.map { min($0, context) } ?? context
        case .mamba, .deltaNet: return context > 0 ? 1 : 0
        }
    }

    /// FLOPs of the attention products (QKᵀ and PV) for one query over `positions` keys:
    /// `4 · H · D · positions` (H query heads; a JetMoE layer's k experts of G heads each).
    func attentionProductFLOPs(positions: Int, expertsPerToken k: Int) -> Int {
        switch mixer {
        case .none: return 0
        case let .attention(H, G, D, _, E):
            let heads = E > 0 ? k * G : H
            return saturating(4 * heads * D, times: positions)
        case let .mamba(m):
            // The state's update (x ⊗ B) and its readout (against C), once per token.
            return saturating(4 * m.innerWidth * m.stateSize, times: positions)
        case let .deltaNet(d):
            // The state's read against k, its rank-one update and its readout against q.
            return saturating(6 * d.valueHeads * d.keyDim * d.valueDim, times: positions)
        }
    }
}

extension ModelConfig {
    /// The costs at `w`, block by block (``blocks``), so that layers that differ are each counted
    /// as they are:
    /// - weights: ``parameterCount`` × the dtype's bytes (tied embeddings once);
    /// - KV cache: `batch · Σ_layers 2 · G · D · positions · bytes`, positions being `context`, or
    ///   `min(window, context)` for a sliding-window layer (its cache holds the window, as
    ///   transformers' sliding caches and vLLM do);
    /// - decode FLOPs: `2 ·` ``matmulParameterCount`` (the projections with the k chosen experts,
    ///   the routers, the LM head) `+ Σ_layers 4 · H · D · positions`.
    public func inferenceCost(_ w: Workload) -> InferenceCost {
        var cachePerSequence = 0, attention = 0
        for (block, count) in distinctBlocks {
            let positions = block.cachedPositions(context: w.context)
            cachePerSequence = saturating(
                cachePerSequence, plus: saturating(saturating(block.keyValueWidth, times: positions), times: count))
            attention = saturating(
                attention,
                plus: saturating(
                    block.attentionProductFLOPs(positions: positions, expertsPerToken: numExpertsPerTok), times: count))
        }
        return InferenceCost(
            weightBytes: saturating(parameterCount, times: w.weights.dtype.size),
            kvCacheBytes: saturating(saturating(cachePerSequence, times: w.batch), times: w.cache.dtype.size),
            decodeFLOPsPerToken: saturating(saturating(matmulParameterCount, times: 2), plus: attention))
    }
}

/// What one block adds to each cost a budget can bound (``ModelConfig/blockCost(_:at:)``), or
/// what lies outside the blocks (``ModelConfig/costOutsideBlocks(at:)``); the blocks' and the
/// outside's sum to the model's (tested).
public struct BlockCost: Sendable, Equatable {
    public var parameters: Int
    /// Weights plus KV cache at the workload (0 without one).
    public var memoryBytes: Int
    /// Decode FLOPs per token at the workload's context (the matrix products alone without one).
    public var decodeFLOPs: Int
}

extension ModelConfig {
    /// Block `b`'s share of the counts, as if it were one layer of this config.
    public func blockCost(_ b: Block, at w: Workload?) -> BlockCost {
        let parameters = blockParameters(b, active: false, in: Int.self)
        let positions = w.map { b.cachedPositions(context: $0.context) } ?? 0
        let memory =
            w.map {
                saturating(
                    saturating(parameters, times: $0.weights.dtype.size),
                    plus: saturating(
                        saturating(b.keyValueWidth * positions, times: $0.batch), times: $0.cache.dtype.size))
            } ?? 0
        let flops = saturating(
            saturating(blockMatmulParameters(b), times: 2),
            plus: b.attentionProductFLOPs(positions: positions, expertsPerToken: numExpertsPerTok))
        return BlockCost(parameters: parameters, memoryBytes: memory, decodeFLOPs: flops)
    }

    /// The embedding, the LM head and the final norm: the same for every choice of blocks.
    public func costOutsideBlocks(at w: Workload?) -> BlockCost {
        let parameters = embeddingParameterCount + normWidth
        return BlockCost(
            parameters: parameters, memoryBytes: w.map { saturating(parameters, times: $0.weights.dtype.size) } ?? 0,
            decodeFLOPs: 2 * vocabSize * hiddenSize)
    }
}
