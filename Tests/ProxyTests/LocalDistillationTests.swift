import Foundation
import Model
@testable import Proxy
import Testing

/// Issue 27, item 2: Puzzle's blockwise local distillation — each variant of each layer trained
/// to reproduce the teacher block's output from its input.
struct LocalDistillationTests {
    static func teacher(vocab: Int = 41) -> DecoderModel {
        let c = ModelConfig(family: .llama, vocabSize: vocab, hiddenSize: 16, intermediateSize: 512, numHiddenLayers: 3,
                            numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 4, ropeTheta: 100, maxPositionEmbeddings: 64,
                            initializerRange: 0.3)
        let m = DecoderModel(config: c)
        m.initialize(seed: 9)
        var rng = SeededGenerator(seed: 3)
        for e in m.layout.entries where e.shape.count == 1 {
            let p = m.tensor(e.name)!
            for i in 0..<p.count { p[i] += Float(0.2 * rng.normal()) }
        }
        return m
    }

    /// A small two-language corpus of byte tokens.
    static func corpus() throws -> (URL, TokenShards) {
        var rng = SeededGenerator(seed: 11)
        let docs = (0..<60).map { i in
            Document(text: (0..<12).map { _ in String((0..<4).map { _ in Character(Unicode.Scalar(UInt8(97 + rng.next() % 8))) }) }
                .joined(separator: " "), language: i % 3 == 0 ? "de" : "en")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bld-corpus-\(getpid())-\(UUID().uuidString)")
        _ = try ShardWriter.write(documents: docs, tokenizer: ByteTokenizer(), to: dir, validationFraction: 0.2, seed: 1)
        return (dir, try TokenShards(directory: dir))
    }

    static let variants = [
        LayerVariant(keyValueGroups: 1, mlpWidth: 256), LayerVariant(keyValueGroups: nil, mlpWidth: 256),
        LayerVariant(keyValueGroups: 1, mlpWidth: nil),
    ]

    /// The gradient of the normalised MSE through `backward(layer:)` against central finite
    /// differences, for every tensor of three block shapes (attention and MLP, MLP alone,
    /// attention alone).
    @Test func blockBackwardMatchesFiniteDifferences() throws {
        let t = Self.teacher(), scores = HeterogeneousPruningTests.scores(t.config)
        let (B, T, C) = (2, 5, 16), N = 2 * 5
        var rng = SeededGenerator(seed: 5)
        let input = (0..<(N * C)).map { _ in Float(rng.normal()) }
        let target = (0..<(N * C)).map { input[$0] + Float(0.5 * rng.normal()) }
        for v in Self.variants {
            let block = try LocalDistillation.prunedBlock(teacher: t, layer: 1, variant: v, importance: scores)
            let acts = Activations(config: block.config, batch: B, sequence: T)
            let gradient = UnsafeMutablePointer<Float>.allocate(capacity: N * C)
            defer { gradient.deallocate() }
            func loss(_ g: UnsafeMutablePointer<Float>?) throws -> Double {
                acts.residual[0].update(from: input, count: N * C)
                try block.forward(layer: 0, acts)
                return LocalDistillation.loss(output: acts.residual[1], target: target, input: input, count: N * C, gradient: g)
            }
            block.zeroGradients()
            _ = try loss(gradient)
            block.backward(layer: 0, acts, outputGradient: gradient)
            let analytic = block.gradients.array
            var checked = 0
            for e in block.layout.entries where e.layer == 0 {
                let indices = Array(Set((0..<e.count).sorted { abs(analytic[e.offset + $0]) > abs(analytic[e.offset + $1]) }.prefix(3)
                    + (0..<4).map { _ in Int(rng.next() % UInt64(e.count)) }))
                var worst = 0.0, scale = 0.0
                for i in indices {
                    let p = block.parameters.pointer + e.offset + i, saved = p.pointee, h: Float = 1e-2
                    p.pointee = saved + h
                    let plus = try loss(nil)
                    p.pointee = saved - h
                    let minus = try loss(nil)
                    p.pointee = saved
                    let numeric = (plus - minus) / Double(2 * h)
                    worst = max(worst, abs(numeric - Double(analytic[e.offset + i])))
                    scale = max(scale, abs(numeric))
                    checked += 1
                }
                #expect(worst <= 2e-2 * max(scale, 1e-3), "\(v) \(e.name): |analytic − numeric| \(worst) at scale \(scale)")
            }
            #expect(checked >= 12, "\(v): \(checked) entries checked")
        }
    }

    /// The measure: 0 for the teacher's own block, 1 for a block that adds nothing, and between
    /// for a pruned one.
    @Test func theMeasureIsZeroForTheTeacherAndOneForANoOp() throws {
        let t = Self.teacher(), scores = HeterogeneousPruningTests.scores(t.config)
        let tokens = (0..<16).map { Int32(($0 * 7 + 1) % 41) }
        func measure(_ v: LayerVariant) throws -> Double {
            try LocalDistillation.evaluate(teacher: t, layer: 1, variant: v, importance: scores, trained: nil, tokens: tokens,
                                           batch: 2, sequence: 8)
        }
        #expect(try measure(LayerVariant(keyValueGroups: 2, mlpWidth: 512)) < 1e-10)
        #expect(abs(try measure(LayerVariant(keyValueGroups: nil, mlpWidth: nil)) - 1) < 1e-12)
        let pruned = try measure(LayerVariant(keyValueGroups: 1, mlpWidth: 256))
        #expect(pruned > 1e-4 && pruned < 1, "\(pruned)")
    }

    /// `layers_per_pass`: the blocks trained a few layers at a time (the teacher run once per pass
    /// over the same batches) are the blocks trained all at once, bit for bit, with the same losses.
    @Test func passesOfAFewLayersTrainTheSameBlocks() throws {
        let (dir, corpus) = try Self.corpus()
        defer { try? FileManager.default.removeItem(at: dir) }
        let t = Self.teacher(vocab: ByteTokenizer().vocabularySize), scores = HeterogeneousPruningTests.scores(t.config)
        let full = LayerVariant(keyValueGroups: 2, mlpWidth: 512)
        let variants = Array(repeating: [full] + Self.variants, count: 3)
        var settings = LocalDistillationSettings(steps: 6, batchSize: 4, sequence: 16, learningRate: 3e-3, seed: 7)
        let (all, allLosses) = try LocalDistillation.train(
            teacher: t, variants: variants, importance: scores, corpus: corpus, settings: settings)
        settings.layersPerPass = 2
        #expect(settings.passes(layers: 3) == [0..<2, 2..<3])
        var steps: [Int] = []
        let (passes, passLosses) = try LocalDistillation.train(
            teacher: t, variants: variants, importance: scores, corpus: corpus, settings: settings
        ) { step, _ in steps.append(step) }
        #expect(steps == Array(1...12))
        for l in 0..<3 {
            #expect(passLosses[l] == allLosses[l], "layer \(l)")
            for v in Self.variants { #expect(passes.blocks[l]?[v] == all.blocks[l]?[v] && all.blocks[l]?[v] != nil, "layer \(l) \(v)") }
        }
        #expect(settings.description == LocalDistillationSettings(steps: 6, batchSize: 4, sequence: 16, learningRate: 3e-3,
                                                                  seed: 7).description)
    }

    /// Training lowers every trained block's measure on a batch it never saw; the trained
    /// weights survive a round trip through their file; a student built with them carries them
    /// (its layer computes what the trained block computes), and one-block replacement scores
    /// them lower than the pruned blocks.
    @Test func trainedBlocksReproduceTheTeacherBetterThanPrunedOnes() throws {
        let (dir, corpus) = try Self.corpus()
        defer { try? FileManager.default.removeItem(at: dir) }
        let t = Self.teacher(vocab: ByteTokenizer().vocabularySize), scores = HeterogeneousPruningTests.scores(t.config)
        let full = LayerVariant(keyValueGroups: 2, mlpWidth: 512)
        let library = [full] + Self.variants + [LayerVariant(keyValueGroups: nil, mlpWidth: nil)]
        let variants = Array(repeating: library, count: 3)
        let settings = LocalDistillationSettings(steps: 40, batchSize: 4, sequence: 16, learningRate: 3e-3, seed: 7)
        var steps = 0
        let (weights, losses) = try LocalDistillation.train(
            teacher: t, variants: variants, importance: scores, corpus: corpus, settings: settings
        ) { step, l in
            steps = step
            #expect(l.count == 9)
        }
        #expect(steps == 40)
        for l in 0..<3 {
            #expect(losses[l][0] == 0 && losses[l][4] == nil, "layer \(l): \(losses[l])")
            #expect(weights.blocks[l]?.count == 3)
        }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("bld-\(getpid()).safetensors")
        defer { try? FileManager.default.removeItem(at: file) }
        try weights.write(to: file)
        let read = try BlockWeights.read(from: file, teacher: t.config, variants: variants)
        let held = try BatchSampler(shards: corpus, batch: 4, sequence: 16, sampling: .temperature(0), seed: 99).batch(step: 0).tokens
        for l in 0..<3 {
            for v in Self.variants {
                #expect(read.blocks[l]?[v] == weights.blocks[l]?[v])
                let before = try LocalDistillation.evaluate(teacher: t, layer: l, variant: v, importance: scores, trained: nil,
                                                            tokens: held, batch: 4, sequence: 16)
                let after = try LocalDistillation.evaluate(teacher: t, layer: l, variant: v, importance: scores, trained: read,
                                                           tokens: held, batch: 4, sequence: 16)
                #expect(after < before, "layer \(l) \(v): \(before) pruned → \(after) trained")
            }
        }
        // A student with trained layer 2: that layer computes the trained block's output.
        let v = Self.variants[0]
        let student = try HeterogeneousPruning.prune(teacher: t, variants: [full, full, v], scores: scores, trained: read)
        let block = try read.block(layer: 2, variant: v)!
        let sa = Activations(config: student.config, batch: 4, sequence: 16), ba = Activations(config: block.config, batch: 4, sequence: 16)
        try student.forward(tokens: held, sa)
        ba.residual[0].update(from: sa.residual[2], count: 4 * 16 * 16)
        try block.forward(layer: 0, ba)
        let layerOut = Array(UnsafeBufferPointer(start: sa.residual[3], count: 64 * 16))
        #expect(layerOut == Array(UnsafeBufferPointer(start: ba.residual[1], count: 64 * 16)))
        // One-block replacement with the trained blocks scores below the pruned ones.
        let calibration = CalibrationSet(tokens: held, samples: 4, sequence: 16, languages: ["en", "en", "en", "en"])
        let pruned = try BlockLibrary.replacementScores(teacher: t, variants: variants, importance: scores, calibration: calibration)
        let trained = try BlockLibrary.replacementScores(teacher: t, variants: variants, importance: scores, calibration: calibration,
                                                         trained: read)
        let sumPruned = pruned.joined().reduce(0, +), sumTrained = trained.joined().reduce(0, +)
        #expect(sumTrained < sumPruned, "summed replacement KL: pruned \(sumPruned), trained \(sumTrained)")
        for l in 0..<3 { #expect(trained[l][0] == 0 && trained[l][4] == pruned[l][4]) }
        // A corpus whose tokens the teacher cannot embed is refused, naming the token.
        let small = Self.teacher(vocab: 41)
        #expect {
            _ = try LocalDistillation.train(teacher: small, variants: variants, importance: scores, corpus: corpus, settings: settings)
        } throws: { "\($0)".contains("outside the teacher's vocabulary 0..<41") }
        // A file missing a block is refused, naming it.
        #expect { _ = try BlockWeights.read(from: file, teacher: t.config, variants: variants + [library]) } throws: {
            "\($0)".contains("layers.3.")
        }
    }
}
