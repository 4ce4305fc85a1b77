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
    /// How experts are ranked (mixtures).
    public var expertMetric = ExpertMetric.gatedOutputNorm
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
    /// Per kept layer: kept neurons (dense MLP).
    public var neurons: [[Int]]
    /// Mixtures, per kept layer: kept MLP experts (teacher indices, in order).
    public var experts: [[Int]] = []
    /// Mixtures, per kept layer and kept expert: that expert's kept neurons.
    public var expertNeurons: [[[Int]]] = []
    /// JetMoE, per kept layer: kept attention experts.
    public var attentionExperts: [[Int]] = []
}

public enum Pruning {
    /// The target config: the teacher's with the keys of `target` replaced.
    /// `target` may name the family's search axes (``Axis/axes(for:)``: the same keys a search
    /// space takes), and `head_dim`/`model_type`, which must equal the teacher's; JetMoE's derived
    /// `num_attention_heads` only as the value it derives to.
    /// - Throws: ``ProxyError/invalidTarget(field:reason:)`` naming the key.
    public static func targetConfig(teacher: ModelConfig, target: [String: JSON]) throws -> ModelConfig {
        var c = teacher
        for (key, value) in target.sorted(by: { $0.key < $1.key }) {
            func int() throws -> Int {
                guard let n = value.int, n > 0 else { throw ProxyError.invalidTarget(field: key, reason: "must be a positive integer, got \(value)") }
                return n
            }
            switch key {
            case "head_dim":
                guard try int() == teacher.headDim else { throw ProxyError.invalidTarget(field: key, reason: "\(value) differs from the teacher's \(teacher.headDim); head_dim is kept") }
            case "model_type":
                guard value.string == teacher.family.rawValue else {
                    throw ProxyError.invalidTarget(field: key, reason: "student family \(value) differs from the teacher's '\(teacher.family.rawValue)'")
                }
            default:
                // The family's search axes, the same map a search space uses.
                if let axis = Axis(rawValue: key), Axis.axes(for: teacher.family).contains(axis) {
                    axis.set(&c, try int())
                } else if key == "num_attention_heads" && teacher.family == .jetmoe {
                    // Derived, not set: accepted only as the value it derives to (checked below).
                    _ = try int()
                } else {
                    throw ProxyError.invalidTarget(field: key, reason: "not a prunable axis (\(prunableAxes(teacher.family).joined(separator: ", ")))")
                }
            }
        }
        // JetMoE's query heads follow from its key/value heads and top-k.
        c.deriveQueryHeads()
        if teacher.family == .jetmoe, let given = target["num_attention_heads"]?.int, given != c.numAttentionHeads {
            throw ProxyError.invalidTarget(field: "num_attention_heads", reason: "\(given): JetMoE derives it as num_key_value_heads × num_experts_per_tok = \(c.numAttentionHeads)")
        }
        return c
    }

    /// The config keys a target may set for a family.
    public static func prunableAxes(_ family: Family) -> [String] { Axis.axes(for: family).map(\.rawValue) }

    /// Importance and pruning treat every layer alike: a qwen3_moe teacher whose layers mix
    /// dense and mixture MLPs (`mlp_only_layers`, `decoder_sparse_step` > 1) is refused.
    public static func requireUniformLayers(_ c: ModelConfig) throws {
        if !c.denseMLPLayers.isEmpty {
            throw ProxyError.invalidTarget(field: "mlp_only_layers",
                reason: "the teacher mixes dense MLP layers \(c.denseMLPLayers) with mixture layers; importance and pruning support qwen3_moe teachers whose every layer is a mixture (mlp_only_layers [] and decoder_sparse_step 1), as the released Qwen3-MoE models are")
        }
    }

    /// Checks that `target` is reachable from `teacher` by removing units.
    public static func validate(target t: ModelConfig, teacher: ModelConfig) throws {
        try requireUniformLayers(teacher)
        func notLarger(_ a: Int, _ b: Int, _ key: String) throws {
            if a > b { throw ProxyError.invalidTarget(field: key, reason: "\(a) is larger than the teacher's \(b)") }
        }
        guard t.family == teacher.family else { throw ProxyError.invalidTarget(field: "model_type", reason: "student family '\(t.family.rawValue)' differs from the teacher's '\(teacher.family.rawValue)'") }
        try notLarger(t.numHiddenLayers, teacher.numHiddenLayers, "num_hidden_layers")
        try notLarger(t.hiddenSize, teacher.hiddenSize, "hidden_size")
        if t.family != .jetmoe { try notLarger(t.numAttentionHeads, teacher.numAttentionHeads, "num_attention_heads") }  // JetMoE: G × k
        try notLarger(t.numKeyValueHeads, teacher.numKeyValueHeads, "num_key_value_heads")
        try notLarger(t.intermediateSize, teacher.intermediateSize, "intermediate_size")
        try notLarger(t.moeIntermediateSize, teacher.moeIntermediateSize, "moe_intermediate_size")
        if teacher.family.isMixture {
            try notLarger(t.numLocalExperts, teacher.numLocalExperts, "num_local_experts")
            try notLarger(t.numExpertsPerTok, teacher.numExpertsPerTok, "num_experts_per_tok")
            if t.numLocalExperts < t.numExpertsPerTok {
                throw ProxyError.invalidTarget(field: "num_local_experts",
                    reason: "\(t.numLocalExperts) experts is fewer than num_experts_per_tok \(t.numExpertsPerTok): every token must reach top-k experts")
            }
        }

        for (key, a, b) in [("head_dim", t.headDim, teacher.headDim), ("vocab_size", t.vocabSize, teacher.vocabSize)] where a != b {
            throw ProxyError.invalidTarget(field: key, reason: "\(a) differs from the teacher's \(b); it is kept")
        }
        guard t.family == .jetmoe || t.numAttentionHeads % t.numKeyValueHeads == 0 else {
            throw ProxyError.invalidTarget(field: "num_attention_heads", reason: "\(t.numAttentionHeads) heads do not divide into \(t.numKeyValueHeads) key/value groups")
        }
        let perGroup = t.numAttentionHeads / t.numKeyValueHeads, teacherPerGroup = teacher.numAttentionHeads / teacher.numKeyValueHeads
        if t.family != .jetmoe, perGroup > teacherPerGroup {
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
        // (JetMoE: query head j·G + g of choice j reads key/value head g.)
        let groupOf = { (h: Int) in teacher.family == .jetmoe ? h % G : h / perGroup }
        for l in 0..<L { for h in 0..<teacher.numAttentionHeads { groupScore[groupOf(h)] += scores.heads[l][h] } }
        let keptGroups = Array(ImportanceScores.ranking(groupScore).prefix(t.numKeyValueHeads)).sorted()
        var heads: [[Int]] = []
        var neurons: [[Int]] = []
        for l in layers {
            var kept: [Int] = []
            if teacher.family == .jetmoe {
                // Every choice keeps the kept groups' heads (the experts' query projections are sliced).
                heads.append((0..<teacher.numAttentionHeads).filter { keptGroups.contains($0 % G) })
                neurons.append([])
                continue
            }
            for g in keptGroups {
                let members = (0..<perGroup).map { g * perGroup + $0 }
                let ranked = ImportanceScores.ranking(members.map { scores.heads[l][$0] })
                kept += ranked.prefix(keepPerGroup).map { members[$0] }.sorted()
            }
            heads.append(kept)
            neurons.append(Array(ImportanceScores.ranking(scores.neurons[l]).prefix(t.intermediateSize)).sorted())
        }
        var plan = PrunePlan(layers: layers, channels: channels, heads: heads, groups: [keptGroups], neurons: neurons)
        if teacher.family.isMixture {
            guard let mlp = scores.mlpExperts, mlp.frequency.count == L else {
                throw ProxyError.invalidTarget(field: "num_local_experts", reason: "the importance scores hold no expert statistics for this mixture teacher; recompute them")
            }
            let F = teacher.expertWidth, byExpert = mlp.scores(options.expertMetric)
            for l in layers {
                let kept = Array(ImportanceScores.ranking(byExpert[l]).prefix(t.numLocalExperts)).sorted()
                plan.experts.append(kept)
                plan.expertNeurons.append(kept.map { e in
                    Array(ImportanceScores.ranking((0..<F).map { scores.neurons[l][e * F + $0] }).prefix(t.expertWidth)).sorted()
                })
            }
            if teacher.family.hasAttentionExperts {
                guard let attention = scores.attentionExperts else {
                    throw ProxyError.invalidTarget(field: "num_local_experts", reason: "the importance scores hold no attention-expert statistics; recompute them")
                }
                let byAttention = attention.scores(options.expertMetric)
                plan.attentionExperts = layers.map { Array(ImportanceScores.ranking(byAttention[$0]).prefix(t.numLocalExperts)).sorted() }
            }
        }
        return plan
    }

    /// A new model of shape `target` holding the teacher's weights for the units `plan` keeps.
    public static func apply(_ plan: PrunePlan, teacher: DecoderModel, target: ModelConfig) -> DecoderModel {
        // Per-layer properties (sliding-window layers) follow the layers kept.
        var target = target
        target.slidingLayers = plan.layers.indices.filter { teacher.config.slidingLayers.contains(plan.layers[$0]) }
        let student = DecoderModel(config: target)
        let D = teacher.config.headDim
        let channels = plan.channels
        /// The teacher's and student's tensors `name` and `newName` (both present by construction).
        func tensors(_ name: String, _ newName: String) -> (ParameterEntry, UnsafeMutablePointer<Float>, ParameterEntry, UnsafeMutablePointer<Float>) {
            guard let src = teacher.layout.entry(name), let dst = student.layout.entry(newName) else {
                preconditionFailure("pruning: missing tensor \(name)")
            }
            return (src, teacher.parameters.pointer + src.offset, dst, student.parameters.pointer + dst.offset)
        }
        /// d[i, j] = s[rows[i], cols[j]] for a matrix `s` of `srcCols` columns.
        func copyMatrix(_ s: UnsafePointer<Float>, srcCols: Int, _ d: UnsafeMutablePointer<Float>, rows: [Int], cols: [Int]) {
            for (i, row) in rows.enumerated() {
                let sr = s + row * srcCols, dr = d + i * cols.count
                for (j, c) in cols.enumerated() { dr[j] = sr[c] }
            }
        }
        func copy(_ name: String, to newName: String? = nil, rows: [Int]?, cols: [Int]?) {
            let (src, sp, dst, dp) = tensors(name, newName ?? name)
            if src.shape.count == 1 {
                for (j, c) in (cols ?? Array(0..<src.shape[0])).enumerated() { dp[j] = sp[c] }
                return
            }
            let r = rows ?? Array(0..<src.shape[0]), cl = cols ?? Array(0..<src.shape[1])
            precondition(dst.shape == [r.count, cl.count], "pruning \(name): \(dst.shape) vs \([r.count, cl.count])")
            copyMatrix(sp, srcCols: src.shape[1], dp, rows: r, cols: cl)
        }
        /// Copies a stack (E, R, K) selecting experts, rows and columns, into the student's stack
        /// from expert `first` on.
        func copyStack(_ name: String, to newName: String, experts: [Int], rows: [Int]?, cols: [Int]?, into first: Int = 0) {
            let (src, sp, dst, dp) = tensors(name, newName)
            let (R, K) = (src.shape[1], src.shape[2])
            let r = rows ?? Array(0..<R), cl = cols ?? Array(0..<K)
            precondition(dst.shape[1...] == [r.count, cl.count] && first + experts.count <= dst.shape[0], "pruning \(name): \(dst.shape)")
            for (ne, e) in experts.enumerated() {
                copyMatrix(sp + e * R * K, srcCols: K, dp + (first + ne) * r.count * cl.count, rows: r, cols: cl)
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
            if teacher.config.family == .jetmoe {
                let a = p + "self_attention.", b = q + "self_attention."
                let kept = plan.attentionExperts[newL], groups = expand(keptGroups)
                let GD = teacher.config.attentionExpertWidth
                copy(a + "experts.router.layer.weight", to: b + "experts.router.layer.weight", rows: kept, cols: channels)
                copyStack(a + "experts.input_linear.weight", to: b + "experts.input_linear.weight", experts: kept, rows: groups, cols: channels)
                copyStack(a + "experts.output_linear.weight", to: b + "experts.output_linear.weight", experts: kept, rows: channels, cols: groups)
                copy(a + "experts.bias", to: b + "experts.bias", rows: nil, cols: channels)
                copy(a + "kv_proj.weight", to: b + "kv_proj.weight", rows: groups + groups.map { GD + $0 }, cols: channels)
            } else {
                copy(p + "self_attn.q_proj.weight", to: q + "self_attn.q_proj.weight", rows: expand(plan.heads[newL]), cols: channels)
                copy(p + "self_attn.k_proj.weight", to: q + "self_attn.k_proj.weight", rows: expand(keptGroups), cols: channels)
                copy(p + "self_attn.v_proj.weight", to: q + "self_attn.v_proj.weight", rows: expand(keptGroups), cols: channels)
                copy(p + "self_attn.o_proj.weight", to: q + "self_attn.o_proj.weight", rows: channels, cols: expand(plan.heads[newL]))
                // Biases follow their rows; the per-head q/k norms act on head_dim, which is kept.
                if teacher.config.family.hasQKVBias {
                    copy(p + "self_attn.q_proj.bias", to: q + "self_attn.q_proj.bias", rows: nil, cols: expand(plan.heads[newL]))
                    copy(p + "self_attn.k_proj.bias", to: q + "self_attn.k_proj.bias", rows: nil, cols: expand(keptGroups))
                    copy(p + "self_attn.v_proj.bias", to: q + "self_attn.v_proj.bias", rows: nil, cols: expand(keptGroups))
                }
                if teacher.config.family.hasQKNorm {
                    copy(p + "self_attn.q_norm.weight", to: q + "self_attn.q_norm.weight", rows: nil, cols: nil)
                    copy(p + "self_attn.k_norm.weight", to: q + "self_attn.k_norm.weight", rows: nil, cols: nil)
                }
            }
            switch teacher.config.family {
            case .llama, .nemotron, .qwen2, .qwen3, .mistral:
                if teacher.config.family.isGated {
                    copy(p + "mlp.gate_proj.weight", to: q + "mlp.gate_proj.weight", rows: plan.neurons[newL], cols: channels)
                }
                copy(p + "mlp.up_proj.weight", to: q + "mlp.up_proj.weight", rows: plan.neurons[newL], cols: channels)
                copy(p + "mlp.down_proj.weight", to: q + "mlp.down_proj.weight", rows: channels, cols: plan.neurons[newL])
            case .mixtral, .qwen3Moe:
                let kept = plan.experts[newL], n = teacher.config.family.swiGLUExpertNames!
                let router = teacher.config.family.mlpRouterName + ".weight"
                copy(p + router, to: q + router, rows: kept, cols: channels)
                for (ne, e) in kept.enumerated() {
                    let x = p + n.prefix + "\(e).", y = q + n.prefix + "\(ne)."
                    let neurons = plan.expertNeurons[newL][ne]
                    for name in [n.gate, n.up] { copy(x + name + ".weight", to: y + name + ".weight", rows: neurons, cols: channels) }
                    copy(x + n.down + ".weight", to: y + n.down + ".weight", rows: channels, cols: neurons)
                }
            case .jetmoe:
                let kept = plan.experts[newL], F = teacher.config.intermediateSize
                copy(p + "mlp.router.layer.weight", to: q + "mlp.router.layer.weight", rows: kept, cols: channels)
                copy(p + "mlp.bias", to: q + "mlp.bias", rows: nil, cols: channels)
                // Per expert: the gate half and the up half of input_linear keep the same neurons.
                for (ne, e) in kept.enumerated() {
                    let neurons = plan.expertNeurons[newL][ne]
                    copyStack(p + "mlp.input_linear.weight", to: q + "mlp.input_linear.weight", experts: [e],
                              rows: neurons + neurons.map { F + $0 }, cols: channels, into: ne)
                    copyStack(p + "mlp.output_linear.weight", to: q + "mlp.output_linear.weight", experts: [e],
                              rows: channels, cols: neurons, into: ne)
                }
            }
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
