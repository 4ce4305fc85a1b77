import Foundation
import Model
@testable import Proxy
import Testing

/// Issue 27, item 2: block variants cut from a homogeneous teacher, and their one-block
/// replacement scores.
struct HeterogeneousPruningTests {
    static func teacher() -> DecoderModel {
        let c = ModelConfig(family: .llama, vocabSize: 41, hiddenSize: 16, intermediateSize: 512, numHiddenLayers: 3,
                            numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 4, ropeTheta: 100, maxPositionEmbeddings: 64,
                            initializerRange: 0.3)
        let m = DecoderModel(config: c)
        m.initialize(seed: 9)
        return m
    }

    static func scores(_ c: ModelConfig) -> ImportanceScores {
        var rng = SeededGenerator(seed: 4)
        return ImportanceScores(
            teacherFingerprint: "t", calibrationFingerprint: "c", settings: ImportanceSettings(),
            heads: Array(repeating: Array(repeating: 1, count: c.numAttentionHeads), count: c.numHiddenLayers),
            neurons: (0..<c.numHiddenLayers).map { _ in (0..<c.intermediateSize).map { _ in Double(rng.next() % 10_000) } },
            channels: Array(repeating: 1, count: c.hiddenSize), blockImportance: [1, 1, 1], layerLossRise: [],
            baseValidationLoss: 0)
    }

    static let tokens: [Int32] = (0..<16).map { Int32(($0 * 7 + 1) % 41) }

    /// Every layer whole: the nemotron-nas student computes the teacher's logits.
    @Test func theTeachersOwnBlocksGiveTheTeacher() throws {
        let t = Self.teacher()
        let full = LayerVariant(keyValueGroups: 2, mlpWidth: 512)
        let s = try HeterogeneousPruning.prune(teacher: t, variants: [full, full, full], scores: Self.scores(t.config))
        #expect(s.config.family == .nemotronNAS && s.config.parameterCount == t.config.parameterCount)
        let a = Activations(config: t.config, batch: 1, sequence: 16), b = Activations(config: s.config, batch: 1, sequence: 16)
        try t.forward(tokens: Self.tokens, a)
        try s.forward(tokens: Self.tokens, b)
        #expect(Array(a.logits) == Array(b.logits))
    }

    /// Groups mean-pooled, neurons kept by importance, missing parts gone.
    @Test func variantsAreCutAsDescribed() throws {
        let t = Self.teacher(), scores = Self.scores(t.config)
        let variants = [LayerVariant(keyValueGroups: 1, mlpWidth: 256), LayerVariant(keyValueGroups: nil, mlpWidth: 512),
                        LayerVariant(keyValueGroups: 2, mlpWidth: nil)]
        let s = try HeterogeneousPruning.prune(teacher: t, variants: variants, scores: scores)
        let tk = t.tensor("model.layers.0.self_attn.k_proj.weight")!, sk = s.tensor("model.layers.0.self_attn.k_proj.weight")!
        #expect(sk.count == 4 * 16)
        for i in 0..<(4 * 16) { #expect(sk[i] == (tk[i] + tk[4 * 16 + i]) / 2) }
        let kept = Array(ImportanceScores.ranking(scores.neurons[0]).prefix(256)).sorted()
        let tu = t.tensor("model.layers.0.mlp.up_proj.weight")!, su = s.tensor("model.layers.0.mlp.up_proj.weight")!
        let td = t.tensor("model.layers.0.mlp.down_proj.weight")!, sd = s.tensor("model.layers.0.mlp.down_proj.weight")!
        for (i, n) in kept.enumerated() {
            #expect(Array(su[(i * 16)..<(i * 16 + 16)]) == Array(tu[(n * 16)..<(n * 16 + 16)]))
            #expect(sd[3 * 256 + i] == td[3 * 512 + n])
        }
        #expect(s.tensor("model.layers.1.self_attn.q_proj.weight") == nil && s.tensor("model.layers.1.input_layernorm.weight") == nil)
        #expect(s.tensor("model.layers.2.mlp.up_proj.weight") == nil)
        // Refused: groups that do not divide the teacher's, widths beyond it, a width the format cannot write.
        for (bad, field) in [(LayerVariant(keyValueGroups: 3, mlpWidth: 512), "block_configs[0].attention"),
                             (LayerVariant(keyValueGroups: 2, mlpWidth: 768), "block_configs[0].ffn")] {
            #expect { _ = try HeterogeneousPruning.prune(teacher: t, variants: [bad] + variants.dropFirst(), scores: scores) }
                throws: { "\($0)".contains(field) }
        }
        #expect { _ = try HeterogeneousPruning.prune(teacher: t, variants: [LayerVariant(keyValueGroups: 2, mlpWidth: 300)]
                                                         + variants.dropFirst(), scores: scores) } throws: { "\($0)".contains("ffn") }
    }

    /// One-block replacement: 0 for the teacher's own block, more for a block with less in it.
    @Test func replacementScoresGrowAsBlocksShrink() throws {
        let t = Self.teacher(), scores = Self.scores(t.config)
        let library = (0..<3).map { _ in
            [LayerVariant(keyValueGroups: 2, mlpWidth: 512), LayerVariant(keyValueGroups: 2, mlpWidth: 256),
             LayerVariant(keyValueGroups: nil, mlpWidth: nil)]
        }
        let calibration = CalibrationSet(tokens: (0..<24).map { Int32(($0 * 5 + 2) % 41) }, samples: 3, sequence: 8,
                                         languages: ["en", "en", "en"])
        var calls = 0
        let s = try BlockLibrary.replacementScores(teacher: t, variants: library, importance: scores, calibration: calibration,
                                                   batch: 2) { done, total in calls += 1; #expect(done <= total) }
        #expect(calls == 9)
        for l in 0..<3 {
            #expect(s[l][0] == 0)
            #expect(s[l][1] > 0 && s[l][2] > s[l][1], "layer \(l): \(s[l])")
        }
    }

    /// The streamed cut (``HeterogeneousPruning/write(teacher:variants:scores:trained:type:to:shardBytes:)``)
    /// from a float32 and a bfloat16 teacher, in its own dtype and converted, with and without
    /// locally distilled blocks: the same tensors, names, shapes and bytes as pruning the loaded
    /// teacher in memory and saving it; the config and the modeling files beside it.
    @Test func streamedWriteEqualsPruningInMemory() throws {
        let t = Self.teacher(), scores = Self.scores(t.config)
        let variants = [LayerVariant(keyValueGroups: 1, mlpWidth: 256), LayerVariant(keyValueGroups: nil, mlpWidth: 512),
                        LayerVariant(keyValueGroups: 2, mlpWidth: nil)]
        // Trained blocks for layers 0 and 2 (random values: only where they land is checked).
        var trained = BlockWeights(teacher: t.config)
        var rng = SeededGenerator(seed: 11)
        for l in [0, 2] {
            let n = ParameterLayout(config: LocalDistillation.blockConfig(teacher: t.config, variant: variants[l])).count
            trained.blocks[l, default: [:]][variants[l]] = (0..<n).map { _ in Float(rng.next() % 1000) / 1000 - 0.5 }
        }
        let root = try StreamingPruneTests.folder("heterogeneous")
        defer { try? FileManager.default.removeItem(at: root) }
        for stored in [StorageType.float32, .bfloat16] {
            let teacherDir = root.appendingPathComponent("teacher-\(stored.rawValue)")
            try Checkpoint.save(t, to: teacherDir, type: stored)
            let loaded = try Checkpoint.load(teacherDir), weights = try CheckpointWeights(teacherDir)
            for blocks in [nil, trained] {
                let student = try HeterogeneousPruning.prune(teacher: loaded, variants: variants, scores: scores, trained: blocks)
                for type in [nil, StorageType.bfloat16] {
                    let label = "\(stored.rawValue)-\(type?.rawValue ?? "own")-\(blocks == nil ? "pruned" : "trained")"
                    let streamed = root.appendingPathComponent("streamed-\(label)")
                    try HeterogeneousPruning.write(teacher: weights, variants: variants, scores: scores, trained: blocks,
                                                   type: type, to: streamed)
                    let inMemory = root.appendingPathComponent("memory-\(label)")
                    try Checkpoint.save(student, to: inMemory, type: type ?? stored)
                    let a = try StreamingPruneTests.tensors(streamed), b = try StreamingPruneTests.tensors(inMemory)
                    #expect(a.keys.sorted() == b.keys.sorted() && !a.isEmpty)
                    for (name, x) in a {
                        let y = b[name]!
                        #expect(x.0 == y.0 && x.1 == y.1 && x.2 == y.2, "\(label): \(name)")
                    }
                    #expect(try ModelConfig.load(streamed.appendingPathComponent("config.json")) == student.config)
                    for file in ["configuration_decilm.py", "modeling_decilm.py"] {
                        #expect(FileManager.default.fileExists(atPath: streamed.appendingPathComponent(file).path))
                    }
                }
            }
            // The trained blocks are what lands in their layers: the streamed student differs from
            // the pruned one in layers 0 and 2 only.
            let pruned = try Checkpoint.load(root.appendingPathComponent("streamed-\(stored.rawValue)-own-pruned"))
            let withBlocks = try Checkpoint.load(root.appendingPathComponent("streamed-\(stored.rawValue)-own-trained"))
            for e in pruned.layout.entries {
                let same = Array(pruned.tensor(e.name)!) == Array(withBlocks.tensor(e.name)!)
                #expect(same == (e.layer == nil || e.layer == 1), "\(e.name)")
            }
        }
        // A variant the teacher cannot take is refused before anything is written.
        let bad = root.appendingPathComponent("bad")
        #expect { try HeterogeneousPruning.write(teacher: try CheckpointWeights(root.appendingPathComponent("teacher-float32")),
                                                 variants: [LayerVariant(keyValueGroups: 3, mlpWidth: 512)] + variants.dropFirst(),
                                                 scores: scores, to: bad) } throws: { "\($0)".contains("block_configs[0].attention") }
        #expect(!FileManager.default.fileExists(atPath: bad.path))
    }
}
