import Foundation
import Model

/// How depth is pruned.
public enum LayerMetric: String, Sendable, Codable, CaseIterable {
    /// Block Importance: 1 − cosine(layer input, output).
    case blockImportance = "block_importance"
    /// Rise in validation loss when the layer is skipped.
    case lossRise = "loss_rise"
}

public struct PruneOptions: Sendable, Equatable, Codable {
    public var layerMetric = LayerMetric.blockImportance
    /// Remove the least important contiguous block of layers instead of the least important ones.
    public var contiguousLayers = false
    public init() {}
}

/// The units of the teacher a pruned model keeps, each list in the teacher's order.
public struct PrunePlan: Sendable, Equatable {
    public var layers: [Int]
    public var channels: [Int]
    /// Per kept layer: kept query heads (teacher indices).
    public var heads: [[Int]]
    /// Kept key/value groups (the same for every layer).
    public var groups: [[Int]]
    /// Per kept layer: kept neurons.
    public var neurons: [[Int]]
}

public enum Pruning {
    /// The target config: the teacher's with the keys of `target` replaced.
    /// `target` may name `num_hidden_layers`, `hidden_size`, `num_attention_heads`,
    /// `num_key_value_heads`, `intermediate_size` (and `head_dim`/`model_type`, which must equal
    /// the teacher's).
    /// - Throws: ``ProxyError/invalidTarget(field:reason:)`` naming the key.
    public static func targetConfig(teacher: ModelConfig, target: [String: JSON]) throws -> ModelConfig {
        var c = teacher
        for (key, value) in target.sorted(by: { $0.key < $1.key }) {
            func int() throws -> Int {
                guard let n = value.int, n > 0 else { throw ProxyError.invalidTarget(field: key, reason: "must be a positive integer, got \(value)") }
                return n
            }
            switch key {
            case "num_hidden_layers": c.numHiddenLayers = try int()
            case "hidden_size": c.hiddenSize = try int()
            case "num_attention_heads": c.numAttentionHeads = try int()
            case "num_key_value_heads": c.numKeyValueHeads = try int()
            case "intermediate_size": c.intermediateSize = try int()
            case "head_dim":
                guard try int() == teacher.headDim else { throw ProxyError.invalidTarget(field: key, reason: "\(value) differs from the teacher's \(teacher.headDim); head_dim is kept") }
            case "model_type":
                guard value.string == teacher.family.rawValue else {
                    throw ProxyError.invalidTarget(field: key, reason: "student family \(value) differs from the teacher's '\(teacher.family.rawValue)'")
                }
            default:
                throw ProxyError.invalidTarget(field: key, reason: "not a prunable axis (num_hidden_layers, hidden_size, num_attention_heads, num_key_value_heads, intermediate_size)")
            }
        }
        return c
    }

    /// Checks that `target` is reachable from `teacher` by removing units.
    public static func validate(target t: ModelConfig, teacher: ModelConfig) throws {
        func notLarger(_ a: Int, _ b: Int, _ key: String) throws {
            if a > b { throw ProxyError.invalidTarget(field: key, reason: "\(a) is larger than the teacher's \(b)") }
        }
        guard t.family == teacher.family else { throw ProxyError.invalidTarget(field: "model_type", reason: "student family '\(t.family.rawValue)' differs from the teacher's '\(teacher.family.rawValue)'") }
        try notLarger(t.numHiddenLayers, teacher.numHiddenLayers, "num_hidden_layers")
        try notLarger(t.hiddenSize, teacher.hiddenSize, "hidden_size")
        try notLarger(t.numAttentionHeads, teacher.numAttentionHeads, "num_attention_heads")
        try notLarger(t.numKeyValueHeads, teacher.numKeyValueHeads, "num_key_value_heads")
        try notLarger(t.intermediateSize, teacher.intermediateSize, "intermediate_size")
        for (key, a, b) in [("head_dim", t.headDim, teacher.headDim), ("vocab_size", t.vocabSize, teacher.vocabSize)] where a != b {
            throw ProxyError.invalidTarget(field: key, reason: "\(a) differs from the teacher's \(b); it is kept")
        }
        guard t.numAttentionHeads % t.numKeyValueHeads == 0 else {
            throw ProxyError.invalidTarget(field: "num_attention_heads", reason: "\(t.numAttentionHeads) heads do not divide into \(t.numKeyValueHeads) key/value groups")
        }
        let perGroup = t.numAttentionHeads / t.numKeyValueHeads, teacherPerGroup = teacher.numAttentionHeads / teacher.numKeyValueHeads
        if perGroup > teacherPerGroup {
            throw ProxyError.invalidTarget(field: "num_attention_heads",
                reason: "\(t.numAttentionHeads) heads over \(t.numKeyValueHeads) groups is \(perGroup) per group; the teacher's groups hold \(teacherPerGroup)")
        }
        do { try t.validate(file: "target") } catch let e as ModelError {
            if case let .invalidConfig(_, key, reason) = e { throw ProxyError.invalidTarget(field: key, reason: reason) }
            throw e
        }
    }

    /// Which units to keep, by importance.
    public static func plan(teacher: ModelConfig, target t: ModelConfig, scores: ImportanceScores, options: PruneOptions) throws -> PrunePlan {
        try validate(target: t, teacher: teacher)
        let L = teacher.numHiddenLayers
        let layerScores = options.layerMetric == .blockImportance ? scores.blockImportance : scores.layerLossRise
        var layers: [Int]
        if options.contiguousLayers {
            let drop = L - t.numHiddenLayers
            var best = 0, bestSum = Double.infinity
            if drop > 0 {
                for s in 0...(L - drop) {
                    let sum = layerScores[s..<(s + drop)].reduce(0, +)
                    if sum < bestSum { bestSum = sum; best = s }
                }
            }
            layers = (0..<L).filter { $0 < best || $0 >= best + drop }
        } else {
            layers = Array(ImportanceScores.ranking(layerScores).prefix(t.numHiddenLayers)).sorted()
        }
        let channels = Array(ImportanceScores.ranking(scores.channels).prefix(t.hiddenSize)).sorted()
        let G = teacher.numKeyValueHeads, perGroup = teacher.numAttentionHeads / G
        let keepPerGroup = t.numAttentionHeads / t.numKeyValueHeads
        // Groups: whole key/value groups are pruned only when the target has fewer; ranked by the
        // summed importance of their heads over every layer (one choice for all layers, since
        // num_key_value_heads is one number).
        var groupScore = [Double](repeating: 0, count: G)
        for l in 0..<L { for h in 0..<teacher.numAttentionHeads { groupScore[h / perGroup] += scores.heads[l][h] } }
        let keptGroups = Array(ImportanceScores.ranking(groupScore).prefix(t.numKeyValueHeads)).sorted()
        var heads: [[Int]] = []
        var neurons: [[Int]] = []
        for l in layers {
            var kept: [Int] = []
            for g in keptGroups {
                let members = (0..<perGroup).map { g * perGroup + $0 }
                let ranked = ImportanceScores.ranking(members.map { scores.heads[l][$0] })
                kept += ranked.prefix(keepPerGroup).map { members[$0] }.sorted()
            }
            heads.append(kept)
            neurons.append(Array(ImportanceScores.ranking(scores.neurons[l]).prefix(t.intermediateSize)).sorted())
        }
        return PrunePlan(layers: layers, channels: channels, heads: heads, groups: [keptGroups], neurons: neurons)
    }

    /// A new model of shape `target` holding the teacher's weights for the units `plan` keeps.
    public static func apply(_ plan: PrunePlan, teacher: DecoderModel, target: ModelConfig) -> DecoderModel {
        let student = DecoderModel(config: target)
        let D = teacher.config.headDim
        let channels = plan.channels
        func copy(_ name: String, to newName: String? = nil, rows: [Int]?, cols: [Int]?) {
            guard let src = teacher.layout.entry(name), let dst = student.layout.entry(newName ?? name) else {
                preconditionFailure("pruning: missing tensor \(name)")
            }
            let sp = teacher.parameters.pointer + src.offset, dp = student.parameters.pointer + dst.offset
            if src.shape.count == 1 {
                for (j, c) in (cols ?? Array(0..<src.shape[0])).enumerated() { dp[j] = sp[c] }
                return
            }
            let srcCols = src.shape[1]
            let r = rows ?? Array(0..<src.shape[0]), cl = cols ?? Array(0..<srcCols)
            precondition(dst.shape == [r.count, cl.count], "pruning \(name): \(dst.shape) vs \([r.count, cl.count])")
            for (i, row) in r.enumerated() {
                let s = sp + row * srcCols, d = dp + i * cl.count
                for (j, c) in cl.enumerated() { d[j] = s[c] }
            }
        }
        func expand(_ units: [Int]) -> [Int] { units.flatMap { u in (0..<D).map { u * D + $0 } } }
        copy("model.embed_tokens.weight", rows: nil, cols: channels)
        let keptGroups = plan.groups[0]
        for (newL, oldL) in plan.layers.enumerated() {
            let p = "model.layers.\(oldL).", q = "model.layers.\(newL)."
            for n in ["input_layernorm.weight", "input_layernorm.bias", "post_attention_layernorm.weight", "post_attention_layernorm.bias"]
            where teacher.layout.entry(p + n) != nil {
                copy(p + n, to: q + n, rows: nil, cols: channels)
            }
            copy(p + "self_attn.q_proj.weight", to: q + "self_attn.q_proj.weight", rows: expand(plan.heads[newL]), cols: channels)
            copy(p + "self_attn.k_proj.weight", to: q + "self_attn.k_proj.weight", rows: expand(keptGroups), cols: channels)
            copy(p + "self_attn.v_proj.weight", to: q + "self_attn.v_proj.weight", rows: expand(keptGroups), cols: channels)
            copy(p + "self_attn.o_proj.weight", to: q + "self_attn.o_proj.weight", rows: channels, cols: expand(plan.heads[newL]))
            if teacher.config.family == .llama {
                copy(p + "mlp.gate_proj.weight", to: q + "mlp.gate_proj.weight", rows: plan.neurons[newL], cols: channels)
            }
            copy(p + "mlp.up_proj.weight", to: q + "mlp.up_proj.weight", rows: plan.neurons[newL], cols: channels)
            copy(p + "mlp.down_proj.weight", to: q + "mlp.down_proj.weight", rows: channels, cols: plan.neurons[newL])
        }
        copy("model.norm.weight", rows: nil, cols: channels)
        if teacher.layout.entry("model.norm.bias") != nil { copy("model.norm.bias", rows: nil, cols: channels) }
        if !teacher.config.tieWordEmbeddings { copy("lm_head.weight", rows: nil, cols: channels) }
        return student
    }

    /// Plans and applies in one call.
    public static func prune(teacher: DecoderModel, to target: ModelConfig, scores: ImportanceScores,
                             options: PruneOptions = PruneOptions()) throws -> DecoderModel {
        let plan = try plan(teacher: teacher.config, target: target, scores: scores, options: options)
        return apply(plan, teacher: teacher, target: target)
    }
}
