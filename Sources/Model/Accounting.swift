/// Parameter, FLOP and memory accounting for a config, with the conventions transformers and
/// the scaling-law literature use.
extension ModelConfig {
    /// Every parameter, tied embeddings counted once: what transformers' `num_parameters()` reports.
    /// Closed form (no layout is built, so enumerating 100,000 shapes is cheap); equal to
    /// `ParameterLayout(config:).count` (tested).
    public var parameterCount: Int { embeddingParameterCount + nonEmbeddingParameterCount }

    /// `embed_tokens` plus an untied `lm_head`.
    public var embeddingParameterCount: Int { vocabSize * hiddenSize * (tieWordEmbeddings ? 1 : 2) }

    /// Parameters outside the token embedding and the LM head.
    public var nonEmbeddingParameterCount: Int { allLayerParameters(active: false, in: Int.self) + normWidth }

    /// Parameters one token touches (``activeNonEmbeddingParameterCount`` plus the embedding and
    /// LM head); equal to ``parameterCount`` for dense families.
    public var activeParameterCount: Int { embeddingParameterCount + activeNonEmbeddingParameterCount }

    /// Shared parts (norms, routers, dense attention, JetMoE's key/value projection and biases)
    /// plus k of the E experts in every mixture.
    public var activeNonEmbeddingParameterCount: Int { allLayerParameters(active: true, in: Int.self) + normWidth }

    var normWidth: Int { family.hasNormBias ? 2 * hiddenSize : hiddenSize } // LayerNorm1P has a bias

    /// Every layer's parameters: mixture layers and (qwen3_moe) dense-MLP layers.
    func allLayerParameters<N: Numeric>(active: Bool, in _: N.Type) -> N {
        func n(_ x: Int) -> N { N(exactly: x)! }
        let sparse = sparseLayerCount, dense = numHiddenLayers - sparse
        return n(sparse) * layerParameters(active: active, sparse: true, in: N.self)
            + n(dense) * layerParameters(active: active, sparse: false, in: N.self)
    }

    /// The same closed forms in any arithmetic: `Int` for exact counts, `Double` to find, before
    /// counting, a config whose counts would overflow. `sparse`: a layer whose MLP is a mixture.
    func layerParameters<N: Numeric>(active: Bool, sparse: Bool, in _: N.Type) -> N {
        func n(_ x: Int) -> N { N(exactly: x)! }
        let C = n(hiddenSize), E = n(numLocalExperts)
        let used = active ? numExpertsPerTok : numLocalExperts
        let qkvBias = family.hasQKVBias ? n((numAttentionHeads + 2 * numKeyValueHeads) * headDim) : 0
        let qkNorm = family.hasQKNorm ? n(2 * headDim) : 0
        return 2 * n(normWidth) + attentionMatrices(experts: used, in: N.self) + qkvBias + qkNorm
            + mlpMatrices(experts: used, sparse: sparse, in: N.self)
            + (sparse ? E * C : 0) // MLP router
            + (family.hasAttentionExperts ? E * C + 2 * C : 0) // attention router, both biases
    }

    /// Attention projection weights with `experts` JetMoE attention experts.
    func attentionMatrices<N: Numeric>(experts: Int, in _: N.Type) -> N {
        func n(_ x: Int) -> N { N(exactly: x)! }
        let C = n(hiddenSize), D = n(headDim)
        if family.hasAttentionExperts {
            let GD = n(attentionExpertWidth)
            return n(experts) * 2 * GD * C + 2 * GD * C
        }
        return C * (n(numAttentionHeads) + 2 * n(numKeyValueHeads)) * D + n(numAttentionHeads) * D * C
    }

    /// MLP projection weights with `experts` experts (a dense layer: one MLP of intermediate_size).
    func mlpMatrices<N: Numeric>(experts: Int, sparse: Bool, in _: N.Type) -> N {
        func n(_ x: Int) -> N { N(exactly: x)! }
        let matrices = n(family.isGated ? 3 : 2) * n(hiddenSize)
        return sparse ? n(experts) * matrices * n(expertWidth) : matrices * n(intermediateSize)
    }

    /// The parameter count and the forward FLOPs per token at `sequence`, in floating point:
    /// ``validate(file:)`` refuses a config whose exact counts would not fit an `Int`.
    func approximateSize(sequence T: Int) -> (parameters: Double, flops: Double) {
        let L = Double(numHiddenLayers), C = Double(hiddenSize), V = Double(vocabSize)
        let parameters =
            max(allLayerParameters(active: false, in: Double.self), allLayerParameters(active: true, in: Double.self))
            + V * C * 2 + 2 * C
        return (parameters, 2 * parameters + 4 * L * Double(numAttentionHeads) * Double(headDim) * Double(T))
    }

    /// Weights that take part in a matrix product per token: every layer's projections (with the
    /// k chosen experts, and the routers) plus the LM head (the embedding lookup is not a
    /// product; a tied LM head still is).
    public var matmulParameterCount: Int {
        let k = numExpertsPerTok, C = hiddenSize, sparse = sparseLayerCount
        let attention =
            numHiddenLayers
            * (attentionMatrices(experts: k, in: Int.self) + (family.hasAttentionExperts ? numLocalExperts * C : 0))
        let mlp =
            sparse * (mlpMatrices(experts: k, sparse: true, in: Int.self) + numLocalExperts * C)
            + (numHiddenLayers - sparse) * mlpMatrices(experts: 1, sparse: false, in: Int.self)
        return attention + mlp + vocabSize * C
    }

    /// Forward FLOPs per token at sequence length T, PaLM's convention:
    /// `2 · matmul weights + 4 · L · H · D · T` (the attention products QKᵀ and PV, full T×T).
    /// Norms, softmax and activations are not counted. Training is 3× this.
    public func forwardFLOPsPerToken(sequence T: Int) -> Int {
        saturating(
            saturating(matmulParameterCount, times: 2),
            plus: saturating(saturating(4 * numAttentionHeads * headDim, times: numHiddenLayers), times: T))
    }

    /// Bytes to train with AdamW at (batch, sequence): parameters, gradients and two moments in
    /// F32, plus every activation the engine keeps (``Activations/floatCount(config:B:T:threads:)``).
    /// With W data-parallel workers (``Trainer/dataParallelByDefault(batch:)`` unless
    /// given) the trainer keeps W − 1 more gradient buffers and each worker's activations for its
    /// rows instead of the whole batch's.
    public func trainingMemory(batch B: Int, sequence T: Int, dataParallelWorkers: Int? = nil) -> (
        state: Int, activations: Int
    ) {
        let W = min(dataParallelWorkers ?? Trainer.dataParallelByDefault(batch: B), B)
        let floats =
            W > 1
            ? (0..<W).reduce(0) {
                saturating($0, plus: Activations.floatCount(config: self, B: B * ($1 + 1) / W - B * $1 / W, T: T))
            }
            : Activations.floatCount(config: self, B: B, T: T)
        return (saturating(parameterCount, times: 16 + 4 * max(0, W - 1)), saturating(floats, times: 4))
    }
}

/// `a · b`, or `Int.max` where it would overflow (memory predictions for absurd configs).
public func saturating(_ a: Int, times b: Int) -> Int {
    let (r, overflow) = a.multipliedReportingOverflow(by: b)
    return overflow ? Int.max : r
}

/// `a + b`, or `Int.max` where it would overflow.
public func saturating(_ a: Int, plus b: Int) -> Int {
    let (r, overflow) = a.addingReportingOverflow(b)
    return overflow ? Int.max : r
}
