import ArgumentParser
import Foundation
import Model
import Proxy

struct RankingCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ranking",
        abstract:
            "How candidates' ranking changes with proxy length: rank after pruning alone and after each "
            + "number of distillation steps, with Kendall's τ against the longest."
    )

    @Argument(help: "Ranking spec (JSON), e.g. experiments/ranking-stability.json.") var spec: String
    @Option(help: "Directory for results (results/<name>/ranking.{json,md}).") var results = "results"
    @Option(help: "Directory caching importance scores.") var importanceCache = "results/importance"
    @Option(
        parsing: .unconditional,
        help: ArgumentHelp(
            "Measured noise (nats): pairs whose final scores differ by more count as separated (default: 95% "
                + "bootstrap intervals that do not overlap).")
    ) var noise: Double?
    @OptionGroup var engine: EngineOptions
    @OptionGroup var store: StoreOptions

    func run() throws {
        engine.apply()
        if let noise { try requireRange("--noise", noise, 0...1e6, "nats") }
        guard let data = try? Data(contentsOf: fileURL(spec)), let json = JSON.parse(data) else {
            throw ModelError.invalidInput("\(spec): not readable JSON")
        }
        let s = try RankingSpec(json: json, file: spec)
        let db = try store.open(.create) // before the run: a bad --db fails now, not after it
        let teacher = try Checkpoint.load(directoryURL(s.teacher))
        let corpus = try TokenShards(directory: directoryURL(s.data))
        let candidates = try s.candidates.map {
            ($0.0, try Pruning.targetConfig(teacher: teacher.config, target: $0.1))
        }
        for (name, c) in candidates {
            do { try Pruning.validate(target: c, teacher: teacher.config) } catch let e as ProxyError {
                throw ProxyError.invalidOption(field: "\(spec): candidates.\(name)", reason: "\(e)")
            }
        }
        let (scores, cached) = try Importance.cached(
            teacher: teacher, corpus: corpus, settings: s.importance,
            cache: directoryURL(importanceCache), log: { print($0) })
        if cached { print("importance: reusing cached scores") }
        let result = try RankingStudy.run(
            teacher: teacher, corpus: corpus, candidates: candidates, scores: scores,
            options: s.prune, recipe: s.recipe, checkpoints: s.steps, noise: noise, curveEvery: s.curveEvery)
        print(result.markdown)
        let out = directoryURL(results).appendingPathComponent(s.name)
        try AtomicFile.write(Data((result.markdown + "\n").utf8), to: out.appendingPathComponent("ranking.md"))
        let j: JSON = [
            "candidates": .array(result.candidates.map { .string($0) }),
            "parameters": .array(result.parameters.map { JSON($0) }),
            "checkpoints": .array(result.checkpoints.map { JSON($0) }),
            "losses": .array(result.losses.map { .array($0.map { JSON($0) }) }),
            "kendall_tau": .array(result.tau.map { $0.map { JSON($0) } ?? .null }),
            "kendall_tau_separated": .array(result.tauSeparated.map { $0.map { JSON($0) } ?? .null }),
            "separated_pairs": JSON(result.separatedPairs), "noise": .string(result.noiseDescription),
            "recommended_proxy_steps": result.recommendedSteps().map { JSON($0) } ?? .null,
            "recommended_proxy_steps_predicted": result.recommendedPredictedSteps().map { JSON($0) } ?? .null,
            "kendall_tau_predicted": .array(result.tauPredicted.map { $0.map { JSON($0) } ?? .null }),
            "kendall_tau_predicted_separated": .array(
                result.tauPredictedSeparated.map { $0.map { JSON($0) } ?? .null }),
            "predicted": .array(result.predicted.map { .array($0.map { p in p.map { JSON($0.value) } ?? .null }) }),
            "predicted_intervals": .array(
                result.predicted.map {
                    .array($0.map { p in p?.interval.map { [JSON($0.low), JSON($0.high)] } ?? .null })
                }),
            "curves": .array(result.curves.map { .array($0.map { [JSON($0.step), JSON($0.loss)] }) }),
            "final_intervals": .array(result.intervals.map { $0.map { [JSON($0.low), JSON($0.high)] } ?? .null })
        ]
        try AtomicFile.write(j.data(), to: out.appendingPathComponent("ranking.json"))
        print("wrote \(out.path)/ranking.{md,json}")
        // The store keeps it beside the teacher's studies: their reports draw τ against proxy length.
        try db.recordRanking(name: s.name, teacherFingerprint: Fingerprint.of(teacher), result: j)
        print("recorded in \(db.location) (the reports of this teacher's studies show it)")
    }
}
