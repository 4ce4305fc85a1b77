import Foundation

/// One model, its activations for a fixed (B, T), an AdamW optimizer and a schedule: the
/// language-model training step every higher layer (teacher training, benchmarks) uses.
public final class Trainer {
    public let model: DecoderModel
    /// Whole-batch activations (allocated on first use: data-parallel steps use per-worker ones).
    public private(set) lazy var activations = Activations(config: model.config, batch: batch, sequence: sequence)
    public let optimizer: AdamW
    public var schedule: LearningRateSchedule
    public var peakLearningRate: Double
    public var totalSteps: Int

    /// How many workers ``step(tokens:targets:)`` splits the batch across (1: none; default
    /// ``dataParallelByDefault(batch:)``). Fixed at the first step.
    public var dataParallelWorkers: Int
    /// Data-parallel workers after the first step: a model replica (worker 0: the model itself),
    /// activations for its rows of the batch, and those rows.
    private var workers: [(model: DecoderModel, activations: Activations, rows: Range<Int>)] = []
    private let batch: Int, sequence: Int

    /// Data parallelism pays whenever the batch can be shared: each worker then runs its rows'
    /// forward and backward alone, with no synchronisation inside either pass, and the gradients
    /// are summed once.
    public static func dataParallelByDefault(batch: Int) -> Int {
        Parallel.threads > 1 && batch >= Parallel.threads ? Parallel.threads : 1
    }

    public init(
        model: DecoderModel, batch: Int, sequence: Int, settings: AdamW.Settings = .init(),
        schedule: LearningRateSchedule, peakLearningRate: Double, totalSteps: Int, dataParallelWorkers: Int? = nil
    ) {
        self.model = model
        self.batch = batch
        self.sequence = sequence
        self.dataParallelWorkers = dataParallelWorkers ?? Trainer.dataParallelByDefault(batch: batch)
        optimizer = AdamW(layout: model.layout, settings: settings)
        self.schedule = schedule
        self.peakLearningRate = peakLearningRate
        self.totalSteps = totalSteps
    }

    public struct StepResult: Sendable {
        public var loss: Double; public var gradientNorm: Double; public var learningRate: Double
    }

    /// zero gradients → forward → cross-entropy → backward → AdamW.
    /// - Throws: ``ModelError/nonFinite(step:what:)`` naming the step when the loss or the
    ///   gradient is NaN or infinite; the parameters are then left as they were.
    public func step(tokens: [Int32], targets: [Int32]) throws -> StepResult {
        let stepNumber = optimizer.step + 1
        let loss =
            min(dataParallelWorkers, batch) > 1
            ? try dataParallelGradients(tokens: tokens, targets: targets)
            : try wholeBatchGradients(tokens: tokens, targets: targets)
        guard loss.isFinite else { throw ModelError.nonFinite(step: stepNumber, what: "training loss") }
        let lr = schedule.rate(step: stepNumber, total: totalSteps, peak: peakLearningRate)
        let norm = try optimizer.update(parameters: model.parameters, gradients: model.gradients, lr: lr)
        return StepResult(loss: loss, gradientNorm: norm, learningRate: lr)
    }

    /// Forward, loss and (when the loss is finite) backward of the whole batch in one model.
    /// Returns the mean loss.
    private func wholeBatchGradients(tokens: [Int32], targets: [Int32]) throws -> Double {
        model.zeroGradients()
        try model.forward(tokens: tokens, activations)
        let loss = try model.loss(activations, targets: targets, gradient: true)
        if loss.isFinite { model.backward(activations) }
        return loss
    }

    /// Each worker runs forward and loss on its rows of the batch (single-threaded); then, with
    /// n_w its counted targets of n, it scales its dlogits by n_w / n and runs backward into its own
    /// gradients, and the model's gradients become their sum — the gradient of the mean loss over
    /// the whole batch. Mixtures' auxiliary router losses see every worker's routing (their
    /// statistics and normalisation span the batch), as in one pass. Returns the mean loss.
    /// Deterministic for a worker count.
    private func dataParallelGradients(tokens: [Int32], targets: [Int32]) throws -> Double {
        guard tokens.count == batch * sequence, targets.count == batch * sequence else {
            throw ModelError.invalidInput(
                "expected \(batch * sequence) tokens and targets (B \(batch) × T \(sequence)), got \(tokens.count) and \(targets.count)"
            )
        }
        if workers.isEmpty {
            let W = min(dataParallelWorkers, batch)
            workers = (0..<W).map { w in
                let rows = (batch * w / W)..<(batch * (w + 1) / W)
                return (
                    w == 0 ? model : DecoderModel(replicaOf: model),
                    Activations(config: model.config, batch: rows.count, sequence: sequence), rows
                )
            }
        }
        let W = workers.count, T = sequence
        // Forward and loss: each worker's mean loss and counted targets.
        var outcomes = [Result<(loss: Double, counted: Int), Error>?](repeating: nil, count: W)
        outcomes.withUnsafeMutableBufferPointer { out in
            Parallel.chunks(W, minimumPerChunk: 1) { _, range in
                for w in range {
                    let (m, acts, rows) = workers[w]
                    let slice = (rows.lowerBound * T)..<(rows.upperBound * T)
                    let t = Array(targets[slice])
                    out[w] = Result {
                        m.masks = model.masks
                        m.routerLossWeights = model.routerLossWeights
                        try m.forward(tokens: Array(tokens[slice]), acts)
                        return (try m.loss(acts, targets: t, gradient: true), t.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) })
                    }
                }
            }
        }
        let shares = try outcomes.map { try $0!.get() }
        let counted = shares.map(\.counted), total = counted.reduce(0, +)
        guard total > 0 else { return .nan }
        let loss = shares.reduce(0) { $0 + $1.loss * Double($1.counted) } / Double(total)
        guard loss.isFinite else { return loss }
        // Backward.
        let all = workers.map(\.activations), V = model.config.vocabSize
        Parallel.chunks(W, minimumPerChunk: 1) { _, range in
            for w in range {
                let (m, acts, _) = workers[w]
                let scale = Float(Double(counted[w]) / Double(total)), d = acts.logits
                for i in 0..<(acts.N * V) { d[i] *= scale }
                m.zeroGradients()
                m.backward(acts, batchActivations: all)
            }
        }
        let g = model.gradients.pointer, others = workers.dropFirst().map { ($0.model.gradients.pointer) }
        Parallel.chunks(model.layout.count, minimumPerChunk: 1 << 14) { _, range in
            for i in range {
                var sum = g[i]
                for o in others { sum += o[i] }
                g[i] = sum
            }
        }
        return loss
    }
}
