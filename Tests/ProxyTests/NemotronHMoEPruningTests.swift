import Foundation
import Model
import Proxy
import Testing

/// Issue 26, item 3: Nemotron-H's mixture blocks pruned — routed experts (the same number from
/// each router group, with their rows of the router and of the correction bias), each kept
/// expert's neurons, the shared expert's neurons, and mixture layers as a depth type — each equal
/// to the teacher run with the same units masked.
@Suite struct NemotronHMoEPruningTests {
    /// Mamba2, MoE, attention, MoE, MLP: 6 squared-ReLU experts of 5 in 2 groups (the best group
    /// kept, top 2), a shared expert of 7; `latent`: the experts in a latent width.
    static func teacher(latent: Int?, seed: UInt64 = 4) -> DecoderModel {
        var c = ModelConfig(
            family: .nemotronH, vocabSize: 31, hiddenSize: 24, intermediateSize: 20, numHiddenLayers: 5,
            numAttentionHeads: 6, numKeyValueHeads: 3, headDim: 4, maxPositionEmbeddings: 64, initializerRange: 0.3,
            numLocalExperts: 6, numExpertsPerTok: 2, moeIntermediateSize: 5, normTopKProb: true)
        c.hybridLayers = [.mamba, .moe, .attention, .moe, .mlp]
        c.mamba = MambaShape(heads: 4, headDim: 4, groups: 2, stateSize: 5, convKernel: 3)
        c.mambaChunkSize = 4
        c.moeSharedExpertIntermediateSize = 7
        c.moeLatentSize = latent
        c.routerGroups = 2
        c.routedScalingFactor = 1.5
        return initializedWithRandomNorms(c, seed: seed)
    }

    /// Random scores with the mixture's: neurons e·5 + i of the routed experts then 30 + i of the
    /// shared one in mixture layers, the MLP's 20 elsewhere.
    static func scores(_ c: ModelConfig, seed: UInt64 = 9) -> ImportanceScores {
        var s = randomScores(c, seed: seed)
        var rng = SeededGenerator(seed: seed + 1)
        func r(_ n: Int) -> [Double] { (0..<n).map { _ in rng.uniform() } }
        s.neurons = c.hybridLayers!.map { $0 == .moe ? r(6 * 5 + 7) : r(20) }
        s.mlpExperts = ExpertScores(
            frequency: (0..<5).map { _ in r(6) }, gatedOutputNorm: (0..<5).map { _ in r(6) }, frequencyByLanguage: [:])
        s.mambaChannels = c.hybridLayers!.map { $0 == .mamba ? r(c.mamba!.innerWidth) : [] }
        return s
    }

    @Test(arguments: [nil, 10] as [Int?])
    func pruningToOwnShapeIsIdentity(_ latent: Int?) throws {
        let t = Self.teacher(latent: latent)
        let s = try Pruning.prune(teacher: t, to: t.config, scores: Self.scores(t.config))
        #expect(s.config == t.config)
        #expect(s.parameters.array == t.parameters.array)
    }

    @Test(arguments: [nil, 10] as [Int?])
    func expertsNeuronsAndSharedExpertEqualMasking(_ latent: Int?) throws {
        let t = Self.teacher(latent: latent), c = t.config
        let scores = Self.scores(c)
        let target = try Pruning.targetConfig(
            teacher: c,
            target: ["n_routed_experts": 4, "moe_intermediate_size": 3, "moe_shared_expert_intermediate_size": 4])
        let plan = try Pruning.plan(teacher: c, target: target, scores: scores, options: PruneOptions())
        var masks = ForwardMasks()
        for l in [1, 3] {
            // Two of the three experts of each group, by score within the group.
            let byExpert = scores.mlpExperts!.gatedOutputNorm[l]
            let best = [0, 3].flatMap { g in ImportanceScores.ranking(Array(byExpert[g..<(g + 3)])).prefix(2).map { g + $0 } }
            #expect(plan.experts[l] == best.sorted(), "layer \(l): \(plan.experts[l])")
            masks.experts[l] = (0..<6).filter { !plan.experts[l].contains($0) }
            masks.neurons[l] = plan.experts[l].enumerated().flatMap { ne, e in
                (0..<5).filter { !plan.expertNeurons[l][ne].contains($0) }.map { e * 5 + $0 }
            } + (0..<7).filter { !plan.sharedNeurons[l].contains($0) }.map { 30 + $0 }
        }
        #expect(plan.experts[0].isEmpty && plan.experts[4].isEmpty)
        let student = Pruning.apply(plan, teacher: t, target: target)
        #expect(student.config.numLocalExperts == 4 && student.config.sharedExpertWidth == 4)
        #expect(student.config.parameterCount == student.layout.parameterCount)
        let X = latent ?? 24
        #expect(student.layout.entry("backbone.layers.3.mixer.experts.3.up_proj.weight")?.shape == [3, X])
        #expect(student.layout.entry("backbone.layers.1.mixer.gate.e_score_correction_bias")?.shape == [4])
        #expect(student.layout.entry("backbone.layers.1.mixer.shared_experts.down_proj.weight")?.shape == [24, 4])
        // The kept experts' correction biases travel with them.
        let bias = t.tensor("backbone.layers.1.mixer.gate.e_score_correction_bias")!
        #expect(Array(student.tensor("backbone.layers.1.mixer.gate.e_score_correction_bias")!) == plan.experts[1].map { bias[$0] })
        try expectPrunedEqualsMaskedWithSharedExpert(teacher: t, masks: masks, student: student, firstShared: 30)
    }

    /// Mixture layers are a depth type: one of the two kept, by block importance, equal to skipping.
    @Test func mixtureLayersAsDepthEqualSkipping() throws {
        let t = Self.teacher(latent: nil), c = t.config
        let scores = Self.scores(c)
        let target = try Pruning.targetConfig(teacher: c, target: ["num_moe_layers": 1])
        let plan = try Pruning.plan(teacher: c, target: target, scores: scores, options: PruneOptions())
        let kept = scores.blockImportance[1] >= scores.blockImportance[3] ? 1 : 3
        #expect(plan.layers == [0, kept, 2, 4].sorted())
        let student = Pruning.apply(plan, teacher: t, target: target)
        #expect(student.config.parameterCount == target.parameterCount)
        let skip = ForwardMasks(skipLayers: [kept == 1 ? 3 : 1])
        #expect(try pruningGap(teacher: t, masks: skip, student: student).masked < 1e-5)
    }

    @Test func impossibleTargetsNameTheField() throws {
        let c = Self.teacher(latent: 10).config
        func field(_ target: [String: JSON]) -> String { refusedField(target, teacher: c, scores: Self.scores(c)) }
        #expect(field(["n_routed_experts": 8]) == "n_routed_experts")
        #expect(field(["n_routed_experts": 5]) == "n_group")  // not the same number from each group
        #expect(field(["n_routed_experts": 2, "num_experts_per_tok": 2]) == "n_group")  // groups of 1
        #expect(field(["moe_shared_expert_intermediate_size": 9]) == "moe_shared_expert_intermediate_size")
        #expect(field(["num_moe_layers": 3]) == "num_moe_layers")
    }
}
