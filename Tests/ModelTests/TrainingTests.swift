import Foundation
import Model
import Testing

@Suite struct TrainingTests {
    @Test func adamWMatchesHandComputation() throws {
        // Two tensors: a matrix (decays) and a vector (does not).
        let config = tinyConfig(.llama, layers: 1)
        let layout = ParameterLayout(config: config)
        let params = FloatBuffer(count: layout.count), grads = FloatBuffer(count: layout.count)
        for i in 0..<layout.count { params[i] = 0.5; grads[i] = i % 2 == 0 ? 0.1 : -0.2 }
        let opt = AdamW(layout: layout, settings: .init(beta1: 0.9, beta2: 0.99, epsilon: 1e-8, weightDecay: 0.1, gradientClip: nil))
        try opt.update(parameters: params, gradients: grads, lr: 0.01)
        // Step 1: m̂ = g, v̂ = g², so the update is lr·(sign(g) + λθ) up to ε.
        let matrix = layout.entry("model.layers.0.self_attn.q_proj.weight")!
        let vector = layout.entry("model.layers.0.input_layernorm.weight")!
        for (e, decay) in [(matrix, 0.1), (vector, 0.0)] {
            for i in e.offset..<(e.offset + 4) {
                let g = Double(grads[i])
                let expected = 0.5 - 0.01 * (g / (abs(g) + 1e-8) + decay * 0.5)
                #expect(abs(Double(params[i]) - expected) < 1e-6, "\(e.name)[\(i - e.offset)]: \(params[i]) vs \(expected)")
            }
        }
    }

    @Test func clippingScalesGradient() throws {
        let layout = ParameterLayout(config: tinyConfig(.llama, layers: 1))
        let grads = FloatBuffer(count: layout.count)
        for i in 0..<layout.count { grads[i] = 1 }
        #expect(abs(AdamW.norm(grads) - Double(layout.count).squareRoot()) < 1e-3)
        let a = FloatBuffer(count: layout.count), b = FloatBuffer(count: layout.count)
        let clipped = AdamW(layout: layout, settings: .init(weightDecay: 0, gradientClip: 1))
        let unclipped = AdamW(layout: layout, settings: .init(weightDecay: 0, gradientClip: nil))
        try clipped.update(parameters: a, gradients: grads, lr: 0.1)
        try unclipped.update(parameters: b, gradients: grads, lr: 0.1)
        // Adam's first step is scale-invariant, so both move by ≈ lr; the moments differ by the clip factor.
        #expect(abs(clipped.m[0] - 0.1 / Float(layout.count).squareRoot()) < 1e-6)
        #expect(abs(unclipped.m[0] - 0.1) < 1e-6)
    }

    @Test func nonFiniteGradientStopsAndLeavesParameters() throws {
        let layout = ParameterLayout(config: tinyConfig(.llama, layers: 1))
        let params = FloatBuffer(count: layout.count), grads = FloatBuffer(count: layout.count)
        grads[3] = .nan
        let opt = AdamW(layout: layout)
        #expect(throws: ModelError.nonFinite(step: 1, what: "gradient norm")) { try opt.update(parameters: params, gradients: grads, lr: 0.1) }
        #expect(params.array.allSatisfy { $0 == 0 })
    }

    @Test func schedules() {
        let cosine = LearningRateSchedule.cosine(warmup: 10, minRatio: 0.1)
        #expect(abs(cosine.rate(step: 5, total: 110, peak: 1) - 0.5) < 1e-12)
        #expect(abs(cosine.rate(step: 10, total: 110, peak: 1) - 1) < 1e-12)
        #expect(abs(cosine.rate(step: 60, total: 110, peak: 1) - 0.55) < 1e-12)
        #expect(abs(cosine.rate(step: 110, total: 110, peak: 1) - 0.1) < 1e-12)
        let wsd = LearningRateSchedule.warmupStableDecay(warmup: 10, decayFraction: 0.2, minRatio: 0)
        #expect(wsd.rate(step: 80, total: 100, peak: 2) == 2)
        #expect(abs(wsd.rate(step: 90, total: 100, peak: 2) - 1) < 1e-12)
        #expect(abs(wsd.rate(step: 100, total: 100, peak: 2)) < 1e-12)
    }

    func train(_ family: Family, steps: Int, seed: UInt64) throws -> (losses: [Double], params: [Float]) {
        let config = tinyConfig(family)
        let model = DecoderModel(config: config)
        model.initialize(seed: seed)
        let trainer = Trainer(model: model, batch: 2, sequence: 8, schedule: .cosine(warmup: 2, minRatio: 0.1),
                              peakLearningRate: 3e-2, totalSteps: steps)
        // A learnable sequence: each token is the previous plus one.
        let tokens = (0..<16).map { Int32(($0 * 1 + $0 / 8 * 5) % config.vocabSize) }
        let targets = DecoderModel.shiftedTargets(tokens, batch: 2, sequence: 8)
        var losses: [Double] = []
        for _ in 0..<steps { losses.append(try trainer.step(tokens: tokens, targets: targets).loss) }
        return (losses, model.parameters.array)
    }

    @Test(arguments: [Family.llama, .nemotron])
    func trainingLowersLossAndIsDeterministic(_ family: Family) throws {
        let a = try train(family, steps: 30, seed: 5)
        let b = try train(family, steps: 30, seed: 5)
        #expect(a.losses.last! < 0.5 * a.losses.first!, "loss \(a.losses.first!) → \(a.losses.last!)")
        #expect(a.params == b.params, "same seed and thread count must give identical weights")
    }

    @Test func nanLossNamesTheStep() throws {
        let config = tinyConfig(.llama)
        let model = DecoderModel(config: config)
        model.initialize(seed: 1)
        model.parameters[0] = .infinity
        let trainer = Trainer(model: model, batch: 1, sequence: 4, schedule: .constant(warmup: 0), peakLearningRate: 1e-3, totalSteps: 1)
        #expect(throws: ModelError.self) { _ = try trainer.step(tokens: [0, 1, 2, 3], targets: [1, 2, 3, -1]) }
    }
}

@Suite struct AccountingTests {
    @Test func closedFormCountsEqualTheLayout() {
        var rng = SeededGenerator(seed: 8)
        for _ in 0..<200 {
            let family = Family.allCases[Int(rng.next() % 4)]
            let e = 1 + Int(rng.next() % 8), k = 1 + Int(rng.next() % UInt64(e))
            let g = 1 + Int(rng.next() % 4), h = family == .jetmoe ? g * k : g * (1 + Int(rng.next() % 3)), d = 2 * (1 + Int(rng.next() % 8))
            let c = ModelConfig(family: family, vocabSize: 1 + Int(rng.next() % 500), hiddenSize: h * (1 + Int(rng.next() % 10)),
                                intermediateSize: 1 + Int(rng.next() % 300), numHiddenLayers: 1 + Int(rng.next() % 6),
                                numAttentionHeads: h, numKeyValueHeads: g, headDim: d, tieWordEmbeddings: rng.next() % 2 == 0,
                                numLocalExperts: family.isMixture ? e : 0, numExpertsPerTok: family.isMixture ? k : 0)
            let layout = ParameterLayout(config: c)
            #expect(c.parameterCount == layout.count)
            #expect(c.nonEmbeddingParameterCount == layout.count - layout.embeddingCount)
            // Active: every tensor of an expert counts k/E (JetMoE stacks experts in one tensor).
            var active = 0, mixtralExperts = 0
            for t in layout.entries {
                let perExpert = t.name.contains(".experts.") && !t.name.contains("router") && !t.name.hasSuffix("experts.bias")
                    || t.name.hasSuffix("mlp.input_linear.weight") || t.name.hasSuffix("mlp.output_linear.weight")
                if perExpert && family == .mixtral { mixtralExperts += t.count }     // one tensor set per expert: k of E
                else if perExpert { active += t.count / e * k }                      // (E, …) stack
                else { active += t.count }
            }
            active += mixtralExperts / e * k
            #expect(c.activeParameterCount == (family.isMixture ? active : c.parameterCount), "\(family) E \(e) k \(k)")
        }
    }

    /// JetMoE-8B's published shape, counted by hand: about 8.5B parameters, about 2.2B active
    /// without embeddings.
    @Test func jetMoE8BMatchesAHandCount() throws {
        let c = try ModelConfig.load(URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../experiments/moe/jetmoe-8b-config.json").standardized)
        let (C, GD, F, E, k, L, V) = (2048, 16 * 128, 5632, 8, 2, 24, 32000)
        let norms = 2 * C, routers = 2 * E * C, biases = 2 * C
        let attention = { (experts: Int) in experts * (GD * C + C * GD) + 2 * GD * C }
        let mlp = { (experts: Int) in experts * (2 * F * C + C * F) }
        let total = L * (norms + routers + biases + attention(E) + mlp(E)) + C
        let active = L * (norms + routers + biases + attention(k) + mlp(k)) + C
        #expect(c.nonEmbeddingParameterCount == total)
        #expect(c.parameterCount == total + V * C)                       // tied embeddings
        #expect(c.activeNonEmbeddingParameterCount == active)
        #expect(abs(Double(c.parameterCount) / 8.5e9 - 1) < 0.01, "\(c.parameterCount)")
        #expect(abs(Double(c.activeNonEmbeddingParameterCount) / 2.2e9 - 1) < 0.04, "\(c.activeNonEmbeddingParameterCount)")
    }
}

@Suite struct DataParallelTests {
    /// Splitting the batch over workers gives the gradient and loss of the whole batch (up to
    /// summation order), with ignored targets counted per worker.
    /// Mixtures too: their load-balancing and z-losses span every worker's routing.
    @Test(arguments: [(Family.llama, 2), (.llama, 3), (.mixtral, 2), (.jetmoe, 3)])
    func splitBatchStepEqualsWholeBatchStep(_ family: Family, _ workers: Int) throws {
        let config = tinyConfig(family, vocab: 23, layers: 2)
        var rng = SeededGenerator(seed: 4)
        let (B, T) = (5, 6)
        let tokens = (0..<(B * T)).map { _ in Int32(rng.next() % 23) }
        var targets = DecoderModel.shiftedTargets(tokens, batch: B, sequence: T)
        for i in [0, 1, 2, 3, 7] { targets[i] = -100 }   // the first worker's rows lose more targets
        var results: [(loss: Double, params: [Float])] = []
        for w in [1, workers] {
            let model = DecoderModel(config: config)
            model.initialize(seed: 9)
            model.routerLossWeights = RouterLossWeights(loadBalancing: 0.5, zLoss: 0.1)
            let trainer = Trainer(model: model, batch: B, sequence: T, schedule: .constant(warmup: 0), peakLearningRate: 1e-2,
                                  totalSteps: 3, dataParallelWorkers: w)
            var loss = 0.0
            for _ in 0..<3 { loss = try trainer.step(tokens: tokens, targets: targets).loss }
            results.append((loss, model.parameters.array))
        }
        #expect(abs(results[0].loss - results[1].loss) < 1e-5, "\(results[0].loss) vs \(results[1].loss)")
        #expect(relativeError(results[1].params, results[0].params) < 1e-5)
    }
}
