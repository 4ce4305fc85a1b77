import Foundation
import GRDB
import Model

/// Read-side queries for `topiary results` and `topiary export`.
extension StudyStore {
    public struct Ranked: Sendable {
        public var rank: Int
        public var trial: TrialRow
        public var metrics: [String: Double]
        /// Tied with the previous entry: its score is within `noise` of it.
        public var tiedWithPrevious: Bool
    }

    /// The best trial of each candidate (the highest completed rung), ranked by `metric`
    /// (default: the study's objective score). Entries within `noise` of the one above are ties.
    public func top(study: Int64, metric: String? = nil, limit: Int? = nil, noise: Double = 0) throws -> [Ranked] {
        let trials = try self.trials(study: study).filter { $0.state == "complete" || $0.state == "pruned" }
        var best: [Int64: TrialRow] = [:]
        for t in trials where best[t.candidateID].map({ t.rung > $0.rung }) ?? true { best[t.candidateID] = t }
        var rows: [(TrialRow, [String: Double], Double)] = []
        for t in best.values {
            let m = Dictionary(try metrics(trial: t.id).map { ($0.name, $0.value) }, uniquingKeysWith: { _, b in b })
            let value = metric.map { m[$0] ?? .infinity } ?? (t.score ?? .infinity)
            rows.append((t, m, value))
        }
        // Higher rungs first (they survived longer), then by value.
        rows.sort { ($0.0.rung, -$0.2, $1.0.id) > ($1.0.rung, -$1.2, $0.0.id) }
        var ranked: [Ranked] = []
        for (i, r) in rows.enumerated() {
            let tied = i > 0 && rows[i - 1].0.rung == r.0.rung && abs(rows[i - 1].2 - r.2) <= noise
            ranked.append(Ranked(rank: tied ? ranked[i - 1].rank : i + 1, trial: r.0, metrics: r.1, tiedWithPrevious: tied))
        }
        return limit.map { Array(ranked.prefix($0)) } ?? ranked
    }

    /// Candidates not dominated in (parameters, score): the Pareto front, smallest first.
    public func pareto(study: Int64) throws -> [Ranked] {
        let all = try top(study: study)
        let maxRung = all.map(\.trial.rung).max() ?? 0
        let comparable = all.filter { $0.trial.rung == maxRung || all.filter { $0.trial.rung == maxRung }.count < 2 }
        return comparable.filter { a in
            !comparable.contains { b in
                b.trial.parameters <= a.trial.parameters && (b.trial.score ?? .infinity) <= (a.trial.score ?? .infinity)
                    && (b.trial.parameters < a.trial.parameters || (b.trial.score ?? .infinity) < (a.trial.score ?? .infinity))
            }
        }.sorted { $0.trial.parameters < $1.trial.parameters }
    }

    public struct StudySummary: Sendable {
        public var study: StudyRow
        public var candidates: Int, complete: Int, running: Int, waiting: Int, failed: Int, pruned: Int
        public var best: Double?
        public var stepsRun: Int
    }

    public func summary(_ s: StudyRow) throws -> StudySummary {
        let t = try trials(study: s.id)
        let cands = try read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM candidate WHERE studyId = ?", arguments: [s.id]) ?? 0 }
        func n(_ state: String) -> Int { t.filter { $0.state == state }.count }
        let steps = t.filter { $0.state == "complete" || $0.state == "pruned" }.reduce(0) { sum, trial in
            let parentFidelity = trial.parentTrialID.flatMap { p in t.first { $0.id == p }?.fidelity } ?? 0
            return sum + trial.fidelity - parentFidelity
        }
        return StudySummary(study: s, candidates: cands, complete: n("complete"), running: n("running"), waiting: n("waiting"),
                            failed: n("failed"), pruned: n("pruned"), best: try top(study: s.id, limit: 1).first?.trial.score, stepsRun: steps)
    }
}
