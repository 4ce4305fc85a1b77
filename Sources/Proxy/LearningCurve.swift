import Foundation
import Model

/// A prediction of the long run from the start of it: each candidate's validation curve
/// L(t) = a + b·t^(−c) (a: the loss it saturates at, b ≥ 0: how far above it, c: how fast it
/// gets there), fitted to the points its proxy run recorded and extrapolated to the length of a
/// full distillation.
///
/// Every candidate of a study is distilled from the same teacher, on the same data, with the same
/// recipe, so the candidates share one exponent c and each has its own a and b: a candidate with
/// two points is then predictable once others, with three or more, fix c. For a given c, a and b
/// are a weighted linear least-squares fit (weights t: the later points, nearer the saturation,
/// count more); c minimises the weighted squared error over the candidates with three points or
/// more (a log-spaced grid, then a golden-section refinement).
///
/// The interval is a residual bootstrap: the fit's residuals (pooled over the candidates with
/// more points than parameters, scaled for the parameters fitted) are resampled onto the fitted
/// curves, everything is refitted, c included, and the 2.5th and 97.5th percentiles of the
/// prediction are kept. It covers the scatter of the points about their curves and the
/// exponent's uncertainty, not a curve whose form changes later (a learning-rate decay the proxy
/// never reached): `topiary report` shows predicted against observed at the next rung so that
/// can be checked, and docs/report.md gives the validation.
public enum LearningCurve {
    public struct Point: Sendable, Equatable {
        public var step: Double
        public var loss: Double
        public init(step: Double, loss: Double) { self.step = step; self.loss = loss }
    }

    /// One candidate's fitted curve.
    public struct Fit: Sendable, Equatable {
        public var a: Double, b: Double, c: Double
        public func loss(at step: Double) -> Double { a + b * pow(step, -c) }
    }

    /// A prediction with its 95% interval (nil where the residuals leave no degrees of freedom).
    public struct Prediction: Sendable, Equatable {
        public var value: Double
        public var interval: Noise.Interval?
        /// `1.6012 [1.5931, 1.6090]`, as `results top` and the report show it.
        public var text: String {
            String(format: "%.4f", value) + (interval.map { String(format: " [%.4f, %.4f]", $0.low, $0.high) } ?? "")
        }
    }

    /// The exponents tried first: 40 values from 0.02 to 4, log-spaced; the best is then refined
    /// between its neighbours by golden-section search.
    static let exponents: [Double] = (0..<40).map { 0.02 * pow(200, Double($0) / 39) }

    /// The weighted least-squares a, b ≥ 0 of one curve for exponent c, and its weighted squared
    /// error. `logSteps`: the points' log(step).
    static func fit(_ points: [Point], logSteps: [Double], c: Double) -> (Fit, Double) {
        var sw = 0.0, sx = 0.0, sy = 0.0
        let xs = logSteps.map { exp(-c * $0) }
        for (p, x) in zip(points, xs) { sw += p.step; sx += p.step * x; sy += p.step * p.loss }
        let mx = sx / sw, my = sy / sw
        var sxx = 0.0, sxy = 0.0
        for (p, x) in zip(points, xs) { sxx += p.step * (x - mx) * (x - mx); sxy += p.step * (x - mx) * (p.loss - my) }
        // A curve that does not fall (b < 0) is held flat at its weighted mean.
        let b = sxx > 0 ? max(0, sxy / sxx) : 0
        let f = Fit(a: my - b * mx, b: b, c: c)
        var sse = 0.0
        for (p, x) in zip(points, xs) {
            let r = p.loss - (f.a + f.b * x)
            sse += p.step * r * r
        }
        return (f, sse)
    }

    /// Fits every curve with one shared exponent. Curves with fewer than two points get nil.
    /// Nil overall when no curve has three points (the exponent is then not determined).
    public static func fit(_ curves: [[Point]]) -> [Fit?]? {
        guard curves.contains(where: { $0.count >= 3 }) else { return nil }
        let logs = curves.map { $0.map { log($0.step) } }
        func total(_ c: Double) -> Double {
            var sum = 0.0
            for (points, l) in zip(curves, logs) where points.count >= 3 { sum += fit(points, logSteps: l, c: c).1 }
            return sum
        }
        let errors = exponents.map(total)
        let i = errors.indices.min { errors[$0] < errors[$1] }!
        var lo = exponents[max(0, i - 1)], hi = exponents[min(exponents.count - 1, i + 1)]
        let g = (5.0.squareRoot() - 1) / 2
        var x1 = hi - g * (hi - lo), x2 = lo + g * (hi - lo)
        var f1 = total(x1), f2 = total(x2)
        for _ in 0..<24 {
            if f1 < f2 {
                (hi, x2, f2) = (x2, x1, f1)
                x1 = hi - g * (hi - lo)
                f1 = total(x1)
            } else {
                (lo, x1, f1) = (x1, x2, f2)
                x2 = lo + g * (hi - lo)
                f2 = total(x2)
            }
        }
        var c = (lo + hi) / 2
        if errors[i] < total(c) { c = exponents[i] }
        return zip(curves, logs).map { points, l in points.count >= 2 ? fit(points, logSteps: l, c: c).0 : nil }
    }

    /// Each curve's predicted loss at `step`, with a 95% residual-bootstrap interval
    /// (`resamples` refits; deterministic for a seed). Points must have positive steps.
    public static func predict(_ curves: [[Point]], at step: Double, resamples: Int = 200, seed: UInt64 = 0)
        -> [Prediction?]
    {
        guard let fits = fit(curves) else { return curves.map { _ in nil } }
        let predictions = fits.map { $0.map { $0.loss(at: step) } }
        // Residuals of the curves with more points than their own two parameters; the shared
        // exponent takes one more degree of freedom.
        var residuals: [Double] = []
        var fittedCurves = 0
        for (points, f) in zip(curves, fits) where points.count >= 3 {
            guard let f else { continue }
            fittedCurves += 1
            for p in points { residuals.append(p.loss - f.loss(at: p.step)) }
        }
        let dof = residuals.count - 2 * fittedCurves - 1
        guard dof > 0, resamples >= 20 else {
            return predictions.map { $0.map { Prediction(value: $0, interval: nil) } }
        }
        let scale = (Double(residuals.count) / Double(dof)).squareRoot()
        residuals = residuals.map { $0 * scale }
        var rng = SeededGenerator(seed: seed)
        var draws = [[Double]](repeating: [], count: curves.count)
        for _ in 0..<resamples {
            let resampled = zip(curves, fits).map { points, f -> [Point] in
                guard let f else { return points }
                return points.map { p in
                    Point(
                        step: p.step,
                        loss: f.loss(at: p.step) + residuals[Int.random(in: 0..<residuals.count, using: &rng)])
                }
            }
            guard let refit = fit(resampled) else { continue }
            for (i, f) in refit.enumerated() { if let f { draws[i].append(f.loss(at: step)) } }
        }
        return predictions.enumerated().map { i, p in
            guard let p else { return nil }
            let d = draws[i].sorted()
            guard d.count >= 20 else { return Prediction(value: p, interval: nil) }
            func q(_ x: Double) -> Double { d[min(d.count - 1, max(0, Int((x * Double(d.count - 1)).rounded())))] }
            let interval = Noise.Interval(
                low: min(p, q(0.025)), high: max(p, q(0.975)), method: "curve", samples: d.count)
            return Prediction(value: p, interval: interval)
        }
    }
}
