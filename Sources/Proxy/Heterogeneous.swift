import Foundation
import Model

/// Puzzle's block variants cut from a homogeneous Llama-numerics teacher (arXiv 2411.19146, §3):
/// every layer stays, the hidden size stays, and layer l keeps
/// - its attention with all `num_attention_heads` query heads over G′ key/value groups (G′
///   dividing the teacher's G): new group j's key and value projections are the mean of the
///   teacher's groups j·G/G′ … (j+1)·G/G′ − 1 — the groups its query heads read already, so each
///   head keeps its place (GQA's mean-pooled conversion, Ainslie et al. 2023) — or no attention;
/// - its MLP's W′ most important neurons (by ``ImportanceScores/neurons``), or no MLP.
/// The student is a `nemotron-nas` model (``Family/nemotronNAS``) with those ``LayerVariant``s.
public enum HeterogeneousPruning {
    /// The variants a Llama-numerics teacher's layers can take, checked: groups dividing the
    /// teacher's, widths at most its own.
    public static func check(_ variants: [LayerVariant], teacher t: ModelConfig) throws {
        let whole = LayerVariant(keyValueGroups: t.numKeyValueHeads, mlpWidth: t.intermediateSize)
        guard t.layerVariants?.allSatisfy({ $0 == whole }) ?? true, !t.isMixture, t.family.isGated,
            !t.family.hasNormBias,
            !t.family.hasQKVBias, !t.family.hasQKNorm, t.slidingWindow == nil
        else {
            throw ProxyError.invalidTarget(
                field: "teacher",
                reason:
                    "heterogeneous candidates are cut from a homogeneous teacher with Llama's numerics (llama, "
                    + "mistral without a window, nemotron-nas with equal layers); this one is \(t.family.rawValue)"
                    + (t.isMixture || t.hybridLayers != nil
                        ? " — the nemotron-nas format they are written in has no per-layer experts, Mamba2 or "
                            + "DeltaNet shapes, so its mixture or hybrid layers cannot be varied" : ""))
        }
        guard variants.count == t.numHiddenLayers else {
            throw ProxyError.invalidTarget(
                field: "block_configs", reason: "\(variants.count) layers for a teacher of \(t.numHiddenLayers)")
        }
        for (l, v) in variants.enumerated() {
            if let g = v.keyValueGroups, g <= 0 || t.numKeyValueHeads % g != 0 {
                throw ProxyError.invalidTarget(
                    field: "block_configs[\(l)].attention",
                    reason: "\(g) key/value groups do not divide the teacher's \(t.numKeyValueHeads)")
            }
            if let w = v.mlpWidth, w <= 0 || w > t.intermediateSize {
                throw ProxyError.invalidTarget(
                    field: "block_configs[\(l)].ffn",
                    reason: "width \(w) is not in 1...\(t.intermediateSize), the teacher's")
            }
        }
    }

    /// The student config: the teacher's, as nemotron-nas, with `variants`.
    public static func studentConfig(teacher t: ModelConfig, variants: [LayerVariant]) -> ModelConfig {
        var c = t
        c.family = .nemotronNAS
        c.layerVariants = variants
        c.passthrough = ModelConfig.Passthrough()
        return c
    }

    /// The teacher cut into `variants` (see the type's description). A layer whose variant is in
    /// `trained` (``LocalDistillation``) takes those weights instead of the pruned ones.
    public static func prune(
        teacher: DecoderModel, variants: [LayerVariant], scores: ImportanceScores, trained: BlockWeights? = nil
    ) throws -> DecoderModel {
        let t = teacher.config
        try check(variants, teacher: t)
        let config = studentConfig(teacher: t, variants: variants)
        try config.validate(file: "block_configs")
        let student = DecoderModel(config: config)
        var blocks: [Int: DecoderModel] = [:]
        if let trained {
            for (l, v) in variants.enumerated() {
                if let block = try trained.block(layer: l, variant: v, teacher: t) { blocks[l] = block }
            }
        }
        for e in student.layout.entries {
            let dst = student.tensor(e.name)!
            if let l = e.layer, let block = blocks[l], let role = e.role {
                guard let src = block.layout.entry(role, layer: 0).flatMap({ block.tensor($0.name) }) else {
                    throw ProxyError.invalidTarget(field: e.name, reason: "the trained block has no \(role) tensor")
                }
                _ = dst.update(fromContentsOf: src)
                continue
            }
            guard let src = teacher.tensor(e.name) else {
                throw ProxyError.invalidTarget(field: e.name, reason: "the teacher has no tensor \(e.name)")
            }
            guard let l = e.layer, let role = e.role else {
                _ = dst.update(fromContentsOf: src)
                continue
            }
            fill(
                dst, role: role, from: UnsafeBufferPointer(src), teacher: t, variant: variants[l],
                neurons: scores.neurons[l])
        }
        return student
    }

    /// One tensor of a layer cut into `v` from the teacher's tensor of the same role.
    static func fill(
        _ dst: UnsafeMutableBufferPointer<Float>, role: TensorRole, from src: UnsafeBufferPointer<Float>,
        teacher t: ModelConfig, variant v: LayerVariant, neurons: [Double]
    ) {
        let D = t.headDim, C = t.hiddenSize
        switch role {
        case .k, .v:
            // Mean of each merged run of the teacher's groups, row by row.
            let G = t.numKeyValueHeads, g2 = v.keyValueGroups!, merge = G / g2
            for j in 0..<g2 {
                for r in 0..<(D * C) {
                    var sum: Float = 0
                    for m in 0..<merge { sum += src[((j * merge + m) * D) * C + r] }
                    dst[j * D * C + r] = sum / Float(merge)
                }
            }
        case .gate, .up, .down:
            let kept = Array(ImportanceScores.ranking(neurons).prefix(v.mlpWidth!)).sorted()
            if role == .down {
                let F = t.intermediateSize, W = kept.count
                for r in 0..<C { for (i, n) in kept.enumerated() { dst[r * W + i] = src[r * F + n] } }
            } else {
                for (i, n) in kept.enumerated() {
                    for c in 0..<C { dst[i * C + c] = src[n * C + c] }
                }
            }
        default:
            _ = dst.update(fromContentsOf: src)
        }
    }
}

/// Puzzle's block library (arXiv 2411.19146, §3–4): per layer, the variants a search may choose,
/// each scored by replacing that one block of the teacher — every other layer kept whole — and
/// measuring the KL divergence of the resulting model's next-token distribution from the
/// teacher's on the calibration windows (mean over tokens, nats): 0 for the teacher's own block.
/// The score of a whole choice is taken as the sum of its blocks' scores (what the solver
/// minimises). Variants are initialised by pruning (``HeterogeneousPruning``) and, given
/// `trained` weights, by Puzzle's blockwise local distillation (``LocalDistillation``).
public enum BlockLibrary {
    /// `scores[l][v]` for `variants[l][v]`. `progress(done, total)` after each variant.
    public static func replacementScores(
        teacher: DecoderModel, variants: [[LayerVariant]], importance: ImportanceScores,
        calibration: CalibrationSet, trained: BlockWeights? = nil, batch: Int = 8,
        progress: (Int, Int) -> Void = { _, _ in }
    ) throws -> [[Double]] {
        let t = teacher.config, L = t.numHiddenLayers, V = t.vocabSize, T = calibration.sequence
        guard variants.count == L else {
            throw ProxyError.invalidTarget(
                field: "block_configs", reason: "variants for \(variants.count) of \(L) layers")
        }
        let full = LayerVariant(keyValueGroups: t.numKeyValueHeads, mlpWidth: t.intermediateSize)
        let B = max(1, min(batch, calibration.samples))
        let batches = stride(from: 0, to: calibration.samples, by: B).map { ($0, min(B, calibration.samples - $0)) }
        // The teacher's log-probabilities, once per batch.
        var teacherLogProbs: [[Float]] = []
        for (start, rows) in batches {
            let acts = Activations(config: t, batch: rows, sequence: T)
            try teacher.forward(tokens: Array(calibration.tokens[(start * T)..<((start + rows) * T)]), acts)
            var lp = [Float](repeating: 0, count: rows * T * V)
            lp.withUnsafeMutableBufferPointer {
                logSoftmax(acts.logits.baseAddress!, into: $0.baseAddress!, N: rows * T, V: V, temperature: 1)
            }
            teacherLogProbs.append(lp)
        }
        let total = variants.reduce(0) { $0 + $1.count }
        var done = 0
        var loss = DistillationLoss()
        loss.kl = 1
        loss.lm = 0
        return try variants.enumerated().map { l, layerVariants in
            try layerVariants.map { v -> Double in
                defer {
                    done += 1
                    progress(done, total)
                }
                if v == full { return 0 }
                var choice = Array(repeating: full, count: L)
                choice[l] = v
                let model = try HeterogeneousPruning.prune(
                    teacher: teacher, variants: choice, scores: importance, trained: trained)
                var sum = 0.0, tokens = 0
                for (b, (start, rows)) in batches.enumerated() {
                    let acts = Activations(config: model.config, batch: rows, sequence: T)
                    try model.forward(tokens: Array(calibration.tokens[(start * T)..<((start + rows) * T)]), acts)
                    let N = rows * T
                    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: N * V)
                    defer { scratch.deallocate() }
                    let step = teacherLogProbs[b].withUnsafeBufferPointer {
                        distillationLoss(
                            acts.logits.baseAddress!, teacherLogProbs: $0.baseAddress!,
                            targets: [Int32](repeating: 0, count: N),
                            N: N, V: V, loss: loss, gradient: false, scratch: scratch)
                    }
                    sum += step.kl * Double(N)
                    tokens += N
                }
                return sum / Double(tokens)
            }
        }
    }
}
