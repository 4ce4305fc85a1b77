import Foundation

/// Learning-rate schedules. Steps count from 1; `total` is the run's length.
public enum LearningRateSchedule: Sendable, Equatable, Codable {
    /// The peak rate throughout (after a linear warmup).
    case constant(warmup: Int)
    /// Linear warmup to the peak, then cosine decay to `minRatio × peak` at `total`.
    case cosine(warmup: Int, minRatio: Double)
    /// Warmup–stable–decay: linear warmup, the peak until the last `decayFraction` of the run,
    /// then a linear decay to `minRatio × peak`.
    case warmupStableDecay(warmup: Int, decayFraction: Double, minRatio: Double)

    /// The rate at `step` (1-based) of a `total`-step run with peak `peak`.
    public func rate(step: Int, total: Int, peak: Double) -> Double {
        let warmup: Int
        switch self {
        case let .constant(w), let .cosine(w, _), let .warmupStableDecay(w, _, _): warmup = w
        }
        if warmup > 0 && step <= warmup { return peak * Double(step) / Double(warmup) }
        switch self {
        case .constant:
            return peak
        case let .cosine(_, minRatio):
            let span = max(1, total - warmup)
            let progress = min(1, Double(step - warmup) / Double(span))
            return peak * (minRatio + (1 - minRatio) * 0.5 * (1 + cos(Double.pi * progress)))
        case let .warmupStableDecay(_, fraction, minRatio):
            let decaySteps = max(1, Int((Double(total) * fraction).rounded()))
            let decayStart = total - decaySteps
            if step <= decayStart { return peak }
            let progress = min(1, Double(step - decayStart) / Double(decaySteps))
            return peak * (1 - (1 - minRatio) * progress)
        }
    }

    /// Parses `cosine`, `wsd` or `constant` with the given warmup and minimum ratio.
    /// The part of a `wsd` run spent decaying, unless told.
    public static let defaultDecayFraction = 0.2

    public static func named(
        _ name: String, warmup: Int, minRatio: Double = 0.1, decayFraction: Double = defaultDecayFraction
    ) -> LearningRateSchedule? {
        switch name {
        case "cosine": return .cosine(warmup: warmup, minRatio: minRatio)
        case "wsd": return .warmupStableDecay(warmup: warmup, decayFraction: decayFraction, minRatio: minRatio)
        case "constant": return .constant(warmup: warmup)
        default: return nil
        }
    }
}
