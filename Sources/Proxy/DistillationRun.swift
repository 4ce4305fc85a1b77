import Foundation
import Model

/// Everything that decides a distillation run's result.
public struct DistillationRecipe: Sendable, Equatable, Codable {
    public var steps: Int
    public var batch = 16
    public var sequence = 128
    public var learningRate = 1e-3
    public var schedule = "cosine"
    public var warmup = 10
    public var minRatio = 0.1
    public var weightDecay = 0.0
    public var gradientClip = 1.0
    public var seed: UInt64 = 0
    /// Language sampling exponent for training batches.
    public var alpha = 0.3
    /// Record a curve point every K steps (and at the end).
    public var evalEvery = 25
    public var evalTokens = 4096
    public var loss = DistillationLoss()
    public init(steps: Int) { self.steps = steps }
}

/// One point of a student's learning curve.
public struct CurvePoint: Sendable, Equatable {
    public var step: Int
    public var trainLoss: Double
    public var validation: EvaluationResult
    /// KL(teacher ‖ student) at τ on validation windows.
    public var validationKL: Double

    public init(step: Int, trainLoss: Double, validation: EvaluationResult, validationKL: Double) {
        self.step = step; self.trainLoss = trainLoss; self.validation = validation; self.validationKL = validationKL
    }

    public var json: JSON {
        [
            "step": JSON(step), "train_loss": JSON(trainLoss), "validation": validation.json,
            "validation_kl": JSON(validationKL)
        ]
    }
}

/// Distils several students on the same batches, sharing the teacher's forward pass, and records
/// their curves. A student that diverges ends as failed (its error names the step); the others go on.
public enum DistillationRun {
    public struct Outcome: Sendable {
        public var curves: [[CurvePoint]]
        public var failures: [Int: ProxyError]
    }

    /// - Parameters:
    ///   - startStep: steps already taken by these students (continuing a run, e.g. a successive-halving rung).
    ///   - onPoint: called with (student, point) as each point is recorded.
    ///   - endStep: stop after this step (default `recipe.steps`); the schedule always spans
    ///     `recipe.steps`, so a run stopped early and continued later is the same run.
    ///   - resume: student → training checkpoint (weights, AdamW moments, step) to continue from;
    ///     every resumed student must be at the same step.
    ///   - evaluateAt: record curve points at exactly these steps (default: every `evalEvery` and at the end).
    ///   - onStep: called after every step with (step, student → loss).
    public static func run(
        teacher: DecoderModel, students: [(String, DecoderModel)], corpus: TokenShards,
        recipe: DistillationRecipe, endStep: Int? = nil, resume: [Int: URL] = [:], evaluateAt: Set<Int>? = nil,
        progressLabel: String = "distill",
        onStep: (Int, [Int: Double]) throws -> Void = { _, _ in },
        onPoint: (Int, CurvePoint) throws -> Void = { _, _ in }
    ) throws -> (Outcome, Distiller) {
        guard recipe.steps >= 1 else { throw ProxyError.invalidOption(field: "steps", reason: "must be at least 1") }
        guard
            let schedule = LearningRateSchedule.named(recipe.schedule, warmup: recipe.warmup, minRatio: recipe.minRatio)
        else {
            throw ProxyError.invalidOption(
                field: "schedule", reason: "'\(recipe.schedule)' is not cosine, wsd or constant")
        }
        let distiller = try Distiller(
            teacher: teacher, students: students, batch: recipe.batch, sequence: recipe.sequence,
            loss: recipe.loss, learningRate: recipe.learningRate, schedule: schedule, steps: recipe.steps,
            settings: .init(weightDecay: recipe.weightDecay, gradientClip: recipe.gradientClip))
        let sampler = try BatchSampler(
            shards: corpus, batch: recipe.batch, sequence: recipe.sequence,
            sampling: .temperature(recipe.alpha), seed: recipe.seed)
        var startStep = 0
        for (i, url) in resume.sorted(by: { $0.key < $1.key }) {
            let t = distiller.students[i].trainer
            _ = try TrainingCheckpoint.load(url, model: t.model, optimizer: t.optimizer)
            if i == resume.keys.min() { startStep = t.optimizer.step }
            guard t.optimizer.step == startStep else {
                throw ProxyError.invalidOption(
                    field: "resume",
                    reason: "students resume from different steps (\(t.optimizer.step) and \(startStep))")
            }
        }
        let end = min(endStep ?? recipe.steps, recipe.steps)
        guard end > startStep else {
            throw ProxyError.invalidOption(
                field: "endStep", reason: "\(end) is not after the resumed step \(startStep)")
        }
        var curves = [[CurvePoint]](repeating: [], count: students.count)
        var failures: [Int: ProxyError] = [:]
        var active = Set(students.indices)
        let progress = ProgressReporter(
            label: progressLabel, total: end, firstStep: startStep, every: max(1, min(recipe.evalEvery, 50)))
        var tokens = 0
        var lastLoss = [Double](repeating: .nan, count: students.count)
        for step in (startStep + 1)...end {
            // SIGINT/SIGTERM (where a command installed the handler): stop between steps.
            try Interruption.check()
            let b = sampler.batch(step: step)
            for (i, r) in try distiller.step(tokens: b.tokens, targets: b.targets, only: active) {
                switch r {
                case let .success(s): lastLoss[i] = s.loss
                case let .failure(e):
                    failures[i] = e
                    active.remove(i)
                    progress.note("\(e)")
                }
            }
            tokens += recipe.batch * recipe.sequence * max(active.count, 1)
            let shown = active.sorted().prefix(4).map { (students[$0].0, String(format: "%.4f", lastLoss[$0])) }
            progress.update(step: step, tokens: tokens, fields: shown)
            try onStep(step, Dictionary(uniqueKeysWithValues: active.map { ($0, lastLoss[$0]) }))
            if evaluateAt?.contains(step) ?? (step % recipe.evalEvery == 0 || step == end) {
                let scores = try distiller.validate(
                    corpus: corpus, maxTokensPerLanguage: recipe.evalTokens, step: step, only: active)
                for i in active.sorted() {
                    let (e, kl) = scores[i]!
                    let point = CurvePoint(step: step, trainLoss: lastLoss[i], validation: e, validationKL: kl)
                    curves[i].append(point)
                    try onPoint(i, point)
                }
            }
            if active.isEmpty { break }
        }
        return (Outcome(curves: curves, failures: failures), distiller)
    }
}
