import Foundation

/// A serving workload for throughput: `batch` sequences, each a prompt of `input` tokens
/// (prefilled at once) and `output` generated tokens (the first from the prefill, the rest one
/// decode step each), weights and cache in `dtype` (the roofline's bytes; the built-in engine
/// computes in float32 whatever it says).
public struct ServingWorkload: Sendable, Equatable, Codable {
    public var batch: Int, input: Int, output: Int
    public var dtype: StorageType

    public init(batch: Int, input: Int, output: Int, dtype: StorageType = .bfloat16) {
        self.batch = batch
        self.input = input
        self.output = output
        self.dtype = dtype
    }
}

/// Seconds one block (or what lies outside the blocks) spends on a ``ServingWorkload``: the
/// prefill of every prompt, and a decode step of the whole batch with `input + 1` and with
/// `input + output − 1` positions cached (a step's attention grows linearly with the context, so
/// the steps between cost their mean).
public struct PhaseTimes: Sendable, Equatable, Codable {
    public var prefill: Double, decodeFirst: Double, decodeLast: Double

    public init(prefill: Double, decodeFirst: Double, decodeLast: Double) {
        self.prefill = prefill
        self.decodeFirst = decodeFirst
        self.decodeLast = decodeLast
    }

    /// The prefill and `output − 1` decode steps.
    public func seconds(output O: Int) -> Double { prefill + Double(max(0, O - 1)) * (decodeFirst + decodeLast) / 2 }
}

/// The roofline: a phase takes the longer of its FLOPs at `flopsPerSecond` and the bytes it must
/// read or write at `bytesPerSecond` (weights once per pass, the KV cache it reads and writes).
/// The estimate where nothing was measured.
public struct Roofline: Sendable, Equatable, Codable {
    public var flopsPerSecond: Double, bytesPerSecond: Double

    public init(flopsPerSecond: Double, bytesPerSecond: Double) {
        self.flopsPerSecond = flopsPerSecond
        self.bytesPerSecond = bytesPerSecond
    }

    func seconds(flops: Double, bytes: Double) -> Double { max(flops / flopsPerSecond, bytes / bytesPerSecond) }
}

/// Measured phase times per block shape (``Throughput/key(_:in:)``) on one machine at one workload:
/// what `topiary bench throughput` writes and a spec's `budget.throughput.table` reads.
public struct ThroughputTable: Sendable, Equatable, Codable {
    /// The CPU (or device) and thread count it was measured on, and by what.
    public var machine: String
    public var engine: String
    public var threads: Int
    public var workload: ServingWorkload
    /// The machine's own roofline (a large matrix product's FLOP/s, a large copy's bytes/s), for
    /// shapes the table lacks.
    public var roofline: Roofline?
    public var blocks: [String: PhaseTimes]
    /// What lies outside the blocks (embedding, final norm, LM head), per hidden size and vocabulary.
    public var outside: [String: PhaseTimes]

    public init(
        machine: String, engine: String, threads: Int, workload: ServingWorkload, roofline: Roofline?,
        blocks: [String: PhaseTimes] = [:], outside: [String: PhaseTimes] = [:]
    ) {
        self.machine = machine
        self.engine = engine
        self.threads = threads
        self.workload = workload
        self.roofline = roofline
        self.blocks = blocks
        self.outside = outside
    }
}

/// A config's throughput at a serving workload: generated tokens per second, `batch · output`
/// over the summed seconds of every block and of what lies outside them, each measured (a
/// ``ThroughputTable`` entry) or, where none was, estimated by the roofline (`estimated` counts
/// those parts).
public struct ThroughputEstimate: Sendable, Equatable {
    public var tokensPerSecond: Double
    public var seconds: Double
    public var estimated: Int
    public var parts: Int
}

public enum Throughput {
    /// What a block's time depends on: hidden size, heads, groups, head width, window, MLP width,
    /// and the numerics that add work (gating, q/k/v bias, q/k norms, layer norm).
    public static func key(_ b: Block, in c: ModelConfig) -> String {
        var s = "C\(c.hiddenSize)"
        switch b.mixer {
        case .none: s += " attn-"
        case let .attention(H, G, D, window, E):
            s += " H\(H) G\(G) D\(D)" + (window.map { " W\($0)" } ?? "") + (E > 0 ? " E\(E)" : "")
            if c.family.hasQKVBias { s += " bias" }
            if c.family.hasQKNorm { s += " qknorm" }
            if c.family.definition.hasGatedAttention { s += " gated" }
        case let .mamba(m):
            s += " mamba H\(m.heads) P\(m.headDim) G\(m.groups) N\(m.stateSize) K\(m.convKernel)"
        case let .deltaNet(d):
            s += " deltanet Hk\(d.keyHeads) Hv\(d.valueHeads) Dk\(d.keyDim) Dv\(d.valueDim) K\(d.convKernel)"
        }
        switch b.channelMixer {
        case .none: s += " mlp-"
        case let .dense(F): s += " F\(F)"
        case let .experts(E, k, F, S): s += " experts\(E)x\(k) F\(F)" + (S > 0 ? " shared\(S)" : "")
        }
        if b.channelMixer != .none { s += c.family.isGated ? " swiglu" : " relu2" }
        if c.family.hasNormBias { s += " LN1P" }
        return s
    }

    /// The key of what lies outside the blocks.
    public static func outsideKey(_ c: ModelConfig) -> String { "C\(c.hiddenSize) V\(c.vocabSize)" }

    /// Block `b`'s seconds at `w`: measured in `table`, else by `roofline` (the given one, else the
    /// table's; `estimated`). Nil when neither has it.
    public static func blockSeconds(
        _ b: Block, in c: ModelConfig, at w: ServingWorkload, table: ThroughputTable?, roofline: Roofline?
    ) -> (seconds: Double, estimated: Bool)? {
        if let t = table?.blocks[key(b, in: c)] { return (t.seconds(output: w.output), false) }
        guard let line = roofline ?? table?.roofline else { return nil }
        return (rooflineTimes(b, in: c, at: w, line).seconds(output: w.output), true)
    }

    /// What lies outside the blocks, the same way.
    public static func outsideSeconds(
        _ c: ModelConfig, at w: ServingWorkload, table: ThroughputTable?, roofline: Roofline?
    ) -> (seconds: Double, estimated: Bool)? {
        if let t = table?.outside[outsideKey(c)] { return (t.seconds(output: w.output), false) }
        guard let line = roofline ?? table?.roofline else { return nil }
        return (rooflineOutside(c, at: w, line).seconds(output: w.output), true)
    }

    /// `c`'s throughput at `w`: every block from `table` where measured, else from `roofline`
    /// (the spec's, else the table's). Nil when a part has neither.
    public static func estimate(_ c: ModelConfig, at w: ServingWorkload, table: ThroughputTable?, roofline: Roofline?)
        -> ThroughputEstimate?
    {
        var seconds = 0.0, estimated = 0, parts = 0
        for (block, count) in c.distinctBlocks {
            guard let s = blockSeconds(block, in: c, at: w, table: table, roofline: roofline) else { return nil }
            seconds += Double(count) * s.seconds
            parts += count
            if s.estimated { estimated += count }
        }
        guard let o = outsideSeconds(c, at: w, table: table, roofline: roofline) else { return nil }
        seconds += o.seconds
        parts += 1
        if o.estimated { estimated += 1 }
        return ThroughputEstimate(
            tokensPerSecond: Double(w.batch * w.output) / seconds, seconds: seconds, estimated: estimated, parts: parts)
    }

    /// A block's seconds for `w` by the roofline. Prefill: `B · (2 · matmul parameters · I + 4 · H · D ·
    /// Σ_i positions seen by query i)` FLOPs against its weights plus the cache it writes; a decode
    /// step at context n: `B · (2 · matmul parameters + 4 · H · D · n)` FLOPs against its weights
    /// plus the cache it reads.
    public static func rooflineTimes(_ b: Block, in c: ModelConfig, at w: ServingWorkload, _ line: Roofline)
        -> PhaseTimes
    {
        let B = Double(w.batch), I = w.input, size = Double(w.dtype.dtype.size)
        let weights = Double(c.blockParameters(b, active: false, in: Int.self)) * size
        let matmul = 2 * Double(c.blockMatmulParameters(b))
        var seen = 0.0
        for i in 0..<I { seen += Double(b.cachedPositions(context: i + 1)) }
        let perPosition = Double(b.attentionProductFLOPs(positions: 1, expertsPerToken: c.numExpertsPerTok))
        let prefill = line.seconds(
            flops: B * (matmul * Double(I) + perPosition * seen),
            bytes: weights + B * Double(I) * Double(b.keyValueWidth) * size)
        func decode(_ n: Int) -> Double {
            let kept = Double(b.cachedPositions(context: n))
            return line.seconds(
                flops: B * (matmul + perPosition * kept), bytes: weights + B * kept * Double(b.keyValueWidth) * size)
        }
        return PhaseTimes(
            prefill: prefill, decodeFirst: decode(I + 1), decodeLast: decode(I + max(1, w.output - 1)))
    }

    /// The LM head (and final norm) on one row per sequence per step, by the roofline.
    public static func rooflineOutside(_ c: ModelConfig, at w: ServingWorkload, _ line: Roofline) -> PhaseTimes {
        let head = Double(c.vocabSize * c.hiddenSize)
        let t = line.seconds(flops: 2 * head * Double(w.batch), bytes: head * Double(w.dtype.dtype.size))
        return PhaseTimes(prefill: t, decodeFirst: t, decodeLast: t)
    }

    // MARK: measured on the built-in engine

    /// A model of `layers` copies of `b` with `c`'s numerics (random weights: time does not
    /// depend on them).
    static func oneLayer(_ b: Block, like c: ModelConfig, layers: Int = 1) throws -> DecoderModel {
        if c.hybridLayers != nil { return try hybridLayers(b, like: c, layers: layers) }
        var one = c
        var variant = LayerVariant(keyValueGroups: nil, mlpWidth: nil)
        switch b.mixer {
        case .none: break
        case let .attention(H, G, _, window, E):
            guard E == 0, H == c.numAttentionHeads else {
                throw ModelError.invalidInput("the built-in engine times dense blocks of the config's query heads")
            }
            variant.keyValueGroups = G
            one.slidingWindow = window
            one.slidingLayers = window == nil ? [] : Array(0..<layers)
        case .mamba, .deltaNet:
            throw ModelError.invalidInput("Mamba2 and DeltaNet blocks are timed in a hybrid config")
        }
        switch b.channelMixer {
        case .none: break
        case let .dense(F): variant.mlpWidth = F
        case .experts: throw ModelError.invalidInput("the built-in engine times dense MLP blocks")
        }
        one.numHiddenLayers = layers
        one.layerVariants = Array(repeating: variant, count: layers)
        let m = DecoderModel(config: one)
        m.initialize(seed: 1)
        return m
    }

    /// A hybrid model of `layers` copies of `b`, which is one mixer (Mamba2 or attention) or one
    /// MLP, with `c`'s numerics.
    /// A Qwen3.5 layer's MLP, or a Qwen3.5-MoE layer's mixture and shared expert.
    static func setChannelMixer(_ c: inout ModelConfig, _ channel: Block.ChannelMixer) {
        switch channel {
        case let .dense(F): c.intermediateSize = F
        case let .experts(E, k, F, S):
            (c.numLocalExperts, c.numExpertsPerTok, c.moeIntermediateSize) = (E, k, F)
            if S > 0 { c.intermediateSize = S }
        case .none: break
        }
    }

    static func hybridLayers(_ b: Block, like c: ModelConfig, layers: Int) throws -> DecoderModel {
        var one = c
        let type: HybridLayer
        switch (b.mixer, b.channelMixer) {
        case let (.mamba(m), .none):
            type = .mamba
            one.mamba = m
        case let (.attention(H, G, _, window, E), .none) where E == 0 && window == nil:
            type = .attention
            one.numAttentionHeads = H
            one.numKeyValueHeads = G
        case let (.none, .dense(F)):
            type = .mlp
            one.intermediateSize = F
        case let (.deltaNet(d), channel) where c.family.definition.hybridMixersHaveMLP && channel != .none:
            type = .deltaNet
            one.deltaNet = d
            setChannelMixer(&one, channel)
        case let (.attention(H, G, _, window, E), channel)
        where E == 0 && window == nil && c.family.definition.hybridMixersHaveMLP && channel != .none:
            type = .attention
            one.numAttentionHeads = H
            one.numKeyValueHeads = G
            setChannelMixer(&one, channel)
        default:
            throw ModelError.invalidInput(
                "a hybrid layer is one Mamba2 mixer, one attention mixer or one MLP (Nemotron-H), or a DeltaNet or "
                    + "attention mixer then an MLP (Qwen3.5)")
        }
        one.hybridLayers = Array(repeating: type, count: layers)
        one.numHiddenLayers = layers
        let m = DecoderModel(config: one)
        m.initialize(seed: 1)
        return m
    }

    /// The median of `repeats` timings of `body`, after one unmeasured run.
    static func median(_ repeats: Int, _ body: () throws -> Void) rethrows -> Double {
        try body()
        var times: [Double] = []
        for _ in 0..<max(1, repeats) {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return times.sorted()[times.count / 2]
    }

    /// The built-in engine's description in a table: blocks are timed in a stack as deep as the
    /// model they come from (see ``measure(_:like:at:repeats:)``).
    public static let engineDescription = "built-in (float32, CPU; each block timed in a stack of the model's depth)"

    /// Times block `b` (with `c`'s numerics) on the built-in engine, in a stack of
    /// `c.numHiddenLayers` copies of it, each with its own weights and key/value cache, divided by
    /// the depth — so that a block's time carries the cache pressure of a whole model (a block
    /// timed alone keeps its weights and cache hot, and summed such times overstate a model's
    /// tokens/s by 1.25–1.6× on average, up to 2.1×, on a 2-core EPYC: `bench throughput --check`). Phases: the prefill of
    /// one prompt of `input` tokens (× batch: prefill is bound by its products), and a decode step
    /// of the whole batch at both contexts, each the median of `repeats`.
    public static func measure(_ b: Block, like c: ModelConfig, at w: ServingWorkload, repeats: Int = 5) throws
        -> PhaseTimes
    {
        let L = max(1, c.numHiddenLayers)
        let t = try timeLayers(try oneLayer(b, like: c, layers: L), at: w, repeats: repeats, head: false)
        return PhaseTimes(
            prefill: t.prefill / Double(L), decodeFirst: t.decodeFirst / Double(L), decodeLast: t.decodeLast / Double(L)
        )
    }

    /// Times a whole model the way the table's parts are timed, but in one pass: the prefill of
    /// one prompt through every layer (× batch) plus the head on one row per sequence, and a
    /// batch decode step through every layer and the head at `input + 1` and `input + output − 1`
    /// cached positions — to check a sum of block times against the model they add up to.
    public static func measureWhole(_ c: ModelConfig, at w: ServingWorkload, repeats: Int = 5) throws -> PhaseTimes {
        let m = DecoderModel(config: c)
        m.initialize(seed: 1)
        return try timeLayers(m, at: w, repeats: repeats, head: true)
    }

    /// Every layer of `m` in one pass, each phase the median of `repeats`: the prefill of one
    /// prompt (× batch), a batch decode step at `input + 1` and `input + output − 1` cached
    /// positions; with `head`, the head on one row per sequence added to each.
    static func timeLayers(_ m: DecoderModel, at w: ServingWorkload, repeats: Int, head: Bool) throws -> PhaseTimes {
        let c = m.config, L = c.numHiddenLayers
        let acts = Activations(config: c, batch: 1, sequence: w.input)
        var rng = SeededGenerator(seed: 2)
        let x = acts.residual[0]
        for i in 0..<(w.input * c.hiddenSize) { x[i] = Float(rng.normal()) }
        let layers = try median(repeats) { for l in 0..<L { try m.forward(layer: l, acts) } } * Double(w.batch)
        let session = try DecodeSession(model: m, batch: w.batch, capacity: w.input + w.output)
        let headTime = head ? median(repeats) { session.head() } : 0
        for i in 0..<(w.batch * c.hiddenSize) { session.x.pointer[i] = Float(rng.normal()) * 0.01 }
        func decode(at n: Int) -> Double {
            median(repeats) {
                session.assumeCached(n - 1)
                for l in 0..<L { session.layer(l) }
                if head { session.head() }
            }
        }
        return PhaseTimes(
            prefill: layers + headTime, decodeFirst: decode(at: w.input + 1),
            decodeLast: decode(at: w.input + max(1, w.output - 1)))
    }

    /// Times what lies outside the blocks: the final norm and LM head on one row per sequence.
    public static func measureOutside(like c: ModelConfig, at w: ServingWorkload, repeats: Int = 5) throws -> PhaseTimes
    {
        let m = try oneLayer(Block(mixer: .none, channelMixer: .none), like: c)
        let session = try DecodeSession(model: m, batch: w.batch, capacity: 1)
        let t = median(repeats) { session.head() }
        return PhaseTimes(prefill: t, decodeFirst: t, decodeLast: t)
    }

    /// This machine's roofline: FLOP/s of a 1024³ float32 product, bytes/s of a 256 MiB copy (read and write).
    public static func measureMachine() -> Roofline {
        let n = 1024
        let a = FloatBuffer(count: n * n), b = FloatBuffer(count: n * n), c = FloatBuffer(count: n * n)
        for i in 0..<(n * n) { a.pointer[i] = Float(i % 7) * 0.1; b.pointer[i] = Float(i % 5) * 0.1 }
        let product = median(5) {
            gemm(m: n, n: n, k: n, a: a.pointer, lda: n, b: b.pointer, ldb: n, c: c.pointer, ldc: n)
        }
        let count = 64 << 20
        let src = FloatBuffer(count: count), dst = FloatBuffer(count: count)
        let copy = median(5) { dst.pointer.update(from: src.pointer, count: count) }
        return Roofline(flopsPerSecond: 2 * Double(n * n * n) / product, bytesPerSecond: 2 * Double(count * 4) / copy)
    }
}
