import Foundation
import Model
@testable import Proxy
import Testing

@Suite struct LearningCurveTests {
    /// Curves drawn from L(t) = a + b·t^(−c) with one shared c and a little noise.
    static func curves(_ truth: [(a: Double, b: Double)], c: Double, steps: [Double], noise: Double, seed: UInt64) -> [[LearningCurve.Point]] {
        var rng = SeededGenerator(seed: seed)
        return truth.map { ab in steps.map { t in LearningCurve.Point(step: t, loss: ab.a + ab.b * pow(t, -c) + noise * rng.normal()) } }
    }

    /// Without noise the fit finds the exponent and each curve's a and b, and predicts far ahead.
    @Test func exactCurvesAreRecovered() throws {
        let truth = [(a: 1.70, b: 3.0), (a: 1.75, b: 2.0), (a: 1.66, b: 5.0)]
        let curves = Self.curves(truth, c: 0.5, steps: [20, 40, 60, 120, 180], noise: 0, seed: 1)
        let fits = try #require(LearningCurve.fit(curves))
        for (f, t) in zip(fits, truth) {
            let f = try #require(f)
            #expect(abs(f.c - 0.5) < 1e-4)
            #expect(abs(f.loss(at: 18_000) - (t.a + t.b * pow(18_000, -0.5))) < 1e-4)
        }
    }

    /// A candidate with two points is predicted with the exponent the others fix; one with one
    /// point is not predicted; with no curve of three points nothing is.
    @Test func twoPointCurvesBorrowTheSharedExponent() throws {
        var curves = Self.curves([(1.70, 3.0), (1.75, 2.0)], c: 0.7, steps: [20, 40, 60, 120, 180], noise: 0, seed: 1)
        curves.append([20, 60].map { LearningCurve.Point(step: $0, loss: 1.60 + 4.0 * pow($0, -0.7)) })
        curves.append([LearningCurve.Point(step: 20, loss: 2.0)])
        let p = LearningCurve.predict(curves, at: 2000)
        let two = try #require(p[2])
        #expect(abs(two.value - (1.60 + 4.0 * pow(2000, -0.7))) < 1e-4)
        #expect(p[3] == nil)
        #expect(LearningCurve.fit([[LearningCurve.Point(step: 20, loss: 2), LearningCurve.Point(step: 60, loss: 1.9)]]) == nil)
    }

    /// The interval covers the true long-run loss about as often as it says: over 40 noisy
    /// studies, the 95% interval holds the truth in at least 85% of the cases, and it is not vacuous
    /// (a median half-width under 0.08 nats, where the candidates' long-run losses differ by 0.01–0.1).
    @Test func intervalsCoverTheTruth() throws {
        let truth = [(a: 1.70, b: 3.0), (a: 1.75, b: 2.0), (a: 1.66, b: 5.0), (a: 1.72, b: 2.5)]
        var covered = 0, total = 0
        var widths: [Double] = []
        for seed in 0..<40 {
            let curves = Self.curves(truth, c: 0.5, steps: [10, 20, 30, 40, 60, 90, 120, 180], noise: 0.004, seed: UInt64(seed))
            let predictions = LearningCurve.predict(curves, at: 1800, resamples: 200, seed: UInt64(seed))
            for (p, t) in zip(predictions, truth) {
                let interval = try #require(p?.interval)
                total += 1
                if interval.contains(t.a + t.b * pow(1800, -0.5)) { covered += 1 }
                widths.append(interval.halfWidth)
            }
        }
        #expect(Double(covered) / Double(total) >= 0.85, "covered \(covered) of \(total)")
        #expect(widths.sorted()[widths.count / 2] < 0.08)
    }

    /// A curve that does not fall is held flat (b = 0) rather than fitted rising.
    @Test func aRisingCurveIsHeldFlat() throws {
        let rising = [20.0, 40, 60, 120].map { LearningCurve.Point(step: $0, loss: 2.0 + $0 * 1e-4) }
        let falling = Self.curves([(1.7, 3.0)], c: 0.5, steps: [20, 40, 60, 120], noise: 0, seed: 0)[0]
        let fits = try #require(LearningCurve.fit([rising, falling]))
        let f = try #require(fits[0])
        #expect(f.b == 0)
        #expect(abs(f.loss(at: 10_000) - rising.map(\.loss).reduce(0, +) / 4) < 0.01)
    }
}
