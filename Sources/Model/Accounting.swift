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
    public var nonEmbeddingParameterCount: Int {
        let C = hiddenSize, D = headDim, F = intermediateSize
        let normWidth = family == .nemotron ? 2 * C : C   // LayerNorm1P has a bias
        let attention = C * (numAttentionHeads + 2 * numKeyValueHeads) * D + numAttentionHeads * D * C
        let mlp = (family == .llama ? 3 : 2) * C * F
        return numHiddenLayers * (2 * normWidth + attention + mlp) + normWidth
    }

    /// Weights that take part in a matrix product per token: every layer's projections plus the
    /// LM head (the embedding lookup is not a product; a tied LM head still is).
    public var matmulParameterCount: Int {
        let C = hiddenSize, F = intermediateSize, D = headDim
        let attention = C * (numAttentionHeads + 2 * numKeyValueHeads) * D + numAttentionHeads * D * C
        let mlp = (family == .llama ? 3 : 2) * C * F
        return numHiddenLayers * (attention + mlp) + vocabSize * C
    }

    /// Forward FLOPs per token at sequence length T, PaLM's convention:
    /// `2 · matmul weights + 4 · L · H · D · T` (the attention products QKᵀ and PV, full T×T).
    /// Norms, softmax and activations are not counted. Training is 3× this.
    public func forwardFLOPsPerToken(sequence T: Int) -> Int {
        2 * matmulParameterCount + 4 * numHiddenLayers * numAttentionHeads * headDim * T
    }

    /// Bytes to train with AdamW at (batch, sequence): parameters, gradients and two moments in
    /// F32, plus every activation the engine keeps (``Activations/floatCount(config:B:T:threads:)``).
    public func trainingMemory(batch B: Int, sequence T: Int) -> (state: Int, activations: Int) {
        (parameterCount * 4 * 4, Activations.floatCount(config: self, B: B, T: T) * 4)
    }
}
