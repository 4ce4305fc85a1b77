import Foundation
import Model
import Proxy
import Testing

/// Issue 26, item 3: structured pruning of a Qwen3.5 teacher — gated attention heads (each head's
/// queries and gate rows go together) and key/value groups, MLP neurons on DeltaNet and attention
/// layers, and depth by layer type — each equal to the teacher run with the same units masked.
@Suite struct Qwen35PruningTests {
    /// DeltaNet, attention, DeltaNet, DeltaNet: 2 key heads of 4 serving 4 value heads of 3,
    /// chunks of 4; attention 6 heads over 3 groups with half of each head rotating.
    static func teacher(seed: UInt64 = 4) -> DecoderModel {
        var c = ModelConfig(
            family: .qwen35, vocabSize: 31, hiddenSize: 24, intermediateSize: 20, numHiddenLayers: 4,
            numAttentionHeads: 6, numKeyValueHeads: 3, headDim: 4, partialRotaryFactor: 0.5,
            maxPositionEmbeddings: 64, initializerRange: 0.3)
        c.hybridLayers = [.deltaNet, .attention, .deltaNet, .deltaNet]
        c.deltaNet = DeltaNetShape(keyHeads: 2, valueHeads: 4, keyDim: 4, valueDim: 3, convKernel: 3)
        c.deltaNetChunkSize = 4
        return initializedWithRandomNorms(c, seed: seed)
    }

    @Test func pruningToOwnShapeIsIdentity() throws {
        let t = Self.teacher()
        let s = try Pruning.prune(teacher: t, to: t.config, scores: randomScores(t.config))
        #expect(s.config == t.config)
        #expect(s.parameters.array == t.parameters.array)
    }

    @Test func gatedAttentionHeadsAndNeuronsEqualMasking() throws {
        let t = Self.teacher()
        let target = try Pruning.targetConfig(
            teacher: t.config, target: ["num_attention_heads": 3, "intermediate_size": 13])
        let plan = try Pruning.plan(
            teacher: t.config, target: target, scores: randomScores(t.config), options: PruneOptions())
        #expect(plan.layers == Array(0..<4))
        var masks = ForwardMasks()
        for l in 0..<4 {
            if t.config.hybridLayers![l] == .attention { masks.heads[l] = (0..<6).filter { !plan.heads[l].contains($0) } }
            masks.neurons[l] = (0..<20).filter { !plan.neurons[l].contains($0) }
        }
        let student = Pruning.apply(plan, teacher: t, target: target)
        #expect(student.config.parameterCount == student.layout.count)
        #expect(student.layout.entry("model.layers.1.self_attn.q_proj.weight")?.shape == [2 * 3 * 4, 24])
        let gap = try pruningGap(teacher: t, masks: masks, student: student)
        #expect(gap.masked < 1e-5, "max |Δlogit| \(gap.masked)")
        #expect(gap.unmasked > 1e-3, "the pruning changed nothing (\(gap.unmasked))")
        var headsOnly = masks
        headsOnly.neurons = [:]
        #expect(try pruningGap(teacher: t, masks: headsOnly, student: student).masked > 1e-4)
    }

    /// DeltaNet value heads: one of the two under each key head, by score; pruned = masked.
    @Test func deltaNetValueHeadsEqualMasking() throws {
        let t = Self.teacher()
        var scores = randomScores(t.config)
        var rng = SeededGenerator(seed: 12)
        scores.deltaNetHeads = t.config.hybridLayers!.map { $0 == .deltaNet ? (0..<4).map { _ in rng.uniform() } : [] }
        let target = try Pruning.targetConfig(teacher: t.config, target: ["linear_num_value_heads": 2])
        let plan = try Pruning.plan(teacher: t.config, target: target, scores: scores, options: PruneOptions())
        var masks = ForwardMasks()
        for l in [0, 2, 3] {
            let kept = plan.deltaNetHeads[l]
            #expect(kept.count == 2 && kept.filter { $0 < 2 }.count == 1, "layer \(l): \(kept)")
            let best = [0, 2].map { k in scores.deltaNetHeads![l][k] >= scores.deltaNetHeads![l][k + 1] ? k : k + 1 }
            #expect(kept == best)
            masks.deltaNetHeads[l] = (0..<4).filter { !kept.contains($0) }
        }
        let student = Pruning.apply(plan, teacher: t, target: target)
        #expect(student.config.deltaNet?.valueHeads == 2 && student.layout.count == student.config.parameterCount)
        let gap = try pruningGap(teacher: t, masks: masks, student: student)
        #expect(gap.masked < 1e-5, "max |Δlogit| \(gap.masked)")
        #expect(gap.unmasked > 1e-3, "the pruning changed nothing (\(gap.unmasked))")
        // Without the scores the plan is refused, naming the axis.
        scores.deltaNetHeads = nil
        #expect(throws: ProxyError.self) {
            try Pruning.plan(teacher: t.config, target: target, scores: scores, options: PruneOptions())
        }
    }

    /// Depth by layer type: the target keeps 2 of 3 DeltaNet layers and the attention layer;
    /// which by block importance among the DeltaNet layers.
    @Test func depthByTypeEqualsSkipping() throws {
        let t = Self.teacher()
        let scores = randomScores(t.config)
        let target = try Pruning.targetConfig(teacher: t.config, target: ["num_deltanet_layers": 2])
        #expect(target.numHiddenLayers == 3 && target.parameterCount < t.config.parameterCount)
        let plan = try Pruning.plan(teacher: t.config, target: target, scores: scores, options: PruneOptions())
        let deltas = [0, 2, 3]
        let kept = ImportanceScores.ranking(deltas.map { scores.blockImportance[$0] }).prefix(2).map { deltas[$0] }
        #expect(plan.layers == (kept + [1]).sorted())
        let student = Pruning.apply(plan, teacher: t, target: target)
        #expect(student.config.hybridLayers == plan.layers.map { t.config.hybridLayers![$0] })
        #expect(student.config.parameterCount == target.parameterCount)
        let skip = ForwardMasks(skipLayers: Set((0..<4).filter { !plan.layers.contains($0) }))
        #expect(try pruningGap(teacher: t, masks: skip, student: student).masked < 1e-5)
    }

    @Test func impossibleTargetsNameTheField() throws {
        let t = Self.teacher()
        func field(_ target: [String: JSON]) -> String {
            refusedField(target, teacher: t.config, scores: randomScores(t.config))
        }
        #expect(field(["num_deltanet_layers": 4]) == "num_deltanet_layers")
        #expect(field(["num_attention_layers": 2]) == "num_attention_layers")
        #expect(field(["num_hidden_layers": 3]) == "num_hidden_layers")
        #expect(field(["mamba_num_heads": 2]) == "mamba_num_heads")
        #expect(field(["linear_num_value_heads": 3]) == "linear_num_value_heads")
        #expect(field(["linear_num_value_heads": 6]) == "linear_num_value_heads")
    }

    /// Qwen3.5-MoE: DeltaNet, attention, DeltaNet, each followed by 5 experts of 8 (top 2) and a
    /// shared expert of 14. Removing experts, neurons inside the kept experts, shared-expert
    /// neurons and DeltaNet value heads equals the teacher with those experts' router logits at
    /// −∞ and the rest masked.
    /// DeltaNet key heads: one of the two kept (by the summed scores of its value heads) with its
    /// queries, keys and value heads; pruned = the teacher with the other key head's value heads
    /// masked. Value heads per key head may not grow.
    @Test func deltaNetKeyHeadsEqualMasking() throws {
        let t = Self.teacher()
        var scores = randomScores(t.config)
        var rng = SeededGenerator(seed: 14)
        scores.deltaNetHeads = t.config.hybridLayers!.map { $0 == .deltaNet ? (0..<4).map { _ in rng.uniform() } : [] }
        let target = try Pruning.targetConfig(
            teacher: t.config, target: ["linear_num_key_heads": 1, "linear_num_value_heads": 2])
        let plan = try Pruning.plan(teacher: t.config, target: target, scores: scores, options: PruneOptions())
        var masks = ForwardMasks()
        for l in [0, 2, 3] {
            let s = scores.deltaNetHeads![l], best = s[0] + s[1] >= s[2] + s[3] ? 0 : 1
            #expect(plan.deltaNetKeyHeads[l] == [best] && plan.deltaNetHeads[l] == [2 * best, 2 * best + 1])
            masks.deltaNetHeads[l] = [2 * (1 - best), 2 * (1 - best) + 1]
        }
        let student = Pruning.apply(plan, teacher: t, target: target)
        let d = try #require(student.config.deltaNet)
        #expect(d.keyHeads == 1 && d.valueHeads == 2 && student.layout.count == student.config.parameterCount)
        #expect(student.layout.entry("model.layers.0.linear_attn.in_proj_qkv.weight")?.shape == [2 * 4 + 2 * 3, 24])
        let gap = try pruningGap(teacher: t, masks: masks, student: student)
        #expect(gap.masked < 1e-5, "max |Δlogit| \(gap.masked)")
        #expect(gap.unmasked > 1e-3, "the pruning changed nothing (\(gap.unmasked))")
        // One key head cannot hold three value heads: the teacher's hold two.
        let wide = try Pruning.targetConfig(teacher: t.config, target: ["linear_num_key_heads": 1, "linear_num_value_heads": 3])
        #expect(throws: ProxyError.self) {
            try Pruning.plan(teacher: t.config, target: wide, scores: scores, options: PruneOptions())
        }
    }

    /// DeltaNet value channels (`linear_value_head_dim`): the same 2 of 3 kept in every value head,
    /// by their scores summed over the heads; pruned = the teacher with the third masked (it leaves
    /// the gated norm's mean, as a pruned channel does). With value heads pruned too.
    @Test func deltaNetValueChannelsEqualMasking() throws {
        let t = Self.teacher()
        var scores = randomScores(t.config)
        var rng = SeededGenerator(seed: 15)
        let types = t.config.hybridLayers!
        scores.deltaNetHeads = types.map { $0 == .deltaNet ? (0..<4).map { _ in rng.uniform() } : [] }
        scores.deltaNetChannels = types.map { $0 == .deltaNet ? (0..<12).map { _ in rng.uniform() } : [] }
        for target: [String: JSON] in [["linear_value_head_dim": 2], ["linear_value_head_dim": 2, "linear_num_value_heads": 2]] {
            let c = try Pruning.targetConfig(teacher: t.config, target: target)
            let plan = try Pruning.plan(teacher: t.config, target: c, scores: scores, options: PruneOptions())
            var masks = ForwardMasks()
            for l in [0, 2, 3] {
                let heads = plan.deltaNetHeads[l], byChannel = scores.deltaNetChannels![l]
                let score = (0..<3).map { j in heads.reduce(0) { $0 + byChannel[$1 * 3 + j] } }
                #expect(plan.deltaNetChannels[l] == Array(ImportanceScores.ranking(score).prefix(2)).sorted())
                masks.deltaNetChannels[l] = (0..<3).filter { !plan.deltaNetChannels[l].contains($0) }
                masks.deltaNetHeads[l] = (0..<4).filter { !heads.contains($0) }
            }
            let student = Pruning.apply(plan, teacher: t, target: c)
            #expect(student.config.deltaNet?.valueDim == 2 && student.layout.count == student.config.parameterCount)
            #expect(student.layout.entry("model.layers.0.linear_attn.norm.weight")?.shape == [2])
            let gap = try pruningGap(teacher: t, masks: masks, student: student)
            #expect(gap.masked < 1e-5, "\(target): max |Δlogit| \(gap.masked)")
            #expect(gap.unmasked > 1e-3, "the pruning changed nothing (\(gap.unmasked))")
        }
        // Without the channel scores the plan is refused, naming the axis.
        scores.deltaNetChannels = nil
        let c = try Pruning.targetConfig(teacher: t.config, target: ["linear_value_head_dim": 2])
        let error = #expect(throws: ProxyError.self) {
            try Pruning.plan(teacher: t.config, target: c, scores: scores, options: PruneOptions())
        }
        #expect("\(String(describing: error))".contains("linear_value_head_dim"))
    }

    @Test func expertsSharedExpertAndValueHeadsEqualMasking() throws {
        var c = ModelConfig(
            family: .qwen35Moe, vocabSize: 31, hiddenSize: 24, intermediateSize: 14, numHiddenLayers: 3,
            numAttentionHeads: 6, numKeyValueHeads: 3, headDim: 4, partialRotaryFactor: 0.5,
            maxPositionEmbeddings: 64, initializerRange: 0.3, numLocalExperts: 5, numExpertsPerTok: 2,
            moeIntermediateSize: 8, normTopKProb: true)
        c.hybridLayers = [.deltaNet, .attention, .deltaNet]
        c.deltaNet = DeltaNetShape(keyHeads: 2, valueHeads: 4, keyDim: 4, valueDim: 3, convKernel: 3)
        c.deltaNetChunkSize = 4
        let t = initializedWithRandomNorms(c, seed: 8)
        var scores = randomScores(c)
        var rng = SeededGenerator(seed: 13)
        func r(_ n: Int) -> [Double] { (0..<n).map { _ in rng.uniform() } }
        // Neuron ids: expert e's neuron i is e·8 + i, then the shared expert's (40 + i).
        scores.neurons = (0..<3).map { _ in r(5 * 8 + 14) }
        scores.mlpExperts = ExpertScores(
            frequency: (0..<3).map { _ in r(5) }, gatedOutputNorm: (0..<3).map { _ in r(5) }, frequencyByLanguage: [:])
        scores.deltaNetHeads = c.hybridLayers!.map { $0 == .deltaNet ? r(4) : [] }
        let target = try Pruning.targetConfig(
            teacher: c,
            target: [
                "num_experts": 3, "moe_intermediate_size": 5, "shared_expert_intermediate_size": 9,
                "linear_num_value_heads": 2
            ])
        let plan = try Pruning.plan(teacher: c, target: target, scores: scores, options: PruneOptions())
        var masks = ForwardMasks()
        for l in 0..<3 {
            #expect(plan.experts[l] == Array(ImportanceScores.ranking(scores.mlpExperts!.gatedOutputNorm[l]).prefix(3)).sorted())
            #expect(plan.sharedNeurons[l] == Array(ImportanceScores.ranking(Array(scores.neurons[l][40...])).prefix(9)).sorted())
            masks.experts[l] = (0..<5).filter { !plan.experts[l].contains($0) }
            masks.neurons[l] = plan.experts[l].enumerated().flatMap { ne, e in
                (0..<8).filter { !plan.expertNeurons[l][ne].contains($0) }.map { e * 8 + $0 }
            } + (0..<14).filter { !plan.sharedNeurons[l].contains($0) }.map { 40 + $0 }
            if c.hybridLayers![l] == .deltaNet { masks.deltaNetHeads[l] = (0..<4).filter { !plan.deltaNetHeads[l].contains($0) } }
        }
        let student = Pruning.apply(plan, teacher: t, target: target)
        #expect(student.config.parameterCount == student.layout.count)
        #expect(student.layout.entry("model.layers.0.mlp.shared_expert.down_proj.weight")?.shape == [24, 9])
        #expect(student.layout.entry("model.layers.2.mlp.experts.2.gate_proj.weight")?.shape == [5, 24])
        try expectPrunedEqualsMaskedWithSharedExpert(teacher: t, masks: masks, student: student, firstShared: 40)
        // Scores without the shared expert's neurons are refused by name.
        scores.neurons = (0..<3).map { _ in r(5 * 8) }
        let error = #expect(throws: ProxyError.self) {
            try Pruning.plan(teacher: c, target: target, scores: scores, options: PruneOptions())
        }
        #expect("\(String(describing: error))".contains("shared_expert_intermediate_size"))
    }

    /// The teacher's fingerprint streamed from its files equals the loaded model's, whose norms
    /// hold 1 + w (a search records one and export checks the other).
    @Test func streamedFingerprintEqualsTheLoadedModels() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qwen35-fingerprint-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let t = Self.teacher()
        try Checkpoint.save(t, to: dir, type: .bfloat16)
        let loaded = try Checkpoint.load(dir)
        #expect(Fingerprint.of(loaded) == (try Fingerprint.of(CheckpointWeights(dir))))
    }
}
