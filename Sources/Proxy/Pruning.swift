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
    /// Qwen3.5-MoE, per kept layer: the shared expert's kept neurons.
    public var sharedNeurons: [[Int]] = []
    /// JetMoE, per kept layer: kept attention experts.
    public var attentionExperts: [[Int]] = []
    /// Hybrid decoders, per kept layer: the Mamba2 heads kept (the same number from every
    /// group, so that groups stay whole) and the head channels kept (the same for every head of
    /// the layer); empty for a layer without a Mamba2 mixer. `mamba` is the teacher's shape.
    public var mambaHeads: [[Int]] = []
    public var mambaChannels: [[Int]] = []
    public var mamba: MambaShape? = nil
    /// Qwen3.5, per kept layer: the Gated DeltaNet value heads kept (the same number under every
    /// key head); empty for a layer without one. `deltaNet` is the teacher's shape.
    public var deltaNetHeads: [[Int]] = []
    /// Qwen3.5, per kept layer: the key heads kept (with their queries and keys); every kept value
    /// head sits under one of them.
    public var deltaNetKeyHeads: [[Int]] = []
    /// Qwen3.5, per kept layer: the value channels kept (the same in every value head).
    public var deltaNetChannels: [[Int]] = []
    public var deltaNet: DeltaNetShape? = nil
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
                // A hybrid decoder may drop every layer of a type.
                let least = Axis(rawValue: key)?.layerType != nil ? 0 : 1
                guard let n = value.int, n >= least else {
                    throw ProxyError.invalidTarget(
                        field: key, reason: "must be an integer of at least \(least), got \(value)")
                }
                return n
            }
            switch key {
            case "head_dim":
                guard try int() == teacher.headDim else {
                    throw ProxyError.invalidTarget(
                        field: key, reason: "\(value) differs from the teacher's \(teacher.headDim); head_dim is kept")
                }
            case "model_type":
                guard value.string == teacher.family.rawValue else {
                    throw ProxyError.invalidTarget(
                        field: key,
                        reason: "student family \(value) differs from the teacher's '\(teacher.family.rawValue)'")
                }
            default:
                // The family's search axes, the same map a search space uses.
                if let axis = Axis(rawValue: key), Axis.axes(for: teacher).contains(axis) {
                    let n = try int()
                    axis.set(&c, n)
                    // A layer-type count can only shrink.
                    if axis.layerType != nil, axis.value(c) != n {
                        throw ProxyError.invalidTarget(
                            field: key, reason: "\(n) is larger than the teacher's \(axis.value(teacher))")
                    }
                } else if key == "num_attention_heads" && teacher.family.derivesQueryHeads {
                    // Derived, not set: accepted only as the value it derives to (checked below).
                    _ = try int()
                } else {
                    throw ProxyError.invalidTarget(
                        field: key,
                        reason:
                            "not a prunable axis (\(Axis.axes(for: teacher).map(\.rawValue).joined(separator: ", ")))")
                }
            }
        }
        // JetMoE's query heads follow from its key/value heads and top-k.
        c.deriveQueryHeads()
        if teacher.family.derivesQueryHeads, let given = target["num_attention_heads"]?.int,
            given != c.numAttentionHeads
        {
            throw ProxyError.invalidTarget(
                field: "num_attention_heads",
                reason:
                    "\(given): \(teacher.family.displayName) derives it as num_key_value_heads × "
                    + "num_experts_per_tok = \(c.numAttentionHeads)"
            )
        }
        return c
    }

    /// The config keys a target may set for a family.
    public static func prunableAxes(_ family: Family) -> [String] { Axis.axes(for: family).map(\.rawValue) }

    /// Importance and pruning treat every layer alike: a qwen3_moe teacher whose layers mix
    /// dense and mixture MLPs (`mlp_only_layers`, `decoder_sparse_step` > 1) is refused.
    public static func requireUniformLayers(_ c: ModelConfig) throws {
        if c.layerVariants != nil {
            throw ProxyError.invalidTarget(
                field: "block_configs",
                reason:
                    "the teacher's layers differ (a heterogeneous \(c.family.rawValue) model); importance and "
                    + "pruning start from a homogeneous teacher"
            )
        }
        if !c.denseMLPLayers.isEmpty {
            throw ProxyError.invalidTarget(
                field: "mlp_only_layers",
                reason:
                    "the teacher mixes dense MLP layers \(c.denseMLPLayers) with mixture layers; importance "
                    + "and pruning support qwen3_moe teachers whose every layer is a mixture (mlp_only_layers "
                    + "[] and decoder_sparse_step 1), as the released Qwen3-MoE models are"
            )
        }
    }

    /// Checks that `target` is reachable from `teacher` by removing units.
    public static func validate(target t: ModelConfig, teacher: ModelConfig) throws {
        try requireUniformLayers(teacher)
        func notLarger(_ a: Int, _ b: Int, _ key: String) throws {
            if a > b { throw ProxyError.invalidTarget(field: key, reason: "\(a) is larger than the teacher's \(b)") }
        }
        /// Keys pruning keeps: (key, the target's value, the teacher's).
        func unchanged(_ pairs: [(String, Int, Int)]) throws {
            for (key, a, b) in pairs where a != b {
                throw ProxyError.invalidTarget(field: key, reason: "\(a) differs from the teacher's \(b); it is kept")
            }
        }
        guard t.family == teacher.family else {
            throw ProxyError.invalidTarget(
                field: "model_type",
                reason: "student family '\(t.family.rawValue)' differs from the teacher's '\(teacher.family.rawValue)'")
        }
        try notLarger(t.numHiddenLayers, teacher.numHiddenLayers, "num_hidden_layers")
        try notLarger(t.hiddenSize, teacher.hiddenSize, "hidden_size")
        if !t.family.derivesQueryHeads {
            try notLarger(t.numAttentionHeads, teacher.numAttentionHeads, "num_attention_heads")
        } // JetMoE: G × k
        try notLarger(t.numKeyValueHeads, teacher.numKeyValueHeads, "num_key_value_heads")
        try notLarger(t.intermediateSize, teacher.intermediateSize, teacher.family.definition.intermediateSizeKey)
        try notLarger(t.moeIntermediateSize, teacher.moeIntermediateSize, "moe_intermediate_size")
        if teacher.isMixture {
            let expertsKey = teacher.family.definition.expertCountKey
            try notLarger(t.numLocalExperts, teacher.numLocalExperts, expertsKey)
            try notLarger(t.numExpertsPerTok, teacher.numExpertsPerTok, "num_experts_per_tok")
            try notLarger(
                t.moeSharedExpertIntermediateSize, teacher.moeSharedExpertIntermediateSize,
                "moe_shared_expert_intermediate_size")
            try unchanged([
                ("moe_latent_size", t.moeLatentSize ?? 0, teacher.moeLatentSize ?? 0),
                ("n_group", t.routerGroups, teacher.routerGroups),
                ("topk_group", t.routerTopKGroups, teacher.routerTopKGroups)
            ])
            if t.numLocalExperts < t.numExpertsPerTok {
                throw ProxyError.invalidTarget(
                    field: expertsKey,
                    reason:
                        "\(t.numLocalExperts) experts is fewer than num_experts_per_tok "
                        + "\(t.numExpertsPerTok): every token must reach top-k experts"
                )
            }
        }

        try unchanged([("head_dim", t.headDim, teacher.headDim), ("vocab_size", t.vocabSize, teacher.vocabSize)])
        guard t.family.derivesQueryHeads || t.numAttentionHeads % t.numKeyValueHeads == 0 else {
            throw ProxyError.invalidTarget(
                field: "num_attention_heads",
                reason: "\(t.numAttentionHeads) heads do not divide into \(t.numKeyValueHeads) key/value groups")
        }
        let perGroup = t.numAttentionHeads / t.numKeyValueHeads,
            teacherPerGroup = teacher.numAttentionHeads / teacher.numKeyValueHeads
        if !t.family.derivesQueryHeads, perGroup > teacherPerGroup {
            throw ProxyError.invalidTarget(
                field: "num_attention_heads",
                reason:
                    "\(t.numAttentionHeads) heads over \(t.numKeyValueHeads) groups is \(perGroup) per group; "
                    + "the teacher's groups hold \(teacherPerGroup)"
            )
        }
        if let td = teacher.deltaNet, let sd = t.deltaNet {
            try notLarger(sd.valueHeads, td.valueHeads, "linear_num_value_heads")
            try notLarger(sd.keyHeads, td.keyHeads, "linear_num_key_heads")
            if sd.valueHeads % sd.keyHeads != 0 || sd.valueHeads == 0 || sd.valuesPerKey > td.valuesPerKey {
                throw ProxyError.invalidTarget(
                    field: "linear_num_value_heads",
                    reason:
                        "\(sd.valueHeads) is not a positive multiple of linear_num_key_heads \(sd.keyHeads) of at most "
                        + "\(td.valuesPerKey) per key head: value heads are pruned under their key heads, the same "
                        + "number from each")
            }
            try notLarger(sd.valueDim, td.valueDim, "linear_value_head_dim")
            try unchanged([
                ("linear_key_head_dim", sd.keyDim, td.keyDim),
                ("linear_conv_kernel_dim", sd.convKernel, td.convKernel)
            ])
        }
        if let tm = teacher.mamba, let sm = t.mamba {
            try notLarger(sm.heads, tm.heads, "mamba_num_heads")
            try notLarger(sm.headDim, tm.headDim, "mamba_head_dim")
            if sm.heads % tm.groups != 0 {
                throw ProxyError.invalidTarget(
                    field: "mamba_num_heads",
                    reason:
                        "\(sm.heads) is not a multiple of n_groups \(tm.groups): Mamba2 heads are pruned within "
                        + "their groups, the same number from each, and groups are kept")
            }
            try unchanged([
                ("n_groups", sm.groups, tm.groups), ("ssm_state_size", sm.stateSize, tm.stateSize),
                ("conv_kernel", sm.convKernel, tm.convKernel)
            ])
        }
        for axis in [Axis.numMambaLayers, .numAttentionLayers, .numMLPLayers, .numMoELayers, .numDeltaNetLayers]
        where teacher.hybridLayers != nil {
            try notLarger(axis.value(t), axis.value(teacher), axis.rawValue)
        }
        do { try t.validate(file: "target") } catch let e as ModelError {
            if case let .invalidConfig(_, key, reason) = e {
                throw ProxyError.invalidTarget(field: key, reason: reason)
            }
            throw e
        }
    }

    /// Which units to keep, by importance.
    public static func plan(
        teacher: ModelConfig, target t: ModelConfig, scores: ImportanceScores, options: PruneOptions
    ) throws -> PrunePlan {
        try validate(target: t, teacher: teacher)
        let L = teacher.numHiddenLayers
        let layerScores = options.layerMetric == .blockImportance ? scores.blockImportance : scores.layerLossRise
        var layers: [Int]
        if teacher.hybridLayers != nil, options.contiguousLayers, t.numHiddenLayers < L {
            throw ProxyError.invalidTarget(
                field: "num_hidden_layers",
                reason: "a hybrid teacher's depth is pruned per layer type, not as one contiguous block")
        }
        if let types = teacher.hybridLayers, let keptTypes = t.hybridLayers {
            // Depth by layer type: of each type, the layers the target keeps, by importance among
            // the layers of that type.
            layers = []
            for type in HybridLayer.allCases {
                let candidates = (0..<L).filter { types[$0] == type }
                let want = keptTypes.filter { $0 == type }.count
                layers += ImportanceScores.ranking(candidates.map { layerScores[$0] }).prefix(want).map {
                    candidates[$0]
                }
            }
            layers.sort()
        } else if options.contiguousLayers {
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
        let interleaved = teacher.family.hasAttentionExperts
        let groupOf = { (h: Int) in interleaved ? h % G : h / perGroup }
        for l in 0..<L { for h in 0..<teacher.numAttentionHeads { groupScore[groupOf(h)] += scores.heads[l][h] } }
        let keptGroups = Array(ImportanceScores.ranking(groupScore).prefix(t.numKeyValueHeads)).sorted()
        var heads: [[Int]] = []
        var neurons: [[Int]] = []
        for l in layers {
            var kept: [Int] = []
            if interleaved {
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
        if let tm = teacher.mamba, let sm = t.mamba, let types = teacher.hybridLayers {
            guard let byChannel = scores.mambaChannels, byChannel.count == L else {
                throw ProxyError.invalidTarget(
                    field: "mamba_num_heads",
                    reason: "the importance scores hold no Mamba2 statistics for this hybrid teacher; recompute them")
            }
            plan.mamba = tm
            let (P, perGroup, keepPerGroup) = (tm.headDim, tm.heads / tm.groups, sm.heads / tm.groups)
            for l in layers {
                guard types[l] == .mamba else {
                    plan.mambaHeads.append([])
                    plan.mambaChannels.append([])
                    continue
                }
                let score = byChannel[l]
                let headScore = (0..<tm.heads).map { h in (0..<P).reduce(0) { $0 + score[h * P + $1] } }
                var kept: [Int] = []
                for g in 0..<tm.groups {
                    let members = (0..<perGroup).map { g * perGroup + $0 }
                    kept += ImportanceScores.ranking(members.map { headScore[$0] }).prefix(keepPerGroup).map {
                        members[$0]
                    }
                }
                kept.sort()
                let channelScore = (0..<P).map { p in kept.reduce(0) { $0 + score[$1 * P + p] } }
                plan.mambaHeads.append(kept)
                plan.mambaChannels.append(Array(ImportanceScores.ranking(channelScore).prefix(sm.headDim)).sorted())
            }
        }
        if let td = teacher.deltaNet, let sd = t.deltaNet, let types = teacher.hybridLayers {
            plan.deltaNet = td
            let keep = sd.valueHeads / sd.keyHeads
            /// Layer l's key heads and value heads: key heads by the summed scores of their value
            /// heads, then under each kept key head its best value heads.
            func heads(_ l: Int) throws -> (keys: [Int], values: [Int]) {
                guard sd.valueHeads < td.valueHeads else { return (Array(0..<td.keyHeads), Array(0..<td.valueHeads)) }
                guard let byHead = scores.deltaNetHeads, byHead.count == L, byHead[l].count == td.valueHeads else {
                    throw ProxyError.invalidTarget(
                        field: sd.keyHeads < td.keyHeads ? "linear_num_key_heads" : "linear_num_value_heads",
                        reason: "the importance scores hold no DeltaNet statistics for this teacher; recompute them")
                }
                let members = { (k: Int) in (0..<td.valuesPerKey).map { k * td.valuesPerKey + $0 } }
                let keyScore = (0..<td.keyHeads).map { k in members(k).reduce(0) { $0 + byHead[l][$1] } }
                let keys = Array(ImportanceScores.ranking(keyScore).prefix(sd.keyHeads)).sorted()
                var kept: [Int] = []
                for k in keys {
                    kept += ImportanceScores.ranking(members(k).map { byHead[l][$0] }).prefix(keep).map {
                        members(k)[$0]
                    }
                }
                return (keys, kept.sorted())
            }
            /// Layer l's value channels, the same in every head: by their scores summed over the kept heads.
            func channels(_ l: Int, heads: [Int]) throws -> [Int] {
                guard sd.valueDim < td.valueDim else { return Array(0..<td.valueDim) }
                guard let byChannel = scores.deltaNetChannels, byChannel.count == L,
                    byChannel[l].count == td.valueHeads * td.valueDim
                else {
                    throw ProxyError.invalidTarget(
                        field: "linear_value_head_dim",
                        reason:
                            "the importance scores hold no DeltaNet channel statistics for this teacher; recompute them"
                    )
                }
                let score = (0..<td.valueDim).map { j in heads.reduce(0) { $0 + byChannel[l][$1 * td.valueDim + j] } }
                return Array(ImportanceScores.ranking(score).prefix(sd.valueDim)).sorted()
            }
            for l in layers {
                guard types[l] == .deltaNet else {
                    plan.deltaNetHeads.append([])
                    plan.deltaNetKeyHeads.append([])
                    plan.deltaNetChannels.append([])
                    continue
                }
                let (keys, values) = try heads(l)
                plan.deltaNetKeyHeads.append(keys)
                plan.deltaNetHeads.append(values)
                plan.deltaNetChannels.append(try channels(l, heads: values))
            }
        }
        if teacher.isMixture {
            let expertsKey = teacher.family.definition.expertCountKey
            guard let mlp = scores.mlpExperts, mlp.frequency.count == L else {
                throw ProxyError.invalidTarget(
                    field: expertsKey,
                    reason: "the importance scores hold no expert statistics for this mixture teacher; recompute them")
            }
            let F = teacher.expertWidth, byExpert = mlp.scores(options.expertMetric)
            // Experts are kept group by group, the same number from each (Nemotron-H's router
            // chooses within groups; one group elsewhere).
            let groups = teacher.routerGroups, per = teacher.numLocalExperts / groups
            let keepPer = t.numLocalExperts / groups
            for l in layers {
                guard teacher.isSparse(layer: l) else {
                    // A hybrid decoder's other layers have no experts (the lists stay one per kept layer).
                    plan.experts.append([])
                    plan.expertNeurons.append([])
                    if teacher.sharedExpertWidth > 0 { plan.sharedNeurons.append([]) }
                    continue
                }
                let kept = (0..<groups).flatMap { g in
                    ImportanceScores.ranking(Array(byExpert[l][(g * per)..<((g + 1) * per)])).prefix(keepPer).map {
                        g * per + $0
                    }
                }.sorted()
                plan.experts.append(kept)
                plan.expertNeurons.append(
                    kept.map { e in
                        Array(
                            ImportanceScores.ranking((0..<F).map { scores.neurons[l][e * F + $0] }).prefix(
                                t.expertWidth)
                        ).sorted()
                    })
                if teacher.sharedExpertWidth > 0 {
                    // The shared expert's neurons follow the routed experts' (ids E·F + i).
                    let first = teacher.numLocalExperts * F
                    guard scores.neurons[l].count == first + teacher.sharedExpertWidth else {
                        throw ProxyError.invalidTarget(
                            field: teacher.family.definition.sharedExpertWidthKey,
                            reason: "the importance scores hold no shared-expert statistics; recompute them")
                    }
                    plan.sharedNeurons.append(
                        Array(ImportanceScores.ranking(Array(scores.neurons[l][first...])).prefix(t.sharedExpertWidth))
                            .sorted())
                }
            }
            if teacher.family.hasAttentionExperts {
                guard let attention = scores.attentionExperts else {
                    throw ProxyError.invalidTarget(
                        field: "num_local_experts",
                        reason: "the importance scores hold no attention-expert statistics; recompute them")
                }
                let byAttention = attention.scores(options.expertMetric)
                plan.attentionExperts = layers.map {
                    Array(ImportanceScores.ranking(byAttention[$0]).prefix(t.numLocalExperts)).sorted()
                }
            }
        }
        return plan
    }

    /// The student's config: `target`, with per-layer properties (sliding-window layers)
    /// following the layers kept.
    public static func studentConfig(_ plan: PrunePlan, teacher: ModelConfig, target: ModelConfig) -> ModelConfig {
        var target = target
        target.slidingLayers = plan.layers.indices.filter { teacher.slidingLayers.contains(plan.layers[$0]) }
        if let types = teacher.hybridLayers {
            target.hybridLayers = plan.layers.map { types[$0] }
            target.numHiddenLayers = plan.layers.count
        }
        return target
    }

    /// The teacher's tensor that student tensor `dst` is cut from: the same role, in the kept
    /// layer (and kept expert).
    static func source(of dst: ParameterEntry, _ plan: PrunePlan, teacher: ParameterLayout) -> ParameterEntry {
        guard let role = dst.role else { preconditionFailure("pruning: \(dst.name) has no role") }
        let expert = dst.expert.map { plan.experts[dst.layer!][$0] }
        guard let src = teacher.entry(role, layer: dst.layer.map { plan.layers[$0] }, expert: expert) else {
            preconditionFailure("pruning: the teacher has no \(role) tensor for \(dst.name)")
        }
        return src
    }

    /// The teacher's indices along an axis of `size` that the plan keeps, in student layer
    /// `layer`; `expert`: the student's expert whose neurons are meant.
    static func kept(_ plan: PrunePlan, _ d: AxisRole, size: Int, layer: Int?, expert e: Int?) -> [Int] {
        guard let unit = d.unit else { return Array(0..<size) }
        let units: [Int]
        switch unit {
        case .mambaHeads, .mambaInner, .mambaConv, .mambaProjection: return mambaRows(plan, unit, layer: layer!)
        case .deltaHeads, .deltaValues, .deltaConv, .deltaChannels: return deltaNetRows(plan, unit, layer: layer!)
        case .channels: units = plan.channels
        case .heads: units = plan.heads[layer!]
        case .groups: units = plan.groups[0]
        case .neurons: units = e.map { plan.expertNeurons[layer!][$0] } ?? plan.neurons[layer!]
        case .experts: units = plan.experts[layer!]
        case .sharedNeurons: units = plan.sharedNeurons[layer!]
        case .attentionExperts: units = plan.attentionExperts[layer!]
        }
        let w = d.width, copy = size / d.copies
        let one = w == 1 ? units : units.flatMap { u in (0..<w).map { u * w + $0 } }
        return d.copies == 1 ? one : (0..<d.copies).flatMap { c in one.map { c * copy + $0 } }
    }

    /// The teacher's indices a Mamba2 axis keeps in student layer `l`: the kept heads; the inner
    /// width's channels h·P + p of the kept heads and head channels; the convolution's rows (those
    /// of x, then B and C whole); the in-projection's rows (z, the convolution's, the time steps).
    static func mambaRows(_ plan: PrunePlan, _ unit: PrunedUnit, layer l: Int) -> [Int] {
        let m = plan.mamba!, heads = plan.mambaHeads[l], channels = plan.mambaChannels[l]
        let (I, P) = (m.innerWidth, m.headDim)
        let inner = heads.flatMap { h in channels.map { h * P + $0 } }
        let conv = inner + (0..<(2 * m.groups * m.stateSize)).map { I + $0 }
        switch unit {
        case .mambaHeads: return heads
        case .mambaInner: return inner
        case .mambaConv: return conv
        default: return inner + conv.map { I + $0 } + heads.map { I + m.convWidth + $0 }
        }
    }

    /// The teacher's indices a Gated DeltaNet axis keeps in student layer `l`: the kept value
    /// heads; their channels h·Dv + j; the convolution's rows (the kept key heads' queries, then
    /// their keys, then the kept value channels).
    static func deltaNetRows(_ plan: PrunePlan, _ unit: PrunedUnit, layer l: Int) -> [Int] {
        let d = plan.deltaNet!, heads = plan.deltaNetHeads[l]
        let keys = plan.deltaNetKeyHeads.isEmpty ? Array(0..<d.keyHeads) : plan.deltaNetKeyHeads[l]
        let channels = plan.deltaNetChannels.isEmpty ? Array(0..<d.valueDim) : plan.deltaNetChannels[l]
        let values = heads.flatMap { h in channels.map { h * d.valueDim + $0 } }
        let queries = keys.flatMap { k in (0..<d.keyDim).map { k * d.keyDim + $0 } }
        switch unit {
        case .deltaHeads: return heads
        case .deltaChannels: return channels
        case .deltaValues: return values
        default: return queries + queries.map { d.keyWidth + $0 } + values.map { 2 * d.keyWidth + $0 }
        }
    }

    /// Every row of student tensor `dst` as cut from teacher tensor `src`:
    /// `row(from, cols, to)` means dst[to + j] = src[from + cols[j]] (element indices), in the
    /// student's order. Each axis keeps the units of the plan that its ``AxisRole`` names; a stack
    /// (E, R, K) over experts keeps each kept expert's own rows and columns.
    static func forEachRow(
        _ plan: PrunePlan, dst: ParameterEntry, src: ParameterEntry, _ row: (Int, [Int], Int) throws -> Void
    ) rethrows {
        let (shape, dims, layer) = (src.shape, src.dims, dst.layer)
        switch shape.count {
        case 1:
            let cols = kept(plan, dims[0], size: shape[0], layer: layer, expert: dst.expert)
            precondition(dst.shape == [cols.count], "pruning \(src.name): \(dst.shape) vs \([cols.count])")
            try row(0, cols, 0)
        case 2:
            let rows = kept(plan, dims[0], size: shape[0], layer: layer, expert: dst.expert)
            let cols = kept(plan, dims[1], size: shape[1], layer: layer, expert: dst.expert)
            precondition(
                dst.shape == [rows.count, cols.count],
                "pruning \(src.name): \(dst.shape) vs \([rows.count, cols.count])")
            for (i, r) in rows.enumerated() { try row(r * shape[1], cols, i * cols.count) }
        case 3:
            let experts = kept(plan, dims[0], size: shape[0], layer: layer, expert: nil)
            var into = 0
            for (ne, e) in experts.enumerated() {
                let rows = kept(plan, dims[1], size: shape[1], layer: layer, expert: ne)
                let cols = kept(plan, dims[2], size: shape[2], layer: layer, expert: ne)
                precondition(
                    dst.shape == [experts.count, rows.count, cols.count], "pruning \(src.name): \(dst.shape)")
                for r in rows {
                    try row(e * shape[1] * shape[2] + r * shape[2], cols, into)
                    into += cols.count
                }
            }
        default:
            preconditionFailure("pruning \(src.name): \(shape.count) axes")
        }
    }

    /// A new model of shape `target` holding the teacher's weights for the units `plan` keeps.
    ///
    /// One loop over the student's tensors, whatever the family: each finds the teacher's tensor
    /// of the same role in the kept layer (and kept expert), and every axis keeps the units of
    /// the plan that its ``AxisRole`` names.
    public static func apply(_ plan: PrunePlan, teacher: DecoderModel, target: ModelConfig) -> DecoderModel {
        let student = DecoderModel(config: studentConfig(plan, teacher: teacher.config, target: target))
        for dst in student.layout.entries {
            let src = source(of: dst, plan, teacher: teacher.layout)
            let sp = teacher.parameters.pointer + src.offset, dp = student.parameters.pointer + dst.offset
            forEachRow(plan, dst: dst, src: src) { from, cols, to in
                let s = sp + from, d = dp + to
                for (j, c) in cols.enumerated() { d[j] = s[c] }
            }
        }
        return student
    }

    /// Writes the pruned model straight from the teacher's files into `directory`, a tensor at a
    /// time: each student tensor is cut from the teacher's (memory-mapped, never converted to a
    /// float32 model), so that memory holds about one tensor, whatever the model's size. Without
    /// `type` every tensor keeps the teacher's dtype and each value is bit-identical to the
    /// teacher's; with it, values are converted (rounded to nearest, ties to even). Refuses a
    /// kept value that is NaN or infinite, naming the tensor, before anything is in place.
    public static func write(
        _ plan: PrunePlan, teacher: CheckpointWeights, target: ModelConfig, type: StorageType? = nil,
        to directory: URL, shardBytes: Int? = nil
    ) throws {
        let config = studentConfig(plan, teacher: teacher.config, target: target)
        let layout = ParameterLayout(config: config)
        let sources = layout.entries.map { source(of: $0, plan, teacher: teacher.layout) }
        let tensors = try zip(layout.entries, sources).map { dst, src in
            let stored = try teacher.dtype(src.name)
            guard let from = StorageType(stored) else {
                throw ModelError.safetensors(
                    file: teacher.directory.path, tensor: src.name,
                    reason: "dtype \(stored.rawValue) is not a floating-point type Topiary prunes (F32, F16, BF16)")
            }
            return StreamedTensor(name: dst.name, shape: dst.shape, dtype: (type ?? from).dtype)
        }
        try Checkpoint.write(
            tensors, config: config, type: type ?? teacher.storageType, to: directory, shardBytes: shardBytes
        ) {
            i, emit in
            let dst = layout.entries[i], src = sources[i], to = tensors[i].dtype
            try teacher.withTensor(src.name) { raw, info in
                // Written in pieces of at most `chunk` bytes (a row at least): with the teacher's
                // pages released after each tensor, memory holds about one teacher tensor.
                let size = to.size, chunk = 4 << 20
                var out = UnsafeMutableRawBufferPointer.allocate(byteCount: min(tensors[i].bytes, chunk), alignment: 8)
                defer { out.deallocate() }
                var used = 0
                var bad: Int?
                func flush() throws {
                    if used > 0 { try emit(UnsafeRawBufferPointer(rebasing: out[0..<used])) }
                    used = 0
                }
                try forEachRow(plan, dst: dst, src: src) { from, cols, at in
                    if used + cols.count * size > out.count { try flush() }
                    if cols.count * size > out.count {
                        out.deallocate()
                        out = UnsafeMutableRawBufferPointer.allocate(byteCount: cols.count * size, alignment: 8)
                    }
                    let base = used / size
                    for (j, c) in cols.enumerated() where bad == nil {
                        if !StorageType.copy(raw, info.dtype, from + c, into: out, to, base + j) { bad = at + j }
                    }
                    used += cols.count * size
                }
                if let bad {
                    throw ModelError.checkpoint(
                        path: directory.path, tensor: dst.name,
                        reason: "holds a NaN or infinite value at index \(bad) (from \(src.name)); refusing to write it"
                    )
                }
                try flush()
            }
        }
    }

    /// Plans and applies in one call.
    public static func prune(
        teacher: DecoderModel, to target: ModelConfig, scores: ImportanceScores,
        options: PruneOptions = PruneOptions()
    ) throws -> DecoderModel {
        let plan = try plan(teacher: teacher.config, target: target, scores: scores, options: options)
        return apply(plan, teacher: teacher, target: target)
    }
}
