import Foundation
import GRDB
import Model
import Proxy
@testable import Search
import Testing

/// Issue 24, item 1: candidates are compared with the leader by a paired bootstrap over the
/// validation windows they share (seeds × windows with replicates).
@Suite struct PairedTests {
    /// Synthetic windows of two languages whose difficulty varies a lot from window to window (a
    /// shared effect, the same for every candidate), plus a little noise of each candidate's own.
    static func evaluation(offset: Double, seed: UInt64, windows: Int = 40, own: Double = 0.02) -> EvaluationResult {
        var shared = SeededGenerator(seed: 99), mine = SeededGenerator(seed: seed)
        var out: [String: [WindowLoss]] = [:]
        for lang in ["en", "ga"] {
            out[lang] = (0..<windows).map { _ in
                let difficulty = 2 + 0.6 * shared.normal()        // nats/token, shared by every candidate
                let tokens = 32
                return WindowLoss(sum: Double(tokens) * (difficulty + offset + own * mine.normal()), tokens: tokens)
            }
        }
        return EvaluationResult(windows: out)
    }

    @Test func aSharedWindowEffectCancelsAndARealDifferenceIsFound() throws {
        let a = Self.evaluation(offset: 0, seed: 1), b = Self.evaluation(offset: 0.01, seed: 2)
        let score = Objective.mean.value
        // Each on its own: the windows' spread dominates, the two intervals overlap widely.
        let ia = try #require(Noise.bootstrapInterval(a, seed: 1, score: score)), ib = try #require(Noise.bootstrapInterval(b, seed: 2, score: score))
        #expect(ia.overlaps(ib) && ia.halfWidth > 0.1, "unpaired: \(ia) vs \(ib)")
        // Paired: the shared effect cancels; the difference of 0.01 is found and excludes 0.
        let d = try #require(Noise.pairedDifference([b], [a], seed: 3, score: score))
        #expect(d.low > 0 && d.low < 0.01 && d.high > 0.01, "paired: \(d)")
        #expect(d.halfWidth < ia.halfWidth / 20, "paired \(d.halfWidth) vs unpaired \(ia.halfWidth)")
        #expect(d.method == "paired bootstrap (windows)")
        // No difference: the paired interval contains 0.
        let same = try #require(Noise.pairedDifference([Self.evaluation(offset: 0, seed: 4)], [a], seed: 3, score: score))
        #expect(same.low < 0 && 0 < same.high, "\(same)")
        // Seeds × windows: three replicates each, with seed noise larger than the windows' own.
        let ra = (0..<3).map { Self.evaluation(offset: 0.004 * Double($0 - 1), seed: 10 + UInt64($0)) }
        let rb = (0..<3).map { Self.evaluation(offset: 0.05 + 0.004 * Double($0 - 1), seed: 20 + UInt64($0)) }
        let two = try #require(Noise.pairedDifference(rb, ra, seed: 5, score: score))
        #expect(two.method == "paired bootstrap (seeds × windows)" && two.samples == 3)
        #expect(two.low > 0.03 && two.high < 0.07, "\(two)")
        // Not the same windows (another eval_tokens): no paired interval.
        #expect(Noise.pairedDifference([Self.evaluation(offset: 0, seed: 1, windows: 39)], [a], score: score) == nil)
    }

    /// Through the store: each completed trial keeps its windows; `results top` compares with the
    /// leader pairwise and says so; trials without windows (an older Topiary) fall back to the
    /// overlap of their own intervals, and the legend says which was used.
    @Test func topPairsWithTheLeaderAndFallsBackForOldTrials() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try f.parse(f.spec(["strategy": ["name": "grid"]]))
        let (store, id) = try f.run(spec)
        let trials = try store.trials(study: id)
        let windows = try store.windows(trials: trials.map(\.id))
        #expect(windows.count == trials.filter { $0.state == "complete" }.count && !windows.isEmpty)
        let top = try store.top(study: id)
        #expect(top.count > 2 && top[0].difference == nil && top.dropFirst().allSatisfy { $0.tieMethod == "paired" && $0.differenceInterval != nil })
        for r in top.dropFirst() {
            let d = r.differenceInterval!
            #expect(r.tiedWithBest == (d.low <= 0 && 0 <= d.high))
            #expect(abs(r.difference! - (r.value - top[0].value)) < 1e-12 && r.difference! >= 0)
        }
        let table = try topiary(["results", "top", "tiny", "--db", f.db, "--format", "table"])
        #expect(table.out.contains("vs leader (paired 95%)") && table.out.contains("paired bootstrap interval"), "\(table.out)")
        let json = JSON.parse(Data(try topiary(["results", "top", "tiny", "--db", f.db, "--format", "json"]).out.utf8))
        #expect(json?.array?.dropFirst().first?["difference_interval"]?.array?.count == 2, "\(String(describing: json))")
        #expect(json?.array?.dropFirst().first?["tie_method"]?.string == "paired")
        // An older Topiary kept no windows: the overlap of the intervals decides, and says so.
        try DatabaseQueue(path: f.db).write { try $0.execute(sql: "DELETE FROM trial_windows") }
        let old = try store.top(study: id)
        #expect(old.dropFirst().allSatisfy { $0.tieMethod == "overlap" && $0.differenceInterval == nil && $0.difference != nil })
        let oldTable = try topiary(["results", "top", "tiny", "--db", f.db, "--format", "table"])
        #expect(oldTable.out.contains("recorded without their validation windows") && !oldTable.out.contains("paired bootstrap interval"), "\(oldTable.out)")
    }

    /// A store from before per-window losses (schema v3) gains the table when opened to write,
    /// its trials intact; `store copy` carries the windows.
    @Test func olderStoresGainTheWindowsTableAndCopiesCarryIt() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let path = f.root.appendingPathComponent("v3.sqlite").path
        try NoiseTests.olderStore(path, upTo: "v3-trial-replicates")
        let store = try StudyStore(path: path, access: .write)
        #expect(try store.top(study: 1).first?.value == 1.5)
        #expect(try store.windows(trials: [1]).isEmpty)
        // A study with windows, copied into another store: the windows go along.
        let spec = try f.parse(f.spec(["strategy": ["name": "grid"]]))
        let source = try StudyStore(path: f.db)
        let runner = try SearchRunner(spec: spec, store: source, results: f.root.appendingPathComponent("results"),
                                      importanceCache: f.root.appendingPathComponent("importance"))
        runner.log = { _ in }
        _ = try runner.run(worker: "w", extend: false)
        try source.copy(studies: ["tiny"], to: store)
        let copied = try #require(try store.study(named: "tiny"))
        let ids = try store.trials(study: copied.id).map(\.id)
        let before = try source.windows(trials: try source.trials(study: try source.study(named: "tiny")!.id).map(\.id))
        #expect(try store.windows(trials: ids).count == before.count && !before.isEmpty)
    }
}

/// Issue 24, item 2: successive halving does not cut inside the noise.
@Suite struct NoiseAwareHalvingTests {
    /// Whatever the ties, the promoted candidates are a prefix of the ranking: a candidate tied at
    /// the cut is never dropped while one scored worse goes on, and at most `slack` are added.
    @Test func promotionsAreAPrefixOfTheRanking() {
        var rng = SeededGenerator(seed: 7)
        for _ in 0..<500 {
            let n = 1 + Int(rng.next() % 12), cut = 1 + Int(rng.next() % UInt64(n)), slack = Int(rng.next() % 4)
            let ties = (0..<n).map { _ in rng.next() % 2 == 0 }
            let keep = SearchRunner.promotedCount(count: n, cut: cut, slack: slack) { ties[$0] }
            #expect(keep >= cut && keep <= min(n, cut + slack))
            #expect((cut..<keep).allSatisfy { ties[$0] })
            #expect(keep == n || keep == cut + slack || !ties[keep], "stops only at the bound or at a candidate that is not tied")
        }
    }

    /// A study with `tie_slack` 1: at each cut, a candidate goes on beyond the cut only when its
    /// paired interval to the last one promoted contains 0; the promoted are the best-scored; the
    /// summary counts the extra steps. With 0 the cut is by score alone.
    @Test func tiesAtTheCutGoOnAndTheirComputeIsCounted() throws {
        func study(_ slack: Int) throws -> (Fixture, StudyStore, Int64, SearchSpec) {
            let f = try Fixture("halving\(slack)")
            let spec = try f.parse(f.spec(["strategy": ["name": "successive_halving", "min_steps": 2, "eta": 3, "tie_slack": JSON(slack)],
                                           "proxy": ["steps": 18, "batch_size": 2, "sequence_length": 8, "eval_tokens": 16, "learning_rate": 1e-3]]))
            let (store, id) = try f.run(spec)
            return (f, store, id, spec)
        }
        var promotedOnTies = 0
        for slack in [0, 1] {
            let (f, store, id, spec) = try study(slack)
            defer { f.cleanup() }
            let trials = try store.trials(study: id)
            let rungs = Set(trials.map(\.rung)).sorted()
            var tieSteps = 0
            for rung in rungs.dropLast() {
                let here = trials.filter { $0.rung == rung }.sorted { ($0.score!, $0.id) < ($1.score!, $1.id) }
                let next = Set(trials.filter { $0.rung == rung + 1 }.compactMap(\.parentTrialID))
                let cut = max(1, Int((Double(here.count) / 3).rounded(.up)))
                let promoted = here.filter { next.contains($0.id) }
                #expect(promoted.map(\.id) == here.prefix(promoted.count).map(\.id), "rung \(rung): the promoted are the best-scored")
                #expect(promoted.count == cut || (slack == 1 && promoted.count == cut + 1), "rung \(rung): \(promoted.count) of \(here.count), cut \(cut)")
                if promoted.count > cut {
                    let w = try store.windows(trials: [here[cut - 1].id, here[cut].id])
                    let d = try #require(Noise.pairedDifference([w[here[cut].id]!], [w[here[cut - 1].id]!], seed: Noise.seed(here[cut].hash, here[cut - 1].hash, "\(rung)"),
                                                                score: spec.objective.value))
                    #expect(d.low <= 0 && 0 <= d.high, "promoted on a tie: \(d)")
                    #expect(try store.metrics(trial: here[cut].id).contains { $0.name == "promoted_on_tie" })
                    promotedOnTies += 1
                    tieSteps += trials.filter { $0.parentTrialID == here[cut].id }.reduce(0) { $0 + $1.fidelity - here[cut].fidelity }
                } else if cut < here.count, slack == 1 {
                    let w = try store.windows(trials: [here[cut - 1].id, here[cut].id])
                    if let d = Noise.pairedDifference([w[here[cut].id]!], [w[here[cut - 1].id]!], seed: Noise.seed(here[cut].hash, here[cut - 1].hash, "\(rung)"),
                                                      score: spec.objective.value) {
                        #expect(!(d.low <= 0 && 0 <= d.high), "rung \(rung): the first candidate below the cut was tied yet dropped: \(d)")
                    }
                }
            }
            let summary = try store.summary(try store.study(named: "tiny")!)
            #expect(summary.tieSteps == tieSteps && summary.tiePromotions == (slack == 0 ? 0 : summary.tiePromotions))
        }
        #expect(promotedOnTies >= 1, "the fixture's study has a tie at a cut (else this test shows nothing)")
        print("noise-aware halving: \(promotedOnTies) candidate(s) promoted on a tie")
    }
}

/// Issue 24, item 5: plot ticks at round values without spurious decimals; the Pareto front
/// through the values plotted (means over replicates).
@Suite struct PlotHygieneTests {
    @Test func tickLabelsHaveTheDecimalsTheirStepNeeds() {
        #expect(SVGPlot.formatTicks([0, 50, 100, 150]) == ["0", "50", "100", "150"])
        #expect(SVGPlot.formatTicks([1.7, 1.75, 1.8]) == ["1.70", "1.75", "1.80"])
        #expect(SVGPlot.formatTicks([1.6, 1.8, 2.0]) == ["1.6", "1.8", "2.0"])
        #expect(SVGPlot.formatTicks([1_200_000, 1_250_000, 1_300_000]) == ["1.20M", "1.25M", "1.30M"])
        #expect(SVGPlot.formatTicks([20_000, 40_000, 60_000]) == ["20K", "40K", "60K"])
        #expect(SVGPlot.formatTicks([1, 2, 3]) == ["1", "2", "3"], "ranks as integers")
        for upper in [9.0, 18, 60, 180, 400, 1000] {
            #expect(SVGPlot.formatTicks(SVGPlot.ticks(0...upper)).allSatisfy { !$0.contains(".") }, "steps 0…\(upper)")
        }
    }

    @Test func theParetoFrontUsesTheMeansThatArePlotted() throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let spec = try f.parse(f.spec(["strategy": ["name": "grid"], "objective": ["languages": "mean", "replicates": ["seeds": 2, "top": 4]]]))
        let (store, id) = try f.run(spec)
        let all = try store.top(study: id), front = try store.pareto(study: id)
        #expect(all.contains { $0.replicateScores.count == 2 && $0.value != $0.trial.score })
        #expect(!front.isEmpty)
        for a in front {
            #expect(!all.contains { $0.trial.parameters <= a.trial.parameters && $0.value < a.value }, "\(a.trial.hash) is dominated by value")
        }
        for b in all where !front.contains(where: { $0.trial.id == b.trial.id }) {
            #expect(all.contains { $0.trial.parameters <= b.trial.parameters && $0.value <= b.value && $0.trial.id != b.trial.id }, "\(b.trial.hash) left off but not dominated")
        }
    }
}
