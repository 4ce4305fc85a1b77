import Foundation
import Model
import Proxy
@testable import Search
import Testing

/// Issue 24, item 3: each trial records validation points inside its steps; the learning curve
/// fitted to them predicts the next rung and the full distillation, and `results top`, the API,
/// `distill.json` and the report carry the prediction.
@Suite struct PredictionTests {
    static func spec(_ f: Fixture, curvePoints: Int = 2) throws -> SearchSpec {
        try f.parse(f.spec(["proxy": ["steps": 54, "batch_size": 2, "sequence_length": 8, "eval_tokens": 16, "learning_rate": 3e-3,
                                      "warmup": 2, "curve_points": JSON(curvePoints)],
                            "strategy": ["name": "successive_halving", "min_steps": 6, "eta": 3],
                            "export": ["top": 2, "full_distillation_steps": 2000]]))
    }

    @Test func evaluationStepsAreEvenlySpacedAfterTheWarmup() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let s = try Self.spec(f)
        #expect(s.evaluationSteps(from: 0, to: 6) == [3, 5, 6])
        #expect(s.evaluationSteps(from: 6, to: 18) == [10, 14, 18])
        #expect(s.evaluationSteps(from: 0, to: 3) == [3])       // nothing between the warmup and the end
        #expect(try Self.spec(f, curvePoints: 0).evaluationSteps(from: 6, to: 18) == [18])
        #expect(s.predictionSteps == 2000)
        #expect { _ = try f.parse(f.spec(["proxy": ["steps": 6, "curve_points": -1]])) } throws: { "\($0)".contains("proxy.curve_points") }
        #expect { _ = try f.parse(f.spec(["proxy": ["steps": 6, "curve_points": 1_000_000_000]])) } throws: { "\($0)".contains("at most 64") }
        #expect { _ = try f.parse(f.spec(["export": ["full_distillation_steps": 0]])) } throws: { "\($0)".contains("export.full_distillation_steps") }
    }

    @Test func trialsRecordTheirCurveAndThePredictionReachesEveryOutput() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try Self.spec(f)
        let (store, id) = try f.run(spec)
        let trials = try store.trials(study: id)
        // Every finished trial has the objective at each of its evaluation steps, and the last is its score.
        for t in trials where t.state == "complete" || t.state == "pruned" {
            let parent = t.parentTrialID.flatMap { p in trials.first { $0.id == p }?.fidelity } ?? 0
            let steps = try store.metrics(trial: t.id).filter { $0.name == "val_loss/mean" }.map(\.step)
            #expect(steps == spec.evaluationSteps(from: parent, to: t.fidelity), "trial \(t.id) rung \(t.rung): \(steps)")
            #expect(try store.metrics(trial: t.id).last { $0.name == "val_loss/mean" }?.value == t.score)
        }
        let study = try #require(try store.study(named: "tiny"))
        let p = try store.predictions(study: study)
        #expect(p.steps == 2000)
        let candidates = Set(trials.map(\.hash))
        #expect(Set(p.longRun.keys) == candidates, "every candidate has three points or more")
        // The next rungs were predicted from the rung before, and the check is against what they scored.
        let promoted = trials.filter { $0.rung > 0 && $0.replicate == 0 }
        #expect(p.nextRung.count == promoted.count && !promoted.isEmpty)
        for c in p.nextRung {
            let t = try #require(promoted.first { $0.hash == c.hash && $0.rung == c.rung + 1 })
            #expect(c.observed == t.score && c.steps == t.fidelity)
        }
        // A prediction made from the points up to a rung equals a fit of exactly those points.
        let c0 = try #require(p.nextRung.first { $0.rung == 0 })
        let curves = try store.curves(study: study, trials: trials)
        let keys = curves.keys.sorted()
        let refit = LearningCurve.predict(keys.map { curves[$0]!.filter { $0.step <= 6 } }, at: Double(c0.steps), seed: UInt64(id) &+ 1)
        #expect(refit[keys.firstIndex(of: c0.hash)!]?.value == c0.predicted.value)

        // results top: a column in the table, fields in JSON and CSV.
        let table = try topiary(["results", "top", "tiny", "--db", f.db, "--format", "table"])
        #expect(table.out.contains("long run (2000 steps)") && table.out.contains("learning curve"), "\(table.out)")
        let json = try #require(JSON.parse(Data(try topiary(["results", "top", "tiny", "--db", f.db, "--format", "json"]).out.utf8))?.array)
        #expect(json.allSatisfy { $0["predicted"]?.double != nil && $0["predicted_at_steps"]?.int == 2000 }, "\(json)")
        #expect(json.contains { $0["predicted_interval"]?.array?.count == 2 })
        for row in json {
            let l = try #require(p.longRun[row["candidate"]!.string!])
            #expect(row["predicted"]?.double == l.prediction.value)
        }
        let csv = try topiary(["results", "top", "tiny", "--db", f.db, "--format", "csv"]).out
        #expect(csv.split(separator: "\n").first?.contains("predicted,predicted_low,predicted_high,predicted_at_steps") == true, "\(csv)")

        // distill.json of each winner.
        let out = f.root.appendingPathComponent("export")
        let exported = try topiary(["export", "tiny", "--top", "2", "--db", f.db, "--out", out.path, "--artifacts", f.root.appendingPathComponent("results").path])
        #expect(exported.status == 0, "\(exported.err)")
        let folders = try FileManager.default.contentsOfDirectory(atPath: out.path).filter { !$0.hasPrefix(".") }.sorted()
        #expect(folders.count == 2)
        for folder in folders {
            let d = try #require(JSON.parse(try Data(contentsOf: out.appendingPathComponent(folder).appendingPathComponent("distill.json"))))
            let hash = try #require(d["candidate"]?.string)
            #expect(d["predicted_full_distillation_score"]?["score"]?.double == p.longRun[hash]?.prediction.value)
            #expect(d["predicted_full_distillation_score"]?["steps"]?.int == 2000 && d["token_budget"]?["full_distillation_steps"]?.int == 2000)
        }

        // The report: the ranking's column, the predicted ranking, and predicted against observed.
        let report = try StudyReport(store: store, study: "tiny")
        let html = report.indexHTML()
        #expect(html.contains("<table id=\"prediction\">") && html.contains("long run, 2000 steps (95%)"))
        #expect(html.contains("<svg id=\"next-rung\""))
        let drawn = html.components(separatedBy: "data-rung=").count - 1
        #expect(drawn == p.nextRung.count, "one point per check: \(drawn) vs \(p.nextRung.count)")
        #expect(html.contains("Ranking against proxy length") && html.contains("id=\"proxy-length\" class=\"empty\""))
    }

    /// The ranking runs of a teacher go into the store; the reports of its studies draw τ against
    /// proxy length from them (here a run recorded by hand for the fixture's teacher).
    @Test func rankingRunsReachTheReportsOfTheirTeacher() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try f.parse(f.spec(["strategy": ["name": "grid"]]))
        let (store, id) = try f.run(spec)
        let study = try #require(try store.study(named: "tiny"))
        #expect(study.id == id)
        try store.recordRanking(name: "other-teacher", teacherFingerprint: "not-this-one", result: ["checkpoints": [0, 10, 40], "kendall_tau": [0.1, 0.2, 1]])
        #expect(try StudyReport(store: store, study: "tiny").indexHTML().contains("id=\"proxy-length\" class=\"empty\""))
        let result: JSON = ["checkpoints": [0, 10, 20, 40], "kendall_tau": [0.2, 0.5, 0.8, 1], "kendall_tau_separated": [0.1, 0.6, 0.95, 1],
                            "kendall_tau_predicted": [.null, 0.7, 0.9, .null], "separated_pairs": 5, "recommended_proxy_steps": 20]
        try store.recordRanking(name: "fixture-ranking", teacherFingerprint: study.teacherFingerprint, result: result)
        let html = try StudyReport(store: store, study: "tiny").indexHTML()
        #expect(html.contains("<svg id=\"proxy-length\""))
        #expect(html.components(separatedBy: "class=\"tau-all-point\"").count - 1 == 4)
        #expect(html.components(separatedBy: "class=\"tau-separated-point\"").count - 1 == 4)
        #expect(html.components(separatedBy: "class=\"tau-predicted-point\"").count - 1 == 2)
        #expect(html.contains("fixture-ranking") && html.contains("Recommended proxy length: 20 steps"))
        // `store copy` carries them with the studies, once.
        let other = try StudyStore(path: f.root.appendingPathComponent("copy.sqlite").path)
        _ = try store.copy(to: other)
        _ = try store.copy(studies: [], to: other)
        #expect(try other.rankings(teacherFingerprint: study.teacherFingerprint).map(\.result) == [result])
        #expect(try StudyReport(store: other, study: "tiny").indexHTML().contains("<svg id=\"proxy-length\""))
    }
}
