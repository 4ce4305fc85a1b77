import Foundation

// Shape legend (used in every doc comment of this module):
//   B batch, T sequence, N = B·T rows, C hidden, H query heads, G key/value heads,
//   D head dim, F MLP width, V vocabulary, L layers.

/// A decoder-only language model (every ``Family``: llama, nemotron, mistral, qwen2, qwen3, mixtral,
/// qwen3_moe, jetmoe) with its parameters and gradients
/// in flat buffers carved by a ``ParameterLayout``.
///
/// A training step is `forward` → `loss(gradient: true)` (or any loss that writes dlogits into
/// `activations.logits`) → `backward`. Backward accumulates into ``gradients``; the caller
/// zeroes them (``zeroGradients()``) before each step.
public final class DecoderModel {
    public let config: ModelConfig
    public let layout: ParameterLayout
    public let parameters: FloatBuffer
    public let gradients: FloatBuffer
    let layerOffsets: [LayerOffsets]
    /// The config's blocks, layer by layer (``ModelConfig/blocks``).
    let blocks: [Block]
    let embedding: Int
    let lmHead: Int
    let finalNorm: Int
    let finalNormBias: Int?

    /// Units to switch off in the forward pass, for importance analysis and for checking pruning
    /// against masking. Forward only: `backward` ignores masks (but a masked MLP neuron, whose
    /// activation is zero, passes no gradient).
    public var masks = ForwardMasks()

    /// Coefficients of the auxiliary router losses that ``backward(_:residualGradients:)`` adds
    /// (mixture families; default: the config's load-balancing coefficient, no z-loss).
    public var routerLossWeights: RouterLossWeights

    var routingStyle: RoutingStyle {
        if config.family.definition.routesBySigmoid {
            return .sigmoid(
                groups: config.routerGroups, topKGroups: config.routerTopKGroups, normalize: config.normTopKProb,
                scale: Float(config.routedScalingFactor))
        }
        return config.family.definition.routesTopKThenSoftmax
            ? .topKThenSoftmax : (config.normTopKProb ? .softmaxThenTopK : .softmaxTopKUnnormalized)
    }

    /// A model with zero parameters (load or ``initialize(seed:)`` next).
    public convenience init(config: ModelConfig) {
        let layout = ParameterLayout(config: config)
        self.init(config: config, layout: layout, parameters: FloatBuffer(count: layout.count))
    }

    /// A replica for data-parallel steps: it reads `source`'s parameters (the same buffer) and
    /// accumulates into its own gradients.
    public convenience init(replicaOf source: DecoderModel) {
        self.init(config: source.config, layout: source.layout, parameters: source.parameters)
        masks = source.masks
        routerLossWeights = source.routerLossWeights
    }

    private init(config: ModelConfig, layout: ParameterLayout, parameters: FloatBuffer) {
        self.config = config
        self.layout = layout
        self.parameters = parameters
        gradients = FloatBuffer(count: layout.count)
        let layout = layout
        blocks = config.blocks
        layerOffsets = blocks.enumerated().map { LayerOffsets(layout: layout, layer: $0, block: $1) }
        routerLossWeights = RouterLossWeights(loadBalancing: config.routerAuxLossCoef, zLoss: 0)
        embedding = layout.offset(.embedding)
        lmHead = config.tieWordEmbeddings ? embedding : layout.offset(.lmHead)
        finalNorm = layout.offset(.finalNorm)
        finalNormBias = layout.entry(.finalNormBias)?.offset
    }

    /// Initialises as transformers does: every matrix ~ N(0, initializer_range²); RMSNorm weights
    /// 1; LayerNorm1P weights and biases 0 (an effective scale of 1). Deterministic for a seed.
    public func initialize(seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        let std = config.initializerRange
        for e in layout.entries {
            let p = parameters.pointer + e.offset
            // Mamba2 as transformers initialises it: A_log = log(1…H), D = 1, Δ's bias the inverse
            // softplus of a log-uniform draw in [time_step_min, time_step_max] (floored at
            // time_step_floor), and the convolution as PyTorch's Conv1d, U(±1/√K).
            switch e.role {
            case .mambaALog?:
                for h in 0..<e.count { p[h] = Float(Foundation.log(Double(h + 1))) }
                continue
            case .mambaD?:
                p.update(repeating: 1, count: e.count)
                continue
            case .mambaDtBias?:
                let (lo, hi) = (Foundation.log(config.mambaTimeStepMin), Foundation.log(0.1))
                for h in 0..<e.count {
                    let dt = max(Foundation.exp(rng.uniform() * (hi - lo) + lo), 1e-4)
                    p[h] = Float(dt + Foundation.log(-Foundation.expm1(-dt)))
                }
                continue
            case .deltaALog?:
                // transformers: A ~ U(0.01, 16), dt_bias = 1.
                for h in 0..<e.count { p[h] = Float(Foundation.log(0.01 + rng.uniform() * (16 - 0.01))) }
                continue
            case .deltaDtBias?:
                p.update(repeating: 1, count: e.count)
                continue
            case .deltaConv?:
                let bound = 1 / Double(config.deltaNet?.convKernel ?? 1).squareRoot()
                for i in 0..<e.count { p[i] = Float((2 * rng.uniform() - 1) * bound) }
                continue
            case .mambaConv?, .mambaConvBias?:
                let bound = 1 / Double(config.mamba?.convKernel ?? 1).squareRoot()
                for i in 0..<e.count { p[i] = Float((2 * rng.uniform() - 1) * bound) }
                continue
            default: break
            }
            if e.shape.count >= 2 {
                for i in 0..<e.count { p[i] = Float(rng.normal() * std) }
            } else {
                let isRMSWeight = !config.family.hasNormBias && (e.role?.isNormWeight ?? false)
                p.update(repeating: isRMSWeight ? 1 : 0, count: e.count)
            }
        }
    }

    public func zeroGradients() { gradients.zero() }

    /// Adds `delta` to every zero-centred norm weight (a family whose RMSNorm scales by 1 + w
    /// holds 1 + w: +1 after reading a checkpoint's w). Other families are left as they are.
    public func shiftZeroCenteredNorms(by delta: Float) {
        guard config.family.definition.hasZeroCenteredNorms else { return }
        for e in layout.entries where e.role?.isZeroCenteredNorm == true {
            let p = parameters.pointer + e.offset
            for i in 0..<e.count { p[i] += delta }
        }
    }

    /// One tensor's parameters.
    public func tensor(_ name: String) -> UnsafeMutableBufferPointer<Float>? {
        layout.entry(name).map { .init(start: parameters.pointer + $0.offset, count: $0.count) }
    }

    // MARK: forward

    /// Runs the model on `tokens` (B·T ids, row-major) and leaves the logits in
    /// `acts.logits` (N, V). Token ids must be in 0..<V (checked).
    public func forward(tokens: [Int32], _ acts: Activations) throws {
        let (N, C, V) = (acts.N, config.hiddenSize, config.vocabSize)
        guard tokens.count == N else {
            throw ModelError.invalidInput("expected \(N) tokens (B \(acts.B) × T \(acts.T)), got \(tokens.count)")
        }
        for (i, t) in tokens.enumerated() where t < 0 || Int(t) >= V {
            throw ModelError.invalidInput("token id \(t) at position \(i) is outside the vocabulary 0..<\(V)")
        }
        acts.tokens = tokens
        let P = parameters.pointer
        // Embedding: residual[0][n] = wte[token[n]]
        let x0 = acts.residual[0]
        for n in 0..<N { (x0 + n * C).update(from: P + embedding + Int(tokens[n]) * C, count: C) }
        try forward(fromLayer: 0, acts)
    }

    /// The rest of a forward pass from the hidden state `acts.residual[l0]` (N, C) entering layer
    /// l0: layers l0…L−1 (honouring ``masks``), the final norm and the logits. l0 = L runs the
    /// head alone.
    public func forward(fromLayer l0: Int, _ acts: Activations) throws {
        let (N, C, V) = (acts.N, config.hiddenSize, config.vocabSize)
        let P = parameters.pointer
        precondition(l0 >= 0 && l0 <= config.numHiddenLayers)
        for l in l0..<config.numHiddenLayers {
            if masks.skipLayers.contains(l) {
                acts.residual[l + 1].update(from: acts.residual[l], count: N * C)
            } else {
                try layerForward(l, acts)
            }
        }
        let xL = acts.residual[config.numHiddenLayers]
        normForward(acts.finalNorm, acts.finalMean, acts.finalRstd, xL, weight: finalNorm, bias: finalNormBias, N: N)
        // logits (N, V) = finalNorm (N, C) · W_lm (V, C)ᵀ
        gemm(
            transB: true, m: N, n: V, k: C, a: acts.finalNorm, lda: C, b: P + lmHead, ldb: C, c: acts.logitsPointer,
            ldc: V)
    }

    func normForward(
        _ y: UnsafeMutablePointer<Float>, _ mean: UnsafeMutablePointer<Float>, _ rstd: UnsafeMutablePointer<Float>,
        _ x: UnsafePointer<Float>, weight: Int, bias: Int?, N: Int
    ) {
        let P = parameters.pointer, C = config.hiddenSize
        // A family may fix the per-layer norms' ε (JetMoE's 1e-6); the final norm reads the config.
        let eps = Float(weight != finalNorm ? config.family.definition.layerNormEps ?? config.normEps : config.normEps)
        if let bias {
            layerNorm1PForward(y, mean, rstd, x, P + weight, P + bias, N: N, C: C, eps: eps)
        } else {
            rmsNormForward(y, rstd, x, P + weight, N: N, C: C, eps: eps)
        }
    }

    func normBackward(
        _ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
        _ mean: UnsafePointer<Float>, _ rstd: UnsafePointer<Float>, weight: Int, bias: Int?, N: Int
    ) {
        let P = parameters.pointer, Gr = gradients.pointer, C = config.hiddenSize
        if let bias {
            layerNorm1PBackward(dx, Gr + weight, Gr + bias, dy, x, P + weight, mean, rstd, N: N, C: C)
        } else {
            rmsNormBackward(dx, Gr + weight, dy, x, P + weight, rstd, N: N, C: C)
        }
    }

    func attentionShape(_ B: Int, _ T: Int, layer l: Int = 0) -> AttentionShape {
        // Layer l's own key/value groups (a heterogeneous layer may keep fewer).
        var G = config.numKeyValueHeads
        if case let .attention(_, groups, _, _, _) = blocks[l].mixer { G = groups }
        return AttentionShape(
            B: B, T: T, H: config.numAttentionHeads, G: G, D: config.headDim,
            interleaved: config.family.hasAttentionExperts, window: config.window(layer: l) ?? 0)
    }

    /// Layer l's MLP width (0 without one).
    func mlpWidth(_ l: Int) -> Int {
        switch blocks[l].channelMixer {
        case let .dense(F): return F
        case .experts, .none: return config.intermediateSize
        }
    }

    /// Layer l alone: `acts.residual[l + 1]` from `acts.residual[l]` (masks of heads and neurons
    /// honoured, a skip mask not).
    public func forward(layer l: Int, _ acts: Activations) throws { try layerForward(l, acts) }

    func layerForward(_ l: Int, _ acts: Activations) throws {
        let c = config, o = layerOffsets[l], a = acts.layers[l], P = parameters.pointer
        let (N, C) = (acts.N, c.hiddenSize)
        let s = attentionShape(acts.B, acts.T, layer: l)
        let x = acts.residual[l], out = acts.residual[l + 1]
        if !o.hasMixer {
            // No attention: the residual stream passes through.
            a.mid.update(from: x, count: N * C)
        } else if let mo = o.mamba, let ma = a.mamba {
            normForward(a.norm1, a.mean1, a.rstd1, x, weight: o.norm1, bias: o.norm1Bias, N: N)
            mambaForward(l, mo, ma, acts)
        } else if let dn = o.deltaNet, let da = a.deltaNet {
            normForward(a.norm1, a.mean1, a.rstd1, x, weight: o.norm1, bias: o.norm1Bias, N: N)
            deltaNetForward(l, dn, da, acts)
        } else if let ex = o.attentionExperts, let r = a.attentionRouter {
            normForward(a.norm1, a.mean1, a.rstd1, x, weight: o.norm1, bias: o.norm1Bias, N: N)
            try mixtureOfAttentionForward(l, acts, ex, r)
        } else {
            normForward(a.norm1, a.mean1, a.rstd1, x, weight: o.norm1, bias: o.norm1Bias, N: N)
            if let gate = a.attnGate {
                // Gated attention: q_proj's rows are each head's queries then its gate.
                let PW = s.qkvWidth + s.outWidth, gp = acts.gatedProjection
                gemm(transB: true, m: N, n: PW, k: C, a: a.norm1, lda: C, b: P + o.qkv, ldb: C, c: gp, ldc: PW)
                splitGatedProjection(gp, qkv: a.qkv, gate: gate, s, rows: N)
            } else {
                // qkv (N, (H+2G)D) = norm1 (N, C) · W_qkv ((H+2G)D, C)ᵀ (+ bias)
                gemm(
                    transB: true, m: N, n: s.qkvWidth, k: C, a: a.norm1, lda: C, b: P + o.qkv, ldb: C, c: a.qkv,
                    ldc: s.qkvWidth)
            }
            if let bias = o.qkvBias { addRowBias(a.qkv, P + bias, rows: N, width: s.qkvWidth) }
            if let qn = o.qNorm, let kn = o.kNorm, let xs = a.qkNormInput, let rs = a.qkRstd {
                headNormForward(
                    a.qkv, saving: xs, rstd: rs, qWeight: P + qn, kWeight: P + kn, rows: N, s,
                    eps: Float(config.normEps))
            }
            // Rotary on the H query heads and the G key heads (adjacent in each row).
            acts.rotary.apply(a.qkv, rows: N, stride: s.qkvWidth, heads: s.H + s.G, D: s.D, inverse: false)
            attentionForward(a.attn, a.probs, a.qkv, s)
            if let gate = a.attnGate, let ungated = a.attnUngated {
                ungated.update(from: a.attn, count: N * s.outWidth)
                for i in 0..<(N * s.outWidth) { a.attn[i] *= sigmoid(gate[i]) }
            }
            maskHeads(l, a.attn, s, N: N)
            // mid = x + attn (N, HD) · W_o (C, HD)ᵀ
            a.mid.update(from: x, count: N * C)
            gemm(
                transB: true, m: N, n: C, k: s.outWidth, a: a.attn, lda: s.outWidth, b: P + o.o, ldb: s.outWidth,
                beta: 1, c: a.mid, ldc: C)
        }
        out.update(from: a.mid, count: N * C)
        guard o.hasChannelMixer else { return }
        normForward(a.norm2, a.mean2, a.rstd2, a.mid, weight: o.norm2, bias: o.norm2Bias, N: N)
        if let ex = o.mlpExperts, let r = a.mlpRouter {
            try mixtureMLPForward(l, acts, ex, r)
            return
        }
        denseMLPForward(l, norm: a.norm2, pre: a.mlpPre, act: a.mlpAct, out: out, rows: N)
    }

    /// Layer l's dense MLP on `rows` normed rows (rows, C): pre (rows, 2F|F) = norm · W_inᵀ, the
    /// activation (SwiGLU or squared ReLU) into act (rows, F), masked neurons zeroed, and
    /// out += act · W_downᵀ — the training forward pass and ``DecodeSession`` share it.
    func denseMLPForward(
        _ l: Int, norm: UnsafePointer<Float>, pre: UnsafeMutablePointer<Float>, act: UnsafeMutablePointer<Float>,
        out: UnsafeMutablePointer<Float>, rows N: Int
    ) {
        let o = layerOffsets[l]
        mlpForward(
            MLPWeights(input: o.mlpIn, down: o.down, width: mlpWidth(l), masked: masks.neurons[l] ?? []), norm: norm,
            pre: pre, act: act, out: out, rows: N)
    }

    /// One MLP's weights in the flat buffer: the fused gate and up projection (or up alone for
    /// squared ReLU) at `input`, the down projection at `down`, `width` neurons, of which
    /// `masked` are switched off (a dense MLP, or a mixture's shared expert).
    struct MLPWeights {
        var input: Int, down: Int, width: Int
        var masked: [Int]
    }

    /// An MLP on `rows` normed rows (rows, C): pre (rows, 2F | F) = norm · W_inᵀ, the activation
    /// (SwiGLU or squared ReLU) into act (rows, F) with masked neurons zeroed, and
    /// out (+)= act · W_downᵀ (`accumulate` false: out is overwritten).
    func mlpForward(
        _ w: MLPWeights, norm: UnsafePointer<Float>, pre: UnsafeMutablePointer<Float>, act: UnsafeMutablePointer<Float>,
        out: UnsafeMutablePointer<Float>, rows N: Int, accumulate: Bool = true
    ) {
        let P = parameters.pointer, C = config.hiddenSize, F = w.width
        let preWidth = config.family.isGated ? 2 * F : F
        gemm(transB: true, m: N, n: preWidth, k: C, a: norm, lda: C, b: P + w.input, ldb: C, c: pre, ldc: preWidth)
        if config.family.isGated {
            swigluForward(act, pre, N: N, F: F)
        } else {
            relu2Forward(act, pre, count: N * F)
        }
        for i in w.masked { for n in 0..<N { act[n * F + i] = 0 } }
        gemm(
            transB: true, m: N, n: C, k: F, a: act, lda: F, b: P + w.down, ldb: F, beta: accumulate ? 1 : 0, c: out,
            ldc: C)
    }

    /// Backward of ``mlpForward(_:norm:pre:act:out:rows:accumulate:)`` given dLoss/d(out) `dOut`
    /// (rows, C): the weights' gradients are added, and dLoss/d(norm) is written to `acts.dNorm`
    /// (`accumulate`: added). Masked neurons pass no gradient. Uses `acts.dMLPAct` and `dMLPPre`.
    func mlpBackward(
        _ w: MLPWeights, dOut: UnsafePointer<Float>, norm: UnsafePointer<Float>, pre: UnsafePointer<Float>,
        act: UnsafePointer<Float>, _ acts: Activations, rows N: Int, accumulate: Bool = false
    ) {
        let P = parameters.pointer, Gr = gradients.pointer, C = config.hiddenSize, F = w.width
        let preWidth = config.family.isGated ? 2 * F : F
        // dW_down (C, F) += dOutᵀ · act; dAct (N, F) = dOut · W_down.
        gemm(transA: true, m: C, n: F, k: N, a: dOut, lda: C, b: act, ldb: F, beta: 1, c: Gr + w.down, ldc: F)
        gemm(m: N, n: F, k: C, a: dOut, lda: C, b: P + w.down, ldb: F, c: acts.dMLPAct, ldc: F)
        for i in w.masked { for n in 0..<N { acts.dMLPAct[n * F + i] = 0 } }
        if config.family.isGated {
            swigluBackward(acts.dMLPPre, acts.dMLPAct, pre, N: N, F: F)
        } else {
            relu2Backward(acts.dMLPPre, acts.dMLPAct, pre, count: N * F)
        }
        // dW_in (2F|F, C) += dPreᵀ · norm; dNorm (N, C) (+)= dPre · W_in.
        gemm(
            transA: true, m: preWidth, n: C, k: N, a: acts.dMLPPre, lda: preWidth, b: norm, ldb: C, beta: 1,
            c: Gr + w.input, ldc: C)
        gemm(
            m: N, n: C, k: preWidth, a: acts.dMLPPre, lda: preWidth, b: P + w.input, ldb: C, beta: accumulate ? 1 : 0,
            c: acts.dNorm, ldc: C)
    }

    /// Gated attention's projection rows (N, (2H + 2G)·D: each head's queries then its gate, then
    /// keys and values) into qkv (N, (H + 2G)·D) and the gates (N, H·D).
    func splitGatedProjection(
        _ gp: UnsafePointer<Float>, qkv: UnsafeMutablePointer<Float>, gate: UnsafeMutablePointer<Float>,
        _ s: AttentionShape, rows N: Int
    ) {
        let PW = s.qkvWidth + s.outWidth, D = s.D, kv = s.qkvWidth - s.outWidth
        for n in 0..<N {
            let row = gp + n * PW
            for h in 0..<s.H {
                (qkv + n * s.qkvWidth + h * D).update(from: row + h * 2 * D, count: D)
                (gate + n * s.outWidth + h * D).update(from: row + h * 2 * D + D, count: D)
            }
            (qkv + n * s.qkvWidth + s.outWidth).update(from: row + 2 * s.outWidth, count: kv)
        }
    }

    /// The inverse of ``splitGatedProjection(_:qkv:gate:_:rows:)`` for gradients: dqkv's query,
    /// key and value columns into `gp`, whose gate columns are already there.
    func mergeGatedProjection(
        _ dqkv: UnsafePointer<Float>, into gp: UnsafeMutablePointer<Float>, _ s: AttentionShape, rows N: Int
    ) {
        let PW = s.qkvWidth + s.outWidth, D = s.D, kv = s.qkvWidth - s.outWidth
        for n in 0..<N {
            let row = gp + n * PW
            for h in 0..<s.H { (row + h * 2 * D).update(from: dqkv + n * s.qkvWidth + h * D, count: D) }
            (row + 2 * s.outWidth).update(from: dqkv + n * s.qkvWidth + s.outWidth, count: kv)
        }
    }

    /// Zeroes the attention output (N, H·D) of the query heads masked in layer l.
    func maskHeads(_ l: Int, _ attn: UnsafeMutablePointer<Float>, _ s: AttentionShape, N: Int) {
        for h in masks.heads[l] ?? [] {
            for n in 0..<N { (attn + n * s.outWidth + h * s.D).update(repeating: 0, count: s.D) }
        }
    }

    // MARK: loss

    /// Sets next-token targets for `tokens` laid out as B rows of T: target[b, t] = token[b, t+1],
    /// and the last position of each row is ignored (transformers' shift convention).
    public static func shiftedTargets(_ tokens: [Int32], batch B: Int, sequence T: Int) -> [Int32] {
        var t = [Int32](repeating: -1, count: B * T)
        for b in 0..<B { for i in 0..<(T - 1) { t[b * T + i] = tokens[b * T + i + 1] } }
        return t
    }

    /// Mean cross-entropy of the current logits against `targets` (N, -1 = ignored). With
    /// `gradient`, the logits are replaced by dLoss/dlogits, ready for ``backward(_:)``.
    public func loss(_ acts: Activations, targets: [Int32], gradient: Bool) throws -> Double {
        guard targets.count == acts.N else {
            throw ModelError.invalidInput("expected \(acts.N) targets, got \(targets.count)")
        }
        for (i, t) in targets.enumerated() where Int(t) >= config.vocabSize {
            throw ModelError.invalidInput(
                "target id \(t) at position \(i) is outside the vocabulary 0..<\(config.vocabSize)")
        }
        acts.targets = targets
        return targets.withUnsafeBufferPointer { tp in
            crossEntropy(
                acts.logitsPointer, targets: tp.baseAddress!, rowLoss: acts.rowLoss, N: acts.N, V: config.vocabSize,
                gradient: gradient)
        }
    }

    // MARK: backward

    /// Backpropagates dlogits (left in `acts.logits` by a loss) through the model, adding into
    /// ``gradients``. `residualGradients[l]` (N, C), when given, is added to the gradient of the
    /// residual stream entering layer l (l = L: the last layer's output) — how a loss on hidden
    /// states (distillation) enters the backward pass.
    ///
    /// `batchActivations`: when this pass is one worker's share of a larger batch, the activations
    /// of every share (this one included), so that the auxiliary router losses are those of the
    /// whole batch (their routing statistics and normalisation span all shares).
    public func backward(
        _ acts: Activations, residualGradients: [Int: UnsafePointer<Float>] = [:],
        batchActivations: [Activations]? = nil
    ) {
        let (N, C, V) = (acts.N, config.hiddenSize, config.vocabSize)
        let P = parameters.pointer, Gr = gradients.pointer
        let dlogits = acts.logitsPointer
        // dW_lm (V, C) += dlogitsᵀ (V, N) · finalNorm (N, C)
        gemm(
            transA: true, m: V, n: C, k: N, a: dlogits, lda: V, b: acts.finalNorm, ldb: C, beta: 1, c: Gr + lmHead,
            ldc: C)
        // dNorm (N, C) = dlogits (N, V) · W_lm (V, C)
        gemm(m: N, n: C, k: V, a: dlogits, lda: V, b: P + lmHead, ldb: C, c: acts.dNorm, ldc: C)
        let L = config.numHiddenLayers
        acts.dResidual.update(repeating: 0, count: N * C)
        normBackward(
            acts.dResidual, acts.dNorm, acts.residual[L], acts.finalMean, acts.finalRstd, weight: finalNorm,
            bias: finalNormBias, N: N)
        func addResidualGradient(_ l: Int) {
            guard let g = residualGradients[l] else { return }
            let d = acts.dResidual
            for i in 0..<(N * C) { d[i] += g[i] }
        }
        let routing = routerGradientTerms((batchActivations ?? [acts]).flatMap(\.routers))
        for l in stride(from: L - 1, through: 0, by: -1) {
            addResidualGradient(l + 1)
            layerBackward(l, acts, routing)
        }
        addResidualGradient(0)
        // Embedding: dwte[token[n]] += dResidual[n]
        let dx = acts.dResidual
        for n in 0..<N {
            let row = Gr + embedding + Int(acts.tokens[n]) * C, d = dx + n * C
            for i in 0..<C { row[i] += d[i] }
        }
    }

    /// Layer l alone, after ``forward(layer:_:)``: `outputGradient` (N, C) is dLoss/d(residual[l+1]);
    /// the layer's parameter gradients are added to ``gradients`` and dLoss/d(residual[l]) is
    /// left in `acts.dResidual` (blockwise local distillation trains one block this way). Dense
    /// blocks only: a mixture's router losses span the whole model.
    public func backward(layer l: Int, _ acts: Activations, outputGradient: UnsafePointer<Float>) {
        precondition(
            layerOffsets[l].mlpExperts == nil && layerOffsets[l].attentionExperts == nil,
            "backward(layer:) is for dense blocks")
        acts.dResidual.update(from: outputGradient, count: acts.N * config.hiddenSize)
        layerBackward(l, acts, routerGradientTerms([]))
    }

    /// On entry `acts.dResidual` holds dLoss/d(residual[l+1]); on exit dLoss/d(residual[l]).
    func layerBackward(_ l: Int, _ acts: Activations, _ routing: RouterGradientTerms) {
        let o = layerOffsets[l], a = acts.layers[l]
        let P = parameters.pointer, Gr = gradients.pointer
        let (N, C) = (acts.N, config.hiddenSize)
        let s = attentionShape(acts.B, acts.T, layer: l)
        let dres = acts.dResidual
        // A missing sub-block passes the residual's gradient through unchanged.
        if !o.hasChannelMixer {
        } else if let ex = o.mlpExperts, let r = a.mlpRouter {
            mixtureMLPBackward(l, acts, ex, r, routing)
        } else {
            mlpBackward(
                MLPWeights(input: o.mlpIn, down: o.down, width: mlpWidth(l), masked: masks.neurons[l] ?? []),
                dOut: dres, norm: a.norm2, pre: a.mlpPre, act: a.mlpAct, acts, rows: N)
        }
        if o.hasChannelMixer {
            normBackward(dres, acts.dNorm, a.mid, a.mean2, a.rstd2, weight: o.norm2, bias: o.norm2Bias, N: N)
        }
        guard o.hasMixer else { return }
        if let mo = o.mamba, let ma = a.mamba {
            mambaBackward(l, mo, ma, acts)
        } else if let dn = o.deltaNet, let da = a.deltaNet {
            deltaNetBackward(l, dn, da, acts)
        } else if let ex = o.attentionExperts, let r = a.attentionRouter {
            mixtureOfAttentionBackward(l, acts, ex, r, routing)
        } else {
            // Attention. dW_o (C, HD) += dresᵀ · attn; dAttn (N, HD) = dres (N, C) · W_o (C, HD)
            gemm(
                transA: true, m: C, n: s.outWidth, k: N, a: dres, lda: C, b: a.attn, ldb: s.outWidth, beta: 1,
                c: Gr + o.o, ldc: s.outWidth)
            gemm(
                m: N, n: s.outWidth, k: C, a: dres, lda: C, b: P + o.o, ldb: s.outWidth, c: acts.dAttn, ldc: s.outWidth)
            let PW = s.qkvWidth + s.outWidth, gp = acts.gatedProjection
            if let gate = a.attnGate, let ungated = a.attnUngated {
                // attn = ungated·σ(gate): the gate's gradient goes to its rows of the projection.
                let H = s.H, D = s.D
                for n in 0..<N {
                    for h in 0..<H {
                        for d in 0..<D {
                            let i = n * s.outWidth + h * D + d, sg = sigmoid(gate[i]), g = acts.dAttn[i]
                            gp[n * PW + h * 2 * D + D + d] = g * ungated[i] * sg * (1 - sg)
                            acts.dAttn[i] = g * sg
                        }
                    }
                }
            }
            attentionBackward(acts.dQKV, acts.dAttn, a.qkv, a.probs, acts.dScores, s)
            acts.rotary.apply(acts.dQKV, rows: N, stride: s.qkvWidth, heads: s.H + s.G, D: s.D, inverse: true)
            if let qn = o.qNorm, let kn = o.kNorm, let xs = a.qkNormInput, let rs = a.qkRstd {
                headNormBackward(
                    acts.dQKV, xs, rstd: rs, qWeight: P + qn, kWeight: P + kn, dqWeight: Gr + qn, dkWeight: Gr + kn,
                    rows: N, s)
            }
            if let bias = o.qkvBias { addColumnSums(Gr + bias, acts.dQKV, rows: N, width: s.qkvWidth) }
            // dW_qkv += dQKVᵀ · norm1; dNorm (N, C) = dQKV (N, (H+2G)D) · W_qkv ((H+2G)D, C)
            let (dp, width) = a.attnGate != nil ? (gp, PW) : (acts.dQKV, s.qkvWidth)
            if a.attnGate != nil { mergeGatedProjection(acts.dQKV, into: gp, s, rows: N) }
            gemm(
                transA: true, m: width, n: C, k: N, a: dp, lda: width, b: a.norm1, ldb: C, beta: 1, c: Gr + o.qkv,
                ldc: C)
            gemm(m: N, n: C, k: width, a: dp, lda: width, b: P + o.qkv, ldb: C, c: acts.dNorm, ldc: C)
        }
        normBackward(dres, acts.dNorm, acts.residual[l], a.mean1, a.rstd1, weight: o.norm1, bias: o.norm1Bias, N: N)
    }

}

/// Units switched off in a forward pass: whole layers (the residual stream passes through),
/// query heads (their attention output is zero) and MLP neurons (their activation is zero).
public struct ForwardMasks: Sendable, Equatable {
    public var skipLayers: Set<Int> = []
    /// layer → masked query heads
    public var heads: [Int: [Int]] = [:]
    /// layer → masked MLP neurons (mixtures: neuron i of expert e is e·F + i)
    public var neurons: [Int: [Int]] = [:]
    /// layer → MLP experts removed from routing (router logit −∞)
    public var experts: [Int: [Int]] = [:]
    /// layer → JetMoE attention experts removed from routing
    public var attentionExperts: [Int: [Int]] = [:]
    /// layer → Mamba2 heads, and head channels (of every head), removed: their output is zero
    /// and they leave the gated norm's mean, as if pruned
    public var mambaHeads: [Int: [Int]] = [:]
    public var mambaChannels: [Int: [Int]] = [:]
    /// layer → Gated DeltaNet value heads removed: their output is zero, as if pruned
    public var deltaNetHeads: [Int: [Int]] = [:]
    /// layer → Gated DeltaNet value channels (of every value head) removed: their output is zero
    /// and they leave the gated norm's mean, as if pruned
    public var deltaNetChannels: [Int: [Int]] = [:]
    public init(
        skipLayers: Set<Int> = [], heads: [Int: [Int]] = [:], neurons: [Int: [Int]] = [:],
        experts: [Int: [Int]] = [:], attentionExperts: [Int: [Int]] = [:]
    ) {
        self.skipLayers = skipLayers; self.heads = heads; self.neurons = neurons
        self.experts = experts; self.attentionExperts = attentionExperts
    }
}
