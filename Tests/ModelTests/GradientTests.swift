import Foundation
import Model
import Testing

/// Finite-difference checks of every backward pass, through the whole model: embedding, both
/// norms, full and partial rotary, grouped-query attention (full and sliding-window), q/k/v
/// biases, per-head q/k norms, both MLPs, the three routers, tied and untied LM heads, and
/// cross-entropy with ignored targets.
@Suite struct GradientTests {
    static let cases: [(Family, Bool)] = [(.llama, false), (.llama, true), (.nemotron, false), (.mixtral, false), (.jetmoe, true),
                                          (.qwen2, false), (.qwen3, true), (.mistral, false), (.qwen3Moe, false)]

    /// (family, tied, sequence): the last case spans three causal row blocks of attention.
    @Test(arguments: [(Family.llama, false, 5), (.llama, true, 5), (.nemotron, false, 5), (.nemotron, false, 70),
                      (.mixtral, false, 5), (.jetmoe, true, 5), (.jetmoe, false, 40),
                      (.qwen2, false, 6), (.qwen3, true, 5), (.mistral, false, 40), (.qwen3Moe, false, 5)])
    func finiteDifferences(_ family: Family, _ tied: Bool, _ T: Int) throws {
        try Self.checkFiniteDifferences(tinyConfig(family, tied: tied), T: T)
    }

    /// Issue 27: a heterogeneous decoder — layers with fewer key/value groups, without attention,
    /// without an MLP, with neither, and MLPs of different widths.
    @Test(arguments: [5, 40])
    func finiteDifferencesHeterogeneous(_ T: Int) throws {
        try Self.checkFiniteDifferences(heterogeneousConfig(), T: T)
    }

    /// Issue 26: Nemotron-H — Mamba2 (convolution, the selective scan across chunk boundaries,
    /// the time-step clamp, the gated grouped norm), attention without rotary, squared-ReLU MLP.
    @Test(arguments: [(5, true), (13, true), (9, false)])
    func finiteDifferencesHybrid(_ T: Int, _ convBias: Bool) throws {
        // Time steps Δ near 1 rather than transformers' initial 0.001…0.1, so that A_log's
        // gradients (∝ Δ) stand above the float32 loss's rounding; one head's Δ at the lower end
        // of the time_step_limit clamp [0.001, ∞). (The upper end is checked against transformers'
        // gradients by the nemotron_h_hybrid fixture, whose limit is [0.01, 1]: a finite
        // difference here with Δ held at a larger upper end is too ill-conditioned in float32.)
        var c = hybridConfig(convBias: convBias)
        c.mambaTimeStepLimit = MambaTimeStepLimit(lower: 0.001, upper: .infinity)
        try Self.checkFiniteDifferences(c, T: T, prepare: Self.largeTimeSteps)
    }

    /// Mamba2's Δ biases: one head's far below the clamp's lower end, the others' near 1.
    static func largeTimeSteps(_ model: DecoderModel) {
        for e in model.layout.entries where e.role == .mambaDtBias {
            let p = model.tensor(e.name)!
            for h in 0..<p.count { p[h] = h == 0 ? -9 : 0.5 * Float(h) }
        }
    }

    /// Issue 26: Qwen3.5 — Gated DeltaNet (convolution, q/k L2 norms, the gated delta rule across
    /// chunk boundaries, grouped value heads, the gated norm), gated attention with q/k norms and
    /// partial rotary, zero-centred norms, tied and untied heads. (T, tied, value heads, Dk, Dv.)
    ///
    /// Conditioning: a head's first output is β·v·(q̂·k̂) and the gated norm divides it by its
    /// RMS, so where q̂·k̂ is near 0 the output flips sign over a tiny step — a finite difference
    /// there measures nothing. Each layer's keys are therefore made equal to its queries (their
    /// projections and convolutions copied; each is still perturbed on its own) and the decays
    /// weak (A 0.05, 0.1, …), so that the state carries every position. The transformers
    /// fixtures (qwen3_5_hybrid, qwen3_5_tied) check the unconditioned case.
    /// `mixture`: Qwen3.5-MoE's router, experts and the shared expert behind its sigmoid gate.
    @Test(arguments: [(5, false, 4, 8, 8, false), (13, true, 4, 8, 8, false), (9, false, 2, 8, 6, false),
                      (13, true, 4, 4, 3, false), (5, false, 4, 8, 8, true), (9, true, 2, 8, 6, true)])
    func finiteDifferencesQwen35(_ T: Int, _ tied: Bool, _ valueHeads: Int, _ keyDim: Int, _ valueDim: Int,
                                 _ mixture: Bool) throws {
        let c = qwen35Config(tied: tied, valueHeads: valueHeads, keyDim: keyDim, valueDim: valueDim, mixture: mixture)
        try Self.checkFiniteDifferences(c, T: T, step: 3e-3) { model in
            let d = c.deltaNet!, Kw = d.keyWidth, C = c.hiddenSize
            for l in 0..<c.numHiddenLayers where c.hybridLayers![l] == .deltaNet {
                let prefix = "model.layers.\(l).linear_attn."
                let w = model.tensor(prefix + "in_proj_qkv.weight")!, conv = model.tensor(prefix + "conv1d.weight")!
                for i in 0..<(Kw * C) { w[Kw * C + i] = w[i] }
                for i in 0..<(Kw * d.convKernel) { conv[Kw * d.convKernel + i] = conv[i] }
                let a = model.tensor(prefix + "A_log")!
                for h in 0..<a.count { a[h] = Float(log(0.05 * Double(h + 1))) }
            }
        }
    }

    /// Issue 26: Nemotron-H's mixture blocks — the sigmoid router (its groups, renormalisation and
    /// scale; both router losses on), squared-ReLU experts, the shared expert, and the latent
    /// projections. (T, groups, normalize, latent.)
    @Test(arguments: [(5, 2, true, nil as Int?), (9, 1, false, 6), (5, 3, true, 10)])
    func finiteDifferencesNemotronHMoE(_ T: Int, _ groups: Int, _ normalize: Bool, _ latent: Int?) throws {
        try Self.checkFiniteDifferences(
            nemotronHMoEConfig(groups: groups, normalize: normalize, latent: latent), T: T, prepare: Self.largeTimeSteps)
    }

    static func checkFiniteDifferences(
        _ config: ModelConfig, T: Int, step h: Float = 1e-2, prepare: (DecoderModel) -> Void = { _ in }
    ) throws {
        let (family, tied) = (config.family, config.tieWordEmbeddings)
        let model = DecoderModel(config: config)
        model.initialize(seed: 42)
        // Mixtures: both auxiliary router losses on, so their gradients are checked too.
        model.routerLossWeights = RouterLossWeights(loadBalancing: 0.3, zLoss: 0.05)
        // Random norm weights and biases so that their gradients are not a special case.
        var rng = SeededGenerator(seed: 7)
        for e in model.layout.entries where e.shape.count == 1 {
            let p = model.tensor(e.name)!
            for i in 0..<p.count { p[i] += Float(0.2 * rng.normal()) }
        }
        prepare(model)
        let B = T > 8 ? 1 : 2
        let tokens = (0..<(B * T)).map { _ in Int32(rng.next() % UInt64(config.vocabSize)) }
        var targets = DecoderModel.shiftedTargets(tokens, batch: B, sequence: T)
        targets[2] = -100  // an ignored position in the middle
        let acts = Activations(config: config, batch: B, sequence: T)

        // Routing is piecewise constant: a perturbation that changes any token's chosen experts
        // crosses a discontinuity, where a finite difference means nothing. Such entries are
        // skipped (and counted); the routing of the unperturbed model is the reference.
        var baseRouting: [[Int32]] = []
        var routingChanged = false
        func loss() throws -> Double {
            try model.forward(tokens: tokens, acts)
            if acts.routers.map(\.chosen) != baseRouting { routingChanged = true }
            let aux = model.routerLosses(acts), w = model.routerLossWeights
            return try model.loss(acts, targets: targets, gradient: false)
                + (config.isMixture ? w.loadBalancing * aux.loadBalancing + w.zLoss * aux.zLoss : 0)
        }
        model.zeroGradients()
        try model.forward(tokens: tokens, acts)
        baseRouting = acts.routers.map(\.chosen)
        _ = try model.loss(acts, targets: targets, gradient: true)
        model.backward(acts)
        let analytic = model.gradients.array
        var checked = 0, skipped = 0

        for e in model.layout.entries {
            // The largest gradients of the tensor plus a few random entries.
            let indices = Array(Set((0..<e.count).sorted { abs(analytic[e.offset + $0]) > abs(analytic[e.offset + $1]) }.prefix(3)
                + (0..<4).map { _ in Int(rng.next() % UInt64(e.count)) }))
            var numeric: [Float] = [], exact: [Float] = []
            for i in indices {
                let p = model.parameters.pointer + e.offset + i
                let saved = p.pointee
                routingChanged = false
                p.pointee = saved + h
                let plus = try loss()
                p.pointee = saved - h
                let minus = try loss()
                p.pointee = saved
                if routingChanged { skipped += 1; continue }
                checked += 1
                numeric.append(Float((plus - minus) / Double(2 * h)))
                exact.append(analytic[e.offset + i])
            }
            let error = relativeError(exact, numeric)
            let scale = numeric.map { abs($0) }.max() ?? 0
            #expect(error < 2e-2 || scale < 1e-4, "\(family) tied=\(tied) \(e.name): relative error \(error) (analytic \(exact), numeric \(numeric))")
        }
        #expect(skipped * 2 < checked, "\(skipped) of \(checked + skipped) checks crossed a routing change")
    }

    /// The gradient really flows everywhere: no tensor's gradient is identically zero.
    @Test func everyTensorGetsGradient() throws {
        for config in Self.cases.map({ tinyConfig($0.0, tied: $0.1) }) + [heterogeneousConfig(), hybridConfig(), qwen35Config(),
                                                                    qwen35Config(mixture: true), nemotronHMoEConfig(latent: 6)] {
            let family = config.family
            let model = DecoderModel(config: config)
            model.initialize(seed: 3)
            // Long enough that every expert receives tokens.
            let T = 24
            let acts = Activations(config: config, batch: 1, sequence: T)
            let tokens: [Int32] = (0..<T).map { Int32(($0 * 7 + 3) % config.vocabSize) }
            try model.forward(tokens: tokens, acts)
            _ = try model.loss(acts, targets: DecoderModel.shiftedTargets(tokens, batch: 1, sequence: T), gradient: true)
            model.zeroGradients()
            model.backward(acts)
            for e in model.layout.entries {
                let g = UnsafeBufferPointer(start: model.gradients.pointer + e.offset, count: e.count)
                // A buffer (the router's correction bias) is never trained.
                let moved = g.contains { $0 != 0 }
                #expect(moved != (e.role?.isBuffer ?? false), "\(family) \(e.name): its gradient is \(moved ? "not " : "")all zero")
            }
        }
    }
}
