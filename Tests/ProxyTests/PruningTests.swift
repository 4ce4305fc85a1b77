import Foundation
import Model
import Proxy
import Testing

func teacherModel(_ family: Family = .llama, seed: UInt64 = 1) -> DecoderModel {
    // Mistral windows every layer, qwen2 layers 1 and 3 (windows shorter than the 8-token samples).
    let window: Int? = family == .mistral ? 3 : (family == .qwen2 ? 5 : nil)
    let c = ModelConfig(family: family, vocabSize: 31, hiddenSize: 24, intermediateSize: 20, numHiddenLayers: 4,
                        numAttentionHeads: 6, numKeyValueHeads: 3, headDim: 4, ropeTheta: 100,
                        partialRotaryFactor: family == .nemotron ? 0.5 : 1, maxPositionEmbeddings: 64, initializerRange: 0.3,
                        slidingWindow: window, slidingLayers: family == .qwen2 ? [1, 3] : nil)
    return initializedWithRandomNorms(c, seed: seed)
}

/// A model initialised from `seed` with random norm weights and biases.
func initializedWithRandomNorms(_ c: ModelConfig, seed: UInt64) -> DecoderModel {
    let m = DecoderModel(config: c)
    m.initialize(seed: seed)
    var rng = SeededGenerator(seed: seed + 100)
    for e in m.layout.entries where e.shape.count == 1 {
        let p = m.tensor(e.name)!
        for i in 0..<p.count { p[i] += Float(0.2 * rng.normal()) }
    }
    return m
}

/// Random but fixed importance scores for a teacher.
func randomScores(_ c: ModelConfig, seed: UInt64 = 9) -> ImportanceScores {
    var rng = SeededGenerator(seed: seed)
    func r(_ n: Int) -> [Double] { (0..<n).map { _ in rng.uniform() } }
    return ImportanceScores(teacherFingerprint: "", calibrationFingerprint: "", settings: ImportanceSettings(),
                            heads: (0..<c.numHiddenLayers).map { _ in r(c.numAttentionHeads) },
                            neurons: (0..<c.numHiddenLayers).map { _ in r(c.intermediateSize) },
                            channels: r(c.hiddenSize), blockImportance: r(c.numHiddenLayers),
                            layerLossRise: r(c.numHiddenLayers), baseValidationLoss: 0)
}

func logits(_ m: DecoderModel, _ tokens: [Int32], B: Int, T: Int) throws -> [Float] {
    let acts = Activations(config: m.config, batch: B, sequence: T)
    try m.forward(tokens: tokens, acts)
    return Array(acts.logits)
}

let sampleTokens: [Int32] = [3, 17, 5, 29, 0, 11, 8, 2, 30, 14, 6, 1, 21, 9, 12, 4]

/// The field an impossible prune target is refused by ("accepted" when it plans).
func refusedField(_ target: [String: JSON], teacher c: ModelConfig, scores: ImportanceScores) -> String {
    do {
        let t = try Pruning.targetConfig(teacher: c, target: target)
        _ = try Pruning.plan(teacher: c, target: t, scores: scores, options: PruneOptions())
        return "accepted"
    } catch let ProxyError.invalidTarget(field, _) { return field } catch { return "\(error)" }
}

/// A mixture student with a shared expert against its masked teacher: pruned = masked (< 1e-5),
/// the masks change the logits, and the shared expert's masks (neuron ids from `firstShared`)
/// matter on their own.
func expectPrunedEqualsMaskedWithSharedExpert(
    teacher t: DecoderModel, masks: ForwardMasks, student: DecoderModel, firstShared: Int
) throws {
    let gap = try pruningGap(teacher: t, masks: masks, student: student)
    #expect(gap.masked < 1e-5, "max |Δlogit| \(gap.masked)")
    #expect(gap.unmasked > 1e-3, "the pruning changed nothing (\(gap.unmasked))")
    var withoutShared = masks
    withoutShared.neurons = masks.neurons.mapValues { $0.filter { $0 < firstShared } }
    #expect(try pruningGap(teacher: t, masks: withoutShared, student: student).masked > 1e-4)
}

/// Largest |Δlogit| on `sampleTokens` between `student` and the teacher run with `masks`
/// (`masked`), and with no masks (`unmasked`: shows whether masking changed anything). The
/// teacher's masks are cleared afterwards.
func pruningGap(teacher t: DecoderModel, masks: ForwardMasks, student: DecoderModel) throws -> (masked: Float, unmasked: Float) {
    defer { t.masks = ForwardMasks() }
    let pruned = try logits(student, sampleTokens, B: 2, T: 8)
    func gap() throws -> Float { zip(try logits(t, sampleTokens, B: 2, T: 8), pruned).map { abs($0 - $1) }.max()! }
    t.masks = masks
    let masked = try gap()
    t.masks = ForwardMasks()
    return (masked, try gap())
}

@Suite struct PruningTests {
    @Test(arguments: [Family.llama, .nemotron, .qwen2, .qwen3, .mistral])
    func pruningToOwnShapeIsIdentity(_ family: Family) throws {
        let t = teacherModel(family)
        let s = try Pruning.prune(teacher: t, to: t.config, scores: randomScores(t.config))
        #expect(s.config == t.config)
        #expect(s.parameters.array == t.parameters.array)
    }

    @Test(arguments: [Family.llama, .nemotron, .qwen2, .qwen3, .mistral])
    func headAndNeuronPruningEqualsMasking(_ family: Family) throws {
        let t = teacherModel(family)
        var target = t.config
        target.numAttentionHeads = 3   // one of two heads in each of the three groups
        target.intermediateSize = 13
        let scores = randomScores(t.config)
        let plan = try Pruning.plan(teacher: t.config, target: target, scores: scores, options: PruneOptions())
        #expect(plan.layers == [0, 1, 2, 3] && plan.channels == Array(0..<24))
        for heads in plan.heads { #expect(Set(heads.map { $0 / 2 }) == [0, 1, 2], "one head kept per group: \(heads)") }
        let student = Pruning.apply(plan, teacher: t, target: target)
        var masks = ForwardMasks()
        for l in 0..<4 {
            masks.heads[l] = (0..<6).filter { !plan.heads[l].contains($0) }
            masks.neurons[l] = (0..<20).filter { !plan.neurons[l].contains($0) }
        }
        let err = try pruningGap(teacher: t, masks: masks, student: student).masked
        #expect(err < 1e-5, "max |Δlogit| \(err)")
    }

    @Test func wholeGroupPruningEqualsMaskingTheGroup() throws {
        let t = teacherModel()
        var target = t.config
        target.numKeyValueHeads = 2
        target.numAttentionHeads = 4
        let plan = try Pruning.plan(teacher: t.config, target: target, scores: randomScores(t.config), options: PruneOptions())
        #expect(plan.groups[0].count == 2)
        let student = Pruning.apply(plan, teacher: t, target: target)
        var masks = ForwardMasks()
        for l in 0..<4 { masks.heads[l] = (0..<6).filter { !plan.heads[l].contains($0) } }
        #expect(try pruningGap(teacher: t, masks: masks, student: student).masked < 1e-5)
    }

    /// A teacher's rope scaling and its passthrough keys go through pruning unchanged: the
    /// student keeps them (and its config writes them back), and equals the teacher with the
    /// pruned units masked — under the scaled frequencies.
    @Test(arguments: [RopeScaling(kind: .llama3, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 4),
                      RopeScaling(kind: .yarn, factor: 4, originalMaxPositionEmbeddings: 4),
                      RopeScaling(kind: .dynamic, factor: 2), RopeScaling(kind: .linear, factor: 3)])
    func ropeScalingAndMetadataSurvivePruning(_ rope: RopeScaling) throws {
        var c = teacherModel().config
        c.rope = rope
        c.maxPositionEmbeddings = 6
        c.passthrough.keys = ["unk_token_id": 0, "rope_interleaved": false]
        c.passthrough.unknown = ["rope_interleaved"]
        let t = initializedWithRandomNorms(c, seed: 3)
        var target = t.config
        target.numHiddenLayers -= 1
        target.intermediateSize -= 4
        let scores = randomScores(t.config)
        let plan = try Pruning.plan(teacher: t.config, target: target, scores: scores, options: PruneOptions())
        let student = Pruning.apply(plan, teacher: t, target: target)
        #expect(student.config.rope == rope && student.config.passthrough == c.passthrough)
        let written = student.config.json
        #expect(written["rope_parameters"]?["rope_type"]?.string == rope.kind.rawValue && written["rope_interleaved"] == .bool(false))
        #expect(try ModelConfig.decode(written.data()) == student.config)
        var masks = ForwardMasks(skipLayers: Set(0..<t.config.numHiddenLayers).subtracting(plan.layers))
        for (i, l) in plan.layers.enumerated() {
            masks.neurons[l] = (0..<t.config.intermediateSize).filter { !plan.neurons[i].contains($0) }
        }
        let gap = try pruningGap(teacher: t, masks: masks, student: student)
        #expect(gap.masked < 1e-5, "max |Δlogit| \(gap.masked) with \(rope.kind.rawValue) scaling")
    }

    /// Depth pruning keeps each layer's attention window: qwen2's sliding layers 1 and 3 stay
    /// sliding wherever they land, and the student equals the teacher with the other layers skipped.
    @Test func slidingLayersFollowTheirLayers() throws {
        let t = teacherModel(.qwen2)
        var target = t.config
        target.numHiddenLayers = 2
        var scores = randomScores(t.config)
        scores.blockImportance = [0.1, 0.9, 0.8, 0.2]   // keeps layers 1 and 2
        let plan = try Pruning.plan(teacher: t.config, target: target, scores: scores, options: PruneOptions())
        #expect(plan.layers == [1, 2])
        let student = Pruning.apply(plan, teacher: t, target: target)
        #expect(student.config.slidingLayers == [0] && student.config.window(layer: 0) == 5 && student.config.window(layer: 1) == nil)
        let gap = try pruningGap(teacher: t, masks: ForwardMasks(skipLayers: [0, 3]), student: student)
        #expect(gap.masked < 1e-5, "max |Δlogit| \(gap.masked)")
        // The windows matter on these samples: the same student without them differs.
        var full = student.config
        full.slidingWindow = nil
        full.slidingLayers = []
        let unwindowed = DecoderModel(config: full)
        unwindowed.parameters.pointer.update(from: student.parameters.pointer, count: student.parameters.count)
        let a = try logits(student, sampleTokens, B: 2, T: 8), b = try logits(unwindowed, sampleTokens, B: 2, T: 8)
        #expect(zip(a, b).map { abs($0 - $1) }.max()! > 1e-3)
    }

    @Test(arguments: [false, true])
    func layerPruningEqualsSkipping(_ contiguous: Bool) throws {
        let t = teacherModel(.nemotron)
        var target = t.config
        target.numHiddenLayers = 2
        var options = PruneOptions()
        options.contiguousLayers = contiguous
        options.layerMetric = .lossRise
        let scores = randomScores(t.config)
        let plan = try Pruning.plan(teacher: t.config, target: target, scores: scores, options: options)
        if contiguous { #expect(plan.layers == [0, 1] || plan.layers == [0, 3] || plan.layers == [2, 3]) }
        else { #expect(plan.layers == ImportanceScores.ranking(scores.layerLossRise).prefix(2).sorted()) }
        let student = Pruning.apply(plan, teacher: t, target: target)
        let skip = ForwardMasks(skipLayers: Set((0..<4).filter { !plan.layers.contains($0) }))
        #expect(try pruningGap(teacher: t, masks: skip, student: student).masked < 1e-5)
    }

    @Test func badTargetsNameTheField() throws {
        let t = teacherModel()
        func field(_ edit: (inout ModelConfig) -> Void) -> String {
            var c = t.config
            edit(&c)
            do { _ = try Pruning.prune(teacher: t, to: c, scores: randomScores(t.config)); return "no error" } catch { return "\(error)" }
        }
        #expect(field { $0.hiddenSize = 48 }.contains("hidden_size"))
        #expect(field { $0.numHiddenLayers = 5 }.contains("num_hidden_layers"))
        #expect(field { $0.numAttentionHeads = 4 }.contains("num_attention_heads"))   // 4 over 3 groups
        #expect(field { $0.numKeyValueHeads = 1; $0.numAttentionHeads = 3 }.contains("num_attention_heads"))  // 3 per group > 2
        #expect(field { $0.family = .nemotron }.contains("model_type"))
        #expect(field { $0.hiddenSize = 20 }.contains("hidden_size"))   // not a multiple of 6 heads
        #expect(throws: ProxyError.self) { _ = try Pruning.targetConfig(teacher: t.config, target: ["num_layers": 2]) }
        #expect(try Pruning.targetConfig(teacher: t.config, target: ["hidden_size": 12]).hiddenSize == 12)
    }
}

/// A mixture teacher: 4 layers, 6 experts of 10 neurons, top 2.
func mixtureTeacher(_ family: Family, seed: UInt64 = 3) -> DecoderModel {
    let c = ModelConfig(family: family, vocabSize: 31, hiddenSize: 24, intermediateSize: 10, numHiddenLayers: 4,
                        numAttentionHeads: family == .jetmoe ? 4 : 6, numKeyValueHeads: 2, headDim: 4, ropeTheta: 100,
                        maxPositionEmbeddings: 64, initializerRange: 0.3, numLocalExperts: 6, numExpertsPerTok: 2)
    return initializedWithRandomNorms(c, seed: seed)
}

/// Random scores, with expert statistics and per-expert neurons (id e·F + i).
func randomMixtureScores(_ c: ModelConfig, seed: UInt64 = 9) -> ImportanceScores {
    var s = randomScores(c, seed: seed)
    var rng = SeededGenerator(seed: seed + 1)
    func r() -> [[Double]] { (0..<c.numHiddenLayers).map { _ in (0..<c.numLocalExperts).map { _ in rng.uniform() } } }
    s.neurons = (0..<c.numHiddenLayers).map { _ in (0..<(c.numLocalExperts * c.intermediateSize)).map { _ in rng.uniform() } }
    s.mlpExperts = ExpertScores(frequency: r(), gatedOutputNorm: r(), frequencyByLanguage: [:])
    if c.family.hasAttentionExperts { s.attentionExperts = ExpertScores(frequency: r(), gatedOutputNorm: r(), frequencyByLanguage: [:]) }
    return s
}

@Suite struct ExpertPruningTests {
    /// Removing experts (and neurons inside the kept experts) gives the logits of the teacher with
    /// those experts' router logits at −∞ (and those neurons at zero).
    @Test(arguments: [Family.mixtral, .jetmoe, .qwen3Moe])
    func expertAndExpertWidthPruningEqualsMasking(_ family: Family) throws {
        let t = mixtureTeacher(family)
        let target = try Pruning.targetConfig(teacher: t.config, target: family == .qwen3Moe
            ? ["num_experts": 4, "moe_intermediate_size": 7] : ["num_local_experts": 4, "intermediate_size": 7])
        #expect(target.expertWidth == 7)
        let scores = randomMixtureScores(t.config)
        let plan = try Pruning.plan(teacher: t.config, target: target, scores: scores, options: PruneOptions())
        #expect(plan.experts.count == 4 && plan.experts.allSatisfy { $0.count == 4 })
        for l in 0..<4 {
            let expected = Array(ImportanceScores.ranking(scores.mlpExperts!.gatedOutputNorm[l]).prefix(4)).sorted()
            #expect(plan.experts[l] == expected, "layer \(l) keeps the 4 experts with the largest gated output norm")
        }
        let student = Pruning.apply(plan, teacher: t, target: target)
        #expect(student.config.numLocalExperts == 4 && student.config.parameterCount == student.layout.count)
        var masks = ForwardMasks()
        for l in 0..<4 {
            masks.experts[l] = (0..<6).filter { !plan.experts[l].contains($0) }
            masks.neurons[l] = plan.experts[l].enumerated().flatMap { ne, e in
                (0..<10).filter { !plan.expertNeurons[l][ne].contains($0) }.map { e * 10 + $0 }
            }
            if family == .jetmoe { masks.attentionExperts[l] = (0..<6).filter { !plan.attentionExperts[l].contains($0) } }
        }
        let gap = try pruningGap(teacher: t, masks: masks, student: student)
        #expect(gap.masked < 1e-5, "max |Δlogit| \(gap.masked)")
        // And masking really changed something (the check is not vacuous).
        #expect(gap.unmasked > 1e-3)
    }

    /// JetMoE's key/value heads: removing group g slices every attention expert's query and output
    /// projections and kv_proj; equal to the teacher with the heads reading g masked (every choice).
    @Test func jetMoEKeyValueHeadPruningEqualsMasking() throws {
        let t = mixtureTeacher(.jetmoe)
        let target = try Pruning.targetConfig(teacher: t.config, target: ["num_key_value_heads": 1])
        #expect(target.numAttentionHeads == 2 && target.attentionExpertWidth == 4)
        let plan = try Pruning.plan(teacher: t.config, target: target, scores: randomMixtureScores(t.config), options: PruneOptions())
        let kept = plan.groups[0]
        #expect(kept.count == 1)
        let student = Pruning.apply(plan, teacher: t, target: target)
        var masks = ForwardMasks()
        for l in 0..<4 { masks.heads[l] = (0..<4).filter { $0 % 2 != kept[0] } }
        let gap = try pruningGap(teacher: t, masks: masks, student: student)
        // Relative to the logits' size: the sliced products sum in another order (on a Zen 3
        // OpenBLAS kernel the gap reached 1.8e-5 absolute).
        let scale = try logits(student, sampleTokens, B: 2, T: 8).map(abs).max()!
        #expect(gap.masked < 1e-5 * max(1, scale), "max |Δlogit| \(gap.masked), logits up to \(scale)")
        #expect(gap.unmasked > 1e-3)
    }

    @Test(arguments: [Family.mixtral, .jetmoe, .qwen3Moe])
    func topKAndChannelPruningKeepTheShapeRules(_ family: Family) throws {
        let t = mixtureTeacher(family)
        let target = try Pruning.targetConfig(teacher: t.config, target: ["num_experts_per_tok": 1, "hidden_size": 18, "num_hidden_layers": 3])
        #expect(target.numExpertsPerTok == 1)
        if family == .jetmoe { #expect(target.numAttentionHeads == 2, "JetMoE heads follow kv heads × top-k") }
        let student = try Pruning.prune(teacher: t, to: target, scores: randomMixtureScores(t.config))
        #expect(student.config == target)
        _ = try logits(student, sampleTokens, B: 2, T: 8)
    }

    /// A qwen3_moe teacher with dense MLP layers among its mixtures is refused by name (importance
    /// and pruning treat every layer alike).
    @Test func qwen3MoeWithDenseLayersIsRefused() throws {
        var c = mixtureTeacher(.qwen3Moe).config
        c.denseMLPLayers = [1]
        let error = #expect(throws: ProxyError.self) {
            _ = try Pruning.plan(teacher: c, target: c, scores: randomMixtureScores(c), options: PruneOptions())
        }
        #expect(error.map { "\($0)" }?.contains("mlp_only_layers: the teacher mixes dense MLP layers [1]") == true, "\(String(describing: error))")
    }

    @Test func impossibleMixtureTargetsNameTheField() throws {
        let t = mixtureTeacher(.jetmoe)
        func field(_ target: [String: JSON]) -> String {
            do {
                let c = try Pruning.targetConfig(teacher: t.config, target: target)
                _ = try Pruning.plan(teacher: t.config, target: c, scores: randomMixtureScores(t.config), options: PruneOptions())
                return "no error"
            } catch { return "\(error)" }
        }
        #expect(field(["num_local_experts": 1]).contains("num_local_experts"))          // below top-k 2
        #expect(field(["num_local_experts": 8]).contains("larger than the teacher"))
        #expect(field(["num_experts_per_tok": 3]).contains("num_experts_per_tok"))
        #expect(field(["num_key_value_heads": 3]).contains("num_key_value_heads"))
        var scores = randomMixtureScores(t.config)
        scores.mlpExperts = nil
        #expect(throws: ProxyError.self) {
            _ = try Pruning.plan(teacher: t.config, target: t.config, scores: scores, options: PruneOptions())
        }
    }
}

/// Issue 23: a pruning target and a search space read the same map from axis to config field
/// (`Axis`); they used to disagree (qwen3_moe's `num_local_experts` accepted by one, JetMoE's
/// derived `num_attention_heads` settable by one).
@Suite struct TargetAxisTests {
    @Test func targetsTakeTheSearchAxesOfTheirFamily() throws {
        let qwen = ModelConfig(family: .qwen3Moe, vocabSize: 257, hiddenSize: 24, intermediateSize: 32, numHiddenLayers: 3,
                               numAttentionHeads: 6, numKeyValueHeads: 3, headDim: 4, maxPositionEmbeddings: 64, initializerRange: 0.1,
                               numLocalExperts: 4, numExpertsPerTok: 2, moeIntermediateSize: 16, normTopKProb: true)
        let jet = ModelConfig(family: .jetmoe, vocabSize: 257, hiddenSize: 24, intermediateSize: 16, numHiddenLayers: 3,
                              numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 4, maxPositionEmbeddings: 64, initializerRange: 0.1,
                              numLocalExperts: 4, numExpertsPerTok: 2)
        for family in [Family.llama, .mixtral, .jetmoe, .qwen3Moe] {
            #expect(Pruning.prunableAxes(family) == Axis.axes(for: family).map(\.rawValue))
        }
        #expect(try Pruning.targetConfig(teacher: qwen, target: ["num_experts": 2]).numLocalExperts == 2)
        #expect { _ = try Pruning.targetConfig(teacher: qwen, target: ["num_local_experts": 2]) } throws: { "\($0)".contains("num_experts") }
        #expect { _ = try Pruning.targetConfig(teacher: qwen, target: ["intermediate_size": 16]) } throws: { "\($0)".contains("moe_intermediate_size") }
        // JetMoE: the query heads follow num_key_value_heads × num_experts_per_tok.
        #expect(try Pruning.targetConfig(teacher: jet, target: ["num_experts_per_tok": 1]).numAttentionHeads == 2)
        #expect(try Pruning.targetConfig(teacher: jet, target: ["num_experts_per_tok": 1, "num_attention_heads": 2]).numAttentionHeads == 2)
        #expect { _ = try Pruning.targetConfig(teacher: jet, target: ["num_experts_per_tok": 1, "num_attention_heads": 4]) } throws: {
            "\($0)".contains("derives it as num_key_value_heads × num_experts_per_tok = 2")
        }
    }
}
