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
            do {
                let c = try Pruning.targetConfig(teacher: t.config, target: target)
                _ = try Pruning.plan(teacher: t.config, target: c, scores: randomScores(t.config), options: PruneOptions())
                return "accepted"
            } catch let ProxyError.invalidTarget(field, _) { return field } catch { return "\(error)" }
        }
        #expect(field(["num_deltanet_layers": 4]) == "num_deltanet_layers")
        #expect(field(["num_attention_layers": 2]) == "num_attention_layers")
        #expect(field(["num_hidden_layers": 3]) == "num_hidden_layers")
        #expect(field(["mamba_num_heads": 2]) == "mamba_num_heads")
        #expect(field(["linear_num_value_heads": 3]) == "linear_num_value_heads")
        #expect(field(["linear_num_value_heads": 6]) == "linear_num_value_heads")
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
