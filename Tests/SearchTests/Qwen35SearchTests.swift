import Foundation
import Model
import Proxy
@testable import Search
import Testing

/// Issue 26, items 3 and 4 for Qwen3.5: importance scores every unit a space can prune (the MLP
/// neurons of DeltaNet and attention layers, the DeltaNet value heads), and a search over its
/// axes enumerates exact counts, runs successive halving and exports loadable winners.
struct Qwen35SearchTests {
    /// The fixture teacher's importance scores (4 calibration samples of 8 tokens, no loss rise).
    static func importance(_ f: Fixture) throws -> ImportanceScores {
        let (teacher, corpus) = (try Checkpoint.load(f.teacher), try TokenShards(directory: f.corpus))
        var settings = ImportanceSettings()
        (settings.samples, settings.sequence, settings.lossTokensPerLanguage) = (4, 8, 0)
        let calibration = try Importance.key(teacher: teacher, corpus: corpus, settings: settings).1
        return try Importance.compute(teacher: teacher, corpus: corpus, calibration: calibration, settings: settings)
    }

    /// Runs `spec` and exports its top two: each loads with the teacher's family and the trial's
    /// parameter count, its proxy checkpoint with the same config.
    static func runAndExportTop2(_ f: Fixture, _ spec: SearchSpec) throws {
        let (store, _) = try f.run(spec)
        let ranked = try store.top(study: try #require(try store.study(named: "tiny")).id, limit: 2)
        #expect(!ranked.isEmpty)
        for (dir, winner) in zip(try f.exportTop(store, 2), ranked) {
            let model = try Checkpoint.load(dir)
            #expect(model.config.family == f.config.family)
            #expect(model.layout.parameterCount == winner.trial.parameters)
            #expect(try Checkpoint.load(dir.appendingPathComponent("proxy")).config == model.config)
            // The recipe's NeMo/ModelOpt keys name a mixture's shared expert too.
            if model.config.sharedExpertWidth > 0 {
                let distill = try #require(JSON.parse(try Data(contentsOf: dir.appendingPathComponent("distill.json"))))
                #expect(
                    distill["nemo_modelopt"]?["moe_shared_expert_intermediate_size"]?.int == model.config.sharedExpertWidth)
            }
        }
    }

    @Test func importanceScoresEveryPrunableUnit() throws {
        let f = try Fixture(family: .qwen35)
        defer { f.cleanup() }
        let s = try Self.importance(f)
        // Every layer's MLP neurons (DeltaNet layers end in an MLP as attention ones do).
        for l in 0..<3 { #expect(s.neurons[l].count == 32 && s.neurons[l].contains { $0 != 0 }, "layer \(l)") }
        #expect(s.heads[1].contains { $0 != 0 } && s.heads[0].allSatisfy { $0 == 0 })
        let delta = try #require(s.deltaNetHeads)
        #expect(delta.map(\.count) == [4, 0, 4])
        // And every value channel of every value head (4 × 4).
        #expect(try #require(s.deltaNetChannels).map(\.count) == [16, 0, 16])
        #expect(delta[0].allSatisfy { $0 > 0 } && delta[2].allSatisfy { $0 > 0 })
    }

    /// Key heads as an axis: a candidate with fewer key heads must drop their value heads too.
    @Test func keyHeadsKeepAtMostTheTeachersValueHeadsEach() throws {
        let f = try Fixture(family: .qwen35)
        defer { f.cleanup() }
        let spec = try f.parse(
            f.spec([
                "space": ["linear_num_key_heads": [1, 2], "linear_num_value_heads": [2, 4]],
                "budget": ["min": 1, "max": JSON(f.config.parameterCount)]
            ]))
        let e = Enumeration.of(spec, teacher: f.config)
        #expect(e.combinations == 4)
        #expect(Set(e.candidates.map { [$0.config.deltaNet!.keyHeads, $0.config.deltaNet!.valueHeads] }) == [[1, 2], [2, 2], [2, 4]])
        #expect(e.explanation.contains("more DeltaNet value heads under a key head"))
        #expect(Set(e.candidates) == Set(Enumeration.exhaustive(spec, teacher: f.config)))
    }

    @Test func aQwen35SearchRunsAndItsWinnersExport() throws {
        let f = try Fixture(family: .qwen35)
        defer { f.cleanup() }
        let spec = try f.parse(
            f.spec([
                "space": [
                    "hidden_size": [16, 24], "intermediate_size": [16, 32], "linear_num_value_heads": [2, 3, 4],
                    "num_deltanet_layers": [1, 2]
                ],
                "budget": ["min": 1, "max": JSON(f.config.parameterCount * 95 / 100)]
            ]))
        let e = Enumeration.of(spec, teacher: f.config)
        #expect(e.combinations == 24)
        // 3 value heads do not divide among 2 key heads: excluded.
        #expect(e.candidates.allSatisfy { $0.config.deltaNet!.valueHeads != 3 })
        #expect(e.explanation.contains("break DeltaNet key heads"), "\(e.explanation)")
        #expect(!e.candidates.isEmpty)
        for c in e.candidates {
            #expect(c.parameters == ParameterLayout(config: c.config).count)
            #expect(c.config.hybridLayers?.filter { $0 == .attention }.count == 1)
        }
        try Self.runAndExportTop2(f, spec)
    }

    /// Qwen3.5-MoE: importance scores every expert, every expert's neurons and the shared
    /// expert's; a search over the expert axes and the shared expert's width counts total and
    /// active parameters exactly and exports loadable winners.
    @Test func aQwen35MoESearchScoresExpertsAndExports() throws {
        let f = try Fixture(family: .qwen35Moe)
        defer { f.cleanup() }
        let s = try Self.importance(f)
        let experts = try #require(s.mlpExperts)
        for l in 0..<3 {
            #expect(s.neurons[l].count == 4 * 16 + 32, "layer \(l)")
            // The shared expert sees every token: each of its neurons scores.
            #expect(s.neurons[l][64...].allSatisfy { $0 > 0 }, "layer \(l)")
            #expect(abs(experts.frequency[l].reduce(0, +) - 2) < 1e-9 && experts.gatedOutputNorm[l].contains { $0 > 0 })
        }
        let spec = try f.parse(
            f.spec([
                "space": [
                    "num_experts": [2, 4], "moe_intermediate_size": [8, 16], "shared_expert_intermediate_size": [16, 32],
                    "hidden_size": [16, 24]
                ],
                "budget": ["min": 1, "max": JSON(f.config.activeParameterCount), "count": "active"]
            ]))
        let e = Enumeration.of(spec, teacher: f.config)
        #expect(e.combinations == 16)
        #expect(!e.candidates.isEmpty)
        for c in e.candidates {
            #expect(c.parameters == ParameterLayout(config: c.config).count)
            #expect(c.config.activeParameterCount <= f.config.activeParameterCount)
        }
        try Self.runAndExportTop2(f, spec)
    }
}
