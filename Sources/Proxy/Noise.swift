import Foundation
import Model

/// Intervals around a proxy score: from replicates (the same candidate rerun with other
/// data-order seeds) or, without them, by resampling the validation windows the score was
/// computed on.
public enum Noise {
    /// A score's interval and how it was obtained.
    public struct Interval: Sendable, Equatable {
        public var low: Double
        public var high: Double
        /// "t" (Student-t over replicate scores) or "bootstrap" (validation windows resampled).
        public var method: String
        /// Scores behind it: replicates for "t", 1 for "bootstrap".
        public var samples: Int
        public var halfWidth: Double { (high - low) / 2 }
        public init(low: Double, high: Double, method: String, samples: Int) {
            self.low = low; self.high = high; self.method = method; self.samples = samples
        }
        public func overlaps(_ other: Interval) -> Bool { low <= other.high && other.low <= high }
        public func contains(_ x: Double) -> Bool { low <= x && x <= high }
    }

    /// Two-sided 95% quantiles of Student's t, t₀.₉₇₅ for 1…30 degrees of freedom.
    static let t975: [Double] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042
    ]

    /// t₀.₉₇₅ with `df` degrees of freedom (the normal 1.960 beyond 120; 2.021, 2.000, 1.980 at
    /// 40, 60 and 120, as the usual tables, taken for the ranges above 30).
    public static func tQuantile975(df: Int) -> Double {
        precondition(df >= 1)
        if df <= 30 { return t975[df - 1] }
        if df <= 40 { return 2.021 }
        if df <= 60 { return 2.000 }
        if df <= 120 { return 1.980 }
        return 1.960
    }

    /// The 95% t interval of the mean of `scores` (at least two): mean ± t₀.₉₇₅,n−1 · s/√n.
    public static func tInterval(_ scores: [Double]) -> (mean: Double, interval: Interval)? {
        let n = scores.count
        guard n >= 2 else { return nil }
        let mean = scores.reduce(0, +) / Double(n)
        let variance = scores.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n - 1)
        let half = tQuantile975(df: n - 1) * (variance / Double(n)).squareRoot()
        return (mean, Interval(low: mean - half, high: mean + half, method: "t", samples: n))
    }

    /// The 95% percentile bootstrap interval of `score(evaluation)`: the validation windows of each
    /// language are resampled with replacement (so every language keeps its number of windows),
    /// the score recomputed `resamples` times, and the 2.5th and 97.5th percentiles kept.
    /// Deterministic for a seed. Nil when the evaluation kept no windows.
    public static func bootstrapInterval(
        _ evaluation: EvaluationResult, resamples: Int = 1000, seed: UInt64 = 0,
        score: (EvaluationResult) -> Double
    ) -> Interval? {
        let languages = evaluation.windows.keys.sorted().filter { !(evaluation.windows[$0]?.isEmpty ?? true) }
        guard !languages.isEmpty, resamples >= 2 else { return nil }
        var rng = SeededGenerator(seed: seed)
        var values: [Double] = []
        values.reserveCapacity(resamples)
        for _ in 0..<resamples {
            var drawn: [String: [WindowLoss]] = [:]
            for lang in languages {
                let ws = evaluation.windows[lang]!
                drawn[lang] = (0..<ws.count).map { _ in ws[Int(rng.next() % UInt64(ws.count))] }
            }
            values.append(score(EvaluationResult(windows: drawn)))
        }
        values.sort()
        return Interval(
            low: percentile(values, 0.025), high: percentile(values, 0.975), method: "bootstrap", samples: 1)
    }

    /// The 95% paired bootstrap interval of `score(a) − score(b)` for two candidates evaluated on
    /// the same validation windows: each resample draws one set of window indices per language
    /// (stratified: every language keeps its number of windows) and scores both candidates on
    /// it, so that what the windows share — one text being harder than another — cancels in the
    /// difference. With replicates (`a` and `b` list one evaluation per data-order seed, their own
    /// run first) the seeds are resampled too, a level above the windows (paired when both have
    /// as many seeds: seed r is the same data order for both); a side's value is the mean of its
    /// drawn seeds' scores. Deterministic for a seed. Nil when the two were not evaluated on the
    /// same windows (another corpus, other `eval_tokens`) or kept none.
    ///
    /// The objective's score depends on the per-language totals only (overall, mean and worst
    /// language all do), so a resample is scored from summed windows.
    public static func pairedDifference(
        _ a: [EvaluationResult], _ b: [EvaluationResult], resamples: Int = 1000, seed: UInt64 = 0,
        score: (EvaluationResult) -> Double
    ) -> Interval? {
        guard let first = a.first, !b.isEmpty, resamples >= 2 else { return nil }
        let languages = first.windows.keys.sorted().filter { !(first.windows[$0]?.isEmpty ?? true) }
        guard !languages.isEmpty else { return nil }
        // The same windows: per language the same count and the same scored tokens in each.
        for e in a + b {
            guard e.windows.keys.sorted().filter({ !(e.windows[$0]?.isEmpty ?? true) }) == languages else { return nil }
            for lang in languages where e.windows[lang]!.map(\.tokens) != first.windows[lang]!.map(\.tokens) {
                return nil
            }
        }
        let counts = languages.map { first.windows[$0]!.count }
        let tokens = languages.map { lang in first.windows[lang]!.map(\.tokens) }
        func sums(_ e: EvaluationResult) -> [[Double]] { languages.map { e.windows[$0]!.map(\.sum) } }
        let sa = a.map(sums), sb = b.map(sums)
        let pairedSeeds = a.count == b.count
        var rng = SeededGenerator(seed: seed)
        var values: [Double] = []
        values.reserveCapacity(resamples)
        var drawn = [[Int]](repeating: [], count: languages.count)
        func scoreOf(_ windowSums: [[Double]]) -> Double {
            var totals: [String: [WindowLoss]] = [:]
            for (l, lang) in languages.enumerated() {
                var s = 0.0, n = 0
                for i in drawn[l] { s += windowSums[l][i]; n += tokens[l][i] }
                totals[lang] = [WindowLoss(sum: s, tokens: n)]
            }
            return score(EvaluationResult(windows: totals))
        }
        for _ in 0..<resamples {
            let seedsA = (0..<a.count).map { _ in Int(rng.next() % UInt64(a.count)) }
            let seedsB = pairedSeeds ? seedsA : (0..<b.count).map { _ in Int(rng.next() % UInt64(b.count)) }
            for l in languages.indices { drawn[l] = (0..<counts[l]).map { _ in Int(rng.next() % UInt64(counts[l])) } }
            let va = seedsA.reduce(0.0) { $0 + scoreOf(sa[$1]) } / Double(seedsA.count)
            let vb = seedsB.reduce(0.0) { $0 + scoreOf(sb[$1]) } / Double(seedsB.count)
            values.append(va - vb)
        }
        values.sort()
        let method = a.count > 1 || b.count > 1 ? "paired bootstrap (seeds × windows)" : "paired bootstrap (windows)"
        return Interval(
            low: percentile(values, 0.025), high: percentile(values, 0.975), method: method,
            samples: max(a.count, b.count))
    }

    /// A resampling seed from names (candidate hashes, a rung): the same in every store, unlike
    /// row ids, so that a decision taken on an interval does not depend on where the study ran.
    public static func seed(_ parts: String...) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 // FNV-1a
        for byte in parts.joined(separator: "\u{0}").utf8 { h = (h ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return h
    }

    /// The `p` quantile of sorted `values`, linearly interpolated.
    static func percentile(_ values: [Double], _ p: Double) -> Double {
        let x = p * Double(values.count - 1), i = Int(x), f = x - Double(i)
        return i + 1 < values.count ? values[i] * (1 - f) + values[i + 1] * f : values[i]
    }
}
