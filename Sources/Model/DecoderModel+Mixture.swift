import Foundation

// The mixture-of-experts parts of the decoder (mixtral, jetmoe): routers, the mixture MLP,
// JetMoE's mixture of attention, their backward passes and the auxiliary router losses.
// Shapes: N rows, C hidden, E experts, k chosen per token, F expert width, G·D JetMoE's
// key/value width; "rows" of an expert are (token, choice) pairs grouped by expert.

extension DecoderModel {
    /// Router logits (N, E) = x (N, C) · W_r (E, C)ᵀ, then the routing decisions (`correction`:
    /// the sigmoid router's choice bias).
    func routerForward(
        _ r: RouterState, _ x: UnsafePointer<Float>, weight: Int, correction: Int? = nil, masked: [Int], layer l: Int,
        name: String?
    ) throws {
        gemm(
            transB: true, m: r.N, n: r.E, k: config.hiddenSize, a: x, lda: config.hiddenSize,
            b: parameters.pointer + weight,
            ldb: config.hiddenSize, c: r.logits, ldc: r.E)
        guard
            r.route(
                style: routingStyle, masked: masked,
                correction: correction.map { UnsafePointer(parameters.pointer + $0) })
        else {
            throw ModelError.router(
                layer: l, tensor: name ?? "router of layer \(l)",
                reason: "router logits are not finite (NaN or infinity); the router weights or its input hold NaN")
        }
    }

    /// Mixture MLP: out (already = mid) += Σ_j gate_j · expert_j(x) (+ JetMoE's bias, + the
    /// shared expert). x is norm2, or its latent projection x_L (N, L) = norm2 · W_fc1ᵀ, whose
    /// combined output y_L goes back through W_fc2 (Nemotron-H). Expert e: SwiGLU, pre = x ·
    /// W_in,eᵀ (2F), act = silu(gate) · up; or squared ReLU, pre (F), act = relu(pre)²; then
    /// y = act · W_out,eᵀ.
    func mixtureMLPForward(_ l: Int, _ acts: Activations, _ ex: ExpertOffsets, _ r: RouterState) throws {
        let a = acts.layers[l], P = parameters.pointer
        let (C, F, X) = (config.hiddenSize, config.expertWidth, config.expertInputWidth)
        let gated = config.family.isGated, preWidth = gated ? 2 * F : F
        try routerForward(
            r, a.norm2, weight: ex.router, correction: ex.correctionBias, masked: masks.experts[l] ?? [], layer: l,
            name: layerOffsets[l].mlpRouterName)
        var x = UnsafePointer(a.norm2)
        if let fc1 = ex.latentIn, let xl = a.latentIn {
            gemm(transB: true, m: r.N, n: X, k: C, a: a.norm2, lda: C, b: P + fc1, ldb: C, c: xl, ldc: X)
            x = UnsafePointer(xl)
        }
        let xg = a.mlpGathered!, y = a.mlpExpertOut!, rows = r.N * r.k
        gatherRows(xg, x, width: X, router: r)
        expertsForward(a.mlpPre, xg, m: preWidth, kk: X, weights: { P + ex.input($0) }, router: r)
        if gated {
            swigluForward(a.mlpAct, a.mlpPre, N: rows, F: F)
        } else {
            relu2Forward(a.mlpAct, a.mlpPre, count: rows * F)
        }
        if let masked = masks.neurons[l], !masked.isEmpty {
            // Neuron ids of a mixture are e·F + i.
            for row in 0..<rows {
                let e = r.expert(ofRow: row)
                for id in masked where id / F == e { a.mlpAct[row * F + id % F] = 0 }
            }
        }
        expertsForward(y, a.mlpAct, m: X, kk: F, weights: { P + ex.output($0) }, router: r)
        if let fc2 = ex.latentOut, let yl = a.latentOut {
            yl.update(repeating: 0, count: r.N * X)
            combineExperts(yl, y, bias: nil, C: X, router: r)
            gemm(
                transB: true, m: r.N, n: C, k: X, a: yl, lda: X, b: P + fc2, ldb: X, beta: 1, c: acts.residual[l + 1],
                ldc: C)
        } else {
            combineExperts(acts.residual[l + 1], y, bias: ex.bias.map { UnsafePointer(P + $0) }, C: C, router: r)
        }
        if let sh = ex.shared { sharedExpertForward(l, sh, a, out: acts.residual[l + 1], rows: r.N, experts: ex.count) }
    }

    /// The shared expert as an MLP: its weights, and its masked neurons (mixture ids E·F + i).
    func sharedExpertWeights(_ l: Int, _ sh: SharedExpertOffsets, experts E: Int) -> MLPWeights {
        let first = E * config.expertWidth
        return MLPWeights(
            input: sh.input, down: sh.down, width: sh.width,
            masked: (masks.neurons[l] ?? []).filter { $0 >= first }.map { $0 - first })
    }

    /// A mixture's shared expert (``mlpForward(_:norm:pre:act:out:rows:accumulate:)`` on norm2),
    /// added to out as it is (Nemotron-H), or as σ(logit) · y with logit (N) = norm2 · w_g where it
    /// has a gate (Qwen3.5-MoE).
    func sharedExpertForward(
        _ l: Int, _ sh: SharedExpertOffsets, _ a: Activations.Layer, out: UnsafeMutablePointer<Float>, rows N: Int,
        experts E: Int
    ) {
        let P = parameters.pointer, C = config.hiddenSize
        let w = sharedExpertWeights(l, sh, experts: E)
        guard let gate = sh.gate, let logit = a.sharedLogit else {
            mlpForward(w, norm: a.norm2, pre: a.sharedPre!, act: a.sharedAct!, out: out, rows: N)
            return
        }
        let y = a.sharedOut!
        mlpForward(w, norm: a.norm2, pre: a.sharedPre!, act: a.sharedAct!, out: y, rows: N, accumulate: false)
        gemm(transB: true, m: N, n: 1, k: C, a: a.norm2, lda: C, b: P + gate, ldb: C, c: logit, ldc: 1)
        for n in 0..<N {
            let g = sigmoid(logit[n])
            for c in 0..<C { out[n * C + c] += g * y[n * C + c] }
        }
    }

    /// Backward of ``sharedExpertForward(_:_:_:out:rows:experts:)`` given dLoss/d(out) in
    /// `acts.dResidual`: adds dLoss/d(norm2) to `acts.dNorm` (the mixture's scratch rows and gates
    /// are free by then).
    func sharedExpertBackward(_ l: Int, _ sh: SharedExpertOffsets, _ acts: Activations, experts E: Int) {
        let a = acts.layers[l], P = parameters.pointer, Gr = gradients.pointer
        let (N, C) = (acts.N, config.hiddenSize)
        let dres = acts.dResidual
        var dy = UnsafePointer(dres)
        if let gate = sh.gate, let logit = a.sharedLogit {
            let y = a.sharedOut!, dGated = acts.dExpertRows, dLogit = acts.dGates
            for n in 0..<N {
                let g = sigmoid(logit[n])
                var dot: Float = 0
                for c in 0..<C {
                    dot += dres[n * C + c] * y[n * C + c]
                    dGated[n * C + c] = g * dres[n * C + c]
                }
                dLogit[n] = dot * g * (1 - g)
            }
            // The gate: dw_g (1, C) += dLogitᵀ · norm2; dNorm += dLogit (N, 1) · w_g (1, C).
            gemm(transA: true, m: 1, n: C, k: N, a: dLogit, lda: 1, b: a.norm2, ldb: C, beta: 1, c: Gr + gate, ldc: C)
            gemm(m: N, n: C, k: 1, a: dLogit, lda: 1, b: P + gate, ldb: C, beta: 1, c: acts.dNorm, ldc: C)
            dy = UnsafePointer(dGated)
        }
        mlpBackward(
            sharedExpertWeights(l, sh, experts: E), dOut: dy, norm: a.norm2, pre: a.sharedPre!, act: a.sharedAct!, acts,
            rows: N, accumulate: true)
    }

    /// JetMoE's mixture of attention: each token's k chosen experts each project it to G query
    /// heads (query head j·G + g reads key/value head g), one shared kv_proj gives the G key and
    /// value heads, and expert j's output projection maps its G heads back, weighted by its gate.
    func mixtureOfAttentionForward(_ l: Int, _ acts: Activations, _ ex: ExpertOffsets, _ r: RouterState) throws {
        let a = acts.layers[l], o = layerOffsets[l], P = parameters.pointer
        let (N, C) = (acts.N, config.hiddenSize)
        let s = attentionShape(acts.B, acts.T), GD = config.attentionExpertWidth
        try routerForward(
            r, a.norm1, weight: ex.router, masked: masks.attentionExperts[l] ?? [], layer: l,
            name: o.attentionRouterName)
        let xg = a.attnGathered!, slots = a.attnSlots!, y = a.attnExpertOut!
        gatherRows(xg, a.norm1, width: C, router: r)
        // Queries per row (N·k, GD), then into each token's slot j of qkv.
        expertsForward(slots, xg, m: GD, kk: C, weights: { P + ex.input($0) }, router: r)
        scatterToSlots(a.qkv, slots, width: GD, stride: s.qkvWidth, router: r)
        // Keys and values (N, 2GD) = norm1 · W_kvᵀ, after the H query heads of each row.
        gemm(
            transB: true, m: N, n: 2 * GD, k: C, a: a.norm1, lda: C, b: P + o.qkv, ldb: C, c: a.qkv + s.H * s.D,
            ldc: s.qkvWidth)
        acts.rotary.apply(a.qkv, rows: N, stride: s.qkvWidth, heads: s.H + s.G, D: s.D, inverse: false)
        attentionForward(a.attn, a.probs, a.qkv, s)
        maskHeads(l, a.attn, s, N: N)
        gatherRows(slots, a.attn, width: GD, stride: s.outWidth, slotted: true, router: r)
        expertsForward(y, slots, m: C, kk: GD, weights: { P + ex.output($0) }, router: r)
        a.mid.update(from: acts.residual[l], count: N * C)
        combineExperts(a.mid, y, bias: ex.bias.map { UnsafePointer(P + $0) }, C: C, router: r)
    }

    /// The auxiliary router losses of the last forward pass, unweighted (0 for dense models):
    /// load balancing as Switch/Mixtral/transformers compute it, E · Σ_e f_e · P_e with f_e the
    /// fraction of (token, choice) pairs sent to expert e and P_e the mean router probability of
    /// e, both over every router of the model (JetMoE: attention and MLP routers); and the
    /// router z-loss of ST-MoE, the mean over routers and tokens of logsumexp(logits)².
    public func routerLosses(_ acts: Activations) -> (loadBalancing: Double, zLoss: Double) {
        let routers = acts.routers
        guard let first = routers.first else { return (0, 0) }
        let (f, P, rows) = balanceStatistics(routers)
        var balance = 0.0
        for e in 0..<first.E { balance += f[e] * P[e] }
        var z = 0.0
        for r in routers {
            for n in 0..<r.N { let lse = Double(r.logSumExp(n)); z += lse * lse }
        }
        return (Double(first.E) * balance, z / Double(rows))
    }

    /// f_e (fraction of routed rows, summing to k) and P_e (mean probability), over `rows` rows.
    func balanceStatistics(_ routers: [RouterState]) -> (f: [Double], P: [Double], rows: Int) {
        let E = routers[0].E
        var f = [Double](repeating: 0, count: E), P = f
        var rows = 0
        for r in routers {
            for e in 0..<E { f[e] += Double(r.load(e)) }
            for n in 0..<r.N { for e in 0..<E { P[e] += Double(r.probs[n * E + e]) } }
            rows += r.N
        }
        return (f.map { $0 / Double(rows) }, P.map { $0 / Double(rows) }, rows)
    }

    /// What every router's backward adds for the weighted auxiliary losses.
    struct RouterGradientTerms {
        var balance: [Float]?
        var zScale: Float = 0
    }

    func routerGradientTerms(_ routers: [RouterState]) -> RouterGradientTerms {
        guard !routers.isEmpty else { return RouterGradientTerms() }
        let (f, _, rows) = balanceStatistics(routers)
        var terms = RouterGradientTerms()
        let w = routerLossWeights
        if w.loadBalancing != 0 {
            // d(E Σ f_e P_e)/d p_{n,e} = E · f_e / rows (f is not differentiable).
            let E = Double(routers[0].E)
            terms.balance = f.map { Float(w.loadBalancing * E * $0 / Double(rows)) }
        }
        terms.zScale = Float(w.zLoss / Double(rows))
        return terms
    }

    /// Router backward: dLogits from dGates and the auxiliary terms; dW_r += dLogitsᵀ · x,
    /// dx (N, C) += dLogits (N, E) · W_r (E, C).
    func routerBackward(
        _ r: RouterState, _ x: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, weight: Int,
        _ acts: Activations, _ routing: RouterGradientTerms
    ) {
        let C = config.hiddenSize
        r.backward(
            style: routingStyle, dGates: acts.dGates, dLogits: acts.dRouterLogits, balance: routing.balance,
            zScale: routing.zScale)
        gemm(
            transA: true, m: r.E, n: C, k: r.N, a: acts.dRouterLogits, lda: r.E, b: x, ldb: C, beta: 1,
            c: gradients.pointer + weight, ldc: C)
        gemm(
            m: r.N, n: C, k: r.E, a: acts.dRouterLogits, lda: r.E, b: parameters.pointer + weight, ldb: C, beta: 1,
            c: dx, ldc: C)
    }

    /// Backward of ``mixtureMLPForward``: leaves dLoss/d(norm2) in `acts.dNorm`.
    func mixtureMLPBackward(
        _ l: Int, _ acts: Activations, _ ex: ExpertOffsets, _ r: RouterState, _ routing: RouterGradientTerms
    ) {
        let a = acts.layers[l], P = parameters.pointer, Gr = gradients.pointer
        let (N, C, F, X) = (r.N, config.hiddenSize, config.expertWidth, config.expertInputWidth)
        let gated = config.family.isGated, preWidth = gated ? 2 * F : F
        let rows = r.N * r.k, dRows = acts.dExpertRows
        var dCombined = UnsafePointer(acts.dResidual)
        if let fc2 = ex.latentOut, let yl = a.latentOut {
            // dW_fc2 (C, L) += dresᵀ · y_L; dy_L (N, L) = dres · W_fc2.
            gemm(transA: true, m: C, n: X, k: N, a: acts.dResidual, lda: C, b: yl, ldb: X, beta: 1, c: Gr + fc2, ldc: X)
            gemm(m: N, n: X, k: C, a: acts.dResidual, lda: C, b: P + fc2, ldb: X, c: acts.dLatent, ldc: X)
            dCombined = UnsafePointer(acts.dLatent)
        }
        combineExpertsBackward(
            dy: dRows, dGates: acts.dGates, dBias: ex.bias.map { Gr + $0 }, dCombined, a.mlpExpertOut!, C: X, router: r)
        expertsBackward(
            dInput: acts.dMLPAct, dWeights: { Gr + ex.output($0) }, dRows, a.mlpAct, m: X, kk: F,
            weights: { P + ex.output($0) }, router: r)
        if gated {
            swigluBackward(acts.dMLPPre, acts.dMLPAct, a.mlpPre, N: rows, F: F)
        } else {
            relu2Backward(acts.dMLPPre, acts.dMLPAct, a.mlpPre, count: rows * F)
        }
        expertsBackward(
            dInput: dRows, dWeights: { Gr + ex.input($0) }, acts.dMLPPre, a.mlpGathered!, m: preWidth, kk: X,
            weights: { P + ex.input($0) }, router: r)
        acts.dNorm.update(repeating: 0, count: N * C)
        if let fc1 = ex.latentIn {
            // dx_L (N, L) = Σ rows; dW_fc1 (L, C) += dx_Lᵀ · norm2; dNorm = dx_L · W_fc1.
            acts.dLatent.update(repeating: 0, count: N * X)
            scatterAddRows(acts.dLatent, dRows, width: X, router: r)
            gemm(
                transA: true, m: X, n: C, k: N, a: acts.dLatent, lda: X, b: a.norm2, ldb: C, beta: 1, c: Gr + fc1,
                ldc: C)
            gemm(m: N, n: C, k: X, a: acts.dLatent, lda: X, b: P + fc1, ldb: C, c: acts.dNorm, ldc: C)
        } else {
            scatterAddRows(acts.dNorm, dRows, width: C, router: r)
        }
        routerBackward(r, a.norm2, dx: acts.dNorm, weight: ex.router, acts, routing)
        if let sh = ex.shared { sharedExpertBackward(l, sh, acts, experts: ex.count) }
    }

    /// Backward of ``mixtureOfAttentionForward``: leaves dLoss/d(norm1) in `acts.dNorm`.
    func mixtureOfAttentionBackward(
        _ l: Int, _ acts: Activations, _ ex: ExpertOffsets, _ r: RouterState, _ routing: RouterGradientTerms
    ) {
        let a = acts.layers[l], o = layerOffsets[l], P = parameters.pointer, Gr = gradients.pointer
        let (N, C) = (acts.N, config.hiddenSize)
        let s = attentionShape(acts.B, acts.T), GD = config.attentionExpertWidth
        let rows = r.N * r.k, dRows = acts.dExpertRows, dRows2 = acts.dExpertRows + rows * max(C, GD)
        combineExpertsBackward(
            dy: dRows, dGates: acts.dGates, dBias: ex.bias.map { Gr + $0 }, acts.dResidual, a.attnExpertOut!, C: C,
            router: r)
        // dSlots (rows, GD) into dQKV's space (free until attention's backward writes it).
        let dSlots = acts.dQKV
        expertsBackward(
            dInput: dSlots, dWeights: { Gr + ex.output($0) }, dRows, a.attnSlots!, m: C, kk: GD,
            weights: { P + ex.output($0) }, router: r)
        scatterToSlots(acts.dAttn, dSlots, width: GD, stride: s.outWidth, router: r)
        attentionBackward(acts.dQKV, acts.dAttn, a.qkv, a.probs, acts.dScores, s)
        acts.rotary.apply(acts.dQKV, rows: N, stride: s.qkvWidth, heads: s.H + s.G, D: s.D, inverse: true)
        // kv_proj: dW_kv (2GD, C) += dKVᵀ · norm1; dNorm (N, C) = dKV (N, 2GD) · W_kv.
        let dKV = acts.dQKV + s.H * s.D
        gemm(
            transA: true, m: 2 * GD, n: C, k: N, a: dKV, lda: s.qkvWidth, b: a.norm1, ldb: C, beta: 1, c: Gr + o.qkv,
            ldc: C)
        gemm(m: N, n: C, k: 2 * GD, a: dKV, lda: s.qkvWidth, b: P + o.qkv, ldb: C, c: acts.dNorm, ldc: C)
        // Query experts: gather each row's dQ, then dW_in,e and dx rows.
        gatherRows(dRows, acts.dQKV, width: GD, stride: s.qkvWidth, slotted: true, router: r)
        expertsBackward(
            dInput: dRows2, dWeights: { Gr + ex.input($0) }, dRows, a.attnGathered!, m: GD, kk: C,
            weights: { P + ex.input($0) }, router: r)
        scatterAddRows(acts.dNorm, dRows2, width: C, router: r)
        routerBackward(r, a.norm1, dx: acts.dNorm, weight: ex.router, acts, routing)
    }
}

/// Weights of the auxiliary router losses in training (mixture families).
public struct RouterLossWeights: Sendable, Equatable {
    /// Load balancing (Switch/Mixtral), the config's `router_aux_loss_coef` / `aux_loss_coef` by default.
    public var loadBalancing: Double
    /// Router z-loss (ST-MoE; JetMoE trains with 0.001).
    public var zLoss: Double
    public init(loadBalancing: Double, zLoss: Double) { self.loadBalancing = loadBalancing; self.zLoss = zLoss }
}
