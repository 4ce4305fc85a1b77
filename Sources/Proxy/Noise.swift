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
    }

    /// Two-sided 95% quantiles of Student's t, t₀.₉₇₅ for 1…30 degrees of freedom.
    static let t975: [Double] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]

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
    public static func bootstrapInterval(_ evaluation: EvaluationResult, resamples: Int = 1000, seed: UInt64 = 0,
                                         score: (EvaluationResult) -> Double) -> Interval? {
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
        func percentile(_ p: Double) -> Double {
            let x = p * Double(values.count - 1), i = Int(x), f = x - Double(i)
            return i + 1 < values.count ? values[i] * (1 - f) + values[i + 1] * f : values[i]
        }
        return Interval(low: percentile(0.025), high: percentile(0.975), method: "bootstrap", samples: 1)
    }
}
