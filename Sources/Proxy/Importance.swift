import Foundation
import Model

/// How per-token activation values are reduced: over the sequence within a sample, then over
/// the samples of the calibration batch (Minitron §2.2, Table 11).
public enum Aggregation: String, Sendable, Codable, CaseIterable {
    /// Mean of absolute values.
    case mean
    /// L2 norm: √Σv².
    case l2
    /// Variance.
    case variance

    func reduce(_ v: UnsafeBufferPointer<Double>) -> Double {
        let n = Double(max(v.count, 1))
        switch self {
        case .mean: return v.reduce(0) { $0 + abs($1) } / n
        case .l2: return v.reduce(0) { $0 + $1 * $1 }.squareRoot()
        case .variance:
            let mu = v.reduce(0, +) / n
            return v.reduce(0) { $0 + ($1 - mu) * ($1 - mu) } / n
        }
    }
}

/// Settings that decide importance scores (part of the cache key).
public struct ImportanceSettings: Sendable, Equatable, Codable {
    public var samples = 256
    public var sequence = 128
    public var batchAggregation = Aggregation.l2
    public var sequenceAggregation = Aggregation.mean
    /// nil: language-balanced calibration; otherwise only this language.
    public var language: String? = nil
    public var seed: UInt64 = 1234
    /// Validation tokens per language for the layer-skip loss rise; 0 skips it (a study whose
    /// depth is not an axis, or whose depth ranking is block importance and asks for none).
    public var lossTokensPerLanguage = ImportanceSettings.defaultLossTokensPerLanguage
    /// 512 tokens × 12 languages: SmolLM2-135M's 30 layer-skip losses in about three minutes on
    /// two cores (docs/engine.md).
    public static let defaultLossTokensPerLanguage = 512
    public init() {}
}

/// Activation-based importance of every prunable unit of a decoder (experts included), from forward passes
/// on a calibration set. Larger is more important.
public struct ImportanceScores: Sendable, Equatable, Codable {
    public var teacherFingerprint: String
    public var calibrationFingerprint: String
    public var settings: ImportanceSettings
    /// [layer][query head]: aggregated L2 norm of the head's attention output.
    public var heads: [[Double]]
    /// [layer][neuron]: aggregated activation feeding the down projection.
    public var neurons: [[Double]]
    /// [channel]: aggregated normalised hidden state, summed over every norm of the network.
    public var channels: [Double]
    /// [layer]: Block Importance, 1 − mean cosine(layer input, layer output).
    public var blockImportance: [Double]
    /// [layer]: validation loss with the layer skipped minus the full model's; empty when not
    /// computed (``ImportanceSettings/lossTokensPerLanguage`` 0: depth is not searched).
    public var layerLossRise: [Double]
    /// The full model's validation loss of the layer-skip measurement (0 when not computed).
    public var baseValidationLoss: Double
    /// Mixtures: the MLP experts of every layer.
    public var mlpExperts: ExpertScores?
    /// JetMoE: the attention experts of every layer.
    public var attentionExperts: ExpertScores?
    /// Hybrid decoders, [layer][channel i = head·P + p of the Mamba2 mixer's inner width]: the
    /// aggregated gated, normed output feeding the out-projection (empty for a layer without a
    /// Mamba2 mixer). A head's score is the sum over its channels, a head channel's the sum over
    /// the heads kept (after Minitron-SSM, arXiv 2504.11409).
    public var mambaChannels: [[Double]]? = nil
    /// Qwen3.5, [layer][value head]: the aggregated L2 norm of each Gated DeltaNet value head's
    /// gated, normed output feeding the out-projection, as attention heads are scored (empty for
    /// a layer without DeltaNet).
    public var deltaNetHeads: [[Double]]? = nil
    /// Qwen3.5, [layer][channel h·Dv + j]: the aggregated gated, normed output feeding the
    /// out-projection per value channel (empty without DeltaNet); a channel j's score is the sum
    /// over the value heads kept, as Mamba2's head channels are scored.
    public var deltaNetChannels: [[Double]]? = nil

    public init(
        teacherFingerprint: String, calibrationFingerprint: String, settings: ImportanceSettings, heads: [[Double]],
        neurons: [[Double]], channels: [Double], blockImportance: [Double], layerLossRise: [Double],
        baseValidationLoss: Double,
        mlpExperts: ExpertScores? = nil, attentionExperts: ExpertScores? = nil
    ) {
        self.teacherFingerprint = teacherFingerprint; self.calibrationFingerprint = calibrationFingerprint;
        self.settings = settings
        self.heads = heads; self.neurons = neurons; self.channels = channels; self.blockImportance = blockImportance
        self.layerLossRise = layerLossRise; self.baseValidationLoss = baseValidationLoss
        self.mlpExperts = mlpExperts; self.attentionExperts = attentionExperts
    }

    /// Ranks `scores` from most to least important (ties: lower index first).
    public static func ranking(_ scores: [Double]) -> [Int] {
        scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
    }
}

/// Importance of the experts of one kind (MLP or attention) in every layer, from the routing of
/// the calibration set.
public struct ExpertScores: Sendable, Equatable, Codable {
    /// [layer][expert]: fraction of tokens that choose the expert (summing to k over experts).
    public var frequency: [[Double]]
    /// [layer][expert]: mean over the tokens routed to the expert of ‖gate · expert output‖ — the
    /// router-weighted output norm of Minitron's MoE pruning and REAP (0 for an expert never chosen).
    public var gatedOutputNorm: [[Double]]
    /// language → [layer][expert] routing frequency (calibration language shifts which experts look
    /// important).
    public var frequencyByLanguage: [String: [[Double]]]

    public init(frequency: [[Double]], gatedOutputNorm: [[Double]], frequencyByLanguage: [String: [[Double]]]) {
        self.frequency = frequency; self.gatedOutputNorm = gatedOutputNorm;
        self.frequencyByLanguage = frequencyByLanguage
    }

    /// The scores `metric` ranks by.
    public func scores(_ metric: ExpertMetric) -> [[Double]] { metric == .frequency ? frequency : gatedOutputNorm }

    /// Accumulates routing statistics over forward passes.
    struct Accumulator {
        let E: Int
        var count: [[Double]], normSum: [[Double]], tokens = 0
        var byLanguage: [String: [[Double]]] = [:], tokensByLanguage: [String: Int] = [:]
        var firstLayer: Int? = nil
        init(layers: Int, experts: Int) {
            E = experts
            count = [[Double]](repeating: [Double](repeating: 0, count: experts), count: layers)
            normSum = count
        }

        /// Adds one forward pass's routing of rows `0..<rows·T` (sample r has language languages[r]).
        mutating func add(
            layer l: Int, router r: RouterState, expertOutput y: UnsafePointer<Float>, C: Int,
            T: Int, rows: Int, languages: [String]
        ) {
            let limit = rows * T
            for e in 0..<E {
                for row in r.expertStart[e]..<r.expertStart[e + 1] {
                    let n = r.token(ofRow: row)
                    guard n < limit else { continue }
                    let p = y + row * C
                    var s: Float = 0
                    for i in 0..<C { s += p[i] * p[i] }
                    count[l][e] += 1
                    normSum[l][e] += Double(r.gate(ofRow: row) * s.squareRoot())
                    let lang = languages[n / T]
                    if byLanguage[lang] == nil {
                        byLanguage[lang] = [[Double]](repeating: [Double](repeating: 0, count: E), count: count.count)
                    }
                    byLanguage[lang]![l][e] += 1
                }
            }
            // Tokens are counted once per pass, at the first layer with this router.
            if firstLayer == nil { firstLayer = l }
            if l == firstLayer {
                tokens += limit
                for r in 0..<rows { tokensByLanguage[languages[r], default: 0] += T }
            }
        }

        var scores: ExpertScores {
            ExpertScores(
                frequency: count.map { $0.map { $0 / Double(max(tokens, 1)) } },
                gatedOutputNorm: zip(normSum, count).map { zip($0, $1).map { $1 > 0 ? $0 / $1 : 0 } },
                frequencyByLanguage: Dictionary(
                    uniqueKeysWithValues: byLanguage.map { lang, layers in
                        let n = Double(max(tokensByLanguage[lang] ?? 1, 1))
                        return (lang, layers.map { $0.map { $0 / n } })
                    }))
        }
    }
}

/// How experts are ranked for pruning.
public enum ExpertMetric: String, Sendable, Codable, CaseIterable {
    /// Mean ‖gate · expert output‖ over routed tokens (Minitron, REAP).
    case gatedOutputNorm = "gated_output_norm"
    /// Routing frequency.
    case frequency
}

public enum Importance {
    /// Computes every score for `teacher` on `calibration` (and the validation split of `corpus`
    /// for the layer-skip loss rise).
    public static func compute(
        teacher: DecoderModel, corpus: TokenShards, calibration: CalibrationSet,
        settings: ImportanceSettings, batch: Int = 16, log: (String) -> Void = { _ in }
    ) throws -> ImportanceScores {
        let c = teacher.config
        try Pruning.requireUniformLayers(c)
        let mixture = c.isMixture
        let (L, H, D, F, C) = (
            c.numHiddenLayers, c.numAttentionHeads, c.headDim, mixture ? c.expertWidth : c.intermediateSize,
            c.hiddenSize
        )
        let E = c.numLocalExperts
        var mlpExperts = ExpertScores.Accumulator(layers: L, experts: E),
            attentionExperts = ExpertScores.Accumulator(layers: L, experts: E)
        // Mixture neurons (id e·F + i): summed |activation| (the routed rows per expert are
        // `mlpExperts.count`).
        var expertNeuronSum = [[Double]](repeating: [Double](repeating: 0, count: mixture ? E * F : 0), count: L)
        // Dense MLP neurons, in the layers whose MLP is dense (a Nemotron-H mixture teacher has both).
        let denseF = c.intermediateSize
        let blocks = c.blocks
        let T = calibration.sequence, S = calibration.samples
        let B = min(batch, S)
        let acts = Activations(config: c, batch: B, sequence: T)
        // Per-sample sequence aggregates: [layer][unit][sample].
        var headSeq = [[Double]](repeating: [Double](repeating: 0, count: H * S), count: L)
        var neuronSeq = blocks.map { [Double](repeating: 0, count: $0.isSparse ? 0 : denseF * S) }
        // A mixture's shared expert (Qwen3.5-MoE, Nemotron-H): its neurons are scored as a dense MLP's.
        let sharedWidth = mixture ? c.sharedExpertWidth : 0
        var sharedSeq = [[Double]](repeating: [Double](repeating: 0, count: sharedWidth * S), count: L)
        let mambaWidth = c.mamba?.innerWidth ?? 0
        let mambaLayers = (0..<L).map { c.hybridLayers?[$0] == .mamba }
        var mambaSeq = mambaLayers.map { [Double](repeating: 0, count: $0 ? mambaWidth * S : 0) }
        let (deltaHeads, deltaDim) = (c.deltaNet?.valueHeads ?? 0, c.deltaNet?.valueDim ?? 0)
        let deltaLayers = (0..<L).map { c.hybridLayers?[$0] == .deltaNet }
        var deltaSeq = deltaLayers.map { [Double](repeating: 0, count: $0 ? deltaHeads * S : 0) }
        var deltaChannelSeq = deltaLayers.map { [Double](repeating: 0, count: $0 ? deltaHeads * deltaDim * S : 0) }
        var channelSeq = [[Double]](repeating: [Double](repeating: 0, count: C * S), count: 2 * L + 1)
        var cosineSum = [Double](repeating: 0, count: L)
        var tokensSeen = 0
        let saved = teacher.masks
        teacher.masks = ForwardMasks()
        defer { teacher.masks = saved }
        var scratch = [Double](repeating: 0, count: T)
        let seqAgg = settings.sequenceAggregation
        var start = 0
        let calibrationProgress = ProgressReporter(
            label: "importance: calibration", total: (S + B - 1) / B,
            every: max(1, (S + B - 1) / B / 10), unit: "batch")
        while start < S {
            try Interruption.check()
            let rows = min(B, S - start)
            var tokens = [Int32](repeating: 0, count: B * T)
            for r in 0..<rows { for t in 0..<T { tokens[r * T + t] = calibration.tokens[(start + r) * T + t] } }
            try teacher.forward(tokens: tokens, acts)
            scratch.withUnsafeMutableBufferPointer { seq in
                func aggregate(_ value: (Int) -> Double) -> Double {
                    for t in 0..<T { seq[t] = value(t) }
                    return seqAgg.reduce(UnsafeBufferPointer(seq))
                }
                for l in 0..<L {
                    let a = acts.layers[l]
                    // A layer has attention heads or MLP neurons only where its block has them (a
                    // Nemotron-H layer is one mixer; Qwen3.5's DeltaNet layers end in an MLP).
                    let block = blocks[l], hasNeurons = block.hasChannelMixer && !block.isSparse
                    let hasHeads: Bool
                    if case .attention = block.mixer { hasHeads = true } else { hasHeads = false }
                    for r in 0..<rows {
                        let sample = start + r
                        for h in 0..<H where hasHeads {
                            headSeq[l][h * S + sample] = aggregate { t in
                                let p = a.attn + (r * T + t) * H * D + h * D
                                var s: Float = 0
                                for d in 0..<D { s += p[d] * p[d] }
                                return Double(s.squareRoot())
                            }
                        }
                        if hasNeurons {
                            for i in 0..<denseF {
                                neuronSeq[l][i * S + sample] = aggregate { t in
                                    Double(a.mlpAct[(r * T + t) * denseF + i])
                                }
                            }
                        }
                        if let act = a.sharedAct {
                            for i in 0..<sharedWidth {
                                sharedSeq[l][i * S + sample] = aggregate { t in
                                    Double(act[(r * T + t) * sharedWidth + i])
                                }
                            }
                        }
                        if deltaLayers[l], let m = a.deltaNet {
                            for h in 0..<deltaHeads {
                                deltaSeq[l][h * S + sample] = aggregate { t in
                                    let p = m.normed + (r * T + t) * deltaHeads * deltaDim + h * deltaDim
                                    var s: Float = 0
                                    for j in 0..<deltaDim { s += p[j] * p[j] }
                                    return Double(s.squareRoot())
                                }
                            }
                            for i in 0..<(deltaHeads * deltaDim) {
                                deltaChannelSeq[l][i * S + sample] = aggregate { t in
                                    Double(m.normed[(r * T + t) * deltaHeads * deltaDim + i])
                                }
                            }
                        }
                        if mambaLayers[l], let m = a.mamba {
                            for i in 0..<mambaWidth {
                                mambaSeq[l][i * S + sample] = aggregate { t in
                                    Double(m.normed[(r * T + t) * mambaWidth + i])
                                }
                            }
                        }
                        for (k, y) in [a.norm1, a.norm2].enumerated() {
                            for ch in 0..<C {
                                channelSeq[2 * l + k][ch * S + sample] = aggregate { t in
                                    Double(y[(r * T + t) * C + ch])
                                }
                            }
                        }
                        // Block importance: cosine between the layer's input and output per token.
                        let x = acts.residual[l], y = acts.residual[l + 1]
                        for t in 0..<T {
                            let px = x + (r * T + t) * C, py = y + (r * T + t) * C
                            var dot: Float = 0, nx: Float = 0, ny: Float = 0
                            for ch in 0..<C { dot += px[ch] * py[ch]; nx += px[ch] * px[ch]; ny += py[ch] * py[ch] }
                            cosineSum[l] += Double(dot / max((nx * ny).squareRoot(), 1e-12))
                        }
                    }
                }
                for r in 0..<rows {
                    for ch in 0..<C {
                        channelSeq[2 * L][ch * S + start + r] = aggregate { t in
                            Double(acts.finalNorm[(r * T + t) * C + ch])
                        }
                    }
                }
                let languages = Array(calibration.languages[start..<(start + rows)])
                for l in 0..<L where mixture {
                    let a = acts.layers[l]
                    if let router = a.mlpRouter, let y = a.mlpExpertOut {
                        // (Expert outputs are as wide as their input: a latent mixture's in the latent width.)
                        mlpExperts.add(
                            layer: l, router: router, expertOutput: y, C: c.expertInputWidth, T: T, rows: rows,
                            languages: languages)
                        for row in 0..<(router.N * router.k) where router.token(ofRow: row) < rows * T {
                            let e = router.expert(ofRow: row), act = a.mlpAct + row * F
                            for i in 0..<F { expertNeuronSum[l][e * F + i] += Double(abs(act[i])) }
                        }
                    }
                    if let router = a.attentionRouter, let y = a.attnExpertOut {
                        attentionExperts.add(
                            layer: l, router: router, expertOutput: y, C: C, T: T, rows: rows, languages: languages)
                    }
                }
            }
            tokensSeen += rows * T
            start += rows
            if let line = calibrationProgress.line(step: (start + B - 1) / B, tokens: tokensSeen, fields: []) {
                log(line)
            }
        }
        let batchAgg = settings.batchAggregation
        func reduceSamples(_ v: [Double], units: Int) -> [Double] {
            v.withUnsafeBufferPointer { p in
                (0..<units).map { batchAgg.reduce(UnsafeBufferPointer(rebasing: p[($0 * S)..<($0 * S + S)])) }
            }
        }
        let heads = headSeq.map { reduceSamples($0, units: H) }
        // Mixture neurons: mean |activation| over the rows routed to their expert; then the shared
        // expert's (ids E·F + i).
        let neurons = (0..<L).map { l in
            blocks[l].isSparse
                ? (0..<(E * F)).map { expertNeuronSum[l][$0] / max(mlpExperts.count[l][$0 / F], 1) }
                    + (sharedWidth > 0 ? reduceSamples(sharedSeq[l], units: sharedWidth) : [])
                : reduceSamples(neuronSeq[l], units: denseF)
        }
        var channels = [Double](repeating: 0, count: C)
        for norm in channelSeq { for (i, v) in reduceSamples(norm, units: C).enumerated() { channels[i] += v } }
        let blockImportance = cosineSum.map { 1 - $0 / Double(tokensSeen) }

        // Loss rise when each layer is skipped, on validation data.
        let (measuredBase, rise) = try layerSkipLoss(
            teacher: teacher, corpus: corpus, batch: B, sequence: T,
            tokensPerLanguage: settings.lossTokensPerLanguage, activations: acts, log: log)
        let base = rise.isEmpty ? 0 : measuredBase
        if !rise.isEmpty {
            for l in 0..<L {
                log(
                    "layer \(l): block importance \(String(format: "%.4f", blockImportance[l])), loss rise "
                        + "when skipped \(String(format: "%.4f", rise[l]))"
                )
            }
        }
        var scores = ImportanceScores(
            teacherFingerprint: Fingerprint.of(teacher), calibrationFingerprint: calibration.fingerprint,
            settings: settings, heads: heads, neurons: neurons, channels: channels,
            blockImportance: blockImportance, layerLossRise: rise, baseValidationLoss: base,
            mlpExperts: mixture ? mlpExperts.scores : nil,
            attentionExperts: c.family.hasAttentionExperts ? attentionExperts.scores : nil)
        if c.hybridLayers != nil {
            scores.mambaChannels = zip(mambaSeq, mambaLayers).map { $1 ? reduceSamples($0, units: mambaWidth) : [] }
            scores.deltaNetHeads = zip(deltaSeq, deltaLayers).map { $1 ? reduceSamples($0, units: deltaHeads) : [] }
            scores.deltaNetChannels = zip(deltaChannelSeq, deltaLayers).map {
                $1 ? reduceSamples($0, units: deltaHeads * deltaDim) : []
            }
        }
        return scores
    }

    /// The validation loss of `teacher` (token-weighted over languages, as
    /// ``Evaluation/validationLoss(model:shards:split:batch:sequence:maxTokensPerLanguage:step:activations:)``)
    /// and, for every layer l, the loss with layer l skipped minus it.
    ///
    /// Layer-major with one hidden state per validation window: the state entering layer l is
    /// kept, so skipping l runs layers l+1…L−1 and the head on it, and one more layer advances it.
    /// That is L(L−1)/2 + L layer passes and L + 1 heads instead of L² + L layers and L + 1 heads;
    /// each loss is the one a full forward pass with layer l skipped gives (the same kernels on
    /// the same rows). Memory: the validation tokens × C floats of the state.
    /// `tokensPerLanguage` 0 returns no rises (and the base loss as NaN: nothing was scored).
    public static func layerSkipLoss(
        teacher: DecoderModel, corpus: TokenShards, batch B: Int, sequence T: Int,
        tokensPerLanguage: Int, activations acts: Activations,
        log: (String) -> Void = { _ in }
    ) throws -> (base: Double, rise: [Double]) {
        guard tokensPerLanguage > 0 else { return (.nan, []) }
        let c = teacher.config
        let (L, C, N) = (c.numHiddenLayers, c.hiddenSize, acts.N)
        // The validation windows of every language, packed B rows to a batch across languages (a
        // language of 4 windows does not fill a batch of 16 alone).
        var windows: [(language: String, tokens: ArraySlice<Int32>, targets: ArraySlice<Int32>)] = []
        corpus.forEachWindowBatch(batch: acts.B, sequence: T, maxTokensPerLanguage: tokensPerLanguage) {
            lang, tokens, targets in
            for r in 0..<acts.B where targets[(r * T)..<((r + 1) * T)].contains(where: { $0 >= 0 }) {
                windows.append((lang, tokens[(r * T)..<((r + 1) * T)], targets[(r * T)..<((r + 1) * T)]))
            }
        }
        var batches: [(languages: [String], tokens: [Int32], targets: [Int32])] = []
        for start in stride(from: 0, to: windows.count, by: acts.B) {
            let rows = windows[start..<min(start + acts.B, windows.count)]
            var tokens = [Int32](repeating: 0, count: acts.B * T), targets = [Int32](repeating: -1, count: acts.B * T)
            for (r, w) in rows.enumerated() {
                tokens.replaceSubrange((r * T)..<((r + 1) * T), with: w.tokens)
                targets.replaceSubrange((r * T)..<((r + 1) * T), with: w.targets)
            }
            batches.append((rows.map(\.language), tokens, targets))
        }
        func add(_ tally: inout LossTally, _ batch: (languages: [String], tokens: [Int32], targets: [Int32])) {
            let losses = UnsafeBufferPointer(acts.rowLosses)
            for (r, language) in batch.languages.enumerated() {
                tally.add(
                    language, rowLosses: UnsafeBufferPointer(rebasing: losses[(r * T)..<((r + 1) * T)]),
                    targets: Array(batch.targets[(r * T)..<((r + 1) * T)]), sequence: T)
            }
        }
        let saved = teacher.masks
        teacher.masks = ForwardMasks()
        defer { teacher.masks = saved }
        var baseTally = LossTally()
        let state = FloatBuffer(count: batches.count * N * C)
        for (b, batch) in batches.enumerated() {
            try teacher.forward(tokens: batch.tokens, acts)
            _ = try teacher.loss(acts, targets: batch.targets, gradient: false)
            add(&baseTally, batch)
            (state.pointer + b * N * C).update(from: acts.residual[0], count: N * C)
        }
        let base = try baseTally.result(step: 0).overall
        let scored = batches.reduce(0) { $0 + $1.targets.filter { $0 >= 0 }.count }
        let progress = ProgressReporter(
            label: "importance: layer-skip loss", total: L, every: max(1, L / 10), unit: "layer")
        var rise: [Double] = []
        for l in 0..<L {
            var tally = LossTally()
            for (b, batch) in batches.enumerated() {
                try Interruption.check()
                let x = state.pointer + b * N * C
                // Skipped: layer l's output is its input.
                acts.residual[l + 1].update(from: x, count: N * C)
                try teacher.forward(fromLayer: l + 1, acts)
                _ = try teacher.loss(acts, targets: batch.targets, gradient: false)
                add(&tally, batch)
                // Advance the state through layer l.
                if l + 1 < L {
                    acts.residual[l].update(from: x, count: N * C)
                    try teacher.forward(layer: l, acts)
                    x.update(from: acts.residual[l + 1], count: N * C)
                }
            }
            rise.append(try tally.result(step: 0).overall - base)
            // Skipping layer l costs L − l layer passes and a head (counted as one more).
            let done = Double((0...l).reduce(0) { $0 + L - $1 + 1 }) / Double((0..<L).reduce(0) { $0 + L - $1 + 1 })
            if let line = progress.line(
                step: l + 1, tokens: scored * (l + 1), fields: [("rise", String(format: "%.4f", rise[l]))],
                done: done)
            {
                log(line)
            }
        }
        return (base, rise)
    }

    /// What identifies a set of scores: the teacher's and the calibration set's fingerprints and
    /// the settings (as key-sorted JSON).
    public struct Key: Sendable, Hashable {
        public var teacher: String, calibration: String, settings: String
        /// One hex digest of the three (the file cache's name).
        public var digest: String {
            var f = Fingerprint()
            f.add(teacher); f.add(calibration); f.add(settings)
            return f.hex
        }
    }

    /// The key of `teacher`'s scores on `corpus` with `settings` (draws the calibration set).
    public static func key(teacher: DecoderModel, corpus: TokenShards, settings: ImportanceSettings) throws -> (
        Key, CalibrationSet
    ) {
        try key(teacherFingerprint: Fingerprint.of(teacher), corpus: corpus, settings: settings)
    }

    /// The cache key of a teacher known by its fingerprint (``Fingerprint/of(_:)-(CheckpointWeights)``).
    public static func key(teacherFingerprint: String, corpus: TokenShards, settings: ImportanceSettings) throws -> (
        Key, CalibrationSet
    ) {
        let calibration = try CalibrationSet(
            corpus: corpus, samples: settings.samples, sequence: settings.sequence,
            language: settings.language, seed: settings.seed)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let key = Key(
            teacher: teacherFingerprint, calibration: calibration.fingerprint,
            settings: String(decoding: try encoder.encode(settings), as: UTF8.self))
        return (key, calibration)
    }

    /// The scores `cache` holds for `key`, if any.
    public static func cachedScores(_ key: Key, cache: URL) -> ImportanceScores? {
        let url = cache.appendingPathComponent("importance-\(key.digest).json")
        guard let data = try? Data(contentsOf: url) else { return nil }
        return try? JSONDecoder().decode(ImportanceScores.self, from: data)
    }

    /// Scores from `cache` when a file for this teacher, calibration set and settings exists;
    /// otherwise computes and stores them there (atomically).
    /// `compute` replaces the built-in engine (an external trial backend computes them instead).
    public static func cached(
        teacher: DecoderModel, corpus: TokenShards, settings: ImportanceSettings, cache: URL,
        log: (String) -> Void = { _ in },
        compute external: ((CalibrationSet) throws -> ImportanceScores)? = nil
    ) throws -> (ImportanceScores, fromCache: Bool) {
        try cached(
            teacherFingerprint: Fingerprint.of(teacher), loadTeacher: { teacher }, corpus: corpus, settings: settings,
            cache: cache, log: log, compute: external)
    }

    /// ``cached(teacher:corpus:settings:cache:log:compute:)`` for a teacher known by its
    /// fingerprint: `loadTeacher` is called only when the scores must be computed by the
    /// built-in engine (the model is released when they are).
    public static func cached(
        teacherFingerprint: String, loadTeacher: () throws -> DecoderModel, corpus: TokenShards,
        settings: ImportanceSettings, cache: URL, log: (String) -> Void = { _ in },
        compute external: ((CalibrationSet) throws -> ImportanceScores)? = nil
    ) throws -> (ImportanceScores, fromCache: Bool) {
        let (key, calibration) = try Importance.key(
            teacherFingerprint: teacherFingerprint, corpus: corpus, settings: settings)
        if let scores = cachedScores(key, cache: cache) { return (scores, true) }
        let url = cache.appendingPathComponent("importance-\(key.digest).json")
        let scores =
            try external.map { try $0(calibration) }
            ?? compute(
                teacher: try loadTeacher(), corpus: corpus, calibration: calibration, settings: settings, log: log)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try AtomicFile.write(try encoder.encode(scores), to: url)
        return (scores, false)
    }
}
