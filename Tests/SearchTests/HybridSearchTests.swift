import Foundation
import Model
import Proxy
@testable import Search
import Testing

/// Issue 26, item 4: a search over a Nemotron-H teacher's axes — Mamba2 heads and head width,
/// MLP width, depth by layer type — enumerates exact counts, runs successive halving with the KD
/// proxy, and exports candidates whose checkpoints hold exactly the counted parameters.
struct HybridSearchTests {
    @Test func aNemotronHSearchRunsAndItsWinnersExport() throws {
        let f = try Fixture(family: .nemotronH)
        defer { f.cleanup() }
        let spec = try f.parse(
            f.spec([
                "space": [
                    "mamba_num_heads": [2, 4], "mamba_head_dim": [4, 6], "intermediate_size": [16, 32],
                    "num_mlp_layers": [0, 1], "num_mamba_layers": [1, 2]
                ],
                "budget": ["min": 1, "max": JSON(f.config.parameterCount * 95 / 100)]
            ]))
        // Exact counts: every candidate's count is its config's, and its layers are the teacher's
        // types less the ones the depth axes drop.
        let e = Enumeration.of(spec, teacher: f.config)
        #expect(e.combinations == 32)
        #expect(!e.candidates.isEmpty && e.candidates.count < 32)
        for c in e.candidates {
            #expect(c.parameters == ParameterLayout(config: c.config).count)
            #expect(c.parameters <= f.config.parameterCount * 95 / 100)
            #expect(c.config.hybridLayers?.filter { $0 == .attention }.count == 1)
            #expect(Enumeration.exhaustive(spec, teacher: f.config).contains(c))
        }
        // Mamba heads must stay a multiple of the groups.
        let odd = try f.parse(f.spec(["space": ["mamba_num_heads": [3, 4]], "budget": ["min": 1, "max": JSON(f.config.parameterCount)]]))
        let oddEnumeration = Enumeration.of(odd, teacher: f.config)
        #expect(oddEnumeration.candidates.count == 1)
        #expect(oddEnumeration.explanation.contains("break Mamba2 groups"))

        let (store, _) = try f.run(spec)
        let ranked = try store.top(study: try #require(try store.study(named: "tiny")).id, limit: 2)
        #expect(!ranked.isEmpty)
        let dirs = try Exporter.export(
            store: store, study: "tiny", top: 2, out: f.root.appendingPathComponent("export"),
            importanceCache: f.root.appendingPathComponent("importance"), artifacts: f.root.appendingPathComponent("results"),
            log: { _ in })
        for (dir, winner) in zip(dirs, ranked) {
            let model = try Checkpoint.load(dir)
            #expect(model.config.family == .nemotronH)
            #expect(model.config.parameterCount == winner.trial.parameters)
            #expect(model.layout.count == winner.trial.parameters)
            // Its layers are the teacher's types in the teacher's order, less those dropped.
            let types = try #require(model.config.hybridLayers)
            #expect(types.filter { $0 == .attention }.count == 1)
            // The proxy-trained student loads too and scores what the study recorded.
            let proxy = try Checkpoint.load(dir.appendingPathComponent("proxy"))
            #expect(proxy.config == model.config)
        }
    }

    /// Nemotron-H with mixture layers: importance scores every routed expert (frequency summing to
    /// k per layer), its neurons and the shared expert's; a successive-halving search over the
    /// expert count, the experts' and the shared expert's widths and the mixture layers kept,
    /// under a budget on active parameters, counts exactly and exports loadable winners.
    @Test func aNemotronHMixtureSearchScoresExpertsAndExports() throws {
        let f = try Fixture(family: .nemotronH, hybridMixture: true)
        defer { f.cleanup() }
        let s = try Qwen35SearchTests.importance(f)
        let experts = try #require(s.mlpExperts)
        for l in [1, 3] {
            #expect(s.neurons[l].count == 4 * 16 + 16, "layer \(l)")
            #expect(s.neurons[l][64...].allSatisfy { $0 > 0 }, "layer \(l): the shared expert sees every token")
            #expect(abs(experts.frequency[l].reduce(0, +) - 2) < 1e-9 && experts.gatedOutputNorm[l].contains { $0 > 0 })
        }
        #expect(experts.frequency[0].allSatisfy { $0 == 0 } && experts.frequency[2].allSatisfy { $0 == 0 })
        let spec = try f.parse(
            f.spec([
                "space": [
                    "n_routed_experts": [2, 4], "moe_intermediate_size": [8, 16],
                    "moe_shared_expert_intermediate_size": [8, 16], "num_moe_layers": [1, 2]
                ],
                "budget": ["min": 1, "max": JSON(f.config.activeParameterCount * 95 / 100), "count": "active"]
            ]))
        let e = Enumeration.of(spec, teacher: f.config)
        #expect(e.combinations == 16)
        #expect(!e.candidates.isEmpty && e.candidates.count < 16)
        for c in e.candidates {
            #expect(c.parameters == ParameterLayout(config: c.config).parameterCount)
            #expect(c.config.activeParameterCount <= f.config.activeParameterCount * 95 / 100)
            #expect(c.config.hybridLayers?.filter { $0 == .moe }.count == c.config.sparseLayerCount)
        }
        try Qwen35SearchTests.runAndExportTop2(f, spec)
    }

    /// Spaces a hybrid teacher cannot take are refused naming the axis and what to vary instead.
    @Test func badHybridSpacesNameTheAxis() throws {
        let f = try Fixture(family: .nemotronH)
        defer { f.cleanup() }
        func refusal(_ space: JSON) -> String {
            do {
                _ = try f.parse(f.spec(["space": space]))
                return "accepted"
            } catch { return "\(error)" }
        }
        #expect(refusal(["num_hidden_layers": [2, 3]]).contains("counted per layer type"))
        #expect(refusal(["num_mamba_layers": [3]]).contains("space.num_mamba_layers[0]: 3 is larger than the teacher's 2"))
        let dense = try Fixture()
        defer { dense.cleanup() }
        do {
            _ = try dense.parse(dense.spec(["space": ["mamba_num_heads": [2]]]))
            Issue.record("a Mamba2 axis on a llama teacher was accepted")
        } catch { #expect("\(error)".contains("not an axis of a llama teacher") && "\(error)".contains("axis of nemotron_h teachers")) }
        do {
            _ = try dense.parse(dense.spec(["space": ["num_deltanet_layers": [1]]]))
            Issue.record("a DeltaNet axis on a llama teacher was accepted")
        } catch { #expect("\(error)".contains("(num_deltanet_layers is an axis of qwen3_5_text, qwen3_5_moe_text teachers)")) }
    }
}
