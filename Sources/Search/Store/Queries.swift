import Foundation
import Model
import Proxy

/// Read-side queries for `topiary results` and `topiary export`.
extension StudyStore {
    public struct Ranked: Sendable {
        public var rank: Int
        public var trial: TrialRow
        public var metrics: [String: Double]
        /// Tied with the previous entry: its score is within `noise` of it.
        public var tiedWithPrevious: Bool
        /// The candidate's scores at its highest rung: its own run first, then its replicates
        /// (other data-order seeds) that completed.
        public var replicateScores: [Double] = []
        /// The value it is ranked by: the mean over replicates when it has them, else its score
        /// (or the requested metric).
        public var value: Double = .infinity
        /// 95% interval of `value`: Student-t over the replicates, or a bootstrap over the
        /// validation windows of its run; nil for trials scored before intervals were recorded.
        public var interval: Noise.Interval?
        /// Tied with the leader (same rung, not the leader itself): the paired 95% interval of its
        /// difference to the leader contains 0 — or, where the store kept no per-window losses
        /// (trials of an older Topiary), its own interval overlaps the leader's.
        public var tiedWithBest = false
        /// `value` − the leader's (same rung; nil for the leader and other rungs).
        public var difference: Double?
        /// The difference's 95% interval: a paired bootstrap over the validation windows both were
        /// scored on (seeds × windows with replicates); nil where it could not be paired.
        public var differenceInterval: Noise.Interval?
        /// How `tiedWithBest` was decided: "paired" or "overlap" (the fallback).
        public var tieMethod: String?

        /// `+0.0183 [+0.0137, +0.0228]`: the difference to the leader and its paired interval, as
        /// `results top` and the report show it ("" for the leader).
        public var differenceText: String {
            guard let difference else { return "" }
            return String(format: "%+.4f", difference)
                + (differenceInterval.map { String(format: " [%+.4f, %+.4f]", $0.low, $0.high) } ?? "")
        }
    }

    /// The best trial of each candidate (the highest completed rung), ranked by `metric`
    /// (default: the study's objective score; with replicates, their mean). Entries within `noise`
    /// of the one above are ties; entries whose 95% interval overlaps the leader's are tied with it.
    public func top(study: Int64, metric: String? = nil, limit: Int? = nil, noise: Double = 0) throws -> [Ranked] {
        let all = try self.trials(study: study).filter { $0.state.isScored }
        let trials = all.filter { $0.replicate == 0 }
        var best: [Int64: TrialRow] = [:]
        for t in trials where best[t.candidateID].map({ t.rung > $0.rung }) ?? true { best[t.candidateID] = t }
        var rows: [Ranked] = []
        // Each candidate's runs at its rung, its own first, then its replicates: what paired
        // comparisons with the leader resample.
        var runs: [Int64: [Int64]] = [:]
        for t in best.values {
            let m = Dictionary(try metrics(trial: t.id).map { ($0.name, $0.value) }, uniquingKeysWith: { _, b in b })
            let replicas = all.filter {
                $0.candidateID == t.candidateID && $0.rung == t.rung && $0.replicate > 0 && $0.state == .complete
            }
            .sorted { $0.replicate < $1.replicate }
            runs[t.id] = [t.id] + replicas.map(\.id)
            var r = Ranked(rank: 0, trial: t, metrics: m, tiedWithPrevious: false)
            r.replicateScores = t.score.map { [$0] + replicas.compactMap(\.score) } ?? []
            if metric == nil, let (mean, interval) = Noise.tInterval(r.replicateScores) {
                r.value = mean
                r.interval = interval
            } else {
                r.value = metric.map { m[$0] ?? .infinity } ?? (t.score ?? .infinity)
                if metric == nil, let lo = m[Metric.scoreLow.rawValue], let hi = m[Metric.scoreHigh.rawValue] {
                    r.interval = Noise.Interval(low: lo, high: hi, method: "bootstrap", samples: 1)
                }
            }
            rows.append(r)
        }
        // Higher rungs first (they survived longer), then by value.
        rows.sort { ($0.trial.rung, -$0.value, $1.trial.id) > ($1.trial.rung, -$1.value, $0.trial.id) }
        // Paired comparisons with the leader need each run's windows (none when ranked by another metric).
        let spec: String? = try read { db in try db.scalar("SELECT spec FROM study WHERE id = ?", [study]) }
        let objective =
            spec.flatMap { JSON.parse(Data($0.utf8))?["objective"]?["languages"]?.string }.flatMap(Objective.init)
            ?? .mean
        let leaderRung = rows.first?.trial.rung
        let compared = metric == nil ? rows.prefix(limit ?? Int.max).filter { $0.trial.rung == leaderRung } : []
        let windows = try self.windows(trials: compared.flatMap { runs[$0.trial.id] ?? [] })
        func evaluations(_ r: Ranked) -> [EvaluationResult]? {
            let e = (runs[r.trial.id] ?? []).compactMap { windows[$0] }
            return e.isEmpty || e.count != runs[r.trial.id]?.count ? nil : e
        }
        let leaderRuns = rows.first.flatMap(evaluations)
        for i in rows.indices {
            let tied =
                i > 0 && rows[i - 1].trial.rung == rows[i].trial.rung && abs(rows[i - 1].value - rows[i].value) <= noise
            rows[i].tiedWithPrevious = tied
            rows[i].rank = tied ? rows[i - 1].rank : i + 1
            guard i > 0, rows[i].trial.rung == rows[0].trial.rung, metric == nil, i < (limit ?? Int.max) else {
                continue
            }
            rows[i].difference = rows[i].value - rows[0].value
            if let leaderRuns, let mine = evaluations(rows[i]),
                let d = Noise.pairedDifference(
                    mine, leaderRuns, seed: Noise.seed(rows[i].trial.hash, rows[0].trial.hash, "\(rows[i].trial.rung)"),
                    score: objective.value)
            {
                rows[i].differenceInterval = d
                rows[i].tiedWithBest = d.contains(0)
                rows[i].tieMethod = "paired"
            } else if let a = rows[i].interval, let b = rows[0].interval {
                rows[i].tiedWithBest = a.overlaps(b)
                rows[i].tieMethod = "overlap"
            }
        }
        return limit.map { Array(rows.prefix($0)) } ?? rows
    }

    /// Candidates not dominated in (parameters, value — the mean over replicates where there are
    /// some): the Pareto front, smallest first.
    public func pareto(study: Int64) throws -> [Ranked] { Self.pareto(try top(study: study)) }

    /// The Pareto front of a ranking already computed by ``top(study:metric:limit:noise:)``.
    public static func pareto(_ all: [Ranked]) -> [Ranked] { pareto(all) { Double($0.trial.parameters) } }

    /// The front of `all` against any cost (parameters, memory or FLOPs at a workload, …): the
    /// candidates no other beats on both that cost and the score.
    public static func pareto(_ all: [Ranked], cost: @escaping (Ranked) -> Double) -> [Ranked] {
        pareto(all, costs: [cost])
    }

    /// The front of `all` against several costs at once (each minimised; negate one where more
    /// is better): the candidates no other beats on every cost and the score. Sorted by the first.
    public static func pareto(_ all: [Ranked], costs: [(Ranked) -> Double]) -> [Ranked] {
        let maxRung = all.map(\.trial.rung).max() ?? 0
        let comparable = all.filter { $0.trial.rung == maxRung || all.filter { $0.trial.rung == maxRung }.count < 2 }
        // By the value each candidate is ranked and plotted by: the mean over replicates where it has them.
        let key = comparable.map { r in costs.map { $0(r) } + [r.value] }
        let front = comparable.indices.filter { a in
            !comparable.indices.contains { b in
                zip(key[b], key[a]).allSatisfy { $0 <= $1 } && zip(key[b], key[a]).contains { $0 < $1 }
            }
        }
        return front.sorted { key[$0][0] < key[$1][0] }.map { comparable[$0] }
    }

    /// Every candidate of a study with its exact counts.
    public struct CandidateRow: Sendable {
        public var hash: String, architecture: JSON
        public var parameters: Int, nonEmbeddingParameters: Int, activeParameters: Int, flopsPerToken: Int
    }

    public func candidates(study: Int64) throws -> [CandidateRow] {
        try read { db in
            try db.rows("SELECT * FROM candidate WHERE study_id = ? ORDER BY id", [study]).map { r in
                CandidateRow(
                    hash: r["hash"], architecture: JSON.parse(Data((r["architecture"] as String).utf8)) ?? .null,
                    parameters: r["parameters"], nonEmbeddingParameters: r["non_embedding_parameters"],
                    activeParameters: r["active_parameters"], flopsPerToken: r["flops_per_token"])
            }
        }
    }

    public struct StudySummary: Sendable {
        public var study: StudyRow
        public var candidates: Int, complete: Int, running: Int, waiting: Int, failed: Int, pruned: Int
        public var best: Double?
        public var stepsRun: Int
        /// The workers that ran its trials (host-pid[-slurm-JOB_TASK]), in order of first appearance.
        public var workers: [String] = []
        /// Candidates successive halving promoted on a tie at a cut (``SearchSpec/tieSlack``), and
        /// the distillation steps their next rungs took (included in `stepsRun`).
        public var tiePromotions = 0, tieSteps = 0
    }

    public func summary(_ s: StudyRow) throws -> StudySummary {
        let t = try trials(study: s.id)
        let cands: Int = try read { db in
            try db.scalar("SELECT COUNT(*) FROM candidate WHERE study_id = ?", [s.id]) ?? 0
        }
        func n(_ state: TrialState) -> Int { t.filter { $0.state == state }.count }
        let steps = t.filter { $0.state.isScored }.reduce(0) { sum, trial in
            let parentFidelity = trial.parentTrialID.flatMap { p in t.first { $0.id == p }?.fidelity } ?? 0
            return sum + trial.fidelity - parentFidelity
        }
        let tied: [Int64] = try read { db in
            try db.rows(
                """
                SELECT DISTINCT metric.trial_id FROM metric JOIN trial ON trial.id = metric.trial_id JOIN candidate ON\
                 candidate.id = trial.candidate_id
                WHERE candidate.study_id = ? AND metric.name = '\(Metric.promotedOnTie.rawValue)'
                """, [s.id]
            ).map { $0["trial_id"] }
        }
        let tieSteps = t.filter { $0.parentTrialID.map(tied.contains) ?? false }.filter { $0.state.isScored }
            .reduce(0) { sum, child in sum + child.fidelity - (t.first { $0.id == child.parentTrialID }?.fidelity ?? 0)
            }
        var summary = StudySummary(
            study: s, candidates: cands, complete: n(.complete), running: n(.running), waiting: n(.waiting),
            failed: n(.failed), pruned: n(.pruned),
            best: try top(study: s.id, limit: 1).first.flatMap { $0.value.isFinite ? $0.value : nil },
            stepsRun: steps,
            workers: t.compactMap(\.worker).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } })
        summary.tiePromotions = tied.count
        summary.tieSteps = tieSteps
        return summary
    }
}
