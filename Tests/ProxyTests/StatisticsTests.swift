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
