import Foundation
import Model

/// How the ranking of candidates by validation loss changes with the length of the proxy's
/// distillation (Minitron Fig. 9, at our scale): every candidate is pruned from the teacher,
/// scored after pruning alone, then all are distilled together on the same batches and scored
/// after each of `checkpoints` steps.
///
/// One run of the longest length with a constant learning rate (after warmup) gives every
/// checkpoint, so the scores at N steps are those of a run still under way, as in Minitron's figure.
public enum RankingStudy {
    public struct Result: Sendable {
        public var candidates: [String]
        public var parameters: [Int]
        /// Steps of each column; 0 is "pruned only".
        public var checkpoints: [Int]
        /// losses[candidate][column]: validation loss (mean over languages).
        public var losses: [[Double]]
        /// Kendall τ of each column's ranking against the last column's.
        public var tau: [Double?]
        /// Each candidate's 95% interval at the last column (bootstrap over validation windows).
        public var intervals: [Noise.Interval?] = []
        /// Each candidate's evaluation at the last checkpoint, windows included (nil if it diverged).
        public var finalEvaluations: [EvaluationResult?] = []
        /// The pairs the last column separates by more than the noise: intervals that do not
        /// overlap, or scores further apart than a given noise.
        public var separatedPairs = 0
        /// Kendall τ against the last column over the separated pairs only.
        public var tauSeparated: [Double?] = []
        /// What "separated" meant (for the report).
        public var noiseDescription = ""
        /// The validation curve points each candidate recorded (step, loss), in order: every
        /// checkpoint and the extra points `curveEvery` asked for before the last one.
        public var curves: [[LearningCurve.Point]] = []
        /// predicted[candidate][column]: the last column's score predicted by the learning curve
        /// fitted to the points up to that column's steps (nil for pruning alone, the last column,
        /// and where too few points exist).
        public var predicted: [[LearningCurve.Prediction?]] = []
        /// Kendall τ of each column's predictions against the last column (all pairs, and the
        /// noise-separated pairs).
        public var tauPredicted: [Double?] = []
        public var tauPredictedSeparated: [Double?] = []

        /// The shortest proxy length (a checkpoint before the last, the reference) at which τ over
        /// the noise-separated pairs reaches `threshold`; 0 means pruning alone; nil when none does.
        public func recommendedSteps(threshold: Double = 0.9) -> Int? {
            Self.shortest(checkpoints: checkpoints, tau: tauSeparated, threshold: threshold)
        }

        public static func shortest(checkpoints: [Int], tau: [Double?], threshold: Double) -> Int? {
            zip(checkpoints, tau).dropLast().first { ($0.1 ?? -.infinity) >= threshold }?.0
        }

        /// For each checkpoint with predictions: how close they came to the last column, and how
        /// often its score fell inside their 95% interval.
        public var predictionLines: [String] {
            guard let last = checkpoints.last else { return [] }
            return checkpoints.indices.compactMap { c in
                let made = predicted.compactMap { $0.indices.contains(c) ? $0[c] : nil }
                guard made.count == candidates.count else { return nil }
                let errors = zip(made, losses).map { abs($0.value - $1.last!) }
                let inside = zip(made, losses).filter { $0.interval?.contains($1.last!) ?? false }.count
                let withInterval = made.filter { $0.interval != nil }.count
                let error = errors.reduce(0, +) / Double(errors.count)
                let gap = losses.map { $0[c] - $0.last! }.reduce(0, +) / Double(losses.count)
                return String(
                    format:
                        "Learning curve fitted at %d steps: mean absolute error %.4f nats against the %d-step scores "
                        + "(a %d-step score is %.4f above them); %d of %d inside the predicted 95%% interval.",
                    checkpoints[c], error, last, checkpoints[c], gap, inside, withInterval)
            }
        }

        /// The same for the learning-curve prediction made at each length.
        public func recommendedPredictedSteps(threshold: Double = 0.9) -> Int? {
            tauPredictedSeparated.isEmpty
                ? nil : Self.shortest(checkpoints: checkpoints, tau: tauPredictedSeparated, threshold: threshold)
        }

        /// The line `topiary ranking` prints about it.
        public var recommendation: String {
            guard !tauSeparated.isEmpty else { return "" }
            let predicted =
                recommendedPredictedSteps().map {
                    " With the learning-curve prediction: \($0) steps "
                        + "(the prediction made there orders the noise-separated pairs with τ ≥ 0.9)."
                } ?? ""
            return rawRecommendation + predicted
        }

        var rawRecommendation: String {
            guard let steps = recommendedSteps() else {
                return
                    "Recommended proxy length: none of the shorter lengths reaches τ ≥ 0.9 over the noise-separated pairs "
                    + "(the reference is \(checkpoints.last!) steps); use the longest you can afford."
            }
            return steps == 0
                ? "Recommended proxy length: pruning alone already orders the noise-separated pairs with τ ≥ 0.9."
                : "Recommended proxy length: \(steps) steps, the shortest at which τ over the noise-separated "
                    + "pairs reaches 0.9 (against \(checkpoints.last!) steps)."
        }

        public var markdown: String {
            var lines = [
                "| candidate | parameters | "
                    + checkpoints.map { $0 == 0 ? "pruned only" : "\($0) steps" }.joined(separator: " | ") + " |",
                "|---|---|" + String(repeating: "---|", count: checkpoints.count)
            ]
            let rankColumns = checkpoints.indices.map { c in RankStatistics.ranks(losses.map { $0[c] }) }
            for (i, name) in candidates.enumerated() {
                let cells = checkpoints.indices.map { c in String(format: "%.4f (#%d)", losses[i][c], rankColumns[c][i])
                }
                lines.append("| \(name) | \(parameters[i]) | " + cells.joined(separator: " | ") + " |")
            }
            /// A row of τ per column ("–" where there is none).
            func row(_ label: String, _ t: [Double?]) -> String {
                "| \(label) | | " + t.map { $0.map { String(format: "%.3f", $0) } ?? "–" }.joined(separator: " | ")
                    + " |"
            }
            lines.append(row("Kendall τ vs \(checkpoints.last!) steps", tau))
            if !tauSeparated.isEmpty {
                let pairs = candidates.count * (candidates.count - 1) / 2
                lines.append(
                    row("τ over the \(separatedPairs) of \(pairs) pairs separated by more than the noise", tauSeparated)
                )
                if !tauPredicted.isEmpty {
                    lines.append(
                        row(
                            "τ of the learning-curve prediction of the \(checkpoints.last!)-step score, all pairs",
                            tauPredicted))
                    lines.append(row("τ of the prediction, noise-separated pairs", tauPredictedSeparated))
                }
                lines.append("")
                lines.append("Noise: \(noiseDescription).")
                for line in predictionLines { lines.append(""); lines.append(line) }
                lines.append("")
                lines.append(recommendation)
            }
            return lines.joined(separator: "\n")
        }
    }

    /// `noise`: pairs whose final scores differ by more than this count as separated; nil: those
    /// whose final difference has a paired 95% bootstrap interval (over the validation windows both
    /// were scored on) that excludes 0.
    ///
    /// `curveEvery`: also evaluate every this many steps (after the warmup) up to the last
    /// checkpoint but one, the points the learning-curve prediction made at each checkpoint fits
    /// (0: the checkpoints only).
    public static func run(
        teacher: DecoderModel, corpus: TokenShards, candidates: [(String, ModelConfig)], scores: ImportanceScores,
        options: PruneOptions, recipe: DistillationRecipe, checkpoints: [Int], noise: Double? = nil,
        curveEvery: Int = 0
    ) throws -> Result {
        let sorted = checkpoints.sorted()
        guard let last = sorted.last, sorted.first! > 0 else {
            throw ProxyError.invalidOption(field: "checkpoints", reason: "need positive step counts")
        }
        var r = recipe
        r.steps = last
        r.evalEvery = last
        let students = try candidates.map {
            ($0.0, try Pruning.prune(teacher: teacher, to: $0.1, scores: scores, options: options))
        }
        var losses = [[Double]](repeating: [], count: students.count)
        for (i, s) in students.enumerated() {
            let e = try Evaluation.validationLoss(
                model: s.1, shards: corpus, batch: r.batch, sequence: r.sequence, maxTokensPerLanguage: r.evalTokens)
            losses[i].append(e.languageMean)
        }
        var finalEvaluations = [EvaluationResult?](repeating: nil, count: students.count)
        var evaluateAt = Set(sorted)
        if curveEvery > 0, sorted.count > 1 {
            for step in stride(from: curveEvery, through: sorted[sorted.count - 2], by: curveEvery)
            where step > r.warmup {
                evaluateAt.insert(step)
            }
        }
        var curves = [[LearningCurve.Point]](repeating: [], count: students.count)
        let (outcome, _) = try DistillationRun.run(
            teacher: teacher, students: students, corpus: corpus, recipe: r,
            evaluateAt: evaluateAt, progressLabel: "ranking",
            onPoint: { i, p in
                if sorted.contains(p.step) { losses[i].append(p.validation.languageMean) }
                curves[i].append(LearningCurve.Point(step: Double(p.step), loss: p.validation.languageMean))
                if p.step == last { finalEvaluations[i] = p.validation }
            })
        if let (i, e) = outcome.failures.first {
            throw ProxyError.diverged(student: candidates[i].0, step: 0, what: "\(e)")
        }
        let columns = [0] + sorted
        let final = losses.map { $0.last! }
        let tau = columns.indices.map { c in RankStatistics.kendallTau(losses.map { $0[c] }, final) }
        var result = Result(
            candidates: candidates.map(\.0), parameters: candidates.map { $0.1.parameterCount }, checkpoints: columns,
            losses: losses, tau: tau)
        result.intervals = finalEvaluations.map { e in
            e.flatMap { Noise.bootstrapInterval($0, score: { $0.languageMean }) }
        }
        result.finalEvaluations = finalEvaluations
        let separated: (Int, Int) -> Bool
        if let noise {
            separated = { i, j in abs(final[i] - final[j]) > noise }
            result.noiseDescription = String(
                format: "pairs whose %d-step scores differ by more than %.4f nats (given)", last, noise)
        } else {
            // Paired: every candidate is scored on the same windows, so what they share cancels.
            var apart = Set<[Int]>(), widths: [Double] = []
            for i in 0..<final.count {
                for j in (i + 1)..<final.count {
                    guard let a = finalEvaluations[i], let b = finalEvaluations[j],
                        let d = Noise.pairedDifference(
                            [a], [b], seed: Noise.seed(candidates[i].0, candidates[j].0),
                            score: { $0.languageMean })
                    else { continue }
                    widths.append(d.halfWidth)
                    if !d.contains(0) { apart.insert([i, j]) }
                }
            }
            separated = { i, j in apart.contains([min(i, j), max(i, j)]) }
            result.noiseDescription = String(
                format: "pairs whose %d-step difference has a 95%% paired bootstrap interval "
                    + "(over the validation windows both were scored on) that excludes 0; half-widths %.4f–%.4f nats",
                last, widths.min() ?? 0, widths.max() ?? 0)
        }
        for i in 0..<final.count { for j in (i + 1)..<final.count where separated(i, j) { result.separatedPairs += 1 } }
        result.tauSeparated = columns.indices.map { c in
            RankStatistics.kendallTau(losses.map { $0[c] }, final, include: separated)
        }
        // The long run predicted from the start: each checkpoint before the last fits the points
        // up to it (after the warmup) and predicts the last checkpoint's score.
        result.curves = curves
        var byColumn: [[LearningCurve.Prediction?]] = []
        for (c, steps) in columns.enumerated() {
            guard c > 0, c < columns.count - 1 else { byColumn.append(curves.map { _ in nil }); continue }
            let upTo = curves.map { $0.filter { $0.step <= Double(steps) && $0.step > Double(r.warmup) } }
            byColumn.append(LearningCurve.predict(upTo, at: Double(last), seed: UInt64(steps)))
        }
        result.predicted = candidates.indices.map { i in byColumn.map { $0[i] } }
        // A column's τ needs a prediction of every candidate.
        let predictedValues = byColumn.map { col -> [Double]? in
            let values = col.compactMap { $0?.value }
            return values.count == final.count ? values : nil
        }
        result.tauPredicted = predictedValues.map { $0.flatMap { RankStatistics.kendallTau($0, final) } }
        result.tauPredictedSeparated = predictedValues.map {
            $0.flatMap { RankStatistics.kendallTau($0, final, include: separated) }
        }
        return result
    }

}
