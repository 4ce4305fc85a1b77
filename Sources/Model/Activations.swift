/// Every activation a training step keeps, for one (batch B, sequence T) shape, carved out of
/// one allocation and reused every step. N = B·T.
///
/// Per layer: `residual[l]` (N, C) the stream entering layer l (`residual[L]` leaves the
/// last layer), `mid` (N, C) after attention, `norm1`/`norm2` (N, C) normalised inputs with
/// `mean`/`rstd` (N) each, `qkv` (N, (H+2G)·D) after rotary, `probs` (B, H, T, T), `attn`
/// (N, H·D), `mlpPre` (R, 2F or F), `mlpAct` (R, F) with R = N for a dense MLP and N·k
/// (one row per token and chosen expert, grouped by expert) for a mixture. Then `finalNorm`
/// (N, C) and `logits` (N, V) (overwritten by dlogits in the backward pass). Mixture layers
/// add a ``RouterState`` per router and the gathered expert inputs and outputs (N·k, ·).
/// Gradient scratch is shared by layers.
public final class Activations {
    public let B: Int, T: Int
    public var N: Int { B * T }
    let config: ModelConfig
    let storage: FloatBuffer
    /// Token ids (N) and targets (N, -1 = ignored) of the current step.
    public internal(set) var tokens: [Int32]
    public internal(set) var targets: [Int32]
    let rotary: RotaryTable

    public struct Layer {
        public var mid, norm1, mean1, rstd1, qkv, probs, attn, norm2, mean2, rstd2, mlpPre,
            mlpAct: UnsafeMutablePointer<Float>
        /// Mixture MLP: its router, gathered inputs (N·k, C) and expert outputs (N·k, C).
        public var mlpRouter: RouterState?
        public internal(set) var mlpGathered, mlpExpertOut: UnsafeMutablePointer<Float>?
        /// A mixture's shared expert (Qwen3.5-MoE, Nemotron-H): its pre-activation (N, 2S or S),
        /// activation (N, S), output before its gate (N, C) and gate logit (N) (Qwen3.5-MoE's).
        public internal(set) var sharedPre, sharedAct, sharedOut, sharedLogit: UnsafeMutablePointer<Float>?
        /// Nemotron-H's latent mixture: the routed experts' input (N, L) = norm2 · W_fc1ᵀ and
        /// their combined output (N, L) before W_fc2.
        public internal(set) var latentIn, latentOut: UnsafeMutablePointer<Float>?
        /// Mixture of attention: its router, gathered inputs (N·k, C), gathered attention
        /// outputs (N·k, G·D) and expert outputs (N·k, C).
        public var attentionRouter: RouterState?
        public internal(set) var attnGathered, attnSlots, attnExpertOut: UnsafeMutablePointer<Float>?
        /// Qwen3's query/key norms: their inputs (N, (H+G)·D) and reciprocal RMS (N, H+G).
        public internal(set) var qkNormInput, qkRstd: UnsafeMutablePointer<Float>?
        /// A Mamba2 mixer (in a hybrid decoder's Mamba2 layers).
        public internal(set) var mamba: MambaActivations?
        /// A Gated DeltaNet mixer (in Qwen3.5's linear-attention layers).
        public internal(set) var deltaNet: DeltaNetActivations?
        /// Gated attention (Qwen3.5): the gate before its sigmoid and attention's output before
        /// the gate, (N, H·D) each; `attn` holds the gated output.
        public internal(set) var attnGate, attnUngated: UnsafeMutablePointer<Float>?
    }

    /// A Gated DeltaNet mixer's activations: the in-projection (N, W = convDim + V + 2·Hv), the
    /// convolution's output before its SiLU and after it (N, convDim: q, k, v), the normalised
    /// queries (scaled by 1/√Dk) and keys (N, Hk·Dk each) with their reciprocal norms (N, Hk
    /// each), the log decay g and the rate β (N, Hv each), the rule's output (N, V), the gated
    /// norm's output (N, V) and reciprocal RMS (N, Hv), and the state at the start of every
    /// chunk (B, Hv, chunks, Dk, Dv).
    public struct DeltaNetActivations {
        public internal(set) var projection, convPre, xbc, q, k, qInv, kInv, g, beta, o, normed, rstd,
            states: UnsafeMutablePointer<Float>
    }

    /// A Mamba2 mixer's activations: the in-projection (N, W = I + convDim + H), the
    /// convolution's output before its SiLU and after it (N, convDim: x, B, C), the time steps Δ
    /// (N, H), the scan's output y (N, I), the gated norm's output (N, I) and reciprocal RMS
    /// (N, groups), and the scan's state at the start of every chunk (B, chunks, H, P, N).
    public struct MambaActivations {
        public internal(set) var projection, convPre, xbc, dt, y, normed, rstd, states: UnsafeMutablePointer<Float>
    }
    public internal(set) var residual: [UnsafeMutablePointer<Float>] = []
    /// Per-layer activations of the last forward pass (read by importance scoring).
    public internal(set) var layers: [Layer] = []
    public internal(set) var finalNorm: UnsafeMutablePointer<Float>
    var finalMean, finalRstd, logitsPointer, rowLoss: UnsafeMutablePointer<Float>
    // Gradient scratch, shared by all layers.
    public internal(set) var dResidual: UnsafeMutablePointer<Float>
    var dNorm, dQKV, dAttn, dMLPPre, dMLPAct, dScores: UnsafeMutablePointer<Float>
    /// Mixture scratch: dGates (N·k), dLogits (N·E), per-row expert gradients (N·k, max(C, G·D, L)),
    /// and the latent mixture's (N, L).
    var dGates, dRouterLogits, dExpertRows, dLatent: UnsafeMutablePointer<Float>
    /// Mamba2 scratch: d(projection) (N, W), d(x, B, C) (N, convDim), dy and d(normed) (N, I),
    /// dΔ (N, H), and per-sequence dA and dD (B, 2H).
    var dMambaProjection, dMambaXBC, dMambaY, dMambaNormed, dMambaDt, dMambaAD: UnsafeMutablePointer<Float>
    /// Gated attention's projection (N, (2H + 2G)·D), forward and backward; DeltaNet scratch:
    /// d(projection) (N, W), d(q, k, v) (N, convDim), d(output) and d(normed) (N, V), each value
    /// head's dq and dk (N, Hv, Dk each), dg and dβ (N, Hv each).
    var gatedProjection, dDeltaProjection, dDeltaXBC, dDeltaO, dDeltaNormed, dDeltaQK,
        dDeltaGB: UnsafeMutablePointer<Float>

    /// Hands out consecutive pieces of one allocation; with no base it only counts.
    private struct Carver {
        let base: UnsafeMutablePointer<Float>?
        var used = 0
        mutating func take(_ n: Int) -> UnsafeMutablePointer<Float> {
            defer { used += n }
            // While counting, a never-dereferenced placeholder.
            return base.map { $0 + used } ?? UnsafeMutablePointer(bitPattern: 64)!
        }
    }

    /// Floats needed for shape (B, T), used by ``ModelConfig/trainingMemory(batch:sequence:)``.
    /// Every layer carves the same amount, so the count is affine in the layer count: two small
    /// plans give it for any depth without per-layer arrays (a config of 2^31 layers only counts).
    /// Saturates at `Int.max` instead of overflowing.
    public static func floatCount(config c: ModelConfig, B: Int, T: Int, threads: Int = Parallel.threads) -> Int {
        func count(layers: Int) -> Int {
            var shallow = c
            shallow.numHiddenLayers = layers
            var carver = Carver(base: nil)
            _ = Plan(config: shallow, B: B, T: T, threads: threads, carver: &carver)
            return carver.used
        }
        let L = c.numHiddenLayers
        // A hybrid decoder's layers carve what their type needs: its list is explicit, so it is
        // counted layer by layer.
        if L <= 2 || c.hybridLayers != nil { return count(layers: L) }
        let one = count(layers: 1), perLayer = count(layers: 2) - one
        let (product, overflow) = perLayer.multipliedReportingOverflow(by: L - 1)
        let (total, overflow2) = one.addingReportingOverflow(product)
        return overflow || overflow2 ? Int.max : total
    }

    /// Every pointer of one shape, in carving order (the one place that sizes activations).
    private struct Plan {
        var residual: [UnsafeMutablePointer<Float>] = []
        var layers: [Layer] = []
        var finalNorm, finalMean, finalRstd, logits, rowLoss: UnsafeMutablePointer<Float>
        var dResidual, dNorm, dQKV, dAttn, dMLPPre, dMLPAct, dScores, dGates, dRouterLogits,
            dExpertRows, dLatent: UnsafeMutablePointer<Float>
        var dMambaProjection, dMambaXBC, dMambaY, dMambaNormed, dMambaDt, dMambaAD: UnsafeMutablePointer<Float>
        var gatedProjection, dDeltaProjection, dDeltaXBC, dDeltaO, dDeltaNormed, dDeltaQK,
            dDeltaGB: UnsafeMutablePointer<Float>

        init(config c: ModelConfig, B: Int, T: Int, threads: Int, carver: inout Carver) {
            let N = B * T, C = c.hiddenSize
            let qkvW = (c.numAttentionHeads + 2 * c.numKeyValueHeads) * c.headDim
            let attnW = c.numAttentionHeads * c.headDim
            let k = c.isMixture ? c.numExpertsPerTok : 1, E = c.numLocalExperts
            let rows = c.isMixture ? N * k : N
            let GD = c.attentionExpertWidth
            // MLP buffers hold a dense layer's (N rows of F = intermediate_size) or a mixture's
            // (N·k rows of the expert width), whichever is larger: every layer carves the same.
            let hasDense = !c.isMixture || !c.denseMLPLayers.isEmpty || c.hybridLayers?.contains(.mlp) == true
            let dense =
                hasDense
                ? (pre: N * (c.family.isGated ? 2 : 1) * c.intermediateSize, act: N * c.intermediateSize)
                : (pre: 0, act: 0)
            let gatedMLP = c.family.isGated ? 2 : 1
            let sparse =
                c.isMixture ? (pre: rows * gatedMLP * c.expertWidth, act: rows * c.expertWidth) : (pre: 0, act: 0)
            let (preSize, actSize) = (max(dense.pre, sparse.pre), max(dense.act, sparse.act))
            let S = c.isMixture ? c.sharedExpertWidth : 0
            // The routed experts' rows are as wide as their input (the latent width, if any).
            let XW = max(C, c.expertInputWidth), latent = c.isMixture ? c.moeLatentSize ?? 0 : 0
            let qkHeads = c.family.hasQKNorm ? c.numAttentionHeads + c.numKeyValueHeads : 0
            let mamba = c.hybridLayers?.contains(.mamba) == true ? c.mamba : nil
            let chunks = (T + c.mambaChunkSize - 1) / c.mambaChunkSize
            let delta = c.hybridLayers?.contains(.deltaNet) == true ? c.deltaNet : nil
            let deltaChunks = (T + c.deltaNetChunkSize - 1) / c.deltaNetChunkSize
            let gated = c.family.definition.hasGatedAttention
            for _ in 0...c.numHiddenLayers { residual.append(carver.take(N * C)) }
            for l in 0..<c.numHiddenLayers {
                // A hybrid layer holds one mixer: attention's and the MLP's buffers only where it is one.
                let type = c.hybridLayers?[l]
                let attention = type == nil || type == .attention
                let mlp = type == nil || type == .mlp || type == .moe || c.family.definition.hybridMixersHaveMLP
                var layer = Layer(
                    mid: carver.take(N * C), norm1: carver.take(N * C), mean1: carver.take(N), rstd1: carver.take(N),
                    qkv: carver.take(attention ? N * qkvW : 0),
                    probs: carver.take(attention ? B * c.numAttentionHeads * T * T : 0),
                    attn: carver.take(attention ? N * attnW : 0), norm2: carver.take(N * C), mean2: carver.take(N),
                    rstd2: carver.take(N),
                    mlpPre: carver.take(mlp ? preSize : 0), mlpAct: carver.take(mlp ? actSize : 0))
                if qkHeads > 0 {
                    layer.qkNormInput = carver.take(N * qkHeads * c.headDim)
                    layer.qkRstd = carver.take(N * qkHeads)
                }
                if let m = mamba, type == .mamba {
                    layer.mamba = MambaActivations(
                        projection: carver.take(N * m.projectionWidth), convPre: carver.take(N * m.convWidth),
                        xbc: carver.take(N * m.convWidth), dt: carver.take(N * m.heads),
                        y: carver.take(N * m.innerWidth),
                        normed: carver.take(N * m.innerWidth), rstd: carver.take(N * m.groups),
                        states: carver.take(B * chunks * m.heads * m.headDim * m.stateSize))
                }
                if let d = delta, type == .deltaNet {
                    let (Hk, Hv) = (d.keyHeads, d.valueHeads)
                    layer.deltaNet = DeltaNetActivations(
                        projection: carver.take(N * d.projectionWidth), convPre: carver.take(N * d.convWidth),
                        xbc: carver.take(N * d.convWidth), q: carver.take(N * d.keyWidth),
                        k: carver.take(N * d.keyWidth),
                        qInv: carver.take(N * Hk), kInv: carver.take(N * Hk), g: carver.take(N * Hv),
                        beta: carver.take(N * Hv), o: carver.take(N * d.valueWidth),
                        normed: carver.take(N * d.valueWidth),
                        rstd: carver.take(N * Hv), states: carver.take(B * Hv * deltaChunks * d.keyDim * d.valueDim))
                }
                if gated, attention {
                    layer.attnGate = carver.take(N * attnW)
                    layer.attnUngated = carver.take(N * attnW)
                }
                if c.isMixture, c.family.isMixture || c.isSparse(layer: l) {
                    let router = RouterState(
                        N: N, E: E, k: k, allocate: carver.base != nil, carver: { carver.take($0) })
                    layer.mlpRouter = c.isSparse(layer: l) ? router : nil
                    layer.mlpGathered = carver.take(rows * XW)
                    layer.mlpExpertOut = carver.take(rows * XW)
                    if S > 0, c.isSparse(layer: l) {
                        layer.sharedPre = carver.take(N * gatedMLP * S)
                        layer.sharedAct = carver.take(N * S)
                        layer.sharedOut = carver.take(N * C)
                        if c.family.definition.hasSharedExpertGate { layer.sharedLogit = carver.take(N) }
                    }
                    if latent > 0, c.isSparse(layer: l) {
                        layer.latentIn = carver.take(N * latent)
                        layer.latentOut = carver.take(N * latent)
                    }
                }
                if c.family.hasAttentionExperts {
                    layer.attentionRouter = RouterState(
                        N: N, E: E, k: k, allocate: carver.base != nil, carver: { carver.take($0) })
                    layer.attnGathered = carver.take(rows * C)
                    layer.attnSlots = carver.take(rows * GD)
                    layer.attnExpertOut = carver.take(rows * C)
                }
                layers.append(layer)
            }
            finalNorm = carver.take(N * C); finalMean = carver.take(N); finalRstd = carver.take(N)
            logits = carver.take(N * c.vocabSize); rowLoss = carver.take(N)
            dResidual = carver.take(N * C); dNorm = carver.take(N * C); dQKV = carver.take(N * qkvW);
            dAttn = carver.take(N * attnW)
            // (The shared expert's backward uses them too.)
            dMLPPre = carver.take(max(preSize, N * gatedMLP * S)); dMLPAct = carver.take(max(actSize, N * S))
            dScores = carver.take(c.hybridLayers?.contains(.attention) ?? true ? threads * T * T : 0)
            let mixture = c.isMixture
            dGates = carver.take(mixture ? N * k : 0)
            dRouterLogits = carver.take(mixture ? N * E : 0)
            dExpertRows = carver.take(mixture ? 2 * rows * max(XW, GD) : 0)
            dLatent = carver.take(N * latent)
            dMambaProjection = carver.take(N * (mamba?.projectionWidth ?? 0))
            dMambaXBC = carver.take(N * (mamba?.convWidth ?? 0))
            dMambaY = carver.take(N * (mamba?.innerWidth ?? 0))
            dMambaNormed = carver.take(N * (mamba?.innerWidth ?? 0))
            dMambaDt = carver.take(N * (mamba?.heads ?? 0))
            dMambaAD = carver.take(B * 2 * (mamba?.heads ?? 0))
            gatedProjection = carver.take(gated ? N * (qkvW + attnW) : 0)
            dDeltaProjection = carver.take(N * (delta?.projectionWidth ?? 0))
            dDeltaXBC = carver.take(N * (delta?.convWidth ?? 0))
            dDeltaO = carver.take(N * (delta?.valueWidth ?? 0))
            dDeltaNormed = carver.take(N * (delta?.valueWidth ?? 0))
            dDeltaQK = carver.take(2 * N * (delta.map { $0.valueHeads * $0.keyDim } ?? 0))
            dDeltaGB = carver.take(2 * N * (delta?.valueHeads ?? 0))
        }
    }

    public init(config c: ModelConfig, batch B: Int, sequence T: Int) {
        self.B = B
        self.T = T
        config = c
        let N = B * T
        let threads = Parallel.threads
        storage = FloatBuffer(count: Activations.floatCount(config: c, B: B, T: T, threads: threads))
        tokens = [Int32](repeating: 0, count: N)
        targets = [Int32](repeating: -1, count: N)
        rotary = RotaryTable(config: c, T: T)
        var carver = Carver(base: storage.pointer)
        let plan = Plan(config: c, B: B, T: T, threads: threads, carver: &carver)
        precondition(carver.used <= storage.count)
        residual = plan.residual
        layers = plan.layers
        finalNorm = plan.finalNorm; finalMean = plan.finalMean; finalRstd = plan.finalRstd
        logitsPointer = plan.logits; rowLoss = plan.rowLoss
        dResidual = plan.dResidual; dNorm = plan.dNorm; dQKV = plan.dQKV; dAttn = plan.dAttn
        dMLPPre = plan.dMLPPre; dMLPAct = plan.dMLPAct; dScores = plan.dScores
        dGates = plan.dGates; dRouterLogits = plan.dRouterLogits; dExpertRows = plan.dExpertRows
        dLatent = plan.dLatent
        dMambaProjection = plan.dMambaProjection; dMambaXBC = plan.dMambaXBC; dMambaY = plan.dMambaY
        dMambaNormed = plan.dMambaNormed; dMambaDt = plan.dMambaDt; dMambaAD = plan.dMambaAD
        gatedProjection = plan.gatedProjection; dDeltaProjection = plan.dDeltaProjection; dDeltaXBC = plan.dDeltaXBC
        dDeltaO = plan.dDeltaO; dDeltaNormed = plan.dDeltaNormed; dDeltaQK = plan.dDeltaQK; dDeltaGB = plan.dDeltaGB
    }

    /// Logits (N, V) of the last forward pass (or dlogits after a loss with gradient).
    public var logits: UnsafeMutableBufferPointer<Float> { .init(start: logitsPointer, count: N * config.vocabSize) }
    /// The residual stream entering layer `l` (l = L: the last layer's output), (N, C).
    public func hidden(_ l: Int) -> UnsafeMutableBufferPointer<Float> {
        .init(start: residual[l], count: N * config.hiddenSize)
    }
    /// Each row's loss from the last ``DecoderModel/loss(_:gradient:)``, (N).
    public var rowLosses: UnsafeMutableBufferPointer<Float> { .init(start: rowLoss, count: N) }
    /// Every router of the last forward pass, in layer order (JetMoE: attention, then MLP).
    public var routers: [RouterState] {
        layers.flatMap { [$0.attentionRouter, $0.mlpRouter].compactMap { $0 } }
    }
}
