import ArgumentParser
import Foundation
import Model
import Proxy

/// Importance options shared by `importance` and `prune`.
struct ImportanceOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Calibration samples.") var samples = 256
    @Option(parsing: .unconditional, help: "Calibration sequence length.") var calibrationSeq = 128
    @Option(help: "Aggregation over the batch: mean, l2 or variance.") var batchAgg = "l2"
    @Option(help: "Aggregation over the sequence: mean, l2 or variance.") var seqAgg = "mean"
    @Option(help: "Calibrate on one language only (default: balanced over languages).") var calibrationLanguage: String?
    @Option(help: "Directory caching scores by teacher and calibration fingerprint.") var importanceCache =
        "results/importance"
    @Option(parsing: .unconditional, help: "Validation tokens per language for the layer-skip loss rise (0: skip it).")
    var lossTokens = ImportanceSettings.defaultLossTokensPerLanguage

    func validate() throws {
        guard Aggregation(rawValue: batchAgg) != nil, Aggregation(rawValue: seqAgg) != nil else {
            throw ValidationError("--batch-agg and --seq-agg take mean, l2 or variance")
        }
        if samples < 1 { throw ValidationError("--samples must be at least 1") }
        try requireRange("--calibration-seq", calibrationSeq, 2...1 << 20)
        try requireRange("--loss-tokens", lossTokens, 0...1 << 30)
    }

    var settings: ImportanceSettings {
        var s = ImportanceSettings()
        s.samples = samples; s.sequence = calibrationSeq
        s.batchAggregation = Aggregation(rawValue: batchAgg)!; s.sequenceAggregation = Aggregation(rawValue: seqAgg)!
        s.language = calibrationLanguage
        s.lossTokensPerLanguage = lossTokens
        return s
    }

    func scores(teacher: DecoderModel, corpus: TokenShards) throws -> ImportanceScores {
        try scores(teacherFingerprint: Fingerprint.of(teacher), loadTeacher: { teacher }, corpus: corpus)
    }

    /// The scores of a teacher known by its fingerprint; `loadTeacher` only when they must be computed.
    func scores(teacherFingerprint: String, loadTeacher: () throws -> DecoderModel, corpus: TokenShards) throws
        -> ImportanceScores
    {
        let (scores, cached) = try Importance.cached(
            teacherFingerprint: teacherFingerprint, loadTeacher: loadTeacher, corpus: corpus, settings: settings,
            cache: directoryURL(importanceCache),
            log: {
                print($0); fflush(nil)
            })
        if cached {
            print(
                "importance: reusing cached scores for teacher \(scores.teacherFingerprint), calibration \(scores.calibrationFingerprint)"
            )
        }
        return scores
    }
}

struct ImportanceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "importance",
        abstract:
            "Rank a teacher's layers, heads, neurons and embedding channels by activation-based importance (Minitron).")

    @Option(help: "Teacher checkpoint directory.") var teacher: String
    @Option(help: "Prepared corpus (calibration from train, layer-skip loss from validation).") var data: String
    @OptionGroup var importance: ImportanceOptions
    @Flag(help: "Print every score as JSON.") var json = false
    @OptionGroup var engine: EngineOptions

    func run() throws {
        engine.apply()
        let model = try Checkpoint.load(try checkpointURL(teacher))
        let corpus = try TokenShards(directory: directoryURL(data))
        let s = try importance.scores(teacher: model, corpus: corpus)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(s), as: UTF8.self))
            return
        }
        func fmt(_ v: Double) -> String { String(format: "%.4g", v) }
        print(
            "layers, most important first (block importance | loss rise when skipped; base loss \(fmt(s.baseValidationLoss))):"
        )
        print(
            "  by block importance: "
                + ImportanceScores.ranking(s.blockImportance).map { "\($0) (\(fmt(s.blockImportance[$0])))" }.joined(
                    separator: ", "))
        if s.layerLossRise.isEmpty {
            print("  by loss rise:        not computed (--loss-tokens 0)")
        } else {
            print(
                "  by loss rise:        "
                    + ImportanceScores.ranking(s.layerLossRise).map { "\($0) (\(fmt(s.layerLossRise[$0])))" }.joined(
                        separator: ", "))
        }
        print("heads per layer, most important first:")
        for (l, h) in s.heads.enumerated() {
            print(
                "  layer \(l): " + ImportanceScores.ranking(h).map { "\($0) (\(fmt(h[$0])))" }.joined(separator: ", "))
        }
        let ch = ImportanceScores.ranking(s.channels)
        print(
            "embedding channels: top 8 " + ch.prefix(8).map { "\($0)" }.joined(separator: " ") + "; bottom 8 "
                + ch.suffix(8).map { "\($0)" }.joined(separator: " "))
        print(
            "MLP neurons per layer: top 5 and bottom 5"
                + (s.mlpExperts != nil ? " (neuron i of expert e is e·F + i)" : ""))
        for (l, n) in s.neurons.enumerated() {
            let r = ImportanceScores.ranking(n)
            print(
                "  layer \(l): " + r.prefix(5).map { "\($0)" }.joined(separator: " ") + " … "
                    + r.suffix(5).map { "\($0)" }.joined(separator: " "))
        }
        for (kind, experts) in [("MLP", s.mlpExperts), ("attention", s.attentionExperts)] {
            guard let experts else { continue }
            print("\(kind) experts per layer, most important first (gated output norm | routing frequency):")
            for l in experts.frequency.indices {
                let g = experts.gatedOutputNorm[l], f = experts.frequency[l]
                print(
                    "  layer \(l): "
                        + ImportanceScores.ranking(g).map { "\($0) (\(fmt(g[$0])) | \(String(format: "%.3f", f[$0])))" }
                        .joined(separator: ", "))
            }
            print("\(kind) expert routing frequency by calibration language (layer 0; each row sums to k):")
            for (lang, layers) in experts.frequencyByLanguage.sorted(by: { $0.key < $1.key }) {
                print(
                    "  \(lang.padding(toLength: 4, withPad: " ", startingAt: 0)) "
                        + layers[0].map { String(format: "%.3f", $0) }.joined(separator: " "))
            }
        }
    }
}
