import Foundation
import Model

/// How blockwise local distillation trains a block library (``LocalDistillation``).
public struct LocalDistillationSettings: Sendable, Equatable, Codable {
    /// AdamW steps; every block takes each one on the same teacher batch.
    public var steps: Int
    public var batchSize: Int
    public var sequence: Int
    /// Peak rate: linear warmup over the first tenth of the steps, then cosine decay to a tenth.
    public var learningRate: Double
    /// The batches' seed (the corpus's training split, language-balanced).
    public var seed: UInt64
    /// How many layers' blocks train at once (nil: all): memory holds the blocks of that many
    /// layers with their gradients and AdamW moments, and the teacher runs once per pass over the
    /// batches. The trained blocks are the same whatever it is (each block sees the same batches).
    public var layersPerPass: Int? = nil
    public init(
        steps: Int, batchSize: Int, sequence: Int, learningRate: Double, seed: UInt64, layersPerPass: Int? = nil
    ) {
        self.steps = steps; self.batchSize = batchSize; self.sequence = sequence
        self.learningRate = learningRate; self.seed = seed; self.layersPerPass = layersPerPass
    }
    /// What it changes in a cache key (not `layersPerPass`: it changes no block).
    public var description: String { "bld:\(steps)x\(batchSize)x\(sequence)@\(learningRate)#\(seed)" }

    /// The passes over the batches for `layers` layers: each a range of layers whose blocks train together.
    public func passes(layers L: Int) -> [Range<Int>] {
        let n = max(1, min(layersPerPass ?? L, L))
        return stride(from: 0, to: L, by: n).map { $0..<min($0 + n, L) }
    }
}

/// Puzzle's blockwise local distillation (arXiv 2411.19146, §3.2): every variant of every layer,
/// cut from the teacher's block (``HeterogeneousPruning``), is trained to reproduce that block's
/// output from that block's input — both taken from the teacher, so blocks train independently
/// and all of them in one teacher pass per batch. The loss of a block is the normalised MSE of
/// its contribution to the residual stream,
///     ‖(y − x) − (y_teacher − x)‖² / ‖y_teacher − x‖²  summed over the batch's tokens,
/// where x is the block's input and y its output: 0 for the teacher's own block, 1 for one that
/// adds nothing (a no-op). Each block is a one-layer model (``blockConfig(teacher:variant:)``)
/// with its own AdamW state; the teacher's block is never trained (it is exact), nor a block with
/// no parameters.
public enum LocalDistillation {
    /// The one-layer model holding variant `v` of a layer: the student's numerics with a
    /// one-token vocabulary (its embedding and head are never used).
    public static func blockConfig(teacher t: ModelConfig, variant v: LayerVariant) -> ModelConfig {
        var c = HeterogeneousPruning.studentConfig(teacher: t, variants: [v])
        c.numHiddenLayers = 1
        c.vocabSize = 1
        c.tieWordEmbeddings = true
        return c
    }

    /// Variant `v` of teacher layer `l`, pruned (the init that training starts from).
    public static func prunedBlock(
        teacher: DecoderModel, layer l: Int, variant v: LayerVariant, importance: ImportanceScores
    ) throws -> DecoderModel {
        let t = teacher.config
        try HeterogeneousPruning.check(Array(repeating: v, count: t.numHiddenLayers), teacher: t)
        let block = DecoderModel(config: blockConfig(teacher: t, variant: v))
        for e in block.layout.entries {
            guard e.layer == 0, let role = e.role else { continue }
            guard let src = teacher.layout.entry(role, layer: l).flatMap({ teacher.tensor($0.name) }) else {
                throw ProxyError.invalidTarget(field: e.name, reason: "teacher layer \(l) has no \(role) tensor")
            }
            HeterogeneousPruning.fill(
                block.tensor(e.name)!, role: role, from: UnsafeBufferPointer(src), teacher: t, variant: v,
                neurons: importance.neurons[l])
        }
        return block
    }

    /// The batches local distillation trains on: the corpus's training split, language-balanced,
    /// step k's batch is `batch(step: k − 1)` (so an external backend is sent the same tokens).
    public static func sampler(corpus: TokenShards, settings s: LocalDistillationSettings) throws -> BatchSampler {
        do {
            return try BatchSampler(
                shards: corpus, batch: s.batchSize, sequence: s.sequence, sampling: .temperature(0), seed: s.seed)
        } catch let error as ModelError {
            throw ProxyError.calibration("local distillation: \(error)")
        }
    }

    /// The schedule of its rate: linear warmup over the first tenth of the steps (at least one),
    /// then cosine decay to a tenth of the peak.
    public static func schedule(steps: Int) -> LearningRateSchedule {
        .cosine(warmup: max(1, steps / 10), minRatio: 0.1)
    }

    /// Its AdamW settings: the engine's, without weight decay.
    public static var optimizer: AdamW.Settings {
        var opt = AdamW.Settings()
        opt.weightDecay = 0
        return opt
    }

    /// The normalised MSE (see the type) of `output` against the teacher's `target`, both from
    /// `input` (N·C each); with `gradient`, dLoss/d(output) into it.
    static func loss(
        output: UnsafePointer<Float>, target: UnsafePointer<Float>, input: UnsafePointer<Float>, count: Int,
        gradient: UnsafeMutablePointer<Float>?
    ) -> Double {
        var err = 0.0, norm = 0.0
        for i in 0..<count {
            let d = Double(output[i]) - Double(target[i]), c = Double(target[i]) - Double(input[i])
            err += d * d
            norm += c * c
        }
        let scale = 1 / max(norm, 1e-30)
        if let gradient {
            let g = Float(2 * scale)
            for i in 0..<count { gradient[i] = g * (output[i] - target[i]) }
        }
        return err * scale
    }

    /// Trains every variant of `variants[l]` (other than the teacher's own block and blocks
    /// without parameters) and returns their weights and each one's mean loss over the last
    /// tenth of the steps (`losses[l][v]`, 0 for the teacher's block, nil where not trained).
    /// The blocks of `s.passes(layers:)`'s layer ranges train one range at a time, each over all
    /// the batches. `progress(step, losses of this step)` after every step of every pass (step
    /// counts on across passes, to `steps × passes`).
    public static func train(
        teacher: DecoderModel, variants: [[LayerVariant]], importance: ImportanceScores, corpus: TokenShards,
        settings s: LocalDistillationSettings, progress: (Int, [Double]) -> Void = { _, _ in }
    ) throws -> (weights: BlockWeights, losses: [[Double?]]) {
        let L = teacher.config.numHiddenLayers
        let full = LayerVariant(
            keyValueGroups: teacher.config.numKeyValueHeads, mlpWidth: teacher.config.intermediateSize)
        var weights = BlockWeights(teacher: teacher.config)
        var losses: [[Double?]] = variants.map { $0.map { $0 == full ? 0 : nil } }
        for (p, layers) in s.passes(layers: L).enumerated() {
            let only = variants.enumerated().map { l, vs in layers.contains(l) ? vs : [] }
            let (w, lo) = try trainPass(
                teacher: teacher, variants: only, importance: importance, corpus: corpus, settings: s
            ) { step, l in progress(p * s.steps + step, l) }
            for l in layers {
                weights.blocks[l] = w.blocks[l]
                for j in variants[l].indices where lo[l].indices.contains(j) { losses[l][j] = lo[l][j] }
            }
        }
        return (weights, losses)
    }

    /// One pass: every block of `variants` (layers with no variants train nothing) over all the batches.
    static func trainPass(
        teacher: DecoderModel, variants: [[LayerVariant]], importance: ImportanceScores, corpus: TokenShards,
        settings s: LocalDistillationSettings, progress: (Int, [Double]) -> Void
    ) throws -> (weights: BlockWeights, losses: [[Double?]]) {
        let t = teacher.config, L = t.numHiddenLayers, C = t.hiddenSize
        guard variants.count == L else {
            throw ProxyError.invalidTarget(
                field: "block_configs", reason: "variants for \(variants.count) of \(L) layers")
        }
        guard s.steps >= 1, s.batchSize >= 1, s.sequence >= 1, s.learningRate > 0 else {
            throw ProxyError.invalidTarget(
                field: "local_distillation", reason: "steps, batch, sequence and rate must be positive")
        }
        let full = LayerVariant(keyValueGroups: t.numKeyValueHeads, mlpWidth: t.intermediateSize)
        struct Trained {
            var layer: Int, variant: LayerVariant, model: DecoderModel, optimizer: AdamW, tail: [Double] = []
        }
        var blocks: [Trained] = []
        for (l, vs) in variants.enumerated() {
            for v in vs where v != full && (v.keyValueGroups != nil || v.mlpWidth != nil) {
                let model = try prunedBlock(teacher: teacher, layer: l, variant: v, importance: importance)
                blocks.append(
                    Trained(
                        layer: l, variant: v, model: model,
                        optimizer: AdamW(layout: model.layout, settings: Self.optimizer)))
            }
        }
        let (B, T) = (s.batchSize, s.sequence), N = B * T
        let sampler = try Self.sampler(corpus: corpus, settings: s)
        let deepest = (blocks.map(\.layer).max() ?? -1) + 1
        // The teacher's residual stream, layer by layer (its head is not needed).
        let teacherActs = Activations(config: t, batch: B, sequence: T)
        // One set of activations per block shape: blocks train one after another.
        var blockActs: [LayerVariant: Activations] = [:]
        let gradient = UnsafeMutablePointer<Float>.allocate(capacity: N * C)
        defer { gradient.deallocate() }
        let embedding = teacher.tensor(teacher.layout.entry(.embedding)!.name)!
        let schedule = Self.schedule(steps: s.steps)
        let tailStart = s.steps - max(1, s.steps / 10)
        for step in 1...s.steps {
            // Asked to stop (SIGINT, SIGTERM): between steps, nothing written.
            try Interruption.check()
            let tokens = sampler.batch(step: step - 1).tokens
            if let bad = tokens.first(where: { $0 < 0 || Int($0) >= t.vocabSize }) {
                throw ProxyError.calibration(
                    "local distillation: token id \(bad) of the corpus is outside the teacher's vocabulary 0..<\(t.vocabSize)"
                )
            }
            let x0 = teacherActs.residual[0]
            for n in 0..<N {
                (x0 + n * C).update(from: embedding.baseAddress! + Int(tokens[n]) * C, count: C)
            }
            // Up to the last layer with blocks to train (a pass over early layers stops early).
            for l in 0..<deepest { try teacher.forward(layer: l, teacherActs) }
            let lr = schedule.rate(step: step, total: s.steps, peak: s.learningRate)
            var losses: [Double] = []
            for i in blocks.indices {
                let b = blocks[i]
                let acts = blockActs[b.variant] ?? Activations(config: b.model.config, batch: B, sequence: T)
                blockActs[b.variant] = acts
                acts.residual[0].update(from: teacherActs.residual[b.layer], count: N * C)
                try b.model.forward(layer: 0, acts)
                let value = loss(
                    output: acts.residual[1], target: teacherActs.residual[b.layer + 1],
                    input: teacherActs.residual[b.layer], count: N * C, gradient: gradient)
                guard value.isFinite else {
                    throw ModelError.nonFinite(
                        step: step, what: "local distillation loss of layer \(b.layer) \(b.variant)")
                }
                b.model.zeroGradients()
                b.model.backward(layer: 0, acts, outputGradient: gradient)
                _ = try b.optimizer.update(parameters: b.model.parameters, gradients: b.model.gradients, lr: lr)
                if step > tailStart { blocks[i].tail.append(value) }
                losses.append(value)
            }
            progress(step, losses)
        }
        var weights = BlockWeights(teacher: t)
        var losses: [[Double?]] = variants.map { $0.map { $0 == full ? 0 : nil } }
        for b in blocks {
            weights.blocks[b.layer, default: [:]][b.variant] = Array(
                UnsafeBufferPointer(start: b.model.parameters.pointer, count: b.model.parameters.count))
            let mean = b.tail.reduce(0, +) / Double(max(1, b.tail.count))
            for (j, v) in variants[b.layer].enumerated() where v == b.variant { losses[b.layer][j] = mean }
        }
        return (weights, losses)
    }

    /// The normalised MSE of each variant's block as it stands (pruned, or trained when in
    /// `trained`) on one teacher batch: the measure ``train`` minimises, for checking it.
    public static func evaluate(
        teacher: DecoderModel, layer l: Int, variant v: LayerVariant, importance: ImportanceScores,
        trained: BlockWeights?, tokens: [Int32], batch B: Int, sequence T: Int
    ) throws -> Double {
        let t = teacher.config, C = t.hiddenSize, N = B * T
        let block =
            try trained?.block(layer: l, variant: v)
            ?? prunedBlock(teacher: teacher, layer: l, variant: v, importance: importance)
        let ta = Activations(config: t, batch: B, sequence: T)
        try teacher.forward(tokens: tokens, ta)
        let ba = Activations(config: block.config, batch: B, sequence: T)
        ba.residual[0].update(from: ta.residual[l], count: N * C)
        try block.forward(layer: 0, ba)
        return loss(
            output: ba.residual[1], target: ta.residual[l + 1], input: ta.residual[l], count: N * C, gradient: nil)
    }
}

/// Trained blocks of a library (``LocalDistillation``): for layer l and variant v, the flat
/// parameters of the one-layer model ``LocalDistillation/blockConfig(teacher:variant:)``.
public struct BlockWeights: Sendable {
    public let teacher: ModelConfig
    public var blocks: [Int: [LayerVariant: [Float]]] = [:]
    public init(teacher: ModelConfig) { self.teacher = teacher }

    /// The trained block, or nil when (layer, variant) was not trained.
    public func block(layer l: Int, variant v: LayerVariant, teacher t: ModelConfig? = nil) throws -> DecoderModel? {
        guard let values = blocks[l]?[v] else { return nil }
        let model = DecoderModel(config: LocalDistillation.blockConfig(teacher: t ?? teacher, variant: v))
        guard values.count == model.parameters.count else {
            throw ProxyError.invalidTarget(
                field: "block_weights",
                reason: "layer \(l) \(v): \(values.count) values for a block of \(model.parameters.count)")
        }
        values.withUnsafeBufferPointer { model.parameters.pointer.update(from: $0.baseAddress!, count: values.count) }
        return model
    }

    public static func name(_ l: Int, _ v: LayerVariant) -> String {
        "layers.\(l).kv\(v.keyValueGroups.map(String.init) ?? "-").mlp\(v.mlpWidth.map(String.init) ?? "-")"
    }

    /// One safetensors file (float32), a tensor per trained block.
    public func write(to url: URL) throws {
        var entries: [(String, [Float])] = []
        for l in blocks.keys.sorted() {
            for (v, values) in blocks[l]!.sorted(by: { Self.name(l, $0.key) < Self.name(l, $1.key) }) {
                entries.append((Self.name(l, v), values))
            }
        }
        try withSlices(entries, []) { try SafeTensorsWriter.write($0, to: url) }
    }

    private func withSlices(_ rest: [(String, [Float])], _ done: [TensorSlice], _ body: ([TensorSlice]) throws -> Void)
        throws
    {
        guard let (name, values) = rest.first else { return try body(done) }
        try values.withUnsafeBufferPointer {
            try withSlices(
                Array(rest.dropFirst()), done + [TensorSlice(name: name, shape: [values.count], values: $0)], body)
        }
    }

    /// Blocks trained elsewhere (an external backend), one tensor per block and layer tensor,
    /// named `BLOCK/<name in the layer>` (``BlockLibrary/writeVariants(teacher:variants:importance:trained:to:)``'s
    /// names): each block's one-layer model with its layer's tensors from the file. A tensor
    /// missing, of the wrong size or not finite is an error naming it.
    public static func readBlocks(from url: URL, teacher t: ModelConfig, blocks: [(layer: Int, variant: LayerVariant)])
        throws -> BlockWeights
    {
        let file = try SafeTensorsFile(url: url)
        var w = BlockWeights(teacher: t)
        for (l, v) in blocks {
            let model = DecoderModel(config: LocalDistillation.blockConfig(teacher: t, variant: v))
            for e in model.layout.entries where e.layer == 0 {
                let inLayer =
                    e.name.hasPrefix("model.layers.0.") ? String(e.name.dropFirst("model.layers.0.".count)) : e.name
                let key = "\(name(l, v))/\(inLayer)"
                let values = try file.floats(key)
                guard values.count == e.count, values.allSatisfy(\.isFinite) else {
                    throw ProxyError.invalidTarget(
                        field: "\(url.path): \(key)",
                        reason: "\(values.count) values (finite?) for a tensor of \(e.count)")
                }
                _ = model.tensor(e.name)!.update(fromContentsOf: values)
            }
            w.blocks[l, default: [:]][v] = Array(
                UnsafeBufferPointer(start: model.parameters.pointer, count: model.parameters.count))
        }
        return w
    }

    /// Reads what ``write(to:)`` wrote for `variants` (per layer); a block missing from the file
    /// or of the wrong size is an error naming it.
    public static func read(from url: URL, teacher t: ModelConfig, variants: [[LayerVariant]]) throws -> BlockWeights {
        let file = try SafeTensorsFile(url: url)
        let full = LayerVariant(keyValueGroups: t.numKeyValueHeads, mlpWidth: t.intermediateSize)
        var w = BlockWeights(teacher: t)
        for (l, vs) in variants.enumerated() {
            for v in vs where v != full && (v.keyValueGroups != nil || v.mlpWidth != nil) {
                let values = try file.floats(name(l, v))
                let count = ParameterLayout(config: LocalDistillation.blockConfig(teacher: t, variant: v)).count
                guard values.count == count else {
                    throw ProxyError.invalidTarget(
                        field: "\(url.path): \(name(l, v))", reason: "\(values.count) values for a block of \(count)")
                }
                w.blocks[l, default: [:]][v] = values
            }
        }
        return w
    }
}
