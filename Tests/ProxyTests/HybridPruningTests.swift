import Foundation
import Model
import Proxy
import Testing

/// Issue 26, item 3: structured pruning of a Nemotron-H teacher along every axis — Mamba2 heads
/// (the same number from each group) and head channels, attention heads, MLP neurons, and depth
/// by layer type — each equal to the teacher run with the same units masked.
@Suite struct HybridPruningTests {
    /// Mamba2, MLP, attention, Mamba2, MLP, Mamba2: 6 Mamba heads of 4 channels in 2 groups, a
    /// state of 5, a 3-tap convolution, chunks of 4; attention 6 heads over 3 groups.
    static func teacher(seed: UInt64 = 4) -> DecoderModel {
        var c = ModelConfig(
            family: .nemotronH, vocabSize: 31, hiddenSize: 24, intermediateSize: 20, numHiddenLayers: 6,
            numAttentionHeads: 6, numKeyValueHeads: 3, headDim: 4, maxPositionEmbeddings: 64, initializerRange: 0.3)
        c.hybridLayers = [.mamba, .mlp, .attention, .mamba, .mlp, .mamba]
        c.mamba = MambaShape(heads: 6, headDim: 4, groups: 2, stateSize: 5, convKernel: 3)
        c.mambaChunkSize = 4
        return initializedWithRandomNorms(c, seed: seed)
    }

    static func scores(_ c: ModelConfig, seed: UInt64 = 9) -> ImportanceScores {
        var s = randomScores(c, seed: seed)
        var rng = SeededGenerator(seed: seed + 1)
        s.mambaChannels = c.hybridLayers!.map { type in
            type == .mamba ? (0..<c.mamba!.innerWidth).map { _ in rng.uniform() } : []
        }
        return s
    }

    @Test func pruningToOwnShapeIsIdentity() throws {
        let t = Self.teacher()
        let s = try Pruning.prune(teacher: t, to: t.config, scores: Self.scores(t.config))
        #expect(s.config == t.config)
        #expect(s.parameters.array == t.parameters.array)
    }

    @Test func mambaHeadsChannelsAttentionHeadsAndNeuronsEqualMasking() throws {
        let t = Self.teacher()
        let target = try Pruning.targetConfig(
            teacher: t.config,
            target: ["mamba_num_heads": 4, "mamba_head_dim": 3, "num_attention_heads": 3, "intermediate_size": 13])
        let plan = try Pruning.plan(
            teacher: t.config, target: target, scores: Self.scores(t.config), options: PruneOptions())
        #expect(plan.layers == Array(0..<6))
        var masks = ForwardMasks()
        for l in 0..<6 {
            if t.config.hybridLayers![l] == .mamba {
                // Two heads from each group of three; three of four channels.
                #expect(plan.mambaHeads[l].filter { $0 < 3 }.count == 2 && plan.mambaHeads[l].count == 4)
                #expect(plan.mambaChannels[l].count == 3)
                masks.mambaHeads[l] = (0..<6).filter { !plan.mambaHeads[l].contains($0) }
                masks.mambaChannels[l] = (0..<4).filter { !plan.mambaChannels[l].contains($0) }
            } else {
                #expect(plan.mambaHeads[l].isEmpty)
            }
            masks.heads[l] = (0..<6).filter { !plan.heads[l].contains($0) }
            masks.neurons[l] = (0..<20).filter { !plan.neurons[l].contains($0) }
        }
        let student = Pruning.apply(plan, teacher: t, target: target)
        #expect(student.config.mamba == MambaShape(heads: 4, headDim: 3, groups: 2, stateSize: 5, convKernel: 3))
        #expect(student.config.parameterCount == student.layout.count)
        let gap = try pruningGap(teacher: t, masks: masks, student: student)
        #expect(gap.masked < 1e-5, "max |Δlogit| \(gap.masked)")
        #expect(gap.unmasked > 1e-3, "the pruning changed nothing (\(gap.unmasked))")
        // Each axis on its own moves the logits: no unit is cut without effect.
        for only in [\ForwardMasks.mambaHeads, \ForwardMasks.mambaChannels] {
            var one = masks
            one[keyPath: only] = [:]
            #expect(try pruningGap(teacher: t, masks: one, student: student).masked > 1e-4)
        }
    }

    /// Depth by layer type: the target keeps 2 of 3 Mamba2 layers and 1 of 2 MLP layers,
    /// attention whole; which ones by block importance among the layers of each type.
    @Test func depthByTypeEqualsSkipping() throws {
        let t = Self.teacher()
        let scores = Self.scores(t.config)
        let target = try Pruning.targetConfig(
            teacher: t.config, target: ["num_mamba_layers": 2, "num_mlp_layers": 1])
        #expect(target.numHiddenLayers == 4 && target.parameterCount < t.config.parameterCount)
        let plan = try Pruning.plan(teacher: t.config, target: target, scores: scores, options: PruneOptions())
        let mambas = [0, 3, 5], mlps = [1, 4]
        let keptMamba = ImportanceScores.ranking(mambas.map { scores.blockImportance[$0] }).prefix(2).map { mambas[$0] }
        let keptMLP = ImportanceScores.ranking(mlps.map { scores.blockImportance[$0] }).prefix(1).map { mlps[$0] }
        #expect(plan.layers == (keptMamba + keptMLP + [2]).sorted())
        let student = Pruning.apply(plan, teacher: t, target: target)
        #expect(student.config.hybridLayers == plan.layers.map { t.config.hybridLayers![$0] })
        #expect(student.config.parameterCount == target.parameterCount, "the count before the plan is exact")
        let skip = ForwardMasks(skipLayers: Set((0..<6).filter { !plan.layers.contains($0) }))
        #expect(try pruningGap(teacher: t, masks: skip, student: student).masked < 1e-5)
    }

    @Test func impossibleTargetsNameTheField() throws {
        let t = Self.teacher()
        func field(_ target: [String: JSON]) -> String {
            refusedField(target, teacher: t.config, scores: Self.scores(t.config))
        }
        #expect(field(["mamba_num_heads": 3]) == "mamba_num_heads") // not a multiple of the 2 groups
        #expect(field(["mamba_num_heads": 8]) == "mamba_num_heads")
        #expect(field(["mamba_head_dim": 5]) == "mamba_head_dim")
        #expect(field(["num_mamba_layers": 4]) == "num_mamba_layers")
        #expect(field(["num_hidden_layers": 4]) == "num_hidden_layers") // not an axis of a hybrid decoder
        var noScores = Self.scores(t.config)
        noScores.mambaChannels = nil
        let c = try Pruning.targetConfig(teacher: t.config, target: ["mamba_num_heads": 4])
        #expect(throws: ProxyError.self) {
            try Pruning.plan(teacher: t.config, target: c, scores: noScores, options: PruneOptions())
        }
    }
}
