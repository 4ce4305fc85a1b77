import Foundation
import Model
import Proxy
import Testing

@Suite struct StatisticsTests {
    @Test func kendallTau() {
        let a: [Double] = [1, 2, 3, 4, 5]
        #expect(RankStatistics.kendallTau(a, a) == 1)
        #expect(RankStatistics.kendallTau(a, a.reversed()) == -1)
        // One swapped adjacent pair of five: (C − D)/10 = (9 − 1)/10.
        #expect(abs(RankStatistics.kendallTau(a, [1, 2, 4, 3, 5])! - 0.8) < 1e-12)
        // Only pairs the reference separates by more than 1.5 count: (1,4),(1,5)… all concordant.
        #expect(RankStatistics.kendallTau([2, 1, 3, 4, 5], [1, 2, 3, 4, 5], minimumGap: 1.5) == 1)
        #expect(RankStatistics.ranks([0.3, 0.1, 0.3, 0.2]) == [3, 1, 3, 2])
    }

    /// Student-t intervals against the textbook: scores 1, 2, 3 have mean 2 and s = 1, so the
    /// 95% half-width is t₀.₉₇₅,₂ · 1/√3 = 4.303/1.732 = 2.4844.
    @Test func tIntervals() throws {
        let (mean, i) = try #require(Noise.tInterval([1, 2, 3]))
        #expect(mean == 2 && abs(i.halfWidth - 4.303 / 3.0.squareRoot()) < 1e-12 && i.method == "t" && i.samples == 3)
        #expect(Noise.tInterval([1.5]) == nil)
        #expect(Noise.tQuantile975(df: 1) == 12.706 && Noise.tQuantile975(df: 30) == 2.042 && Noise.tQuantile975(df: 500) == 1.960)
        // Two equal scores: a zero-width interval at the score.
        #expect(Noise.tInterval([0.5, 0.5])!.interval == Noise.Interval(low: 0.5, high: 0.5, method: "t", samples: 2))
    }

    /// The bootstrap resamples validation windows within each language: recomputing from the
    /// windows gives the evaluation's own numbers; the interval is deterministic for a seed,
    /// holds the point estimate, narrows with more windows, and is nil without windows.
    @Test func bootstrapOverValidationWindows() throws {
        var rng = SeededGenerator(seed: 4)
        func windows(_ n: Int, _ center: Double) -> [WindowLoss] {
            (0..<n).map { _ in WindowLoss(sum: (center + 0.3 * rng.normal()) * 64, tokens: 64) }
        }
        let small = EvaluationResult(windows: ["en": windows(8, 2.0), "ga": windows(8, 2.6)])
        let large = EvaluationResult(windows: ["en": windows(128, 2.0), "ga": windows(128, 2.6)])
        #expect(abs(small.languageMean - (small.perLanguage["en"]! + small.perLanguage["ga"]!) / 2) < 1e-12)
        let score: (EvaluationResult) -> Double = { $0.languageMean }
        let a = try #require(Noise.bootstrapInterval(small, seed: 1, score: score))
        #expect(a == Noise.bootstrapInterval(small, seed: 1, score: score))
        #expect(a.low < small.languageMean && small.languageMean < a.high && a.method == "bootstrap")
        let b = try #require(Noise.bootstrapInterval(large, seed: 1, score: score))
        #expect(b.halfWidth < a.halfWidth / 2, "16× the windows: about a quarter of the width (\(b.halfWidth) vs \(a.halfWidth))")
        // The standard error of the mean of 2 languages × 128 windows of sd 0.3: 0.3/√128/√2 = 0.0188; ±1.96 of it.
        #expect(abs(b.halfWidth - 1.96 * 0.3 / 128.0.squareRoot() / 2.0.squareRoot()) < 0.01)
        #expect(Noise.bootstrapInterval(EvaluationResult(windows: [:]), score: score) == nil)
    }

    @Test func rankingSpecErrorsNameThePath() throws {
        let good: JSON = ["name": "x", "teacher": "t", "data": "d", "steps": [5, 10],
                          "candidates": ["a": ["hidden_size": 8], "b": ["num_hidden_layers": 1]]]
        let spec = try RankingSpec(json: good, file: "s.json")
        #expect(spec.candidates.map(\.0) == ["a", "b"] && spec.steps == [5, 10])
        var bad = good.object!
        bad["distill"] = ["learning_rat": 0.1]
        do { _ = try RankingSpec(json: .object(bad), file: "s.json"); Issue.record("expected an error") } catch {
            #expect("\(error)".contains("distill.learning_rat"))
        }
        bad = good.object!
        bad["steps"] = [5, -1]
        do { _ = try RankingSpec(json: .object(bad), file: "s.json"); Issue.record("expected an error") } catch {
            #expect("\(error)".contains("steps[1]"))
        }
    }
}

/// Teachers' fingerprints key every store and importance cache: they must not change between
/// versions (a new JSON writer once changed them and orphaned existing studies).
@Suite struct FingerprintTests {
    @Test func theDefaultTeachersFingerprintIsStable() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../models/fortunes-teacher").standardized
        let teacher = try Checkpoint.load(dir)
        #expect(Fingerprint.of(teacher) == "fe8fe7e7644f3904")
    }
}
