import Foundation
import Model

/// The distillation objective. Defaults follow Minitron's best practice: logit KL only, τ = 1.
public struct DistillationLoss: Sendable, Equatable, Codable {
    public enum Direction: String, Sendable, Codable { case forward, reverse }
    /// Weight of KL between teacher and student token distributions at temperature τ.
    public var kl = 1.0
    /// Weight of the cross-entropy with the data's next tokens.
    public var lm = 0.0
    public var temperature = 1.0
    /// forward: KL(teacher ‖ student); reverse: KL(student ‖ teacher).
    public var direction = Direction.forward
    /// Distance between chosen hidden states through a learned linear map (off by default).
    public var hidden = HiddenLoss()
    public init() {}
}

/// One step's losses for one student.
public struct DistillationStep: Sendable {
    public var loss: Double
    public var kl: Double
    public var lm: Double
    public var hidden: Double = 0
}

/// Computes the distillation loss of `studentLogits` against the teacher's log-probabilities at
/// temperature τ (`teacherLogProbs`, (N, V)) and, when `gradient`, overwrites the student logits
/// with dLoss/dlogits. KL is scaled by τ² (Hinton et al.) so that its gradient does not shrink
/// with τ; losses are means over rows whose target is not ignored.
///
/// Forward KL(p‖q), p teacher, q = softmax(s/τ): Σ p (log p − log q), ∂/∂s = τ (q − p).
/// Reverse KL(q‖p): Σ q (log q − log p), ∂/∂sⱼ = τ qⱼ (log qⱼ − log pⱼ − KL).
/// Cross-entropy at τ = 1: ∂/∂s = softmax(s) − onehot.
func distillationLoss(
    _ s: UnsafeMutablePointer<Float>, teacherLogProbs lp: UnsafePointer<Float>,
    targets: [Int32], N: Int, V: Int, loss: DistillationLoss, gradient: Bool,
    scratch: UnsafeMutablePointer<Float>
) -> DistillationStep {
    let valid = targets.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) }
    guard valid > 0 else { return DistillationStep(loss: 0, kl: 0, lm: 0) }
    let tau = Float(loss.temperature), wkl = Float(loss.kl), wlm = Float(loss.lm)
    let scale = 1 / Float(valid)
    var klRows = [Double](repeating: 0, count: N), lmRows = [Double](repeating: 0, count: N)
    klRows.withUnsafeMutableBufferPointer { klp in
        lmRows.withUnsafeMutableBufferPointer { lmp in
            let klp = klp.baseAddress!, lmp = lmp.baseAddress!
            Parallel.chunks(N, minimumPerChunk: 8) { w, rows in
                let q = scratch + w * 2 * V, ce = q + V
                for n in rows {
                    let t = Int(targets[n])
                    let row = s + n * V, p = lp + n * V
                    guard t >= 0 else {
                        if gradient { row.update(repeating: 0, count: V) }
                        continue
                    }
                    // Student log-probabilities at τ: log q = s/τ − lse(s/τ).
                    var m = -Float.infinity
                    for j in 0..<V { m = max(m, row[j]) }
                    var sumT: Float = 0, sum1: Float = 0
                    for j in 0..<V {
                        sumT += expf((row[j] - m) / tau)
                        sum1 += expf(row[j] - m)
                    }
                    let lseT = logf(sumT), lse1 = m + logf(sum1)
                    var kl: Float = 0
                    for j in 0..<V {
                        let logq = (row[j] - m) / tau - lseT
                        q[j] = logq
                        let logp = p[j]
                        if loss.direction == .forward {
                            let pj = expf(logp); if pj > 0 { kl += pj * (logp - logq) }
                        } else {
                            kl += expf(logq) * (logq - logp)
                        }
                    }
                    klp[n] = Double(kl * tau * tau)
                    lmp[n] = Double(lse1 - row[t])
                    if gradient {
                        for j in 0..<V { ce[j] = expf(row[j] - lse1) }
                        ce[t] -= 1
                        for j in 0..<V {
                            let qj = expf(q[j]), pj = expf(p[j])
                            let gkl = loss.direction == .forward ? tau * (qj - pj) : tau * qj * (q[j] - p[j] - kl)
                            row[j] = (wkl * gkl + wlm * ce[j]) * scale
                        }
                    }
                }
            }
        }
    }
    let kl = klRows.reduce(0, +) / Double(valid), lm = lmRows.reduce(0, +) / Double(valid)
    return DistillationStep(loss: loss.kl * kl + loss.lm * lm, kl: kl, lm: lm)
}

/// Teacher log-probabilities at temperature τ for logits (N, V), written to `out`.
func logSoftmax(
    _ logits: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, N: Int, V: Int, temperature: Float
) {
    Parallel.chunks(N, minimumPerChunk: 8) { _, rows in
        for n in rows {
            let row = logits + n * V, o = out + n * V
            var m = -Float.infinity
            for j in 0..<V { m = max(m, row[j]) }
            var sum: Float = 0
            for j in 0..<V { sum += expf((row[j] - m) / temperature) }
            let lse = logf(sum)
            for j in 0..<V { o[j] = (row[j] - m) / temperature - lse }
        }
    }
}

/// Several students distilled from one teacher on the same batches: the teacher's forward pass
/// and log-probabilities are computed once per batch and shared.
public final class Distiller {
    public struct Student {
        public var name: String
        public var trainer: Trainer
        /// The learned hidden-state map, when the loss has a hidden term.
        public var projector: HiddenProjector?
    }
    public let teacher: DecoderModel
    public private(set) var students: [Student]
    public let loss: DistillationLoss
    let teacherActs: Activations
    let teacherLogProbs: FloatBuffer
    let scratch: FloatBuffer
    /// Run students on separate workers (default) or one after the other, each spread over every
    /// worker (for comparison in `topiary bench proxy`).
    public var studentsInParallel = true

    public init(
        teacher: DecoderModel, students: [(String, DecoderModel)], batch: Int, sequence: Int, loss: DistillationLoss,
        learningRate: Double, schedule: LearningRateSchedule, steps: Int, settings: AdamW.Settings = .init()
    ) throws {
        for (name, s) in students {
            // A heterogeneous student (nemotron-nas) is cut from a Llama-numerics teacher of another family.
            guard s.config.family == teacher.config.family || s.config.layerVariants != nil else {
                throw ProxyError.invalidTarget(
                    field: "model_type",
                    reason:
                        "student \(name) is \(s.config.family.rawValue), teacher is \(teacher.config.family.rawValue)")
            }
            guard s.config.vocabSize == teacher.config.vocabSize else {
                throw ProxyError.invalidTarget(
                    field: "vocab_size",
                    reason: "student \(name) has \(s.config.vocabSize), teacher \(teacher.config.vocabSize)")
            }
        }
        guard loss.temperature > 0 else {
            throw ProxyError.invalidOption(field: "temperature", reason: "must be positive")
        }
        self.teacher = teacher
        self.loss = loss
        self.students = try students.map {
            Student(
                name: $0.0,
                trainer: Trainer(
                    model: $0.1, batch: batch, sequence: sequence, settings: settings,
                    schedule: schedule, peakLearningRate: learningRate, totalSteps: steps),
                projector: loss.hidden.weight > 0
                    ? try HiddenProjector(
                        loss: loss.hidden, student: $0.1.config, teacher: teacher.config, rows: batch * sequence) : nil)
        }
        teacherActs = Activations(config: teacher.config, batch: batch, sequence: sequence)
        teacherLogProbs = FloatBuffer(count: batch * sequence * teacher.config.vocabSize)
        // One block of per-chunk rows for each worker that may run a student.
        scratch = FloatBuffer(count: Parallel.threads * Parallel.threads * 2 * teacher.config.vocabSize)
    }

    /// One step for every student (or those in `only`) on one batch. A student whose loss or
    /// gradient is not finite gets ``ProxyError/diverged(student:step:what:)`` naming it and the
    /// step; its weights are left as they were and the other students are not disturbed.
    ///
    /// The teacher's pass uses every core; then, with two or more students, each worker takes
    /// whole students (worker w: students w, w + W, …) and runs them single-threaded — no
    /// synchronisation inside a student's step. The result does not depend on the scheduling.
    public func step(tokens: [Int32], targets: [Int32], only: Set<Int>? = nil) throws -> [Int: Result<
        DistillationStep, ProxyError
    >] {
        let V = teacher.config.vocabSize
        try teacher.forward(tokens: tokens, teacherActs)
        logSoftmax(
            teacherActs.logits.baseAddress!, into: teacherLogProbs.pointer, N: teacherActs.N, V: V,
            temperature: Float(loss.temperature))
        let chosen = students.indices.filter { only?.contains($0) ?? true }
        let outcomes = forEachStudent(chosen.count) { j, scratch in
            try stepStudent(chosen[j], tokens: tokens, targets: targets, scratch: scratch)
        }
        var result: [Int: Result<DistillationStep, ProxyError>] = [:]
        for (j, i) in chosen.enumerated() {
            switch outcomes[j] {
            case let .success(r): result[i] = .success(r)
            case let .failure(e as ProxyError): result[i] = .failure(e)
            case let .failure(e): throw e
            }
        }
        return result
    }

    /// `body(j, scratch)` for j in 0..<count, each outcome in its place: inline for one, spread over
    /// workers (each taking every W-th j) for more. `scratch` is the worker's own block of the
    /// per-chunk rows ``distillationLoss`` uses.
    func forEachStudent<T>(_ count: Int, _ body: (Int, UnsafeMutablePointer<Float>) throws -> T) -> [Result<T, Error>] {
        let W = studentsInParallel ? min(Parallel.threads, count) : 1
        let block = Parallel.threads * 2 * teacher.config.vocabSize
        var outcomes = [Result<T, Error>?](repeating: nil, count: count)
        outcomes.withUnsafeMutableBufferPointer { out in
            if W <= 1 { for j in 0..<count { out[j] = Result { try body(j, scratch.pointer) } }; return }
            Parallel.chunks(W, minimumPerChunk: 1) { _, workers in
                for w in workers {
                    for j in stride(from: w, to: count, by: W) {
                        out[j] = Result { try body(j, scratch.pointer + w * block) }
                    }
                }
            }
        }
        return outcomes.map { $0! }
    }

    /// One student's distillation step. Throws ``ProxyError/diverged(student:step:what:)`` when it
    /// diverges (its weights untouched).
    func stepStudent(_ i: Int, tokens: [Int32], targets: [Int32], scratch: UnsafeMutablePointer<Float>) throws
        -> DistillationStep
    {
        let s = students[i], t = s.trainer, model = t.model
        let V = teacher.config.vocabSize, N = teacherActs.N
        let stepNumber = t.optimizer.step + 1
        model.zeroGradients()
        do { try model.forward(tokens: tokens, t.activations) } catch let error as ModelError {
            // A mixture router gone non-finite: this student diverged; the others carry on.
            if case .router = error { throw ProxyError.diverged(student: s.name, step: stepNumber, what: "\(error)") }
            throw error
        }
        var r = distillationLoss(
            t.activations.logits.baseAddress!, teacherLogProbs: teacherLogProbs.pointer, targets: targets,
            N: N, V: V, loss: loss, gradient: true, scratch: scratch)
        var residualGradients: [Int: UnsafePointer<Float>] = [:]
        if let projector = s.projector {
            let h = projector.evaluate(student: t.activations, teacher: teacherActs, gradient: true)
            r.hidden = h.loss
            r.loss += loss.hidden.weight * h.loss
            residualGradients = h.residualGradients
        }
        guard r.loss.isFinite else {
            throw ProxyError.diverged(student: s.name, step: stepNumber, what: "distillation loss")
        }
        model.backward(t.activations, residualGradients: residualGradients)
        let lr = t.schedule.rate(step: stepNumber, total: t.totalSteps, peak: t.peakLearningRate)
        do {
            try t.optimizer.update(parameters: model.parameters, gradients: model.gradients, lr: lr)
            try s.projector?.update(lr: lr)
        } catch {
            throw ProxyError.diverged(student: s.name, step: stepNumber, what: "gradient norm")
        }
        return r
    }

    /// Each student's validation loss (per language, as
    /// ``Evaluation/validationLoss(model:shards:split:batch:sequence:maxTokensPerLanguage:step:activations:)``)
    /// and mean KL(teacher ‖ student) at τ, from one forward pass of the teacher and of each student
    /// per window batch. The KL averages over languages with more than T validation tokens.
    public func validate(corpus: TokenShards, maxTokensPerLanguage: Int, step: Int = 0, only: Set<Int>? = nil) throws
        -> [Int: (EvaluationResult, kl: Double)]
    {
        let T = teacherActs.T, B = teacherActs.B, V = teacher.config.vocabSize
        let chosen = students.indices.filter { only?.contains($0) ?? true }
        var tallies = [Int: LossTally](uniqueKeysWithValues: chosen.map { ($0, LossTally()) })
        var sums: [Int: Double] = [:], counts = 0
        var klOnly = loss
        klOnly.kl = 1; klOnly.lm = 0; klOnly.direction = .forward
        try corpus.forEachWindowBatch(batch: B, sequence: T, maxTokensPerLanguage: maxTokensPerLanguage) {
            lang, tokens, targets in
            let withKL = (corpus.stats["validation"]?[lang]?.tokens ?? 0) > T
            let counted = targets.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) }
            if withKL {
                try teacher.forward(tokens: tokens, teacherActs)
                logSoftmax(
                    teacherActs.logits.baseAddress!, into: teacherLogProbs.pointer, N: B * T, V: V,
                    temperature: Float(loss.temperature))
                counts += counted
            }
            // Students in parallel (as in `step`); tallies are added afterwards in student order.
            let kls = try forEachStudent(chosen.count) { j, scratch -> Double in
                let model = students[chosen[j]].trainer.model, acts = students[chosen[j]].trainer.activations
                try model.forward(tokens: tokens, acts)
                let kl =
                    withKL
                    ? distillationLoss(
                        acts.logits.baseAddress!, teacherLogProbs: teacherLogProbs.pointer, targets: targets,
                        N: B * T, V: V, loss: klOnly, gradient: false, scratch: scratch
                    ).kl : 0
                _ = try model.loss(acts, targets: targets, gradient: false)
                return kl
            }.map { try $0.get() }
            for (j, i) in chosen.enumerated() {
                if withKL { sums[i, default: 0] += kls[j] * Double(counted) }
                tallies[i]!.add(
                    lang, rowLosses: UnsafeBufferPointer(students[i].trainer.activations.rowLosses), targets: targets,
                    sequence: T)
            }
        }
        var result: [Int: (EvaluationResult, kl: Double)] = [:]
        for i in chosen { result[i] = (try tallies[i]!.result(step: step), (sums[i] ?? 0) / Double(max(counts, 1))) }
        return result
    }
}
