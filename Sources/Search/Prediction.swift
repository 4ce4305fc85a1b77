import Foundation
import Model
import Proxy

/// The long run predicted from the proxy's curves (``LearningCurve``), for `results top`, the
/// report and `distill.json`.
extension StudyStore {
    /// A candidate's predicted score at the full-distillation length.
    public struct LongRun: Sendable {
        public var prediction: LearningCurve.Prediction
        /// Curve points the fit used (its trials' validation points after the warmup).
        public var points: Int
    }

    /// A check of the learning curve against what happened: the score a candidate's next rung
    /// reached, and the one predicted for it from the points up to the rung before.
    public struct NextRungCheck: Sendable {
        public var hash: String
        /// The rung the prediction was made at, and the steps of the next one.
        public var rung: Int, fromSteps: Int, steps: Int
        public var predicted: LearningCurve.Prediction
        public var observed: Double
    }

    public struct Predictions: Sendable {
        /// The full-distillation length predicted at (`export.full_distillation_steps`).
        public var steps: Int
        /// candidate hash → its predicted score there (candidates with two points or more).
        public var longRun: [String: LongRun]
        public var nextRung: [NextRungCheck]
        /// Kendall τ between the proxy ranking and the predicted one, over the candidates of the
        /// leader's rung that have a prediction (nil with fewer than two).
        public var tau: Double?
        /// How many next-rung scores fell inside their predicted 95% interval, of those with one.
        public var covered: Int { nextRung.filter { $0.predicted.interval?.contains($0.observed) ?? false }.count }
        public var withInterval: Int { nextRung.filter { $0.predicted.interval != nil }.count }
    }

    /// Each candidate's learning curve from its trials (the search's own runs, not replicates):
    /// the objective's value at every step it was evaluated, after the warmup. `metrics`: the
    /// trials' metrics where the caller has them already (else read from the store).
    func curves(
        study: StudyRow, trials: [TrialRow],
        metrics known: [Int64: [(step: Int, name: String, value: Double)]]? = nil
    ) throws -> [String: [LearningCurve.Point]] {
        let warmup = study.spec["proxy"]?["warmup"]?.int ?? DistillationRecipe(steps: 1).warmup
        let objective = study.spec["objective"]?["languages"]?.string.flatMap(Objective.init) ?? .mean
        var out: [String: [Int: Double]] = [:]
        for t in trials where t.replicate == 0 && t.state.isScored {
            for m in try known?[t.id] ?? metrics(trial: t.id) where m.name == objective.metricName && m.step > warmup {
                out[t.hash, default: [:]][m.step] = m.value
            }
        }
        return out.mapValues {
            $0.sorted { $0.key < $1.key }.map { LearningCurve.Point(step: Double($0.key), loss: $0.value) }
        }
    }

    /// The study's predictions: every candidate's score at the full-distillation length, and, for
    /// every candidate promoted to a next rung, that rung's score predicted from the points up to
    /// the rung before (all candidates' points up to those steps fix the shared exponent).
    /// `ranked`, `trials`, `metrics`: what the caller has read already (the report has all three).
    public func predictions(
        study s: StudyRow, ranked: [Ranked]? = nil, trials known: [TrialRow]? = nil,
        metrics: [Int64: [(step: Int, name: String, value: Double)]]? = nil
    ) throws -> Predictions {
        let trials = try known ?? self.trials(study: s.id)
        let curves = try self.curves(study: s, trials: trials, metrics: metrics)
        let proxySteps = s.spec["proxy"]?["steps"]?.int ?? 100
        let horizon = s.spec["export"]?["full_distillation_steps"]?.int ?? proxySteps * 100
        let hashes = curves.keys.sorted()
        let index = Dictionary(uniqueKeysWithValues: hashes.enumerated().map { ($1, $0) })
        let seed = UInt64(truncatingIfNeeded: s.id)
        let long = LearningCurve.predict(hashes.map { curves[$0]! }, at: Double(horizon), seed: seed)
        var longRun: [String: LongRun] = [:]
        for (h, p) in zip(hashes, long) { if let p { longRun[h] = LongRun(prediction: p, points: curves[h]!.count) } }

        var checks: [NextRungCheck] = []
        let own = trials.filter { $0.replicate == 0 && $0.state.isScored }
        for rung in Set(own.map(\.rung)).sorted() {
            let next = own.filter { $0.rung == rung + 1 && $0.score != nil }
            guard let from = own.first(where: { $0.rung == rung })?.fidelity, let steps = next.first?.fidelity,
                steps > from
            else { continue } // evolution's generations are new candidates at the same length
            let upTo = hashes.map { h in curves[h]!.filter { $0.step <= Double(from) } }
            let predicted = LearningCurve.predict(upTo, at: Double(steps), seed: seed &+ UInt64(rung + 1))
            for t in next.sorted(by: { $0.score! < $1.score! }) {
                guard let i = index[t.hash], let p = predicted[i] else { continue }
                checks.append(
                    NextRungCheck(
                        hash: t.hash, rung: rung, fromSteps: from, steps: steps, predicted: p, observed: t.score!))
            }
        }
        let ranking = try ranked ?? top(study: s.id)
        let leaders = ranking.filter { $0.trial.rung == ranking.first?.trial.rung && $0.value.isFinite }.compactMap {
            r in
            longRun[r.trial.hash].map { (r.value, $0.prediction.value) }
        }
        let tau = leaders.count >= 2 ? RankStatistics.kendallTau(leaders.map(\.0), leaders.map(\.1)) : nil
        return Predictions(steps: horizon, longRun: longRun, nextRung: checks, tau: tau)
    }
}
