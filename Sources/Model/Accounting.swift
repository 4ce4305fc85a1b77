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

    /// Every block's parameters (``blocks``): each distinct block counted once and multiplied by
    /// how many layers it is.
    func allLayerParameters<N: Numeric>(active: Bool, in _: N.Type) -> N {
        distinctBlocks.reduce(N.zero) {
            $0 + N(exactly: $1.count)! * blockParameters($1.block, active: active, in: N.self)
        }
    }

    /// The distinct blocks with how many layers each is. Only the layers named by a per-layer
    /// list (sliding-window layers, dense-MLP layers) can differ from the rest, so this costs
    /// the lists' length, not the depth (a config of 10^12 layers is counted, and refused, at once).
    var distinctBlocks: [(block: Block, count: Int)] {
        var out: [(block: Block, count: Int)] = []
        func add(_ b: Block, _ n: Int) {
            if let i = out.firstIndex(where: { $0.block == b }) { out[i].count += n } else { out.append((b, n)) }
        }
        if layerVariants != nil || hybridLayers != nil {
            for l in 0..<numHiddenLayers { add(block(l), 1) }
            return out
        }
        let special = Set(slidingLayers).union(denseMLPLayers).filter { $0 >= 0 && $0 < numHiddenLayers }
        for l in special.sorted() { add(block(l), 1) }
        if numHiddenLayers > special.count {
            var l = 0
            while special.contains(l) { l += 1 }
            add(block(l), numHiddenLayers - special.count)
        }
        return out
    }

    /// One block's parameters, in any arithmetic: `Int` for exact counts, `Double` to find, before
    /// counting, a config whose counts would overflow. `active`: k of the E experts.
    func blockParameters<N: Numeric>(_ b: Block, active: Bool, in _: N.Type) -> N {
        func n(_ x: Int) -> N { N(exactly: x)! }
        let C = n(hiddenSize), definition = family.definition
        var total = n((b.hasMixer ? normWidth : 0) + (b.hasChannelMixer ? normWidth : 0))
        switch b.mixer {
        case .none: break
        case let .attention(_, G, D, _, E) where E > 0:
            // The experts' query and output projections, the shared key/value projection, the
            // router and the output bias.
            let GD = n(G) * n(D), used = n(active ? numExpertsPerTok : E)
            total += used * 2 * GD * C + 2 * GD * C + n(E) * C + C
        case let .attention(H, G, D, _, _):
            // Gated attention's q_proj projects each head's gate beside its queries.
            let queries = n(definition.hasGatedAttention ? 2 * H : H)
            total += C * (queries + 2 * n(G)) * n(D) + n(H) * n(D) * C
            if definition.hasQKVBias { total += (n(H) + 2 * n(G)) * n(D) }
            if definition.hasQKNorm { total += 2 * n(D) }
        case let .mamba(m):
            total += n(m.parameterCount(hidden: hiddenSize, convBias: mambaConvBias))
        case let .deltaNet(d):
            total += n(d.parameterCount(hidden: hiddenSize))
        }
        let matrices = n(definition.isGated ? 3 : 2) * C
        switch b.channelMixer {
        case .none: break
        case let .dense(F): total += matrices * n(F)
        case let .experts(E, k, F, S):
            // The routed experts work in the latent width where a latent projection (L, C) and
            // (C, L) surrounds them; the router reads the hidden state. (Nemotron-H's choice bias
            // is a buffer, not a parameter.)
            let expertMatrices = n(definition.isGated ? 3 : 2) * n(expertInputWidth)
            total += n(active ? k : E) * expertMatrices * n(F) + n(E) * C + (definition.expertsHaveOutputBias ? C : 0)
            if let L = moeLatentSize { total += 2 * n(L) * C }
            // The shared expert (every token's) and its (1, C) gate.
            if S > 0 { total += matrices * n(S) + (definition.hasSharedExpertGate ? C : 0) }
        }
        return total
    }

    /// Weights of one block that take part in a matrix product per token: the projections with
    /// the k chosen experts, and the routers.
    func blockMatmulParameters(_ b: Block) -> Int {
        let C = hiddenSize, k = numExpertsPerTok
        var total = 0
        switch b.mixer {
        case .none: break
        case let .attention(_, G, D, _, E) where E > 0: total += k * 2 * G * D * C + 2 * G * D * C + E * C
        case let .attention(H, G, D, _, _):
            total += C * ((family.definition.hasGatedAttention ? 2 * H : H) + 2 * G) * D + H * D * C
        case let .mamba(m): total += C * m.projectionWidth + m.innerWidth * C
        case let .deltaNet(d): total += C * d.projectionWidth + d.valueWidth * C
        }
        let matrices = (family.isGated ? 3 : 2) * C
        switch b.channelMixer {
        case .none: break
        case let .dense(F): total += matrices * F
        case let .experts(E, k, F, S):
            total += k * (family.isGated ? 3 : 2) * expertInputWidth * F + E * C + 2 * (moeLatentSize ?? 0) * C
            if S > 0 { total += matrices * S + (family.definition.hasSharedExpertGate ? C : 0) }
        }
        return total
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
        distinctBlocks.reduce(0) { $0 + $1.count * blockMatmulParameters($1.block) } + vocabSize * hiddenSize
    }

    /// Forward FLOPs per token at sequence length T, PaLM's convention:
    /// `2 · matmul weights + 4 · L · H · D · T` (the attention products QKᵀ and PV, full T×T),
    /// plus, per Mamba2 layer, `4 · I · N` (the state's update by the outer product of x and B,
    /// and its readout against C), and per Gated DeltaNet layer `6 · Hv · Dk · Dv` (the state's
    /// read against k, its rank-one update and its readout against q). Norms, softmax, the
    /// convolution and activations are not
    /// counted. Training is 3× this.
    public func forwardFLOPsPerToken(sequence T: Int) -> Int {
        let attentionLayers =
            layerVariants.map { v in v.filter { $0.keyValueGroups != nil }.count }
            ?? hybridLayers.map { $0.filter { $0 == .attention }.count } ?? numHiddenLayers
        let mambaLayers = hybridLayers.map { $0.filter { $0 == .mamba }.count } ?? 0
        let scan = mamba.map { 4 * $0.innerWidth * $0.stateSize } ?? 0
        let deltaLayers = hybridLayers.map { $0.filter { $0 == .deltaNet }.count } ?? 0
        let rule = deltaNet.map { 6 * $0.valueHeads * $0.keyDim * $0.valueDim } ?? 0
        return saturating(
            saturating(
                saturating(
                    saturating(matmulParameterCount, times: 2),
                    plus: saturating(saturating(4 * numAttentionHeads * headDim, times: attentionLayers), times: T)),
                plus: saturating(scan, times: mambaLayers)),
            plus: saturating(rule, times: deltaLayers))
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
